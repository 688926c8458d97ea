"""The verifier: each class of malformed-but-checksummed bundle is refused before it runs.

Every case rewrites one field of a valid bundle, re-serializes it (valid CRCs) and expects a
BundleFormatError at load — or, for what only the actual batch reveals, an ExecutionError at
run — never another exception.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import zlib

import numpy as np
import pytest
from conftest import sample_path
from hypothesis import given, settings
from hypothesis import strategies as st

import dlcc
from dlcc.errors import BundleFormatError, ExecutionError
from dlcc.formats import isa
from dlcc.formats.bundle import BundleFile, pack_sections, unpack_sections
from dlcc.runtime.kernels import code_of
from dlcc.runtime.kernels.strided import strided_view
from dlcc.runtime.loader import bind_bundle
from dlcc.runtime.verifier import DEFAULT_LIMITS, Limits


@pytest.fixture(scope="module")
def int8_file(sample_images) -> BundleFile:
    """LeNet-5 at -O1 (Conv, pooling, Dense, requantization, float logits)."""
    images, _ = sample_images
    return dlcc.compile(
        sample_path("lenet5.onnx"), passes="-O1", calibration={"image": images[:32]}
    )


@pytest.fixture(scope="module")
def sparse_file(sample_images) -> BundleFile:
    """LeNet-300-100 at -O3: CSR and bitmask positions, codebooks, Huffman streams."""
    images, _ = sample_images
    return dlcc.compile(
        sample_path("lenet_300_100.onnx"), passes="-O3", calibration={"image": images[:32]}
    )


def reload(file: BundleFile, limits: Limits = DEFAULT_LIMITS):
    """Serialize (fresh CRCs) and load again."""
    return bind_bundle(BundleFile.from_bytes(file.to_bytes(), "m.bin"), "m.bin", limits)


def refused(file: BundleFile, match: str, limits: Limits = DEFAULT_LIMITS) -> None:
    with pytest.raises(BundleFormatError, match=match):
        reload(file, limits)


def with_program(file: BundleFile, edit) -> BundleFile:
    program = list(file.program)
    edit(program)
    return dataclasses.replace(file, program=program)


def index_of(file: BundleFile, cls) -> int:
    return next(k for k, i in enumerate(file.program) if isinstance(i, cls))


def index_of_function(file: BundleFile, op: str) -> int:
    return next(k for k, i in enumerate(file.program) if getattr(i, "function", -1) == code_of(op))


def test_valid_bundles_load_and_run(int8_file, sparse_file, sample_images):
    images, _ = sample_images
    for file in (int8_file, sparse_file):
        assert reload(file).run(images[:3])["logits"].shape == (3, 10)


# -- data flow -------------------------------------------------------------------------------
def test_reading_a_buffer_no_instruction_wrote(int8_file):
    k = index_of(int8_file, isa.Convolve)
    bad = with_program(int8_file, lambda p: p.insert(1, p.pop(k)))  # CONVOLVE before its input
    refused(bad, "before any instruction writes it|empty weight FIFO")


def test_popping_an_empty_weight_fifo(int8_file):
    refused(with_program(int8_file, lambda p: p.pop(1)), "empty weight FIFO")


def test_weights_left_in_the_fifo(int8_file):
    refused(with_program(int8_file, lambda p: p.insert(len(p) - 1, p[1])), "left in the FIFO")


def test_host_indices_past_their_tables(int8_file):
    refused(with_program(int8_file, lambda p: p.__setitem__(0, isa.ReadHost(5, 0))), "input #5")
    k = index_of(int8_file, isa.WriteHost)
    w = int8_file.program[k]
    edit = lambda p: p.__setitem__(k, isa.WriteHost(w.src, 3))  # noqa: E731
    refused(with_program(int8_file, edit), "output #3")


def test_an_output_never_written(int8_file):
    k = index_of(int8_file, isa.WriteHost)
    refused(with_program(int8_file, lambda p: p.pop(k)), "never written")


def test_a_buffer_written_twice(int8_file):
    k = index_of(int8_file, isa.Activate)
    refused(with_program(int8_file, lambda p: p.insert(k + 1, p[k])), "written twice|before any")


def test_wrong_operand_count_and_function(int8_file):
    k = next(
        k
        for k, i in enumerate(int8_file.program)
        if getattr(i, "function", 0) == code_of("MaxPool")
    )
    v = int8_file.program[k]
    extra = dataclasses.replace(v, inputs=v.inputs * 2)
    refused(with_program(int8_file, lambda p: p.__setitem__(k, extra)), "MaxPool")
    softmax = dataclasses.replace(v, function=code_of("Softmax"), attrs=0)
    refused(with_program(int8_file, lambda p: p.__setitem__(k, softmax)), "float32")


def test_a_required_operand_given_as_absent(int8_file):
    """Found by the fuzzer: an LSTM whose W operand became NONE reached the kernel."""
    k = next(
        k
        for k, i in enumerate(int8_file.program)
        if getattr(i, "function", 0) == code_of("MaxPool")
    )
    absent = dataclasses.replace(int8_file.program[k], inputs=(isa.Operand("NONE"),))
    refused(with_program(int8_file, lambda p: p.__setitem__(k, absent)), "required operand")


def test_halt_missing_or_early(int8_file):
    refused(with_program(int8_file, lambda p: p.pop()), "HALT")
    refused(with_program(int8_file, lambda p: p.insert(2, isa.Halt())), "HALT")


def test_activate_of_an_unknown_function(int8_file):
    """Found by benchmarks/fuzz_bundles.py: a table-driven Activate never read its function."""
    a = int8_file.program[index_of(int8_file, isa.Activate)]
    word = isa.Opcode.build("ACTIVATE") + bytes([a.src, 0, a.dst, 0, a.bias, 0])
    blob = patched(int8_file, "PROGRAM", word + b"\x00", word + b"\xde")  # NONE -> 222
    with pytest.raises(BundleFormatError, match="unknown function"):
        dlcc.api.load_bytes(blob, "m.bin")


def test_activate_of_a_non_activation(int8_file):
    k = index_of(int8_file, isa.Activate)
    edit = lambda p: p.__setitem__(k, dataclasses.replace(p[k], function=code_of("Softmax")))  # noqa: E731
    refused(with_program(int8_file, edit), "not an activation")


# -- shapes and dtypes -----------------------------------------------------------------------
def test_buffer_shape_disagrees_with_its_op(int8_file):
    buffers = list(int8_file.buffers)
    buffers[3] = dataclasses.replace(buffers[3], shape=(1, 20, 24, 25))
    refused(dataclasses.replace(int8_file, buffers=buffers), r"ub\[3\] gets")


def test_buffer_dtype_disagrees_with_its_op(int8_file):
    buffers = list(int8_file.buffers)
    buffers[1] = dataclasses.replace(buffers[1], dtype="float32")
    refused(dataclasses.replace(int8_file, buffers=buffers), r"ub\[1\] gets int32")


def test_weight_shape_disagrees_with_the_matrix_op(int8_file):
    tensors = list(int8_file.tensors)
    tensors[0] = dataclasses.replace(tensors[0], shape=(20, 2, 5, 5))
    refused(dataclasses.replace(int8_file, tensors=tensors), "tensor #0|channels")


def test_dims_past_the_rank_or_symbols_or_not_one_at_batch_1(int8_file):
    buffers = list(int8_file.buffers)
    for dims in [(1, 0, 0, 7), (1, 0, 0, 254)]:  # symbol ids past the table of one
        buffers[0] = dataclasses.replace(int8_file.buffers[0], dims=dims)
        refused(dataclasses.replace(int8_file, buffers=buffers), f"dims {re.escape(str(dims))}")
    # Found by the fuzzer: an input declared (4, 1, 28, 28) at batch 1 took a batch of 1.
    buffers[0] = dataclasses.replace(int8_file.buffers[0], shape=(4, 1, 28, 28))
    refused(dataclasses.replace(int8_file, buffers=buffers), "the batch is 4 at batch 1")
    # An input's dimension derived from nothing, or a buffer's symbol bound by no input.
    buffers[0] = dataclasses.replace(int8_file.buffers[0], dims=(1, 0, 0, 255))
    refused(dataclasses.replace(int8_file, buffers=buffers), "disagree with the other inputs")
    buffers[0] = int8_file.buffers[0]
    buffers[1] = dataclasses.replace(buffers[1], dims=(1, 2, 0, 0))
    with_w = dataclasses.replace(int8_file, buffers=buffers, symbols=["N", "W"])
    refused(with_w, r"symbol\(s\) \['W'\] bound by no input")


def test_a_program_that_breaks_at_another_batch_fails_at_run(int8_file, sample_images):
    """A Slice keeping 2 rows of the batch axis: right at batch 1 and 2, wrong at 3."""
    images, _ = sample_images
    file = dlcc.compile(sample_path("lenet5.onnx"))
    k = len(file.program) - 2  # before WRITE_HOST: slice the logits to rows [0, 2)
    src = file.program[k].src
    attrs = [*file.attrs, (("starts", (0,)), ("ends", (2,)), ("axes", (0,)), ("steps", (1,)))]
    buffers = [*file.buffers, file.buffers[src]]
    new = len(buffers) - 1
    slicer = isa.Vector(code_of("Slice"), (isa.Operand("UB", src),), (new,), len(attrs) - 1)
    outputs = [(file.outputs[0][0], new)]
    program = [*file.program[:k], slicer, isa.WriteHost(new, 0), isa.Halt()]
    bad = dataclasses.replace(file, attrs=attrs, buffers=buffers, outputs=outputs, program=program)
    loaded = reload(bad)
    assert loaded.run(images[:2])["logits"].shape == (2, 10)
    with pytest.raises(ExecutionError, match="at N=3"):
        loaded.run(images[:3])


# -- attributes ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, match",
    [
        ({"strides": (-1, 1)}, "strides"),
        ({"pads": (0, 0, 0, -3)}, "pads"),
        ({"dilations": (0, 1)}, "dilations"),
        ({"dilations": (1, 1 << 40)}, "geometry"),
        ({"group": 0}, "group"),
        ({"strides": (1.5, 1)}, "expected int"),
        ({"pads": (0, 0, 0)}, "expected 4 values"),
        ({"spin": 7}, "unknown or repeated attribute"),
    ],
)
def test_conv_attributes_out_of_domain(int8_file, fields, match):
    k = index_of(int8_file, isa.Convolve)
    attrs = list(int8_file.attrs)
    index = int8_file.program[k].attrs
    attrs[index] = tuple({**dict(attrs[index]), **fields}.items())
    refused(dataclasses.replace(int8_file, attrs=attrs), match)


def test_attribute_fields_are_named(int8_file):
    """A record names its fields: order does not matter, a required one cannot be left out."""
    k = index_of(int8_file, isa.Convolve)
    attrs = list(int8_file.attrs)
    index = int8_file.program[k].attrs
    attrs[index] = tuple(reversed(attrs[index]))
    reload(dataclasses.replace(int8_file, attrs=attrs))
    pool = int8_file.program[index_of_function(int8_file, "MaxPool")].attrs
    attrs[pool] = tuple(f for f in attrs[pool] if f[0] != "kernel")
    refused(dataclasses.replace(int8_file, attrs=attrs), "missing attribute")


def test_attribute_record_past_the_table(int8_file):
    k = index_of(int8_file, isa.Convolve)
    edit = lambda p: p.__setitem__(k, dataclasses.replace(p[k], attrs=999))  # noqa: E731
    refused(with_program(int8_file, edit), "record #999")


# -- unknown enum values ---------------------------------------------------------------------
def patched(file: BundleFile, section: str, old: bytes, new: bytes) -> bytes:
    sections = unpack_sections(file.to_bytes(), "m.bin")
    assert old in sections[section]
    sections[section] = sections[section].replace(old, new, 1)
    return pack_sections(sections)


def test_unknown_opcode_function_and_dtype(int8_file, tmp_path):
    from click.testing import CliRunner

    from dlcc.cli import main

    halt = isa.Opcode.build("HALT")
    quantize = isa.Opcode.build("VECTOR") + bytes([code_of("Quantize")])
    cases = [
        patched(int8_file, "PROGRAM", halt, b"\x63"),  # opcode 99, the last instruction
        patched(int8_file, "PROGRAM", quantize, b"\x06\xc8"),  # function 200
        patched(int8_file, "BUFFERS", b"\x00\x00\x04\x01", b"\x09\x00\x04\x01"),  # dtype 9
    ]
    for n, blob in enumerate(cases):
        with pytest.raises(BundleFormatError):
            dlcc.api.load_bytes(blob, "m.bin")
        path = tmp_path / f"bad{n}.bin"
        path.write_bytes(blob)
        result = CliRunner().invoke(main, ["explain", str(path), "--asm"])
        assert result.exit_code == 2, result.output
        assert result.output.count("dlcc: error:") == 1


# -- tensors and sizes -----------------------------------------------------------------------
def test_sparse_tensor_without_positions(sparse_file):
    k, t = next((k, t) for k, t in enumerate(sparse_file.tensors) if t.positions != "dense")
    tensors = list(sparse_file.tensors)
    tensors[k] = dataclasses.replace(t, blobs=tuple(b for b in t.blobs if b[0] != "POSITIONS"))
    refused(dataclasses.replace(sparse_file, tensors=tensors), "POSITIONS")


def test_huge_declared_tensor_is_refused_before_allocation(sparse_file):
    """A CSR tensor may declare zeros past its last entry: the limit bounds what it decodes."""
    k, t = next((k, t) for k, t in enumerate(sparse_file.tensors) if t.positions == "csr")
    tensors = list(sparse_file.tensors)
    tensors[k] = dataclasses.replace(t, shape=(1 << 30, 1 << 10))
    refused(dataclasses.replace(sparse_file, tensors=tensors), "1..2147483647|limit")
    tensors[k] = dataclasses.replace(t, shape=(1 << 20, 1 << 10))
    refused(
        dataclasses.replace(sparse_file, tensors=tensors), "limit", Limits(tensor_bytes=1 << 30)
    )


def test_the_limit_counts_what_the_engines_derive_from_the_weights():
    """An int8 weight runs through a float32 copy (and a Conv filter through its matrix,
    on each target): the tensor limit bounds those too, and the bound holds on real runs."""
    from dlcc.runtime.kernels import constants
    from dlcc.runtime.verifier import _resident_weight_bytes

    images = np.load(sample_path("mnist_test_256.npz"))["image"]
    file = dlcc.compile(sample_path("lenet5.onnx"), passes="-O1", calibration={"image": images})
    file = BundleFile.from_bytes(file.to_bytes())
    decoded = sum(np.prod(t.shape) * np.dtype(t.dtype).itemsize for t in file.tensors)
    resident = _resident_weight_bytes(file)
    assert resident > 4 * decoded  # the int8 weights' float32 copies and matrices
    refused(file, "float32 forms", Limits(tensor_bytes=(decoded + resident) // 2))
    bundle = reload(file, Limits(tensor_bytes=resident))
    for target in ("interp", "systolic"):
        bundle.run(images[:3], target=target)
    ids, derived = {id(w) for w in bundle.weights}, {}
    while True:  # what the weights derive, and what those derive (a float32 copy's matrix)
        new = {id(v): v for (key, _), v in constants._DERIVED.items() if key in ids}
        if new.keys() <= derived.keys():
            break
        derived.update(new)
        ids |= new.keys()
    held = decoded + sum(v.nbytes for v in derived.values())
    assert 4 * decoded < held <= resident


def test_huffman_count_must_match_entries(sparse_file):
    k, t = next(
        (k, t) for k, t in enumerate(sparse_file.tensors) if any(b[1] == "huffman" for b in t.blobs)
    )
    tensors = list(sparse_file.tensors)
    tensors[k] = dataclasses.replace(t, entries=t.entries - 1)
    refused(dataclasses.replace(sparse_file, tensors=tensors), "entries|Huffman")


def test_huffman_stream_cannot_expand_past_its_entries(sparse_file):
    """A DEFLATE stream of LZ77 matches (64 MB of zeros in ~64 KB) passes the verifier's
    bound (a symbol has one bit or more) and decoding stops one symbol past the entries."""
    k, t = next(
        (k, t) for k, t in enumerate(sparse_file.tensors) if any(b[1] == "huffman" for b in t.blobs)
    )
    b = next(i for i, blob in enumerate(t.blobs) if blob[1] == "huffman")
    coder = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = coder.compress(bytes(64 << 20)) + coder.flush()
    blobs = list(t.blobs)
    blobs[b] = (*blobs[b][:2], len(sparse_file.data), len(bomb))
    tensors = list(sparse_file.tensors)
    tensors[k] = dataclasses.replace(t, blobs=tuple(blobs))
    bombed = dataclasses.replace(sparse_file, tensors=tensors, data=bytes(sparse_file.data) + bomb)
    refused(bombed, f"tensor {t.name!r}: {blobs[b][0]}: a Huffman stream of more than")


def test_huffman_symbols_are_bytes(sparse_file):
    k, t = next(
        (k, t) for k, t in enumerate(sparse_file.tensors) if any(b[1] == "huffman" for b in t.blobs)
    )
    tensors = list(sparse_file.tensors)
    tensors[k] = dataclasses.replace(t, value_bits=9)
    refused(dataclasses.replace(sparse_file, tensors=tensors), "VALUES: a Huffman stream of 9-bit")


def test_activation_limit_is_enforced(int8_file, sample_images):
    # Dense's workspace bound for fc1's weights (3.2 MB) plus a few images' activations
    loaded = reload(int8_file, Limits(activation_bytes=3_500_000))
    loaded.run(sample_images[0][:2])
    with pytest.raises(ExecutionError, match="limit"):
        loaded.run(sample_images[0])
    refused(int8_file, "limit", Limits(activation_bytes=1000))


# -- META ------------------------------------------------------------------------------------
def with_meta_bytes(file: BundleFile, payload: bytes) -> bytes:
    sections = unpack_sections(file.to_bytes(), "m.bin")
    sections["META"] = payload
    return pack_sections(sections)


def test_meta_decompression_bomb_is_bounded(int8_file):
    bomb = zlib.compress(b" " * (80 << 20), 9)  # 80 MB of JSON whitespace in ~80 KB
    start = time.perf_counter()
    with pytest.raises(BundleFormatError, match="more than"):
        dlcc.api.load_bytes(with_meta_bytes(int8_file, bomb))
    assert time.perf_counter() - start < 30  # a bound on work, not a timing figure


def test_deeply_nested_meta_is_refused(int8_file):
    nested = zlib.compress(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(BundleFormatError, match="META"):
        dlcc.api.load_bytes(with_meta_bytes(int8_file, nested))
    for meta in (
        [1, 2],
        {"notes": 5},
        {"log": [{"layers": {}}]},
        {"log": [{"pass": "p", "layers": {"layer": [1]}}]},
        {"report": {"fp32_weight_bytes": 1}},  # onnx_bytes is required
        {"report": {"fp32_weight_bytes": 1, "onnx_bytes": 2, "fidelity": {"data": "d"}}},
    ):
        payload = zlib.compress(json.dumps(meta).encode())
        with pytest.raises(BundleFormatError, match="META"):
            dlcc.api.load_bytes(with_meta_bytes(int8_file, payload))


# -- kernels defend themselves ---------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    shape=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    strides=st.lists(st.integers(-64, 64), min_size=4, max_size=4),
    size=st.integers(1, 64),
)
def test_strided_view_never_reads_outside_its_buffer(shape, strides, size):
    base = np.arange(size, dtype=np.float32)
    shape, strides = tuple(shape), tuple(strides[: len(shape)])
    try:
        view = strided_view(base, shape, strides)
    except ExecutionError:
        return
    low, high = np.lib.array_utils.byte_bounds(view)
    base_low, base_high = np.lib.array_utils.byte_bounds(base)
    assert base_low <= low and high <= base_high
    assert set(np.unique(view)) <= set(base)


def test_conv_kernel_refuses_unsafe_geometry():
    from dlcc.runtime.kernels.matrix import ConvAttrs, conv

    with pytest.raises(ValueError, match="strides"):
        ConvAttrs(strides=(-1, 1))
    x, w = np.ones((1, 2, 5, 5), np.float32), np.ones((3, 1, 3, 3), np.float32)
    with pytest.raises(ExecutionError, match="channels"):
        conv(ConvAttrs(), x, w)
    with pytest.raises(ExecutionError, match="no output"):
        conv(ConvAttrs(dilations=(1 << 20, 1)), np.ones((1, 1, 5, 5), np.float32), w)
