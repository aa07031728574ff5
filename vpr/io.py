"""File output that never leaves a half-written artifact, and the checks every command runs on its paths.

An artifact is written to a temporary file beside its target (``.NAME.<12 hex>.tmp``) and renamed onto the
target only when complete: a reader never sees a partial file, and a failure leaves nothing at the target.
The writer holds an exclusive ``flock`` on its temporary file while it writes, so the next write of the
same target can tell a dead writer's leftover (lock free: removed) from a live one (locked: left alone).
Files are created with mode 0666 and the kernel applies the umask (and any default ACL), exactly as for
any file the user writes. A failed write (full disk, file-size limit, read-only file system) is one
VprError naming the target and the reason.

In a shared directory nothing is written through a symlink: the temporary is created new (``O_EXCL |
O_NOFOLLOW``) and reopened only without following a link (:func:`open_temporary`), it must still be the
same plain file when renamed, and the rename replaces a symlink at the target instead of writing to where
it points.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import signal
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from vpr.errors import VprError

_TEMP_SUFFIX = ".tmp"
_TEMP_TOKEN_HEX = 6  # 12 hex digits of randomness in a temporary's name


def temporary_pattern(path: str | os.PathLike) -> re.Pattern:
    """The names of the temporaries of ``path`` (and of no other target) in its directory."""
    name = Path(path).name
    return re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{{2 * _TEMP_TOKEN_HEX}}}{re.escape(_TEMP_SUFFIX)}")


def _reason(err: BaseException) -> str:
    """A short reason for an OS-level failure: the errno text when there is one."""
    code = getattr(err, "errno", None)
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _create_temporary(path: Path) -> tuple[Path, int]:
    """Create and flock a new temporary file for ``path``; returns (its path, the locked descriptor)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(_TEMP_TOKEN_HEX)}{_TEMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Between create and lock, a concurrent stale-temporary sweep may have taken the file for a
            # dead writer's and removed it: then start again with a new name.
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return tmp, fd
        except (BlockingIOError, FileNotFoundError):
            pass
        os.close(fd)
    raise OSError(errno.EEXIST, f"could not create a temporary file beside {path}")


def make_temporary_dir(path: str | os.PathLike, tag: str) -> Path:
    """A new, empty directory beside ``path`` (``.NAME.<tag>-<random>``) to build a tree in before moving
    it onto ``path``; created 0777 minus the umask like any directory the user makes (mkdtemp: 0700)."""
    path = Path(path)
    for _ in range(100):
        directory = path.parent / f".{path.name}.{tag}-{secrets.token_hex(_TEMP_TOKEN_HEX)}"
        try:
            os.mkdir(directory, 0o777)
            return directory
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, f"could not create a temporary directory beside {path}")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` whose writer is gone (their flock is free); return them."""
    path = Path(path)
    pattern = temporary_pattern(path)
    removed = []
    try:
        candidates = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return removed
    for tmp in candidates:
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(tmp, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # locked by a live writer, or already gone
            pass
        finally:
            os.close(fd)
    return removed


def open_temporary(tmp: str | os.PathLike, mode: str, **kwargs):
    """``open(tmp, mode)`` for the temporary path yielded by :func:`atomic_output`, never following a
    symlink: should the temporary have been replaced by a link meanwhile, this is an OSError (ELOOP)
    instead of a write to wherever the link points."""
    return open(tmp, mode, opener=lambda name, flags: os.open(name, flags | os.O_NOFOLLOW, 0o666), **kwargs)


def _check_still_ours(path: Path, tmp: Path, fd: int) -> None:
    """Before the rename: ``tmp`` is still the plain file this writer created (not a link or another
    file put in its place in a shared directory), else a VprError naming the target."""
    mine, now = os.fstat(fd), os.stat(tmp, follow_symlinks=False)
    if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino) or not stat.S_ISREG(now.st_mode):
        raise VprError(f"{path}: cannot write (its temporary file {tmp.name} was replaced by another file "
                       "or a link while it was written)")


def _is_torch_write_failure(err: RuntimeError) -> bool:
    # torch.save to a path reports a failed write as e.g. "[enforce fail at inline_container.cc:672] .
    # unexpected pos 576 vs 534" or "PytorchStreamWriter failed writing file data/0: file write failed".
    text = str(err)
    return any(s in text for s in ("inline_container", "PytorchStreamWriter", "file write failed"))


def _write_error(path: Path, tmp: Path, err: BaseException) -> VprError:
    reason = _reason(err)
    if isinstance(err, RuntimeError):   # torch's message names no cause: find the likely one
        import resource

        reason = "the write failed"
        with contextlib.suppress(OSError):
            st = os.statvfs(path.parent)
            limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
            if st.f_bavail * st.f_frsize < (1 << 20):
                reason = os.strerror(errno.ENOSPC)
            elif limit != resource.RLIM_INFINITY and tmp.stat().st_size >= limit:
                reason = os.strerror(errno.EFBIG)
    return VprError(f"{path}: cannot write ({reason})")


_WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS}


def _foreign_os_error(err: OSError, paths: Iterable[Path]) -> bool:
    """True when an OSError is about another file (an input read inside the block), not the output."""
    names = {os.fspath(p) for p in paths}
    named = {os.fspath(f) for f in (err.filename, err.filename2) if f is not None}
    return bool(named) and not named & names and err.errno not in _WRITE_ERRNOS


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same directory so the final ``os.replace`` is atomic on POSIX file
    systems. Stale temporaries of ``path`` left by killed writers are removed first. An OSError (or
    torch.save's RuntimeError for a failed write) while writing or renaming becomes a VprError
    "<path>: cannot write (<reason>)"; the temporary file is removed on every failure, signals included.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        tmp, fd = _create_temporary(path)
    except OSError as err:
        raise VprError(f"{path}: cannot write ({_reason(err)})") from None
    committed = False
    try:
        try:
            yield tmp
            _check_still_ours(path, tmp, fd)
            os.replace(tmp, path)   # replaces a symlink at ``path`` itself, never what it points to
            committed = True
        except OSError as err:
            if _foreign_os_error(err, (tmp, path)):
                raise
            raise _write_error(path, tmp, err) from err
        except RuntimeError as err:
            if not _is_torch_write_failure(err):
                raise
            raise _write_error(path, tmp, err) from err
    finally:
        if not committed:
            with contextlib.suppress(OSError):
                tmp.unlink()
        os.close(fd)


# Termination signals that arrive while HDF5 calls back into Python are held until the HDF5 file is
# closed: an exception raised inside such a callback is printed and dropped by h5py ("Exception ignored"),
# and the command would go on as if no signal had come.
_hold_depth = 0
_held: list[int] = []


def hold_signal(signum: int) -> bool:
    """For a signal handler: True (and remember ``signum``) while signals are held, False otherwise."""
    if _hold_depth:
        _held.append(signum)
        return True
    return False


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Termination signals that arrive inside the block take effect (their handler raises) at its end."""
    global _hold_depth
    _hold_depth += 1
    try:
        yield
    finally:
        _hold_depth -= 1
        if not _hold_depth and _held:
            signum = _held[0]
            _held.clear()
            signal.raise_signal(signum)   # delivered again, now outside HDF5: its handler raises here


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, **kwargs) -> Iterator:
    """An ``h5py.File`` open for writing whose content lands at ``path`` atomically (see atomic_output).

    HDF5 writes through a Python file object here, never opening the file itself: a failed write then
    surfaces as a plain OSError (turned into one line by atomic_output), and HDF5's own file lock does not
    collide with the flock that marks the temporary file as in use. A termination signal during the
    block takes effect when the HDF5 file is closed, before the rename (nothing lands at ``path``).
    """
    import h5py  # here, not at the top: light commands (select, table) use vpr.io without HDF5

    with atomic_output(path) as tmp, signals_held(), open_temporary(tmp, "r+b") as raw, \
            h5py.File(raw, "w", **kwargs) as f:
        yield f


def sha256sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str | None, option: str) -> str:
    """The SHA-256 of ``path``; a VprError naming the file when ``expected`` (from ``option``) differs."""
    actual = sha256sum(path)
    if expected is not None and actual != expected.lower():
        raise VprError(f"{path}: SHA-256 {actual} differs from the {expected.lower()} expected ({option}): "
                       "not the file it should be; replace it")
    return actual


def open_h5(path: str | os.PathLike, what: str, made_by: str):
    """Open the HDF5 file ``path`` for reading (an ``h5py.File``, to use in a ``with`` block).

    A missing file or one HDF5 cannot open is a VprError naming the file, ``what`` it should be (e.g.
    "PCA file") and the command that ``made_by`` it.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise VprError(f"{path}: {what} not found (create it with '{made_by}')")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise VprError(f"{path}: not a readable HDF5 {what} ({err})") from None


# --- checks of a command's declared inputs and outputs, before it does any work ----------------------

def _inside(path: str, directory: str) -> bool:
    return path != directory and os.path.commonpath([path, directory]) == directory


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Same file by resolved path (symlinks, ``..``) or by identity (hard links)."""
    real_a, real_b = os.path.realpath(a), os.path.realpath(b)
    if real_a == real_b:
        return True
    try:
        return os.path.samefile(real_a, real_b)
    except OSError:  # one of them does not exist yet
        return False


def _check_writable_dir(target: Path, directory: Path) -> None:
    """Create ``directory`` (and parents) if missing and prove that ``target``'s temporary file can be
    created in it (a real create and remove: permissions, read-only mounts and ACLs all count)."""
    for ancestor in (directory, *directory.parents):
        if ancestor.exists() or ancestor.is_symlink():
            if not ancestor.is_dir():
                raise VprError(f"{target}: cannot write ({ancestor} is not a directory)")
            break
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp, fd = _create_temporary(directory / target.name)
        os.close(fd)
        tmp.unlink()
    except OSError as err:
        raise VprError(f"{target}: cannot write in {directory} ({_reason(err)})") from None


def require_file(path: str | os.PathLike, what: str = "file") -> None:
    """Refuse an input that is not a file with one line: a directory is named as such, not as missing."""
    if os.path.isdir(path):
        raise VprError(f"{path}: is a directory, expected a {what}")
    if not os.path.isfile(path):
        raise VprError(f"{path}: {what} not found")


def check_paths(inputs: list[tuple[str, Path]], outputs: list[tuple[str, Path]],
                output_dirs: list[tuple[str, Path, tuple[str, ...]]]) -> None:
    """Refuse, before any work, outputs that would overwrite an input or cannot be written.

    ``inputs`` and ``outputs`` are (option, path) pairs; ``output_dirs`` are (option, directory, the
    glob patterns of what the command writes inside it). Raises VprError naming the option and path.
    """
    import fnmatch

    existing_inputs = [(flag, p) for flag, p in inputs if p.exists()]
    seen: list[tuple[str, Path]] = []
    for flag, out in outputs:
        for in_flag, inp in existing_inputs:
            if _same_file(out, inp):
                raise VprError(f"{flag} {out}: is the input {in_flag} {inp}; choose another output path")
        for other_flag, other in seen:
            if _same_file(out, other):
                raise VprError(f"{flag} {out}: is also the output {other_flag}; "
                               "give each output its own path")
        seen.append((flag, out))
        if out.is_dir():
            raise VprError(f"{flag} {out}: is a directory; expected a file path")
    for flag, directory, writes in output_dirs:
        if directory.exists() and not directory.is_dir():
            raise VprError(f"{flag} {directory}: exists and is not a directory")
        real_dir = os.path.realpath(directory)
        for in_flag, inp in existing_inputs:
            real_in = os.path.realpath(inp)
            if real_in == real_dir:
                raise VprError(f"{flag} {directory}: is the input {in_flag} {inp}")
            if _inside(real_in, real_dir):
                rel = Path(os.path.relpath(real_in, real_dir)).as_posix()
                first = rel.split("/")[0]
                if any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(first, pat) for pat in writes):
                    raise VprError(f"{in_flag} {inp}: lies in the output directory {flag} {directory} and "
                                   "would be overwritten; copy it elsewhere first")
    for _, out in outputs:
        _check_writable_dir(out, out.parent)
    for _, directory, _ in output_dirs:
        _check_writable_dir(directory, directory if directory.is_dir() else directory.parent)
