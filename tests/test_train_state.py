"""The run directory of `vpr train`: a safe resume file, no stale result, one process at a time, and
training values that make sense.

Real `vpr train` processes on the tiny synthetic data (small backbone, small images, one or two steps per
chunk); the config checks run in-process and must fail before any file is opened.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import shutil
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
import torch
import yaml
from vprtest import VPR, run_vpr, without_progress

from vpr.errors import VprError
from vpr.models import load_model
from vpr.train.config import make_config
from vpr.yamlfile import load_yaml

SMALL = ["--backbone", "small", "--image-size", "96", "128"]
TRAIN = [*SMALL, "--num-clusters", "8", "--trainable-from", "full", "--neg-num", "3", "--neg-pool", "30",
         "--cache-size", "40", "--workers", "0", "--extract-batch-size", "16", "--lr", "0.01"]
OUTPUTS = ("last.pth", "model_best.pth", "log.csv")


@pytest.fixture(scope="module")
def centers(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("centers") / "centers.h5"
    run_vpr("cluster", "--index", tiny_data["train"], "--out", out, *SMALL, "--num-clusters", "8",
            "--images", "20", "--per-image", "20", "--iterations", "10", "--workers", "0")
    return out


def train_args(tiny_data, centers, out, *extra):
    return ["train", "--train-index", tiny_data["train"], "--val-index", tiny_data["val"],
            "--centers", centers, "--out", out, *TRAIN, *extra]


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = without_progress(proc.stderr).strip().splitlines()
    errors = [line for line in lines if line.startswith("vpr train: error: ")]
    # Besides the error, only the log's INFO lines (e.g. the precision chosen) and progress lines may appear.
    assert len(errors) == 1 and all(": INFO: " in line for line in lines if line not in errors), proc.stderr
    return errors[0]


def snapshot(run_dir) -> dict[str, bytes]:
    """Every file of the run directory by name (the lock file aside: it holds a pid, not a result)."""
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file() and p.name != "run.lock"}


# ---------------------------------------------------------------------------------------------- values

BAD_VALUES = [
    ("lr", float("nan")), ("lr", float("inf")), ("lr", 0.0), ("lr", -0.001),
    ("momentum", 1.0), ("momentum", -0.1),
    ("weight_decay", -0.001), ("weight_decay", float("nan")),
    ("gamma", -0.5), ("gamma", 0.0), ("gamma", 1.5),
    ("tau", 0.0), ("tau", -0.07),
    ("margin", -0.1),
    ("temperatures", [0.07, 0.0]), ("temperatures", [0.07, float("nan")]),
    ("soft_weight", -1.0), ("soft_weight", float("inf")),
    ("iters", -1), ("workers", -1), ("extract_batch_size", 0), ("print_freq", -1),
    ("rerank_lambda", 1.5), ("rerank_lambda", -0.1),
    ("image_size", [0, 128]), ("image_size", [96, -1]),
    ("num_clusters", 0), ("generation", -1), ("seed", -1), ("seed", 2**32),
    ("temperature", 0.05),           # a baseline (and SFRS generation 0) has no teacher to use it
]
# The edges of the valid ranges stay accepted.
EDGE_VALUES = [("momentum", 0.0), ("gamma", 1.0), ("margin", 0.0), ("soft_weight", 0.0), ("iters", 0),
               ("workers", 0), ("print_freq", 0), ("rerank_lambda", 0.0), ("rerank_lambda", 1.0),
               ("weight_decay", 0.0), ("extract_batch_size", 1), ("seed", 0), ("seed", 2**32 - 1)]


@pytest.mark.parametrize("source", ["flag", "yaml"])
@pytest.mark.parametrize("key, value", BAD_VALUES, ids=[f"{k}={v}" for k, v in BAD_VALUES])
def test_a_senseless_training_value_is_one_error_naming_the_key(tmp_path, source, key, value):
    if source == "yaml":
        path = tmp_path / "train.yaml"
        path.write_text(yaml.safe_dump({key: value}))    # NaN is written as YAML's .nan
        with pytest.raises(VprError, match=rf"^{re.escape(str(path))}: training config: {key}: "):
            make_config(path)
    else:
        with pytest.raises(VprError, match=rf"^training config: {key}: "):
            make_config(None, {key: value})


@pytest.mark.parametrize("key, value", EDGE_VALUES, ids=[f"{k}={v}" for k, v in EDGE_VALUES])
def test_the_edges_of_the_valid_ranges_are_accepted(key, value):
    assert getattr(make_config(None, {key: value}), key) == value


def test_the_old_option_name_is_accepted_and_says_the_new_one(tmp_path, caplog, capsys):
    from vpr.cli import build_parser

    path = tmp_path / "train.yaml"
    path.write_text("test_batch_size: 8\n")   # the old name of extract_batch_size
    assert make_config(path).extract_batch_size == 8
    assert f"{path}: test_batch_size is the old name of extract_batch_size" in caplog.text
    path.write_text("test_batch_size: 8\nextract_batch_size: 4\n")   # the old name of and the new one
    with pytest.raises(VprError, match="test_batch_size is the old name of extract_batch_size; give only"):
        make_config(path)
    parser = build_parser("train")
    old = ["--test-batch-size", "8"]   # the old name of --extract-batch-size
    assert parser.parse_args(["train", "--centers", "c.h5", "--out", "run", *old]).extract_batch_size == 8
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    assert "old name of --extract-batch-size" in capsys.readouterr().out


@pytest.mark.parametrize("key, value", BAD_VALUES[:6], ids=[f"{k}={v}" for k, v in BAD_VALUES[:6]])
def test_a_senseless_yaml_value_is_refused_even_when_a_flag_replaces_it(tmp_path, key, value):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({key: value}))
    good = dict(EDGE_VALUES)[key] if key in dict(EDGE_VALUES) else 0.5
    with pytest.raises(VprError, match=rf"^{re.escape(str(path))}: training config: {key}: "):
        make_config(path, {key: good})


def test_a_key_given_twice_in_the_yaml_file_is_refused(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lr: 0.001\nmomentum: 0.9\n# a later edit\nlr: 0.01\n")
    with pytest.raises(VprError) as e:
        make_config(path)
    assert str(e.value) == f"{path}: line 4, column 1: key 'lr' is given twice (lines 1 and 4); keep one"
    # the same key in two different mappings, and a merge key overridden, are not repeats
    path.write_text("a: {x: 1, y: 2}\nb: {x: 3}\nbase: &base {x: 4, y: 5}\nc:\n  <<: *base\n  x: 6\n")
    assert load_yaml(path) == {"a": {"x": 1, "y": 2}, "b": {"x": 3}, "base": {"x": 4, "y": 5},
                               "c": {"x": 6, "y": 5}}


@pytest.mark.parametrize("text, line, column", [("lr: [0.1\nmomentum: 0.9\n", 2, 9),
                                                ("lr: 0.1\n\tmomentum: 0.9\n", 2, 1),
                                                ("lr: 0.1\nmomentum: 'open\n", 3, 1)])
def test_a_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path, text, line, column):
    config = tmp_path / "train.yaml"
    config.write_text(text)
    missing = tmp_path / "no such index.h5"
    proc = run_vpr("train", "--train-index", missing, "--val-index", missing, "--centers", missing,
                   "--out", tmp_path / "run", "--config", config, "--lr", "0.5", check=False)
    assert one_line_error(proc).startswith(f"vpr train: error: {config}: line {line}, column {column}: "
                                           "not valid YAML (")
    assert not (tmp_path / "run").exists()


def test_yaml_dot_nan_is_refused_before_any_input_is_opened(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("lr: .nan\n")
    missing = tmp_path / "no such index.h5"
    proc = run_vpr("train", "--train-index", missing, "--val-index", missing, "--centers", missing,
                   "--out", tmp_path / "run", "--config", config, check=False)
    line = one_line_error(proc)
    assert "training config: lr: must be a finite number, got nan" in line
    proc = run_vpr("train", "--train-index", missing, "--val-index", missing, "--centers", missing,
                   "--out", tmp_path / "run", "--gamma", "-0.5", check=False)
    assert "training config: gamma: must be in (0, 1]" in one_line_error(proc)
    assert not (tmp_path / "run").exists()


def test_an_out_of_range_seed_is_refused_before_the_run_directory_is_touched(tiny_data, centers, tmp_path):
    out = tmp_path / "run"
    for seed in ("-1", str(2**32)):
        proc = run_vpr(*train_args(tiny_data, centers, out, "--epochs", "1", "--seed", seed), check=False)
        assert f"training config: seed: must be in [0, {2**32 - 1}]" in one_line_error(proc)
        assert not out.exists()      # no log.csv, no run.lock


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_error_and_saves_no_nan_weights(tiny_data, centers, tmp_path):
    out = tmp_path / "run"
    proc = run_vpr(*train_args(tiny_data, centers, out, "--epochs", "2", "--iters", "3", "--lr", "1e6"),
                   check=False)
    line = one_line_error(proc)
    assert "training diverged" in line and "epoch 0" in line, line
    # No model file of the diverged run; log.csv holds only the initial validation.
    assert not [p.name for p in out.glob("*.pth") if p.name != "resume.pth"]
    with open(out / "log.csv") as f:
        assert len(f.readlines()) == 2
    # Anything saved (no state is written before the first epoch ends) holds finite weights only.
    if (out / "resume.pth").exists():
        model = torch.load(out / "resume.pth", weights_only=True)["model"]
        assert all(bool(torch.isfinite(t).all()) for t in model.values() if t.is_floating_point())


# ---------------------------------------------------------------------------------------------- safety

class Payload:
    """Unpickling this creates ``marker``: the proof that a load executed code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_crafted_resume_file_runs_nothing_and_is_one_error(tiny_data, centers, tmp_path, zip_format):
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "owned"
    torch.save({"format": "vpr-train-state", "version": 1, "run": Payload(marker)}, out / "resume.pth",
               _use_new_zipfile_serialization=zip_format)
    line = one_line_error(run_vpr(*train_args(tiny_data, centers, out, "--epochs", "1"), check=False))
    assert str(out / "resume.pth") in line and "not a vpr training state" in line
    assert not marker.exists()
    assert sorted(p.name for p in out.iterdir()) == ["resume.pth", "run.lock"]   # nothing trained
    # The file is a working exploit: a full unpickling does create the marker.
    torch.load(out / "resume.pth", weights_only=False)
    assert marker.exists()


