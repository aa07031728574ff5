"""Outputs never overwrite inputs, file-system failures are one line with nothing left, artifacts follow
the umask, temporaries are cleaned after a crash or a signal, nonsense numbers are refused at parse time.

Real `vpr` commands (in process where only the argument and path checks run, in subprocesses otherwise),
real file systems (a full tmpfs and a read-only bind mount in a private mount namespace, a real
RLIMIT_FSIZE) and real signals.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import resource
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import torch
from vprtest import VPR, run_vpr

from vpr.cli import main
from vpr.models import ModelConfig, build_model, save_model

SIZE = ["--image-size", "64", "96"]
ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ": error:" in line]


@pytest.fixture(scope="module")
def arts(tiny_data, tmp_path_factory):
    """A small model, a features file of the tiny test split, its recall CSV and rankings."""
    d = tmp_path_factory.mktemp("io_arts")
    torch.manual_seed(0)
    model = d / "model.pth"
    save_model(model, build_model(ModelConfig(backbone="small", image_size=(64, 96))).eval(),
               epoch=0, recall={"1": 0.5, "5": 0.75})   # what `vpr select` reads
    features = d / "features.h5"
    run_vpr("extract", "--checkpoint", model, "--index", tiny_data["test"], "--out", features,
            "--workers", "0", "--precision", "fp32")
    run_vpr("evaluate", "--index", tiny_data["test"], "--features", features, "--out", d / "recall.csv")
    return {"model": model, "features": features, "recall": d / "recall.csv",
            "rankings": d / "recall_rankings.h5", "index": tiny_data["test"], "data": tiny_data}


# --- 1. an output equal to an input is refused before any work ---------------------------------------

def _cases(a: dict, tmp: Path) -> dict[str, tuple[list, Path]]:
    """Per command: (arguments with the placeholder OUT, the input OUT stands for), on copies in tmp."""
    def copy(src, name=None):
        dst = tmp / (name or Path(src).name)
        shutil.copyfile(src, dst)
        return dst

    raw = a["data"]["pitts_raw"]
    index, features, model = copy(a["index"]), copy(a["features"]), copy(a["model"])
    recall, rankings = copy(a["recall"]), copy(a["rankings"])
    mat = copy(raw / "pitts30k_test.mat")
    image = copy(next((a["data"]["data"] / "pitts").rglob("*.jpg")), "picture.h5")  # PIL reads by content
    log = tmp / "log.csv"
    log.write_text("epoch,loss,r1,r5\n0,1.0,0.5,0.6\n")
    return {
        "index": (["index", "--format", "pitts", "--mat", mat, "--root", raw, "--out", "OUT"], mat),
        "cluster": (["cluster", "--index", index, "--out", "OUT"], index),
        "select": (["select", "--checkpoints", model, "--out", "OUT"], model),
        "extract": (["extract", "--checkpoint", model, "--index", index, "--out", "OUT"], index),
        "fit-pca": (["fit-pca", "--features", features, "--out", "OUT"], features),
        "evaluate": (["evaluate", "--index", index, "--features", features, "--out", "OUT"], features),
        "evaluate-rankings": (["evaluate", "--index", index, "--features", features,
                               "--out", tmp / "r.csv", "--rankings", "OUT"], features),
        "describe": (["describe", image, "--checkpoint", model, "--out", "OUT"], image),
        "table": (["table", "--recall", "netvlad", "pitts30k", recall, "--out-md", "OUT",
                   "--out-csv", tmp / "t.csv"], recall),
        "plot-recall": (["plot", "recall", "--recall", "netvlad", recall, "--out", "OUT"], recall),
        "plot-training": (["plot", "training", "--log", "g0", log, "--out", "OUT"], log),
        "plot-examples": (["plot", "examples", "--index", index, "--rankings", rankings, "--out", "OUT"],
                          rankings),
        "pairs": (["pairs", "--rankings", rankings, "--index", index, "--top-k", "2", "--out", "OUT"],
                  rankings),
        "selection": (["selection", "--method", "netvlad", "--training-log", log, "--recall", "0", "0",
                       "pitts30k", recall, "--selected", model, "--out-csv", "OUT",
                       "--out-md", tmp / "s.md", "--out-plot", tmp / "s.png"], recall),
        "train": (["train", "--train-index", index, "--val-index", index, "--centers", "OUT",
                   "--out", "OUT"], index),
    }


CASES = ["index", "cluster", "select", "extract", "fit-pca", "evaluate", "evaluate-rankings", "describe",
         "table", "plot-recall", "plot-training", "plot-examples", "pairs", "selection", "train"]


VIAS = ["same", "symlink", "dotdot", "hardlink"]


@pytest.mark.parametrize(("case", "via"), [(c, v) for c in CASES if c != "train" for v in VIAS]
                         + [("train", "same")])
def test_output_that_is_an_input_is_refused(arts, tmp_path, capsys, case, via):
    args, target = _cases(arts, tmp_path)[case]
    if case == "train":   # a file where the run directory should be
        args = [target if a == "OUT" else a for a in args]
        out = target
    else:
        out = {"same": target, "symlink": tmp_path / "link", "hardlink": tmp_path / "hard",
               "dotdot": tmp_path / "nowhere" / ".." / target.name}[via]
        if via == "symlink":
            out.symlink_to(target)
        elif via == "hardlink":
            os.link(target, out)
        args = [out if a == "OUT" else a for a in args]
    before = sha256(target)
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "Traceback" not in err
    assert str(out) in error_lines(err)[0]
    assert sha256(target) == before


def test_evaluate_default_rankings_path_that_is_an_input_is_refused(arts, tmp_path, capsys):
    features = tmp_path / "run_rankings.h5"   # evaluate --out run.csv would write run_rankings.h5
    shutil.copyfile(arts["features"], features)
    before = sha256(features)
    assert main(["evaluate", "--index", str(arts["index"]), "--features", str(features),
                 "--out", str(tmp_path / "run.csv")]) == 2
    assert "--rankings" in capsys.readouterr().err
    assert sha256(features) == before and not (tmp_path / "run.csv").exists()


def test_train_refuses_an_input_inside_its_run_directory_that_it_would_overwrite(arts, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    teacher = run / "last.pth"
    shutil.copyfile(arts["model"], teacher)
    before = sha256(teacher)
    args = ["train", "--train-index", str(arts["index"]), "--val-index", str(arts["index"]),
            "--centers", str(arts["features"]), "--method", "sfrs", "--generation", "1",
            "--teacher", str(teacher), "--out", str(run)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--teacher" in err and "would be overwritten" in err
    assert sha256(teacher) == before and sorted(p.name for p in run.iterdir()) == ["last.pth"]


def test_two_outputs_on_one_path_are_refused(arts, tmp_path, capsys):
    out = tmp_path / "t.txt"
    assert main(["table", "--recall", "netvlad", "pitts30k", str(arts["recall"]), "--out-md", str(out),
                 "--out-csv", str(out)]) == 2
    assert "its own path" in capsys.readouterr().err and not out.exists()


# --- 5. nonsense numbers are usage errors --------------------------------------------------------------

BAD_NUMBERS = [
    ["extract", "--checkpoint", "m", "--index", "i", "--out", "o", "--batch-size", "0"],
    ["extract", "--checkpoint", "m", "--index", "i", "--out", "o", "--workers", "-1"],
    ["describe", "x.png", "--checkpoint", "m", "--batch-size", "0"],
    ["cluster", "--index", "i", "--out", "o", "--images", "0"],
    ["cluster", "--index", "i", "--out", "o", "--per-image", "0"],
    ["cluster", "--index", "i", "--out", "o", "--iterations", "0"],
    ["cluster", "--index", "i", "--out", "o", "--num-clusters", "0"],
    ["cluster", "--index", "i", "--out", "o", "--workers", "-1"],
    ["cluster", "--index", "i", "--out", "o", "--image-size", "0", "96"],
    ["evaluate", "--index", "i", "--features", "f", "--out", "o", "--recall-at", "0"],
    ["evaluate", "--index", "i", "--features", "f", "--out", "o", "--rr-k1", "0"],
    ["evaluate", "--index", "i", "--features", "f", "--out", "o", "--rr-k2", "0"],
    ["evaluate", "--index", "i", "--features", "f", "--out", "o", "--rr-lambda", "1.5"],
    ["evaluate", "--index", "i", "--features", "f", "--out", "o", "--rr-max-items", "0"],
    ["fit-pca", "--features", "f", "--out", "o", "--dim", "0"],
    ["fit-pca", "--features", "f", "--out", "o", "--samples", "0"],
    ["fit-pca", "--features", "f", "--out", "o", "--seed", "-3"],
    ["index", "--format", "csv", "--csv", "c", "--root", "r", "--out", "o", "--eval-radius", "0"],
    ["index", "--format", "csv", "--csv", "c", "--root", "r", "--out", "o", "--train-pos-radius", "nan"],
    ["table", "--recall", "a", "b", "c", "--out-md", "m", "--out-csv", "c2", "--ns", "0"],
    ["plot", "examples", "--index", "i", "--rankings", "r", "--out", "o", "--top", "0"],
    ["synth", "--out", "d", "--seed", "-1"],
]


@pytest.mark.parametrize("argv", BAD_NUMBERS, ids=lambda a: f"{a[0]}{a[-2]}={a[-1]}")
def test_nonsense_numbers_are_one_usage_error(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    option = next(a for a in reversed(argv) if a.startswith("--"))
    assert err[-1].startswith(f"vpr {argv[0]}") and f": error: argument {option}" in err[-1]
    assert list(tmp_path.iterdir()) == []


# --- 2. the file system says no ------------------------------------------------------------------------

def _ns_supported() -> str | None:
    """None when a private mount namespace with a tmpfs works here, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare binary"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount in a private namespace: {probe.stderr.strip()}"


