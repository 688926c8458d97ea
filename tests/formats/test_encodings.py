"""Weight encodings decode to exactly what was encoded, for every combination of codings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcc.encoding import DENSE, Encoding
from dlcc.formats.encodings import decode, encode

SHAPES = st.lists(st.integers(0, 9), min_size=1, max_size=4).map(tuple)


def round_trip(array: np.ndarray, enc: Encoding) -> tuple[np.ndarray, object]:
    record, blobs = encode("w", array, enc)
    data, spans = b"", []
    for role, coding, blob in blobs:
        spans.append((role, coding, len(data), len(blob)))
        data += blob
    record = dataclasses.replace(record, blobs=tuple(spans))
    return decode(record, data), record


def layer(rng, shape, sparsity, codebook_bits, int8):
    """A float32 tensor as the passes would leave it, and its encoding."""
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) < sparsity] = 0
    enc = Encoding(sparse=sparsity > 0)
    if int8:
        s = np.float32(max(np.abs(w).max(initial=0), 1e-3) / 127)
        w = (np.round(w / s) * s).astype(np.float32)
        enc = dataclasses.replace(enc, int8=True, scales=(float(s),))
    if codebook_bits:
        book = np.unique(rng.choice(w.reshape(-1), size=min(w.size, 2**codebook_bits)))
        book = np.unique(np.concatenate([book, [0.0]])) if w.size else np.zeros(1, np.float32)
        w = book[np.abs(w[..., None] - book).argmin(-1)].astype(np.float32)
        enc = dataclasses.replace(enc, codebook=tuple(book.astype(np.float32).tolist()))
    return w, enc


@settings(max_examples=150, deadline=None)
@given(
    shape=SHAPES,
    sparsity=st.sampled_from([0.0, 0.3, 0.9, 0.99, 1.0]),
    codebook_bits=st.sampled_from([0, 1, 3, 5, 8]),
    int8=st.booleans(),
    huffman=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_round_trip(shape, sparsity, codebook_bits, int8, huffman, seed):
    w, enc = layer(np.random.default_rng(seed), shape, sparsity, codebook_bits, int8)
    got, _ = round_trip(w, dataclasses.replace(enc, huffman=huffman))
    np.testing.assert_array_equal(got, w)


def test_per_channel_int8_round_trip():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    w[rng.random(w.shape) < 0.7] = 0
    scales = np.abs(w).max(axis=(1, 2, 3)) / 127
    w = (np.round(w / scales[:, None, None, None]) * scales[:, None, None, None]).astype(np.float32)
    enc = Encoding(sparse=True, int8=True, scales=tuple(scales.tolist()), channel_axis=0)
    got, record = round_trip(w, enc)
    np.testing.assert_array_equal(got, w)
    assert record.values == "int8" and record.value_bits == 8


def test_sparse_large_tensor_picks_csr_and_beats_dense():
    w, enc = layer(np.random.default_rng(2), (300, 400), 0.92, 5, False)
    got, record = round_trip(w, dataclasses.replace(enc, huffman=True))
    np.testing.assert_array_equal(got, w)
    assert record.positions == "csr" and record.nbytes < w.size * 5 / 8 * 0.35


def test_dense_float_is_raw_bytes():
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    got, record = round_trip(w, DENSE)
    assert record.nbytes == w.nbytes and (record.values, record.positions) == ("raw", "dense")
    np.testing.assert_array_equal(got, w)


def test_value_outside_codebook_is_refused():
    with pytest.raises(ValueError, match="not in its codebook"):
        encode("w", np.array([0.5], np.float32), Encoding(codebook=(0.0, 1.0)))


@pytest.mark.parametrize("sparsity", [0.5, 0.92, 0.999])
@pytest.mark.parametrize("codebook_bits, int8", [(5, True), (0, True), (0, False)])
def test_csr_size_estimate_equals_the_built_layout(sparsity, codebook_bits, int8):
    """encode() sizes CSR layouts from the zero runs without building them: the estimate must
    be the built layout's, at every index width (or the choice of layout would drift)."""
    from dlcc.formats import encodings, sparse

    w, enc = layer(np.random.default_rng(5), (300, 200), sparsity, codebook_bits, int8)
    enc = dataclasses.replace(enc, huffman=True)
    values = encodings._value_symbols("w", w, enc, False)
    base = encodings.TensorRecord("w", "float32", w.shape, values.kind, value_bits=values.bits)
    mask = values.symbols != values.zero
    runs = sparse.zero_runs(mask)
    nonzero = values.symbols[mask] if values.bits <= 16 else None
    for bits in range(sparse.MIN_INDEX_BITS, sparse.MAX_INDEX_BITS + 1):
        built = encodings._csr_positions(base, values, mask, bits)
        estimate = encodings._csr_size(values, runs, nonzero, bits, True)
        assert estimate == (None if built is None else built.size(True))


@pytest.mark.parametrize("axis", [0, 1, 3])
def test_dense_per_channel_int8_round_trip(axis):
    """Dense per-channel int8 broadcasts the scales along the channel axis."""
    w = np.random.default_rng(6).standard_normal((3, 4, 2, 5)).astype(np.float32)
    scales = np.abs(w).max(axis=tuple(a for a in range(4) if a != axis)) / 127
    view = [1, 1, 1, 1]
    view[axis] = -1
    w = (np.round(w / scales.reshape(view)) * scales.reshape(view)).astype(np.float32)
    enc = Encoding(int8=True, scales=tuple(scales.tolist()), channel_axis=axis)
    got, record = round_trip(w, enc)
    np.testing.assert_array_equal(got, w)
    assert record.positions == "dense"


def test_huffman_streams_of_many_tensors():
    """Tensors with Huffman-coded streams laid out in one DATA decode to what was encoded; a
    malformed stream among them is named by its tensor and role."""
    from dlcc.errors import BundleFormatError

    rng = np.random.default_rng(7)
    shapes = [(120, 100), (7,), (30, 40, 3, 3), (200, 50), (0, 3)]
    layers = [layer(rng, shape, 0.9, 5, False) for shape in shapes]
    layers.append(layer(rng, (60, 60), 0.0, 0, True))
    data, records = b"", []
    for k, (w, enc) in enumerate(layers):
        record, blobs = encode(f"w{k}", w, dataclasses.replace(enc, huffman=True))
        spans = []
        for role, coding, blob in blobs:
            spans.append((role, coding, len(data), len(blob)))
            data += bytes(blob)
        records.append(dataclasses.replace(record, blobs=tuple(spans)))
    assert sum(coding == "huffman" for r in records for _, coding, _, _ in r.blobs) >= 4
    for record, (w, _) in zip(records, layers):
        np.testing.assert_array_equal(decode(record, data), w)
    k, record = next((k, r) for k, r in enumerate(records) if r.positions == "csr")
    j, (role, coding, offset, length) = next(
        (j, b) for j, b in enumerate(record.blobs) if b[1] == "huffman"
    )
    blobs = list(record.blobs)
    blobs[j] = (role, coding, offset, length - 1)
    records[k] = dataclasses.replace(record, blobs=tuple(blobs))
    with pytest.raises(BundleFormatError, match=f"tensor 'w{k}': {role}: .*Huffman stream"):
        decode(records[k], data)