@pytest.mark.slow
def test_a_model_checkpoint_as_resume_file_is_one_error(tiny_data, centers, tmp_path):
    first = tmp_path / "first"
    run_vpr(*train_args(tiny_data, centers, first, "--epochs", "1", "--iters", "1"))
    out = tmp_path / "run"
    out.mkdir()
    shutil.copyfile(first / "last.pth", out / "resume.pth")
    proc = run_vpr(*train_args(tiny_data, centers, out, "--epochs", "1", "--iters", "1"), check=False)
    line = one_line_error(proc)
    assert str(out / "resume.pth") in line and "model checkpoint" in line


# ---------------------------------------------------------------------------------------------- staleness

@pytest.fixture(scope="module")
def finished(tiny_data, centers, tmp_path_factory):
    """A finished two-epoch run and a snapshot of its files."""
    out = tmp_path_factory.mktemp("finished") / "run"
    run_vpr(*train_args(tiny_data, centers, out, "--epochs", "2", "--iters", "2"))
    return out, snapshot(out)


def copy_run(finished, tmp_path):
    run_dir, files = finished
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy, files


@pytest.mark.slow
def test_a_finished_run_recreates_its_deleted_outputs_bit_for_bit(tiny_data, centers, finished, tmp_path):
    out, before = copy_run(finished, tmp_path)
    for name in OUTPUTS:
        (out / name).unlink()
    proc = run_vpr(*train_args(tiny_data, centers, out, "--epochs", "2", "--iters", "2"))
    assert "recreated last.pth, model_best.pth, log.csv" in proc.stdout
    assert snapshot(out) == before
    # With everything present there is nothing to do, and nothing changes.
    proc = run_vpr(*train_args(tiny_data, centers, out, "--epochs", "2", "--iters", "2"))
    assert "nothing to do" in proc.stdout and snapshot(out) == before