NS_SCRIPT = r"""
d=$1; mode=$2; shift 2
case $mode in
  full) mount -t tmpfs -o size=1m tmpfs "$d" || exit 99
        dd if=/dev/zero of="$d/fill" bs=4k 2>/dev/null ;;
  ro)   mount --bind "$d" "$d" && mount -o remount,bind,ro "$d" || exit 99 ;;
esac
"$@"; rc=$?
echo "LEFT: $(ls -A "$d" | tr '\n' ' ')"
exit $rc
"""


def run_in_namespace(directory: Path, mode: str, *args) -> subprocess.CompletedProcess:
    reason = _ns_supported()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", NS_SCRIPT, "sh", str(directory), mode,
                           *VPR, *map(str, args)], capture_output=True, text=True, env=ENV)
    assert proc.returncode != 99, proc.stderr
    return proc


def _fs_commands(a: dict, out_dir: Path) -> dict[str, tuple[list, Path]]:
    raw = a["data"]["pitts_raw"]
    return {
        "extract": (["extract", "--checkpoint", a["model"], "--index", a["index"], "--workers", "0",
                     "--precision", "fp32", "--out", out_dir / "f.h5"], out_dir / "f.h5"),
        "index": (["index", "--format", "pitts", "--mat", raw / "pitts30k_test.mat", "--root", raw,
                   "--out", out_dir / "i.h5"], out_dir / "i.h5"),
        "evaluate": (["evaluate", "--index", a["index"], "--features", a["features"],
                      "--out", out_dir / "r.csv"], out_dir / "r_rankings.h5"),
        "select": (["select", "--checkpoints", a["model"], "--out", out_dir / "best.pth"],
                   out_dir / "best.pth"),
        "describe": (["describe", next((a["data"]["data"] / "pitts").rglob("*.jpg")), "--checkpoint",
                      a["model"], "--out", out_dir / "d.npy"], out_dir / "d.npy"),
    }


