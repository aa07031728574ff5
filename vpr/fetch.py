"""Getting the public input files: a download checked and written atomically, a member of an archive, and
the one-line instruction for a file only a person can get.

A download goes to a temporary file beside the target; the body must have the length the server announced
(Content-Length) and, when one is given, the SHA-256; only then is it renamed onto the target. Connection
errors, timeouts, server errors (5xx, and 429 "too many requests") and truncated bodies are retried with a
short backoff: they can heal. What another attempt would meet again is one error at once: a wrong checksum,
a client error (4xx), a redirect loop, a refused certificate, a ``file://`` URL that is missing or a
directory, and a failure to write the local file (a full disk, a quota, the file-size limit). On any
failure nothing is left at the target, and the error (one line) names the URL and the path.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import shutil
import socket
import ssl
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from vpr.errors import VprError
from vpr.io import atomic_output, open_temporary

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PROGRESS_STEP = 64 << 20   # a log line every 64 MiB of a long download
USER_AGENT = "vpr-fetch"


class _Retryable(Exception):
    """A failure that another attempt may not repeat (the connection, the server, a short body)."""


def _check_sha256(text: str | None) -> str | None:
    if text is None:
        return None
    digest = text.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise VprError(f"--sha256 {text!r}: expected 64 hexadecimal digits")
    return digest


# errnos of a network failure that another attempt may not meet (an OSError that is none of these, e.g. a
# certificate refused or a local file that is a directory, would fail the same way again)
_HEALABLE_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE,
                    errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.EAGAIN}


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _read_failure(err: BaseException, url: str, size: int) -> Exception:
    """The error for a failure on the reading side: _Retryable when it can heal, VprError when not."""
    local = urllib.parse.urlsplit(url).scheme == "file"
    if isinstance(err, urllib.error.HTTPError):
        if 300 <= err.code < 400:   # urllib follows redirects; one that reaches here loops or goes nowhere
            return VprError(f"HTTP {err.code}: {_one_line(err.reason)}")
        if err.code >= 500 or err.code == 429:
            return _Retryable(f"HTTP {err.code} {_one_line(err.reason)}")
        return VprError(f"HTTP {err.code} {_one_line(err.reason)}")
    if isinstance(err, urllib.error.URLError):
        if not isinstance(err.reason, BaseException):   # e.g. "unknown url type: ftp"
            return VprError(_one_line(err.reason))
        err = err.reason
    if isinstance(err, http.client.IncompleteRead):
        return _Retryable(f"connection closed after {size + len(err.partial)} bytes")
    text = _one_line(f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)
    if isinstance(err, OSError) and (local or isinstance(err, ssl.SSLCertVerificationError)):
        return VprError(_one_line(err.strerror or err))
    if isinstance(err, socket.gaierror):   # a name that does not resolve stays so; a busy resolver heals
        return (_Retryable if err.errno == socket.EAI_AGAIN else VprError)(text)
    healable = (TimeoutError, ConnectionError, http.client.HTTPException, ssl.SSLError)
    if isinstance(err, healable):
        return _Retryable(text)
    if isinstance(err, OSError) and err.errno in _HEALABLE_ERRNOS:
        return _Retryable(text)
    return VprError(text)


def _download_once(url: str, tmp: Path, timeout: float) -> tuple[int, str]:
    """Write the body of ``url`` into ``tmp``; returns (bytes, sha256). Raises _Retryable or VprError.

    A failure to write ``tmp`` (a full disk, a quota, the file-size limit) is a VprError: another attempt
    would meet the same disk."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.sha256()
    size = 0
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise _read_failure(err, url, size) from None
    with response:
        length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
        expected = int(length) if length and length.strip().isdigit() else None
        next_report = PROGRESS_STEP
        try:
            with open_temporary(tmp, "wb") as out:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as err:
                        raise _read_failure(err, url, size) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if size >= next_report:
                        total = f" of {expected >> 20}" if expected else ""
                        log.info("%s: %d%s MiB", url, size >> 20, total)
                        next_report += PROGRESS_STEP
        except OSError as err:   # writing the temporary file: the local disk, not the network
            raise VprError(f"cannot write ({err.strerror or err})") from None
    if expected is not None and size != expected:
        raise _Retryable(f"truncated: {size} of {expected} bytes received")
    return size, digest.hexdigest()


