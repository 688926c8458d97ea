"""Seeds and mutants: the valid bundles to mutate, a mutant's working copy, random field values.

A case `KIND:SEED:INDEX` is fully determined by its name: `mutant()` applies the mutation
KIND, with the random generator of (SEED, INDEX, KIND), to one of the seeds.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import zlib
from collections.abc import Callable, Iterator

import numpy as np

from dlcc.formats.bundle import BundleFile, pack_sections, unpack_sections

SEED_MODELS = (  # (name, path from the repository root)
    ("lenet_300_100", "samples/lenet_300_100.onnx"),
    ("lenet5", "samples/lenet5.onnx"),
    ("mlp", "tests/data/torch/mlp_legacy.onnx"),
    ("cnn", "tests/data/torch/cnn_legacy.onnx"),
    ("lstm_bi", "tests/data/torch/lstm_bi_legacy.onnx"),
)
VARINTS = (0, 1, 2, 3, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32, 2**40, 2**63, 2**64 - 1)


@dataclasses.dataclass(frozen=True)
class Seed:
    """A valid bundle to mutate: its bytes, its parsed contents and its sections."""

    name: str
    blob: bytes
    file: BundleFile
    sections: dict[str, bytes]

    @classmethod
    def of(cls, name: str, blob: bytes) -> Seed:
        """The seed of `blob`, its DATA as bytes (not a view: mutations edit and pickle it)."""
        file = BundleFile.from_bytes(blob)
        file.data = bytes(file.data)
        sections = {kind: bytes(v) for kind, v in unpack_sections(blob, name).items()}
        return cls(name, blob, file, sections)


def compile_seeds(root: str, levels=("-O0", "-O1", "-O2", "-O3")) -> list[Seed]:
    """SEED_MODELS compiled at each level; above -O0 with 32 uniform random calibration inputs."""
    from dlcc.api import compile as compile_model

    seeds = []
    for name, path in SEED_MODELS:
        model = os.path.join(root, path)
        base = compile_model(model)
        (_, buf), rng = base.inputs[0], np.random.default_rng(0)
        record = base.buffers[buf]
        shape = [32 if i == record.batch_axis else d for i, d in enumerate(record.shape)]
        calibration = {"": rng.random(shape, dtype=np.float32)}
        for level in levels:
            bundle = base if level == "-O0" else compile_model(model, None, level, calibration)
            seeds.append(Seed.of(f"{name}{level}", bundle.to_bytes()))
    return seeds


@dataclasses.dataclass
class Mutant:
    """A working copy of a seed's contents; `blob`, once set by a BYTES kind, is final."""

    seed: Seed
    file: BundleFile
    overrides: dict[str, bytes] = dataclasses.field(default_factory=dict)  # raw sections
    notes: list[str] = dataclasses.field(default_factory=list)
    blob: bytes | None = None

    def note(self, text: str) -> None:
        self.notes.append(text)

    def to_bytes(self) -> bytes:
        if self.blob is None:
            self.blob = pack_sections({**self.file.sections(), **self.overrides})
        return self.blob


Mutation = Callable[[np.random.Generator, Mutant], None]
STRUCTURED: dict[str, Mutation] = {}
BYTES: dict[str, Mutation] = {}


def _kind(registry: dict[str, Mutation]):
    def register(fn: Mutation) -> Mutation:
        registry[fn.__name__] = fn
        return fn

    return register


def _choice(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _index(rng: np.random.Generator, seq) -> int | None:
    """A random index into `seq`, None when it is empty."""
    return int(rng.integers(len(seq))) if len(seq) else None


def _uint(rng: np.random.Generator, bits: int | None = None, near=()) -> int:
    """A boundary value (or a random one) of a `bits`-bit field; bits None: a VarInt."""
    top = 1 << (bits or 64)
    values = [*VARINTS, *(n + d for n in near for d in (-1, 0, 1)), top - 1, top - 2]
    values = [v for v in values if 0 <= v < top]
    return int(rng.integers(top >> 1)) if rng.random() < 0.15 else _choice(rng, values)


def _int8(rng: np.random.Generator, near=()) -> int:
    values = [-128, -2, -1, 0, 1, 2, 3, 4, 127, *(n + d for n in near for d in (-1, 1))]
    return _choice(rng, [v for v in values if -128 <= v <= 127])


def _enum(rng: np.random.Generator, enum) -> str | int:
    """A valid name of the Construct Enum `enum` (Int8ul) half the time, else any raw byte."""
    return (
        _choice(rng, [str(k) for k in enum.encmapping])
        if rng.random() < 0.5
        else int(rng.integers(256))
    )


def _float(rng: np.random.Generator) -> float:
    values = (math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1e-45, 3e38, float(rng.normal()))
    return _choice(rng, values)


def _edit_list(rng: np.random.Generator, items: list, fresh: Callable[[], object]) -> str:
    """Drop, duplicate, swap or add an element of `items` in place; describe what was done."""
    k, op = _index(rng, items), int(rng.integers(4))
    if k is None or op == 3:
        items.insert(int(rng.integers(len(items) + 1)), fresh())
        return "added one"
    j = int(rng.integers(len(items)))
    if op == 0:
        del items[k]
        return f"dropped #{k}"
    if op == 1:
        items.insert(j, items[k])
        return f"copied #{k} to #{j}"
    items[k], items[j] = items[j], items[k]
    return f"swapped #{k} and #{j}"


def _shape(rng: np.random.Generator, shape: tuple) -> tuple:
    dims, op, k = list(shape), int(rng.integers(4)), _index(rng, shape)
    if k is not None and op == 0:
        dims[k] = _uint(rng, near=(dims[k],))
    elif k is not None and op == 1:
        del dims[k]
    elif op == 2:
        dims = [int(d) for d in rng.permutation(dims)] if rng.random() < 0.8 else [1] * 255
    else:
        dims.insert(int(rng.integers(len(dims) + 1)), _uint(rng))
    return tuple(dims)


def _huffman_blobs(f: BundleFile) -> list[tuple[int, int]]:
    return [
        (k, b) for k, t in enumerate(f.tensors) for b, blob in enumerate(t.blobs)
        if blob[1] == "huffman"
    ]  # fmt: skip


def campaign(family: str, count: int, seed: int = 0) -> Iterator[str]:
    """`count` case ids of the STRUCTURED ("structured") or BYTES ("bytes") kinds, in turn."""
    kinds = sorted({"structured": STRUCTURED, "bytes": BYTES}[family])
    return (f"{kinds[i % len(kinds)]}:{seed}:{i}" for i in range(count))


def mutant(case: str, seeds: list[Seed]) -> tuple[bytes, str]:
    """The bytes of case `KIND:SEED:INDEX` and a description of its mutation."""
    kind, seed, index = case.split(":")
    registry = STRUCTURED if kind in STRUCTURED else BYTES
    if kind not in registry:
        raise ValueError(f"unknown mutation kind {kind!r} in case {case!r}")
    rng = np.random.default_rng([int(seed), int(index), zlib.crc32(kind.encode())])
    usable = [s for s in seeds if kind != "huffman_stream" or _huffman_blobs(s.file)]
    base = _choice(rng, usable or seeds)
    f = base.file
    copies = {k: list(getattr(f, k)) for k in ("tensors", "buffers", "attrs", "program")}
    copies |= {"inputs": list(f.inputs), "outputs": list(f.outputs), "symbols": list(f.symbols)}
    m = Mutant(base, dataclasses.replace(f, meta=copy.deepcopy(f.meta), **copies))
    registry[kind](rng, m)
    return m.to_bytes(), f"{base.name}: " + "; ".join(m.notes or ["no change"])
