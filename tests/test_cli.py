"""The CLI, driven in-process: compile, run, explain, and every kind of bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import assert_clean_error, invoke, sample_path
from onnx import TensorProto, helper

import dlcc
from dlcc.cli import main
from dlcc.passes.manager import PRESETS


def test_version_and_help():
    assert invoke("--version").output.startswith("dlcc, version ")
    for command in ("compile", "run", "explain"):
        out = invoke(command, "--help").output
        assert "Example:" in out and "dlcc " + command in out


def test_compile_run_explain_sample(tmp_path, sample_images):
    bundle, outputs = str(tmp_path / "m.bin"), str(tmp_path / "y.npy")
    result = invoke("compile", sample_path("lenet5.onnx"), "-o", bundle, "-O0", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["bytes"] == os.path.getsize(bundle)

    result = invoke(
        "run", bundle, "--input", sample_path("mnist_test_256.npz"), "--output", outputs
    )
    assert result.exit_code == 0 and "accuracy:" in result.stdout
    images, _ = sample_images
    expected = ort.InferenceSession(sample_path("lenet5.onnx")).run(None, {"image": images})[0]
    np.testing.assert_allclose(np.load(outputs), expected, rtol=1e-4, atol=1e-5)

    report = json.loads(invoke("explain", bundle, "--json", "--asm").stdout)
    assert report["file_bytes"] == os.path.getsize(bundle)
    assert report["inputs"] == [{"name": "image", "shape": ["N", 1, 28, 28], "dtype": "float32"}]
    assert report["program"][-1] == "HALT"
    assert "CONVOLVE" in invoke("explain", bundle, "--asm").stdout


def test_run_json_reports_accuracy(sample_bundles):
    result = invoke(
        "run",
        sample_bundles["lenet_300_100"],
        "--input",
        sample_path("mnist_test_256.npz"),
        "--json",
    )
    info = json.loads(result.stdout)
    assert info["accuracy"] > 0.95 and info["outputs"]["logits"]["shape"] == [256, 10]


# -- bad input ------------------------------------------------------------------------------
@pytest.fixture
def out(tmp_path):
    path = tmp_path / "out.bin"
    yield str(path)
    assert not path.exists(), "a failed compile left an output file"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".dlcc-")], "temp file left"


def test_missing_model(out):
    assert_clean_error(invoke("compile", "no/such/model.onnx", "-o", out), "no/such/model.onnx")


def test_non_onnx_file(tmp_path, out):
    path = tmp_path / "fake.onnx"
    path.write_text("this is not a protobuf\n" * 10)
    assert_clean_error(invoke("compile", str(path), "-o", out), "fake.onnx")


def test_truncated_onnx(tmp_path, out):
    data = open(sample_path("lenet5.onnx"), "rb").read()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    assert_clean_error(invoke("compile", str(path), "-o", out), "truncated.onnx")


def test_unsupported_ops_listed_together(tmp_path, out):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("Hardmax", ["a"], ["b"], name="first_hardmax"),
        helper.make_node("Hardmax", ["b"], ["c"], name="second_hardmax"),
        helper.make_node("Round", ["c"], ["y"], name="the_round"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]))
    path = tmp_path / "unsupported.onnx"
    onnx.save(model, path)
    result = invoke("compile", str(path), "-o", out)
    assert_clean_error(
        result, "Hardmax (first node 'first_hardmax')", "Round (first node 'the_round')"
    )
    assert "second_hardmax" not in result.stderr


def test_unwritable_output(tmp_path):
    result = invoke("compile", sample_path("lenet5.onnx"), "-o", str(tmp_path / "no" / "x.bin"))
    assert_clean_error(result, "cannot write")


def corrupt(tmp_path, bundle: str, edit) -> str:
    data = bytearray(open(bundle, "rb").read())
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(edit(data)))
    return str(path)


def flip(data: bytearray, offset: int) -> bytearray:
    data[offset] ^= 0x40
    return data


@pytest.mark.parametrize("where", [0, 20, 100, 1000, -5])
def test_flipped_byte(tmp_path, sample_bundles, where):
    bad = corrupt(tmp_path, sample_bundles["lenet5"], lambda d: flip(d, where % len(d)))
    assert_clean_error(invoke("run", bad, "--input", sample_path("mnist_test_256.npz")), "bad.bin")
    assert_clean_error(invoke("explain", bad), "bad.bin")


def test_truncated_bundle(tmp_path, sample_bundles):
    bad = corrupt(tmp_path, sample_bundles["lenet5"], lambda d: d[: len(d) - 1000])
    assert_clean_error(invoke("explain", bad), "bad.bin", "section")


def test_section_length_past_end(tmp_path, sample_bundles):
    from dlcc.formats.schema import HEADER

    def stretch(data):
        header = HEADER.parse(bytes(data))
        value = header.body.value
        value.sections[-1].length += 10**9
        return (
            HEADER.build({"body": {"value": value}})
            + data[len(HEADER.build({"body": {"value": value}})) :]
        )

    bad = corrupt(tmp_path, sample_bundles["lenet5"], stretch)
    assert_clean_error(invoke("explain", bad), "section DATA", "outside the file")


def test_missing_bundle_and_bad_inputs(tmp_path, sample_bundles):
    assert_clean_error(invoke("explain", str(tmp_path / "none.bin")), "none.bin")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 3, 28, 28), np.float32))
    result = invoke("run", sample_bundles["lenet5"], "--input", str(wrong))
    assert_clean_error(result, "input 'image'", "N×1×28×28")
    assert_clean_error(invoke("run", sample_bundles["lenet5"], "--input", str(tmp_path / "x.npy")))
    result = invoke("run", sample_bundles["lenet5"], "--input", str(wrong), "--target", "tpu9")
    assert_clean_error(result, "unknown target 'tpu9'")


def test_passes_lists_every_pass_with_options():
    from dlcc.passes.manager import registered_passes

    out = invoke("passes").stdout
    for name, cls in registered_passes().items():
        assert name in out and cls.summary in out
    assert "sparsity=0.9" in out and "-O3" in out
    assert json.loads(invoke("passes", "--json").stdout)["presets"]["O0"] == ""


def test_compile_report_ledger_adds_up_to_the_file(tmp_path):
    bundle = str(tmp_path / "m.bin")
    result = invoke(
        "compile", sample_path("lenet_300_100.onnx"), "-o", bundle, "-O3", "--report", "--json"
    )
    report = json.loads(result.stdout)["ledger"]
    assert sum(row["bytes"] for row in report["ledger"]) == os.path.getsize(bundle)
    streams = [
        s for t in report["tensors"] for s in t["streams"].values() if s["coding"] == "huffman"
    ]
    assert streams and all(s["bytes"] < s["raw_bytes"] for s in streams)
    text = invoke("compile", sample_path("lenet_300_100.onnx"), "-o", bundle, "-O3", "--report")
    assert "total (= file size)" in text.stdout and "dlcc: note: quantize" in text.stderr


def test_compile_reports_before_and_after(tmp_path):
    """Every compile shows sizes and ratio; with --data the fidelity; explain shows it later."""
    bundle, model = str(tmp_path / "m.bin"), sample_path("lenet5.onnx")
    data = sample_path("mnist_test_256.npz")
    plain = invoke("compile", model, "-o", bundle, "-O3", "--json")
    report = json.loads(plain.stdout)["report"]
    assert "fidelity" not in report and "fidelity not checked" in plain.stderr
    assert report["fp32_weight_bytes"] / report["bundle_bytes"] > 30
    result = invoke("compile", model, "-o", bundle, "-O1", "--calib", data, "--data", data)
    assert "top-1 agreement" in result.stdout and "accuracy" in result.stdout
    assert "warning" not in result.stderr
    fidelity = json.loads(invoke("explain", bundle, "--json").stdout)["meta"]["report"]["fidelity"]
    assert fidelity["samples"] == 256 and fidelity["outputs"]["logits"]["agreement"] > 0.98
    assert f"fidelity on {data}" in invoke("explain", bundle).stdout
    fixed_rates = PRESETS["O3"]  # the paper's rates, no recovery: far from the original
    broken = invoke("compile", model, "-o", bundle, "--passes", fixed_rates, "--data", data)
    assert (
        "agrees with the original on only" in broken.stderr and "--min-agreement" in broken.stderr
    )


@pytest.mark.slow
def test_o2_with_data_chooses_rates_that_keep_the_meaning(tmp_path):
    """-O2 with --calib searches per-layer rates on 3/4 of the data and reports on the rest."""
    bundle, model = str(tmp_path / "m.bin"), sample_path("lenet_300_100.onnx")
    data = sample_path("mnist_test_256.npz")
    result = invoke("compile", model, "-o", bundle, "-O2", "--calib", data, "--json")
    assert "dlcc: -O2: chose prune(" in result.stderr and "kmeans" not in result.stderr
    report = json.loads(result.stdout)["report"]
    assert report["fidelity"]["samples"] == 64 and "held out" in report["fidelity"]["data"]
    assert report["fp32_weight_bytes"] / report["bundle_bytes"] > 4


def test_readme_documents_every_command_and_pass():
    from dlcc.passes.manager import registered_passes

    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")).read()
    for command in main.commands:
        assert f"dlcc {command}" in readme, command
    for name in registered_passes():
        assert f"`{name}" in readme, name


def test_matrix_instructions_are_tiled_for_the_array_and_retiled_on_another(tmp_path):
    from dlcc.formats import isa

    bundle = str(tmp_path / "t.bin")
    assert (
        invoke("compile", sample_path("lenet5.onnx"), "-o", bundle, "--array", "32x32").exit_code
        == 0
    )
    loaded = __import__("dlcc").load(bundle)
    folds = [
        (i.folds_k, i.folds_n)
        for i in loaded.file.program
        if isinstance(i, isa.MatrixMultiply | isa.Convolve)
    ]
    # conv1 K=25 N=20, conv2 K=500 N=50, fc1 800x500, fc2 500x10, on 32x32
    assert folds == [(1, 1), (16, 2), (25, 16), (16, 1)] and loaded.file.meta["array"] == [32, 32]
    result = invoke(
        "run",
        bundle,
        "--input",
        sample_path("mnist_test_256.npz"),
        "--target",
        "systolic",
        "--array",
        "8x8",
        "--json",
    )
    assert "re-tiled for 8x8" in result.stderr
    assert json.loads(result.stdout)["systolic"]["tiling"]["retiled"] is True


# -- outputs --------------------------------------------------------------------------------
def test_an_output_never_replaces_an_input_of_the_same_command(tmp_path, sample_bundles):
    model = tmp_path / "m.onnx"
    model.write_bytes(open(sample_path("lenet_300_100.onnx"), "rb").read())
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.onnx").symlink_to(model)
    os.link(model, tmp_path / "hard.onnx")
    before = model.read_bytes()
    for spelling in ("m.onnx", "sub/../m.onnx", "link.onnx", "hard.onnx"):
        result = invoke("compile", str(model), "-o", str(tmp_path / spelling))
        assert_clean_error(result, spelling, "is the input", "m.onnx")
    np.savez(tmp_path / "calib.npz", image=np.ones((2, 1, 28, 28), np.float32))
    result = invoke(
        "compile",
        str(model),
        "-o",
        str(tmp_path / "calib.npz"),
        "--calib",
        str(tmp_path / "calib.npz"),
    )
    assert_clean_error(result, "calib.npz: is the input")
    assert model.read_bytes() == before

    inputs = tmp_path / "x.npy"
    np.save(inputs, np.ones((2, 1, 28, 28), np.float32))
    saved = inputs.read_bytes()
    bundle = sample_bundles["lenet_300_100"]
    result = invoke(
        "run", bundle, "--input", str(inputs), "--output", str(tmp_path / "sub/../x.npy")
    )
    assert_clean_error(result, "is the input")
    result = invoke("run", bundle, "--input", str(inputs), "--output", bundle)
    assert_clean_error(result, "is the input")
    result = invoke("profile", bundle, "--input", str(inputs), "--array", "8x8", "--plot", bundle)
    assert_clean_error(result, "is the input")
    assert inputs.read_bytes() == saved and dlcc.load(bundle)


def test_outputs_go_through_links_and_only_onto_regular_files(tmp_path):
    model = sample_path("lenet_300_100.onnx")
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "m.bin"
    target.write_bytes(b"old")
    (tmp_path / "m.bin").symlink_to(target)
    assert invoke("compile", model, "-o", str(tmp_path / "m.bin")).exit_code == 0
    assert (tmp_path / "m.bin").is_symlink() and dlcc.load(str(target))
    (tmp_path / "dangling.bin").symlink_to(tmp_path / "nowhere.bin")
    assert_clean_error(invoke("compile", model, "-o", str(tmp_path / "dangling.bin")), "dangling")
    assert_clean_error(invoke("compile", model, "-o", str(tmp_path / "real")), "a directory")
    assert not (tmp_path / "nowhere.bin").exists()


@pytest.mark.parametrize("array", ["0x0", "0x8", "8x0", "100000x100000", "4097x1", "3x", "²x3"])
def test_array_out_of_bounds(tmp_path, sample_bundles, out, array):
    assert_clean_error(
        invoke("compile", sample_path("lenet5.onnx"), "-o", out, "--array", array),
        f"array '{array}'",
    )
    result = invoke(
        "run",
        sample_bundles["lenet5"],
        "--input",
        sample_path("mnist_test_256.npz"),
        "--target",
        "systolic",
        "--array",
        array,
        "--output",
        out,
    )
    assert_clean_error(result, f"array '{array}'")


def test_json_output_is_strict():
    import click

    from dlcc.cli_common import emit

    @click.command()
    def probe():
        emit(
            {
                "nan": float("nan"),
                "inf": [np.float32("inf"), np.float64(-np.inf)],
                "ok": np.int64(3),
            },
            True,
            "",
        )

    result = CliRunner().invoke(probe)

    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    assert json.loads(result.stdout, parse_constant=refuse) == {
        "nan": None,
        "inf": [None, None],
        "ok": 3,
    }


def test_a_compiled_bundle_that_does_not_load_is_not_written(out, monkeypatch):
    from dlcc.errors import BundleFormatError
    from dlcc.runtime import loader

    def broken(file, path="<memory>"):
        raise BundleFormatError(f"{path}: section PROGRAM: instruction #3 refers past the tables")

    monkeypatch.setattr(loader, "bind_bundle", broken)
    result = invoke("compile", sample_path("lenet_300_100.onnx"), "-o", out)
    assert_clean_error(result, "lenet_300_100.onnx: the compiled bundle does not load", "PROGRAM")
