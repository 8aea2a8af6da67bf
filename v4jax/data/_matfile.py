"""MATLAB v7.3 (HDF5) and v5 MAT-file writing, byte-compatible with the CRCNS vim-1 files.

The recipe follows ``shared/specs/vim1-format.md`` section 7: a 512-byte MATLAB userblock
header, one root dataset per variable stored as the MATLAB array transposed (MATLAB ``m x n``
is h5py ``(n, m)``), gzip level 3 chunking, and a fixed-length bytes ``MATLAB_class``
attribute on every dataset.
"""

from __future__ import annotations

import datetime
import os

import h5py
import numpy as np

USERBLOCK_SIZE = 512
HEADER_TEXT_BYTES = 116
GZIP_LEVEL = 3

MATLAB_CLASS = {
    np.dtype(np.float32): "single",
    np.dtype(np.float64): "double",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int32): "int32",
    np.dtype(np.uint16): "uint16",
}


def matlab_header() -> bytes:
    """The 512-byte userblock MATLAB writes at the start of a v7.3 MAT-file.

    116 bytes of descriptive text (space padded), an 8-byte zero subsystem offset, version
    bytes ``00 02``, the endian indicator ``IM``, then zeros up to byte 512.
    """
    created = datetime.datetime(2008, 3, 6, 12, 0, 0).strftime("%a %b %d %H:%M:%S %Y")
    text = (
        f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {created} HDF5 schema 1.00 ."
    ).encode("ascii")
    header = text.ljust(HEADER_TEXT_BYTES, b" ") + bytes(8) + b"\x00\x02" + b"IM"
    return header.ljust(USERBLOCK_SIZE, b"\x00")


def create_v73_file(path: str | os.PathLike) -> h5py.File:
    """Open a new HDF5 file with room for the MATLAB userblock (write it with ``stamp_header``)."""
    return h5py.File(path, "w", userblock_size=USERBLOCK_SIZE)


def stamp_header(path: str | os.PathLike) -> None:
    """Overwrite bytes 0-511 of a closed v7.3 file with the MATLAB header."""
    with open(path, "r+b") as handle:
        handle.seek(0)
        handle.write(matlab_header())


def create_matlab_dataset(
    group: h5py.Group,
    name: str,
    h5_shape: tuple[int, ...],
    dtype: np.dtype | type,
    *,
    chunk_columns: int | None = None,
    fill_value: float | None = None,
) -> h5py.Dataset:
    """Create a gzip-3 chunked dataset in h5py orientation (the MATLAB array transposed).

    Args:
      group: the open file (or group) to create the dataset in.
      name: MATLAB variable name.
      h5_shape: shape as h5py sees it, e.g. ``(n_images, n_voxels)`` for a MATLAB
        ``n_voxels x n_images`` matrix.
      dtype: one of the dtypes in ``MATLAB_CLASS``.
      chunk_columns: chunk width along the last axis (chunks span all other axes, which makes
        reading a block of voxel columns touch as few chunks as possible).
      fill_value: value of unwritten entries.
    """
    dtype = np.dtype(dtype)
    last = h5_shape[-1]
    width = max(1, min(last, chunk_columns or last))
    chunks = (*h5_shape[:-1], width)
    dataset = group.create_dataset(
        name,
        shape=h5_shape,
        dtype=dtype,
        chunks=chunks,
        compression="gzip",
        compression_opts=GZIP_LEVEL,
        fillvalue=fill_value,
    )
    dataset.attrs["MATLAB_class"] = np.bytes_(MATLAB_CLASS[dtype])
    return dataset


def write_matlab_array(group: h5py.Group, name: str, matlab_array: np.ndarray) -> h5py.Dataset:
    """Write a whole MATLAB array (in MATLAB orientation; 1-D vectors become columns)."""
    array = np.asarray(matlab_array)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    stored = np.ascontiguousarray(array.T)
    dataset = create_matlab_dataset(group, name, stored.shape, stored.dtype)
    dataset[...] = stored
    return dataset
