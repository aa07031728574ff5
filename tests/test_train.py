"""Training end to end on the tiny synthetic data: clustering, DDP equivalence, resume, learning.

Everything runs the real `vpr` commands in subprocesses (torchrun with gloo for two processes), on the
small backbone and small images.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
from vprtest import VPR, run_vpr

from vpr.models import load_model

SMALL = ["--backbone", "small", "--image-size", "96", "128"]
# --device cpu: the equalities below are CPU ones (1e-5), and two processes on a one-GPU machine must not
# share it (gloo on the CPU, as on a machine without a GPU)
TRAIN = [*SMALL, "--num-clusters", "8", "--trainable-from", "full", "--neg-num", "3", "--neg-pool", "30",
         "--cache-size", "6", "--workers", "0", "--extract-batch-size", "16", "--pos-num", "3",
         "--pos-pool", "6", "--rerank-k1", "4", "--lr", "0.01", "--device", "cpu"]


@pytest.fixture(scope="module")
def centers(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("centers") / "centers.h5"
    run_vpr("cluster", "--index", tiny_data["train"], "--out", out, *SMALL, "--num-clusters", "8",
            "--images", "40", "--per-image", "20", "--iterations", "20", "--workers", "0")
    return out


@pytest.fixture(scope="module")
def gen0(tiny_data, centers, tmp_path_factory):
    """A first SFRS generation (one epoch of two iterations): the teacher of the generation-1 tests."""
    out = tmp_path_factory.mktemp("gen0") / "gen0"
    run_vpr(*train_args(tiny_data, centers, out, "--method", "sfrs", "--loss", "sare_ind",
                        "--generation", "0", "--iters", "2"))
    return out


def train_args(tiny_data, centers, out, *extra):
    return ["train", "--train-index", tiny_data["train"], "--val-index", tiny_data["val"],
            "--centers", centers, "--out", out, *TRAIN, *extra]


def weights(path):
    return load_model(path).state_dict()


def max_abs_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_cluster_output_initialises_the_model_with_alpha_from_its_formula(centers):
    with h5py.File(centers) as f:
        centroids, descriptors = f["centroids"][()], f["descriptors"][()]
    assert centroids.shape == (8, 128) and descriptors.shape == (40 * 20, 128)   # small backbone: D = 128
    assert np.allclose(np.linalg.norm(descriptors, axis=1), 1, atol=1e-5)   # L2-normalised locations

    from vpr.models import ModelConfig, build_model
    model = build_model(ModelConfig(backbone="small", num_clusters=8, image_size=(96, 128)))
    alpha = model.init_netvlad(centroids, descriptors)
    # alpha = -ln(0.01) / mean(top1 - top2) of the similarities to the normalised centroids.
    c_hat = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    sims = np.sort(descriptors.astype(np.float64) @ c_hat.T.astype(np.float64), axis=1)
    expected = -math.log(0.01) / np.mean(sims[:, -1] - sims[:, -2])
    assert alpha == pytest.approx(expected, rel=1e-4)
    w = model.net_vlad.conv.weight.detach().numpy().reshape(8, 128)
    assert np.allclose(w, expected * c_hat, rtol=1e-4, atol=1e-6)
    assert np.allclose(model.net_vlad.centroids.detach().numpy(), centroids)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["baseline", "sfrs"])
def test_two_processes_equal_one_process_with_the_same_global_tuples(tiny_data, centers, tmp_path, method,
                                                                     request):
    """Also SFRS generation 1: several tuples per process, each with the teacher's scores of its own."""
    one, two = tmp_path / "one", tmp_path / "two"
    extra = []
    if method == "sfrs":
        gen0 = request.getfixturevalue("gen0")
        extra = ["--method", "sfrs", "--loss", "sare_ind", "--generation", "1",
                 "--teacher", gen0 / "last.pth", "--iters", "3"]
    single = run_vpr(*train_args(tiny_data, centers, one, "--epochs", "1", "--tuple-size", "2", *extra))
    assert "collapsed" not in single.stderr   # a sane learning rate: no collapse warning
    args = train_args(tiny_data, centers, two, "--epochs", "1", "--tuple-size", "1", *extra)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "vpr.cli", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    diff = max_abs_diff(weights(one / "last.pth"), weights(two / "last.pth"))
    assert diff <= 1e-5
    # Training did move the weights (the comparison is not between two untouched models).
    start = torch.load(one / "resume.pth", weights_only=True)["run"]["history"]
    assert len(start) == 2 and start[1]["loss"] > 0


