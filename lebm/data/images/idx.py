"""Parse the IDX binary format used by the original MNIST files.

Layout (all integers big-endian): two zero bytes, one type byte, one byte with the number of
dimensions ``d``, then ``d`` unsigned 32-bit sizes, then the values in C order.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from lebm.data.errors import DataError, unreadable_file_error

#: IDX type byte -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one IDX file.

    Args:
        raw: the whole (already decompressed) file content.
        source: name used in error messages.

    Returns:
        Array with the shape stored in the header, e.g. (N, 28, 28) uint8 for MNIST images
        or (N,) uint8 for labels.

    Raises:
        ValueError: bad magic number, unknown type byte or a size that does not match the header.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{source}: not an IDX file (magic number must start with two zero bytes)")
    type_code, n_dims = raw[2], raw[3]
    if type_code not in IDX_DTYPES:
        raise ValueError(f"{source}: unknown IDX type byte 0x{type_code:02x}")
    header_end = 4 + 4 * n_dims
    if len(raw) < header_end:
        raise ValueError(f"{source}: truncated IDX header")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=n_dims, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_end != expected_bytes:
        raise ValueError(
            f"{source}: header says shape {shape} ({expected_bytes} bytes of data) "
            f"but the file holds {len(raw) - header_end} bytes after the header"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=True)


def read_idx_file(path: Path | str) -> np.ndarray:
    """Read an IDX file, transparently decompressing it when the name ends in ``.gz``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise unreadable_file_error(path, error) from None
    try:
        return parse_idx(raw, source=str(path))
    except ValueError as error:  # a header or size that is not IDX's: the message names the file
        raise DataError(f"{error}; copy or download the file again") from None
