"""`vpr fetch` against a real HTTP server on 127.0.0.1: a good file, a wrong checksum, a truncated body, a
connection dropped mid-body (and a server that recovers), archives, and the instruction for a person."""

from __future__ import annotations

import hashlib
import io
import os
import resource
import socket
import stat
import subprocess
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from vprtest import VPR, run_vpr

BODY = bytes(range(256)) * 4096          # 1 MiB
SHA = hashlib.sha256(BODY).hexdigest()   # independent of vpr: the digest of the bytes served


class Handler(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}
    together = threading.Barrier(2)

    def log_message(self, *args):   # keep the test output clean
        pass

    def do_GET(self):
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        if self.path == "/missing":
            self.send_error(404)
            return
        if self.path == "/forbidden":
            self.send_error(403)
            return
        if self.path == "/unavailable":
            self.send_error(503)
            return
        if self.path == "/loop":                # a redirect to itself: urllib gives up after a few
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path in ("/together-a", "/together-b"):   # two bodies, each sent half before the other
            body = BODY if self.path.endswith("a") else BODY[::-1]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            Handler.together.wait(timeout=30)   # both downloads are now half-written at once
            self.wfile.write(body[len(body) // 2:])
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        if self.path == "/good" or (self.path == "/flaky" and Handler.hits[self.path] >= 3):
            self.wfile.write(BODY)
        elif self.path == "/truncated":        # Content-Length announces more than is sent, then EOF
            self.wfile.write(BODY[: len(BODY) // 3])
        elif self.path in ("/drop", "/flaky"):  # the connection is reset in the middle of the body
            self.wfile.write(BODY[: len(BODY) // 2])
            self.wfile.flush()
            linger_zero = b"\x01\x00\x00\x00\x00\x00\x00\x00"   # close() sends a reset
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
        self.close_connection = True


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def fetch(*args, **kwargs):
    return run_vpr("fetch", "--backoff", "0.05", *args, check=False, **kwargs)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_good_download_is_the_served_bytes(server, tmp_path):
    out = tmp_path / "sub dir" / "ø model.pth"
    proc = fetch("--url", f"{server}/good", "--out", out, "--sha256", SHA.upper())
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == BODY
    assert leftovers(out.parent) == [out.name]


def test_a_wrong_checksum_leaves_nothing_and_is_not_retried(server, tmp_path):
    out = tmp_path / "model.pth"
    Handler.hits.pop("/good", None)
    proc = fetch("--url", f"{server}/good", "--out", out, "--sha256", "0" * 64)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "checksum mismatch" in lines[0] and f"{server}/good" in lines[0]
    assert str(out) in lines[0] and SHA in lines[0]
    assert leftovers(tmp_path) == [] and Handler.hits["/good"] == 1


@pytest.mark.parametrize("path, words", [("/truncated", "truncated"), ("/drop", "")])
def test_a_short_body_is_retried_then_one_error_and_nothing_left(server, tmp_path, path, words):
    out = tmp_path / "archive.tar.gz"
    Handler.hits.pop(path, None)
    proc = fetch("--url", f"{server}{path}", "--out", out, "--attempts", "3")
    assert proc.returncode == 2, proc.stderr
    error = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and f"{server}{path}" in error[0] and str(out) in error[0]
    assert "after 3 attempts" in error[0] and words in error[0]
    assert "Traceback" not in proc.stderr
    assert Handler.hits[path] == 3                  # every attempt reached the server
    assert leftovers(tmp_path) == []


def test_a_connection_that_recovers_gives_the_whole_file(server, tmp_path):
    out = tmp_path / "model.pth"
    Handler.hits.pop("/flaky", None)
    proc = fetch("--url", f"{server}/flaky", "--out", out, "--sha256", SHA)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == BODY and Handler.hits["/flaky"] == 3
    assert proc.stderr.count("retrying") == 2


def test_an_existing_target_is_kept_when_the_download_fails(server, tmp_path):
    out = tmp_path / "model.pth"
    out.write_bytes(b"old")
    proc = fetch("--url", f"{server}/missing", "--out", out)
    assert proc.returncode == 2 and "HTTP 404" in proc.stderr
    assert out.read_bytes() == b"old" and leftovers(tmp_path) == ["model.pth"]


def test_an_unreachable_server_is_one_error(tmp_path):
    with socket.socket() as s:        # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "x.bin"
    proc = fetch("--url", f"http://127.0.0.1:{port}/x", "--out", out, "--attempts", "2")
    assert proc.returncode == 2 and "after 2 attempts" in proc.stderr and "Traceback" not in proc.stderr
    assert leftovers(tmp_path) == []


def test_an_archive_member_is_found_by_its_file_name(tmp_path):
    archive = tmp_path / "specs.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, data in (("datasets/pitts30k_train.mat", b"train"), ("datasets/tokyo247.mat", b"tokyo")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out = tmp_path / "raw" / "tokyo247.mat"
    proc = fetch("--archive", archive, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == b"tokyo"
    missing = tmp_path / "raw" / "pitts250k_test.mat"
    proc = fetch("--archive", archive, "--out", missing)
    assert proc.returncode == 2 and "no member named pitts250k_test.mat" in proc.stderr
    assert not missing.exists()
    before = archive.read_bytes()
    proc = fetch("--archive", archive, "--member", "tokyo247.mat", "--out", archive)
    assert proc.returncode == 2 and "is the archive itself" in proc.stderr and archive.read_bytes() == before
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(archive.read_bytes()[:100])
    proc = fetch("--archive", corrupt, "--out", tmp_path / "raw" / "x.mat")
    assert proc.returncode == 2 and str(corrupt) in proc.stderr and "Traceback" not in proc.stderr
    assert leftovers(tmp_path / "raw") == ["tokyo247.mat"]


def test_a_file_for_a_person_is_one_instruction(tmp_path):
    out = tmp_path / "pretrained" / "trunk.pth"
    proc = fetch("--manual", "--out", out, "--what", "the MatConvNet VGG16 weights",
                 "--page", "https://example.org/page")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (f"vpr fetch: error: {out} is missing: put the MatConvNet VGG16 weights "
                                   "there (get it from https://example.org/page)")
    assert not out.parent.exists()


def one_error_line(proc):
    """The one line of a failed `vpr fetch`: nothing else on stderr (no retry warnings, no traceback)."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vpr fetch: error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("path, words", [("/forbidden", "HTTP 403"), ("/missing", "HTTP 404"),
                                         ("/loop", "HTTP 302")])
def test_a_client_error_or_a_redirect_loop_is_one_line_and_not_retried(server, tmp_path, path, words):
    Handler.hits.pop(path, None)
    line = one_error_line(fetch("--url", f"{server}{path}", "--out", tmp_path / "x.bin"))
    assert words in line and f"{server}{path}" in line and str(tmp_path / "x.bin") in line
    if path == "/loop":
        assert "redirect" in line and Handler.hits[path] > 1   # urllib followed it, then gave up
    else:
        assert Handler.hits[path] == 1
    assert leftovers(tmp_path) == []


def test_a_server_error_is_retried(server, tmp_path):
    Handler.hits.pop("/unavailable", None)
    proc = fetch("--url", f"{server}/unavailable", "--out", tmp_path / "x.bin", "--attempts", "2")
    assert proc.returncode == 2 and "after 2 attempts" in proc.stderr and "HTTP 503" in proc.stderr
    assert Handler.hits["/unavailable"] == 2 and proc.stderr.count("retrying") == 1


def test_a_full_disk_is_one_line_and_not_retried(server, tmp_path):
    """The file-size limit (ulimit -f) makes the write fail with EFBIG, as a full disk fails with ENOSPC:
    the local disk, which another attempt would meet again."""
    out = tmp_path / "model.pth"
    Handler.hits.pop("/good", None)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

    proc = subprocess.run([*VPR, "fetch", "--backoff", "0.05", "--url", f"{server}/good", "--out", str(out)],
                          capture_output=True, text=True, preexec_fn=limit, env=os.environ)
    line = one_error_line(proc)
    assert "File too large" in line and str(out) in line and f"{server}/good" in line
    assert Handler.hits["/good"] == 1 and leftovers(tmp_path) == []


def test_a_local_url_that_is_a_directory_or_missing_is_one_line(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    missing = (tmp_path / "nothing").as_uri()
    for url, words in ((folder.as_uri(), "Is a directory"), (missing, "No such file")):
        line = one_error_line(fetch("--url", url, "--out", tmp_path / "x.bin"))
        assert words in line and url in line
    assert leftovers(tmp_path) == ["folder"]


def _zip_with_link(path, member, target):
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo(member)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16   # how zip -y stores a symbolic link
        zf.writestr(info, target)


def _tar_with_link(path, member, target, kind):
    with tarfile.open(path, "w") as tf:
        data = b"the real file"
        info = tarfile.TarInfo("datasets/real.mat")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(member)
        link.type, link.linkname = kind, target
        tf.addfile(link)


@pytest.mark.parametrize("kind", ["zip symlink", "tar symlink", "tar hardlink"])
def test_a_member_that_is_a_link_is_refused(tmp_path, kind):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the data set")
    archive = tmp_path / ("links.zip" if kind.startswith("zip") else "links.tar")
    if kind == "zip symlink":
        _zip_with_link(archive, "datasets/tokyo247.mat", str(secret))
    elif kind == "tar symlink":
        _tar_with_link(archive, "datasets/tokyo247.mat", str(secret), tarfile.SYMTYPE)
    else:
        _tar_with_link(archive, "datasets/tokyo247.mat", "datasets/real.mat", tarfile.LNKTYPE)
    out = tmp_path / "raw" / "tokyo247.mat"
    line = one_error_line(fetch("--archive", archive, "--out", out))
    assert str(archive) in line and "datasets/tokyo247.mat" in line
    assert "links in archives are refused" in line
    assert ("hard link" if kind == "tar hardlink" else "symbolic link") in line
    assert not out.exists() and not out.parent.exists()


@pytest.mark.parametrize("content", [b"", b"\x8b\x1f garbage " * 300, b"PK\x03\x04 broken zip"])
def test_a_garbage_or_empty_archive_is_one_line(tmp_path, content):
    archive = tmp_path / "specs.tar.gz"
    archive.write_bytes(content)
    line = one_error_line(fetch("--archive", archive, "--out", tmp_path / "raw" / "x.mat"))
    assert str(archive) in line and "delete it to download it again" in line
    assert ("empty file" if not content else "not a readable tar or zip archive") in line
    assert leftovers(tmp_path) == ["specs.tar.gz"]


def test_two_writers_of_one_file_at_once_leave_one_whole_file(server, tmp_path):
    """Two `vpr fetch` to the same path, each half-way through its download while the other is: both
    finish, and the file is one of the two bodies whole (the later rename wins), no temporary left."""
    out = tmp_path / "model.pth"
    Handler.together.reset()
    procs = [subprocess.Popen([*VPR, "fetch", "--url", f"{server}/together-{x}", "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for x in "ab"]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert out.read_bytes() in (BODY, BODY[::-1])
    assert leftovers(tmp_path) == ["model.pth"]