def _assert_one_line_nothing_left(proc, target: Path, listing: list[str], allowed=("fill",)):
    err = proc.stderr
    assert proc.returncode == 2, err
    assert "Traceback" not in err and len(error_lines(err)) == 1, err
    assert str(target) in error_lines(err)[0], err
    assert [n for n in listing if n not in allowed] == [], listing


@pytest.mark.parametrize("command", ["extract", "index", "evaluate", "select", "describe"])
def test_full_disk_is_one_line_and_leaves_nothing(arts, tmp_path, command):
    out_dir = tmp_path / "full"
    out_dir.mkdir()
    args, target = _fs_commands(arts, out_dir)[command]
    proc = run_in_namespace(out_dir, "full", *args)
    listing = proc.stdout.split("LEFT:")[-1].split()
    _assert_one_line_nothing_left(proc, target, listing)
    assert "No space left on device" in error_lines(proc.stderr)[0]


@pytest.mark.slow
def test_torch_save_on_a_full_disk_is_one_line(arts, tmp_path):
    """`vpr train --init-only` writes initial.pth with torch.save, whose failure is a RuntimeError."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    centers = tmp_path / "centers.h5"
    run_vpr("cluster", "--index", arts["data"]["train"], "--out", centers, "--backbone", "small", *SIZE,
            "--num-clusters", "4", "--images", "4", "--per-image", "10", "--iterations", "2",
            "--workers", "0")
    proc = run_in_namespace(run_dir, "full", "train", "--init-only", "--train-index", arts["data"]["train"],
                            "--val-index", arts["data"]["val"], "--centers", centers, "--out", run_dir,
                            "--backbone", "small", *SIZE, "--num-clusters", "4", "--workers", "0")
    listing = proc.stdout.split("LEFT:")[-1].split()
    _assert_one_line_nothing_left(proc, run_dir / "initial.pth", listing)


@pytest.mark.parametrize("command", ["extract", "index", "select"])
def test_read_only_directory_is_refused_before_the_work(arts, tmp_path, command):
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    args, target = _fs_commands(arts, out_dir)[command]
    start = time.perf_counter()
    proc = run_in_namespace(out_dir, "ro", *args)
    listing = proc.stdout.split("LEFT:")[-1].split()
    _assert_one_line_nothing_left(proc, target, listing)
    assert "Read-only file system" in proc.stderr
    assert "precision" not in proc.stderr   # extract stopped before loading the model
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize("command", ["extract", "index", "evaluate", "select"])
def test_file_size_limit_is_one_line_and_leaves_nothing(arts, tmp_path, command):
    out_dir = tmp_path / "limited"
    out_dir.mkdir()
    args, target = _fs_commands(arts, out_dir)[command]

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run([*VPR, *map(str, args)], capture_output=True, text=True, env=ENV, preexec_fn=limit)
    _assert_one_line_nothing_left(proc, target, [p.name for p in out_dir.iterdir()], allowed=())
    assert "File too large" in error_lines(proc.stderr)[0]


def run_in_process(args, capsys) -> subprocess.CompletedProcess:
    """`vpr ARGS` in this process (the path checks and the error line are the same code as in a
    subprocess, without starting an interpreter); the result as a subprocess would give it."""
    args = [str(a) for a in args]
    capsys.readouterr()
    try:
        rc = main(args)
    except SystemExit as stop:   # a usage error of argparse
        rc = stop.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, captured.out, captured.err)


@pytest.mark.parametrize("command", ["extract", "index", "evaluate", "select"])
def test_parent_that_is_a_file_and_out_that_is_a_directory(arts, tmp_path, capsys, command):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    args, target = _fs_commands(arts, blocker)[command]
    proc = run_in_process(args, capsys)
    _assert_one_line_nothing_left(proc, blocker, [p.name for p in tmp_path.iterdir()], allowed=("blocker",))
    assert "not a directory" in proc.stderr and blocker.read_text() == "x"

    out_dir = tmp_path / "d"
    args, target = _fs_commands(arts, out_dir)[command]
    target.mkdir(parents=True)
    (target / "keep").write_text("k")
    proc = run_in_process(args, capsys)
    assert proc.returncode == 2 and "is a directory" in proc.stderr and "Traceback" not in proc.stderr
    assert [p.name for p in target.iterdir()] == ["keep"]


# --- 3. permissions follow the umask -------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_artifacts_follow_the_umask(arts, tmp_path, capsys, umask):
    """In process: the umask is this process's, read by the writer when it sets the file's mode."""
    args_index, index = _fs_commands(arts, tmp_path)["index"]
    args_select, best = _fs_commands(arts, tmp_path)["select"]
    previous = os.umask(umask)
    try:
        procs = [run_in_process(args, capsys) for args in (args_index, args_select)]
    finally:
        os.umask(previous)
    assert [proc.returncode for proc in procs] == [0, 0], [proc.stderr for proc in procs]
    for path in (index, best):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


# --- 4. temporaries: a dead writer's is removed, a signal leaves none ----------------------------------

def _stopped(proc) -> None:
    """Wait until a SIGSTOP sent to ``proc`` has taken effect."""
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        time.sleep(0.001)


def _stop_mid_write(args, out_dir: Path, attempts: int = 8):
    """Start `vpr ARGS`, SIGSTOP it once its temporary file has content (the write has begun, unlike
    the empty probe of the writability check); (process, temp) or skip."""
    for _ in range(attempts):
        proc = subprocess.Popen([*VPR, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=ENV)
        while proc.poll() is None:
            for temp in (out_dir / n for n in os.listdir(out_dir) if n.endswith(".tmp")):
                with contextlib.suppress(OSError):
                    if temp.stat().st_size > 0:
                        proc.send_signal(signal.SIGSTOP)
                        _stopped(proc)
                        if temp.exists():
                            return proc, temp
                        proc.send_signal(signal.SIGCONT)
        proc.communicate()
        for p in out_dir.iterdir():
            p.unlink()
    pytest.skip(f"did not catch the write of `vpr {args[0]}` in {attempts} attempts")


@pytest.mark.slow
def test_sigkill_mid_write_leaves_a_temporary_that_the_next_run_removes(arts, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args, target = _fs_commands(arts, out_dir)["extract"]
    proc, temp = _stop_mid_write(args, out_dir)
    proc.kill()
    proc.communicate()
    proc.wait()
    assert temp.exists() and not target.exists()
    # a live writer's temporary (locked) and another target's stay; the dead writer's goes
    live = out_dir / ".f.h5.0123456789ab.tmp"
    other = out_dir / ".f.h5.old.tmp"
    live.write_text("live")
    other.write_text("not ours")
    with open(live) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        run_vpr(*args)
        assert live.exists()
    assert not temp.exists() and target.exists() and other.exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["extract", "index"])
def test_sigterm_mid_write_exits_143_and_leaves_nothing(arts, tmp_path, command):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args, target = _fs_commands(arts, out_dir)[command]
    proc, temp = _stop_mid_write(args, out_dir)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == f"vpr {command}: terminated by signal {int(signal.SIGTERM)}"
    assert "Traceback" not in err and list(out_dir.iterdir()) == []


def test_sigterm_during_the_work_exits_143(arts, tmp_path):
    """SIGTERM while extracting (long before the write): 128 + 15, one line, no output."""
    out = tmp_path / "f.h5"
    # batches of one image: the tiny split's extraction must outlast the signal's way (it once finished first)
    proc = subprocess.Popen([*VPR, "extract", "--checkpoint", str(arts["model"]), "--index",
                             str(arts["index"]), "--out", str(out), "--workers", "2", "--batch-size", "1"],
                            stderr=subprocess.PIPE, text=True, env=ENV)
    lines = []
    for line in proc.stderr:   # the precision line is logged after the handlers are installed
        lines.append(line)
        if "precision" in line:
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.stderr.readlines()
    assert proc.wait(timeout=60) == 143, "".join(lines)
    assert lines[-1].strip() == "vpr extract: terminated by signal 15" and "Traceback" not in "".join(lines)
    assert list(tmp_path.iterdir()) == []


# --- 8. nothing is written through a symlink in an output directory -------------------------------------

def test_an_artifact_replaces_a_symlink_at_its_path_and_leaves_the_link_target_alone(tmp_path):
    from vpr.evaluation_files import recall_table, write_recall_csv
    from vpr.train.training_log import LOG_FIELDS, write_training_log

    victim = tmp_path / "victim.txt"
    victim.write_text("precious data\n")
    for name, write in (("log.csv", lambda p: write_training_log(p, [dict.fromkeys(LOG_FIELDS, 1)])),
                        ("recall.csv", lambda p: write_recall_csv(p, recall_table({1: 0.5}, 4)))):
        out = tmp_path / name
        out.symlink_to(victim)
        write(out)
        assert not out.is_symlink() and out.is_file() and out.read_text().startswith(("generation", "n,"))
        assert victim.read_text() == "precious data\n"


def test_a_temporary_replaced_by_a_symlink_is_neither_written_through_nor_renamed(tmp_path):
    from vpr.errors import VprError
    from vpr.io import atomic_output, open_temporary

    victim = tmp_path / "victim.txt"
    victim.write_text("precious data\n")
    out = tmp_path / "out" / "table.csv"

    def swap(tmp):   # another user of a shared directory puts a link in place of the temporary
        tmp.unlink()
        tmp.symlink_to(victim)

    with pytest.raises(VprError, match=rf"^{out}: cannot write \(Too many levels of symbolic links\)$"):
        with atomic_output(out) as tmp:
            swap(tmp)
            with open_temporary(tmp, "w") as f:
                f.write("x")
    with pytest.raises(VprError, match=rf"^{out}: cannot write \(its temporary file .* was replaced"):
        with atomic_output(out) as tmp:
            tmp.write_text("complete")
            swap(tmp)
    assert victim.read_text() == "precious data\n"
    assert list(out.parent.iterdir()) == []


def test_a_model_or_training_state_is_never_saved_through_a_link_swapped_in_for_its_temporary(
        tmp_path, monkeypatch):
    """torch.save writes to the temporary file opened without following links, not to its path."""
    import vpr.io
    import vpr.models.checkpoint
    import vpr.train.checkpointing
    from vpr.errors import VprError

    victim = tmp_path / "victim.txt"
    victim.write_text("precious data\n")

    def swapping_open(tmp, mode, **kwargs):   # another user puts a link in place of the temporary first
        Path(tmp).unlink()
        Path(tmp).symlink_to(victim)
        return vpr.io.open_temporary(tmp, mode, **kwargs)

    model = build_model(ModelConfig(backbone="small", image_size=(64, 96), num_clusters=2))
    cases = ((vpr.models.checkpoint, lambda p: save_model(p, model), tmp_path / "m" / "a.pth"),
             (vpr.train.checkpointing, lambda p: vpr.train.checkpointing.save_state(p, {}),
              tmp_path / "s" / "resume.pth"))
    for module, save, out in cases:
        monkeypatch.setattr(module, "open_temporary", swapping_open)
        with pytest.raises(VprError, match=rf"^{out}: cannot write \(Too many levels of symbolic links\)$"):
            save(out)
        assert victim.read_text() == "precious data\n" and list(out.parent.iterdir()) == []
