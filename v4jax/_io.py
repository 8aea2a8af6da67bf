"""File helpers shared by every reader and writer: atomic writes, content hashes, HDF5 opening."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A reader never sees a half-written file: an interrupted writer leaves ``path`` as it was
    (absent or the previous version) and the temporary file is removed.

    Example:
      >>> with atomic_path("results.h5") as tmp:
      ...     write_results(tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    os.close(handle)
    temporary_path = Path(temporary)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary_path, 0o666 & ~umask)
    try:
        yield temporary_path
        os.replace(temporary_path, target)
    finally:
        if temporary_path.exists():
            temporary_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename)."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_hdf5(path: str | os.PathLike, what: str, advice: str = "") -> h5py.File:
    """Open an HDF5 file for reading; a truncated or non-HDF5 file raises one clear ValueError.

    The message reads ``"{path} is not a readable {what} ({h5py's reason}); {advice}"`` (or
    ends after the reason when ``advice`` is empty), never h5py's bare ``OSError``.

    Example:
      >>> with open_hdf5("results.h5", "HDF5 results file") as handle:
      ...     ...
    """
    try:
        return h5py.File(path, "r")
    except OSError as error:
        ending = f"; {advice}" if advice else "."
        raise ValueError(f"{path} is not a readable {what} ({error}){ending}") from None