def run_until_stopped(args, stop_at: list[str]) -> tuple[str, float]:
    """Start a training run with a progress line per update, send SIGTERM once the markers ``stop_at`` have
    appeared in its output in that order; return its output and the seconds from the signal to its exit."""
    proc = subprocess.Popen([*VPR, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "VPR_PROGRESS_INTERVAL": "0"})
    lines, todo, sent = [], list(stop_at), None
    for line in proc.stdout:
        lines.append(line)
        if todo and todo[0] in line:
            todo.pop(0)
            if not todo:
                proc.send_signal(signal.SIGTERM)
                sent = time.monotonic()
                break
    lines.extend(proc.stdout)
    assert proc.wait(timeout=300) == 128 + signal.SIGTERM, "".join(lines)
    assert sent is not None, "".join(lines)
    return "".join(lines), time.monotonic() - sent


# Where the signal arrives: after an optimiser step (the state of that step is saved), or inside a feature
# refresh or a validation (the process stops within one batch and resumes from its last resume point, after
# the previous chunk's training). Batches of one image make those phases long enough to be hit.
STOPS = {
    "step": ["epoch 0 chunk 1 iteration 1/"],
    "refresh": ["epoch 0 chunk 1: train database:"],
    "validation": ["epoch 0 chunk", "val: database:"],   # the epoch's validation, not the initial one
}


@pytest.mark.slow
@pytest.mark.parametrize(("method", "where"), [("baseline", "step"), ("sfrs", "step"), ("sfrs", "refresh"),
                                               ("baseline", "validation")])
