"""Atomic file output: a step either writes its whole artifact or leaves nothing behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vpr.errors import VprError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same directory so the final ``os.replace`` is atomic on POSIX file
    systems (a reader never sees a half-written file, and a crash leaves no file under the final name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def sha256sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def open_h5(path: str | os.PathLike, what: str, made_by: str):
    """Open the HDF5 file ``path`` for reading (an ``h5py.File``, to use in a ``with`` block).

    A missing file or one HDF5 cannot open is a VprError naming the file, ``what`` it should be (e.g.
    "PCA file") and the command that ``made_by`` it.
    """
    import h5py  # here, not at the top: light commands (select, table) use vpr.io without HDF5

    path = Path(path)
    if not path.is_file():
        raise VprError(f"{path}: {what} not found (create it with '{made_by}')")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise VprError(f"{path}: not a readable HDF5 {what} ({err})") from None