@pytest.mark.slow
def test_a_finished_run_whose_epoch_files_are_gone_is_refused_or_retrained(tiny_data, centers, finished,
                                                                           tmp_path):
    out, before = copy_run(finished, tmp_path)
    (out / "last.pth").unlink()
    (out / "checkpoint_e1.pth").unlink()
    args = train_args(tiny_data, centers, out, "--epochs", "2", "--iters", "2")
    line = one_line_error(run_vpr(*args, check=False))
    assert "last.pth is missing and so is checkpoint_e1.pth" in line and "--on-mismatch restart" in line
    proc = run_vpr(*args, "--on-mismatch", "restart")
    assert "training afresh" in proc.stdout
    # Retrained from scratch: the same files, and (seeded training) the same weights as the original run.
    assert snapshot(out).keys() == before.keys()
    new, old = load_model(out / "last.pth").state_dict(), load_model(finished[0] / "last.pth").state_dict()
    assert max(float((new[k] - old[k]).abs().max()) for k in new) <= 1e-6


def perturbed_centers(centers, path):
    shutil.copyfile(centers, path)
    with h5py.File(path, "r+") as f:
        c = f["centroids"][()]
        f["centroids"][...] = c + np.random.default_rng(0).normal(0, 0.05, c.shape).astype(c.dtype)
    return path