def download(url: str, out: str | os.PathLike, sha256: str | None = None, *, attempts: int = 4,
             backoff: float = 2.0, timeout: float = 60.0) -> int:
    """Download ``url`` to ``out`` atomically; returns the number of bytes. VprError naming both on failure.

    ``attempts`` tries in all, waiting ``backoff`` x 1, 2, 4, ... seconds between them.
    """
    out = Path(out)
    want = _check_sha256(sha256)
    if out.is_dir():
        raise VprError(f"{out}: is a directory (downloading {url})")
    for attempt in range(1, attempts + 1):
        try:
            with atomic_output(out) as tmp:
                size, got = _download_once(url, tmp, timeout)
                if want is not None and got != want:
                    raise VprError(f"checksum mismatch: sha256 {got}, expected {want} ({size} bytes)")
            return size
        except _Retryable as err:
            if attempt == attempts:
                raise VprError(f"downloading {url} to {out} failed after {attempts} attempts: {err}"
                               ) from None
            wait = backoff * 2 ** (attempt - 1)
            log.warning("attempt %d/%d: %s (%s); retrying in %.1f s", attempt, attempts, url, err, wait)
            time.sleep(wait)
        except VprError as err:
            raise VprError(f"downloading {url} to {out}: {err}") from None
        except OSError as err:   # the target's directory: not writable, a file where a folder should be
            raise VprError(f"downloading {url} to {out}: {err.strerror or err}") from None
    raise AssertionError("unreachable")


def extract_member(archive: str | os.PathLike, name: str, out: str | os.PathLike) -> int:
    """Copy the member of ``archive`` (tar, tar.gz, zip) whose file name is ``name`` to ``out`` atomically.

    The member is found by its base name wherever it lies in the archive (``datasets/pitts30k_train.mat``
    for ``pitts30k_train.mat``); none or several is an error, and so is a member that is a link (symbolic
    or hard, tar or zip): the file it stands for is not in the archive. Returns the number of bytes.
    """
    archive, out = Path(archive), Path(out)
    if not archive.is_file():
        raise VprError(f"{archive}: archive not found")
    if out.resolve() == archive.resolve():
        raise VprError(f"--out {out} is the archive itself: choose another path")
    if archive.stat().st_size == 0:
        raise VprError(f"{archive}: empty file, not a tar or zip archive; delete it to download it again")
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                found = [i for i in zf.infolist()
                         if not i.is_dir() and PurePosixPath(i.filename).name == name]
                _one(found, name, archive)
                if stat.S_ISLNK(found[0].external_attr >> 16):
                    target = zf.read(found[0]).decode("utf-8", "replace")
                    raise VprError(_link_refused(archive, found[0].filename, "a symbolic link", target))
                with zf.open(found[0]) as src, atomic_output(out) as tmp, open_temporary(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                    return dst.tell()
        with tarfile.open(archive) as tf:
            found = [m for m in tf.getmembers()
                     if (m.isfile() or m.issym() or m.islnk()) and PurePosixPath(m.name).name == name]
            _one(found, name, archive)
            if not found[0].isfile():
                kind = "a symbolic link" if found[0].issym() else "a hard link"
                raise VprError(_link_refused(archive, found[0].name, kind, found[0].linkname))
            src = tf.extractfile(found[0])
            with src, atomic_output(out) as tmp, open_temporary(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
                return dst.tell()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        # tarfile lists the error of every compression it tried, one per line: joined into one
        reason = " ".join(str(err).split()).replace(": - ", ": ").replace(" - method", "; method")
        raise VprError(f"{archive}: not a readable tar or zip archive ({reason}); delete it to download it "
                       "again") from None
    except OSError as err:
        raise VprError(f"extracting {name} from {archive} to {out}: {err.strerror or err}") from None


def _link_refused(archive: Path, member: str, kind: str, target: str) -> str:
    return (f"{archive}: member {member} is {kind} (to {' '.join(target.split())}), not a file: links in "
            "archives are refused")


def _one(found: list, name: str, archive: Path) -> None:
    if not found:
        raise VprError(f"{archive}: no member named {name}")
    if len(found) > 1:
        names = ", ".join(getattr(m, "name", None) or m.filename for m in found)
        raise VprError(f"{archive}: several members named {name} ({names})")


def manual_instruction(out: str | os.PathLike, what: str, page: str | None) -> str:
    """The one line telling a person what to put where, and where to get it."""
    where = f" (get it from {page})" if page else ""
    return f"{out} is missing: put {what} there{where}"