def test_a_run_stopped_by_sigterm_resumes_to_the_same_weights(tiny_data, centers, tmp_path, method, where,
                                                               request):
    extra = ["--epochs", "1", "--print-freq", "1"]
    if where != "step":
        extra += ["--extract-batch-size", "1"]
    if method == "sfrs":   # generation 1, learning from the module's generation 0
        extra += ["--method", "sfrs", "--loss", "sare_ind", "--generation", "1",
                  "--teacher", request.getfixturevalue("gen0") / "last.pth"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run_vpr(*train_args(tiny_data, centers, straight, *extra))
    out, seconds = run_until_stopped(train_args(tiny_data, centers, stopped, *extra), STOPS[where])
    assert seconds < 20, f"the stop took {seconds:.1f} s"
    assert (stopped / "resume.pth").exists() and not (stopped / "last.pth").exists()
    if where == "step":
        assert "stopped by signal 15 at epoch 0, chunk 1, iteration" in out
    else:   # inside the phase whose progress line triggered the signal
        assert f"stopped by signal 15 during {STOPS[where][-1].rstrip(':')}" in out, out
    again = run_vpr(*train_args(tiny_data, centers, stopped, *extra))
    resumed_at = {"step": "epoch 0, chunk 1, iteration", "refresh": "epoch 0, chunk 1, iteration 0",
                  "validation": "epoch 0, chunk "}[where]
    assert "resuming from" in again.stdout and resumed_at in again.stdout
    assert max_abs_diff(weights(straight / "last.pth"), weights(stopped / "last.pth")) <= 1e-6
    with open(straight / "log.csv") as a, open(stopped / "log.csv") as b:
        rows_a, rows_b = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert [r["recall@5"] for r in rows_a] == [r["recall@5"] for r in rows_b]


@pytest.mark.slow
def test_resume_refuses_a_different_configuration(tiny_data, centers, tmp_path):
    out = tmp_path / "run"
    run_vpr(*train_args(tiny_data, centers, out, "--epochs", "1", "--iters", "1"))
    proc = run_vpr(*train_args(tiny_data, centers, out, "--epochs", "1", "--iters", "1", "--lr", "0.5"),
                   check=False)
    assert proc.returncode == 2
    assert "different configuration" in proc.stderr and "lr: saved 0.01, now 0.5" in proc.stderr


@pytest.mark.slow
def test_the_validation_log_carries_the_95_percent_interval_of_each_recall(tiny_data, centers, tmp_path):
    from scipy.stats import binomtest

    from vpr.data.index import Index

    out = tmp_path / "run"
    run_vpr(*train_args(tiny_data, centers, out, "--epochs", "1", "--iters", "1"))
    n = Index(tiny_data["val"]).num_queries
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["-1", "0"]
    for row in rows:
        for recall_at in (1, 5, 10):
            hits = round(float(row[f"recall@{recall_at}"]) * n)
            ci = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
            assert float(row[f"recall@{recall_at}_ci_low"]) == pytest.approx(ci.low, abs=1e-12)
            assert float(row[f"recall@{recall_at}_ci_high"]) == pytest.approx(ci.high, abs=1e-12)


@pytest.mark.slow
def test_a_collapsed_generation_is_warned_on_the_console_and_footnoted_in_the_table(tiny_data, centers, gen0,
                                                                                   tmp_path):
    """SFRS generation 1 with a learning rate far too large (finite weights, a degenerate descriptor): its
    validation R@5 falls below its teacher's by more than 10 validation queries allow; `vpr train` logs a
    warning, the workflow's end-of-run summary repeats it and `vpr table` footnotes the numbers it fed."""
    from vpr.logged_warnings import warnings_summary
    from vpr.models.checkpoint import read_checkpoint_meta

    gen1 = tmp_path / "gen1"
    proc = run_vpr(*train_args(tiny_data, centers, gen1, "--method", "sfrs", "--loss", "sare_ind",
                               "--generation", "1", "--teacher", gen0 / "last.pth", "--epochs", "1",
                               "--iters", "2", "--lr", "1000", "--momentum", "0"))
    teacher = read_checkpoint_meta(gen0 / "last.pth")["best_recall5"]
    with open(gen1 / "log.csv") as f:
        student = max(float(r["recall@5"]) for r in csv.DictReader(f) if int(r["epoch"]) >= 0)
    n = 10   # the tiny preset's validation queries
    # one-sided pooled two-proportion z-test, written out: P(Z > z) = erfc(z / sqrt 2) / 2
    pooled = (teacher + student) / 2
    z = (teacher - student) / math.sqrt(pooled * (1 - pooled) * 2 / n)
    p = math.erfc(z / math.sqrt(2)) / 2
    assert p < 0.05, (teacher, student)   # the learning rate did collapse this generation
    log = tmp_path / "sfrs_gen1.log"      # what the workflow's `>> {log} 2>&1` keeps
    log.write_text(proc.stdout + proc.stderr)
    warning = next(line for line in log.read_text().splitlines() if "collapsed" in line)
    assert warning.startswith("vpr train: WARNING: SFRS generation 1 collapsed")
    assert f"R@5 {100 * student:.1f} %" in warning and f"(generation 0) {100 * teacher:.1f} %" in warning
    assert f"p = {p:.2g}" in warning
    assert warning in warnings_summary([log])   # the Snakefile's onsuccess/onerror prints this
    recall = tmp_path / "sfrs_recall.csv"
    recall.write_text("n,recall,ci_low,ci_high,queries\n1,0.5,0.2366,0.7634,10\n5,0.8,0.4902,0.9433,10\n"
                      "10,0.9,0.5958,0.9821,10\n")
    run_vpr("table", "--recall", "sfrs", "pitts30k", recall, "--step-log", "sfrs", "pitts30k", log,
            "--out-md", tmp_path / "t.md", "--out-csv", tmp_path / "t.csv")
    md = (tmp_path / "t.md").read_text()
    assert "50.0 [23.7, 76.3] †" in md and warning in md


@pytest.mark.slow
def test_generations_all_trains_the_schedule_and_resumes_at_the_interrupted_generation(tiny_data, centers,
                                                                                       tmp_path):
    """`vpr train --generations all` without Snakemake: stopped in generation 1, the same command keeps
    generation 0 and resumes generation 1, which ends equal to the single-generation run it stands for
    (--generation 1, entry 1 of the temperatures as --temperature, generation 0's last.pth as teacher)."""
    out = tmp_path / "sfrs"
    schedule = ["--method", "sfrs", "--loss", "sare_ind", "--generations", "all", "--temperatures", "0.07",
                "0.05", "--epochs", "1", "--iters", "3", "--cache-size", "1000", "--print-freq", "1"]
    stopped, _ = run_until_stopped(train_args(tiny_data, centers, out, *schedule),
                                   ["SFRS generation 1 of 2", "iteration 1/"])
    assert "stopped by signal" in stopped and (out / "gen1" / "resume.pth").exists()
    assert (out / "gen0" / "last.pth").exists() and not (out / "gen1" / "last.pth").exists()
    gen0 = (out / "gen0" / "last.pth").read_bytes()
    again = run_vpr(*train_args(tiny_data, centers, out, *schedule)).stdout
    assert f"{out / 'gen0'}: training already finished; nothing to do" in again
    assert f"resuming from {out / 'gen1' / 'resume.pth'}" in again
    assert (out / "gen0" / "last.pth").read_bytes() == gen0
    # the single-generation path with the per-generation spelling, from the same teacher
    single = tmp_path / "single"
    run_vpr(*train_args(tiny_data, centers, single, "--method", "sfrs", "--loss", "sare_ind", "--generation",
                        "1", "--temperature", "0.05", "--teacher", out / "gen0" / "last.pth", "--epochs", "1",
                        "--iters", "3", "--cache-size", "1000"))
    assert max_abs_diff(weights(out / "gen1" / "last.pth"), weights(single / "last.pth")) <= 1e-6
