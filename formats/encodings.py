"""Weight encodings: how a tensor's values become the byte blobs of a TensorRecord, and back.

Only `dense` exists so far (raw little-endian values); the compression passes add more.
Decoding checks every length against the record before it touches the bytes.
"""

from __future__ import annotations

import numpy as np

from dlcc.errors import BundleFormatError
from dlcc.formats.bundle import TensorRecord


def encode(
    name: str, array: np.ndarray, encoding: str = "dense"
) -> tuple[TensorRecord, list[bytes]]:
    """A record (without offsets) and the payload blobs of `array` in `encoding`."""
    if encoding != "dense":
        raise ValueError(f"unknown encoding {encoding!r}")
    array = np.ascontiguousarray(array)
    record = TensorRecord(name, str(array.dtype), tuple(array.shape), "dense")
    return record, [array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()]


def decode(record: TensorRecord, data: bytes) -> np.ndarray:
    """The values of `record`, read from the DATA section `data`."""
    count = int(np.prod(record.shape, dtype=np.int64))
    dtype = np.dtype(record.dtype).newbyteorder("<")
    if record.encoding != "dense" or len(record.blobs) != 1:
        raise BundleFormatError(
            f"section TENSORS: tensor {record.name!r}: cannot decode encoding {record.encoding!r} "
            f"with {len(record.blobs)} blobs"
        )
    offset, length = record.blobs[0]
    if length != count * dtype.itemsize:
        raise BundleFormatError(
            f"section TENSORS: tensor {record.name!r}: {length} bytes for "
            f"{count} {record.dtype} values"
        )
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(record.shape)