@pytest.mark.slow
def test_other_centers_are_refused_and_restart_retrains_with_nothing_stale(tiny_data, centers, finished,
                                                                           tmp_path):
    out, before = copy_run(finished, tmp_path)
    other = perturbed_centers(centers, tmp_path / "other centers.h5")
    args = train_args(tiny_data, other, out, "--epochs", "1", "--iters", "2")
    line = one_line_error(run_vpr(*args, check=False))
    assert "centers: file content changed" in line and "epochs: saved 2, now 1" in line
    assert "--on-mismatch restart" in line
    assert snapshot(out) == before                       # refused: nothing touched
    proc = run_vpr(*args, "--on-mismatch", "restart")
    assert "removed" in proc.stdout and "training afresh" in proc.stdout
    # The new run's files only: one epoch, so no checkpoint_e1.pth left from the old run.
    assert sorted(p.name for p in out.iterdir()) == sorted(["checkpoint_e0.pth", "log.csv", "last.pth",
                                                            "model_best.pth", "resume.pth", "run.lock"])
    # Retrained from the new centers: the NetVLAD centroids (trained, but only two steps) sit nearer the
    # new centers file than the old one, and the weights differ from the old run's.
    new = load_model(out / "last.pth").net_vlad.centroids.detach().numpy()
    with h5py.File(other) as f_new, h5py.File(centers) as f_old:
        c_new, c_old = f_new["centroids"][()], f_old["centroids"][()]
    assert np.abs(new - c_new).max() < np.abs(new - c_old).max()
    assert (out / "last.pth").read_bytes() != before["last.pth"]


@pytest.mark.slow
def test_a_run_directory_is_used_by_one_process_at_a_time(tiny_data, centers, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([*VPR, *map(str, train_args(tiny_data, centers, out, "--epochs", "20"))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = out / "run.lock"
        deadline = time.time() + 120
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.1)
        proc = run_vpr(*train_args(tiny_data, centers, out, "--epochs", "20"), check=False)
        assert first.poll() is None                       # the first was still at work all along
        line = one_line_error(proc)
        assert f"run directory {out} is in use by another vpr train (pid {first.pid})" in line
    finally:
        first.send_signal(signal.SIGTERM)
        rc = first.wait(timeout=120)
    assert rc in (-signal.SIGTERM, 128 + signal.SIGTERM)
    # The lock went with its process: the directory is free at once.
    with open(out / "run.lock") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_run_state_and_rng_states_survive_a_weights_only_round_trip(tmp_path):
    import random

    from vpr.train.checkpointing import RunState, rng_state, set_rng_state
    from vpr.train.mining import Tuple

    state = RunState(epoch=1, chunk=2, step=3, tuples=[Tuple(4, 5, (6, 7), (8,)), Tuple(9, 1, (2, 3))],
                     best_r5=0.5, best_epoch=0, history=[{"epoch": -1, "lr": float("nan")}],
                     loss_sum=1.25, loss_steps=3, mining_s=0.5)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.standard_normal()    # leave cached Gaussians in both states
    torch.save({"run": state.to_dict(), "rng": rng_state()}, tmp_path / "s.pth")
    expected = (random.random(), random.gauss(0, 1), np.random.standard_normal(3).tolist(),
                torch.rand(3).tolist())
    saved = torch.load(tmp_path / "s.pth", weights_only=True)
    back = RunState.from_dict(saved["run"])
    assert back.tuples == state.tuples and back.history[0]["epoch"] == -1
    assert math.isnan(back.history[0]["lr"])
    back.history = state.history = []
    assert back == state
    set_rng_state(saved["rng"])
    assert (random.random(), random.gauss(0, 1), np.random.standard_normal(3).tolist(),
            torch.rand(3).tolist()) == expected


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "hard link"])
def test_a_run_lock_planted_to_point_elsewhere_is_refused_and_never_written(tiny_data, centers, tmp_path,
                                                                            kind):
    """The issue's set-up: RUN/run.lock -> victim.txt (absolute link), then `vpr train --out RUN`."""
    victim = tmp_path / "victim.txt"
    out = tmp_path / "RUN"
    out.mkdir()
    lock = out / "run.lock"
    if kind == "dangling symlink":
        lock.symlink_to(victim)          # O_CREAT through the link would create the victim
    else:
        victim.write_text("precious data\n")
        lock.symlink_to(victim) if kind == "symlink" else os.link(victim, lock)
    proc = run_vpr(*train_args(tiny_data, centers, out, "--epochs", "1"), check=False)
    line = one_line_error(proc)
    assert f"{lock}: is a {'hard link' if kind == 'hard link' else 'symbolic link'}" in line
    if kind == "dangling symlink":
        assert not victim.exists() and not victim.is_symlink()
    else:
        assert victim.read_text() == "precious data\n"
    assert [p.name for p in out.iterdir()] == ["run.lock"]          # nothing trained, nothing written
