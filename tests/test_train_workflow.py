"""The workflow follows every change to a training job with no manual step (real Snakemake, tiny data).

One method (netvlad, triplet), a two-epoch run of two steps per epoch; each case starts from a copy of one
finished workflow directory: `--forcerun train_baseline`, a Snakemake killed mid-training then `--unlock`
and `--rerun-incomplete` (with the training process killed too, or finishing on its own), and an edit of
`training.lr`.

The tiny one-method configuration is config/tiny.yaml with the changes in ONE_METHOD.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_selection import mcnemar_by_hand
from test_workflow import SNAKEMAKE, TINY, snakemake, write_config
from vprtest import alive, descendants, stat_fields

from vpr.models import load_model

pytestmark = pytest.mark.slow   # real Snakemake runs that train

RESULTS = Path("results-tiny")                   # config/tiny.yaml's results folder
RUN = RESULTS / "train" / "netvlad"
TARGET = RUN / "last.pth"
TRAIN_LOG = RESULTS / "logs" / "train" / "netvlad.log"
# config/tiny.yaml narrowed to one method and one test set, with two epochs of two steps each
ONE_METHOD = {
    "off_the_shelf": False,
    "methods": {"netvlad": {"loss": "triplet"}},
    "test_sets": {"pitts30k": "pitts30k_test"},
    "examples": "netvlad",
    "cluster.images": 20,
    "training.epochs": 2,
    "training.iters": 2,
    "training.cache_size": 40,
}


def weights(path):
    return load_model(path).state_dict()


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)


def lr_column(workdir) -> list[float]:
    with open(workdir / RUN / "log.csv") as f:
        return [float(r["lr"]) for r in csv.DictReader(f) if int(r["epoch"]) >= 0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A workflow directory whose training job has finished (data, index files, centers, one run)."""
    workdir = tmp_path_factory.mktemp("workflow")
    config = write_config(workdir / "tiny.yaml", TINY, **ONE_METHOD)
    snakemake(workdir, "--configfile", config, "--cores", "2", TARGET)
    assert lr_column(workdir) == [0.001, 0.001]
    return workdir


def copy_of(finished, tmp_path) -> Path:
    workdir = tmp_path / "wf"
    shutil.copytree(finished, workdir, symlinks=True)   # copy2: modification times kept for Snakemake
    return workdir


def run(workdir, *args, **kwargs):
    return snakemake(workdir, "--configfile", workdir / "tiny.yaml", "--cores", "2", *args, **kwargs)


def test_forcerun_recreates_the_outputs_of_the_finished_run(finished, tmp_path):
    workdir = copy_of(finished, tmp_path)
    run(workdir, "--forcerun", "train_baseline", TARGET)
    log = (workdir / TRAIN_LOG).read_text()
    assert "recreated last.pth, model_best.pth, log.csv" in log
    for name in ("last.pth", "model_best.pth", "log.csv"):
        assert (workdir / RUN / name).read_bytes() == (finished / RUN / name).read_bytes()


@pytest.mark.parametrize("killed", ["everything", "snakemake"])
def test_a_killed_snakemake_is_unlocked_and_rerun_to_the_same_model(finished, tmp_path, killed):
    """`everything`: a lost node (Snakemake, torchrun and the training process die at once); the rerun
    resumes. `snakemake`: Snakemake and torchrun die, the training process (in its own session) finishes
    on its own; the rerun, after Snakemake deleted the incomplete outputs, recreates them."""
    workdir = copy_of(finished, tmp_path)
    shutil.rmtree(workdir / RUN)            # the training job must run again
    env = {**os.environ, "PATH": f"{Path(SNAKEMAKE[0]).parent}:{os.environ['PATH']}"}
    cmd = [*SNAKEMAKE, "-d", str(workdir), "--configfile", str(workdir / "tiny.yaml"), "--cores", "2",
           str(TARGET)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    # Kill once the state of epoch 0 is saved (resume.pth comes after checkpoint_e0.pth), while epoch 1
    # trains.
    deadline = time.time() + 300
    while not (workdir / RUN / "resume.pth").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    tree = descendants(proc.pid)
    if killed == "everything":
        victims = tree
    else:
        victims = [p for p in tree if (f := stat_fields(p)) is not None and int(f[3]) == proc.pid]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)
    survivors = [p for p in tree if p not in victims]
    if killed == "everything":
        assert not (workdir / RUN / "last.pth").exists()      # killed mid-training
    else:
        assert survivors                                       # the training process lives on
        while any(alive(p) for p in survivors):
            assert time.time() < deadline
            time.sleep(0.2)
        assert (workdir / RUN / "last.pth").exists()          # and finished, with Snakemake gone
    assert run(workdir, TARGET, check=False).returncode != 0   # Snakemake's lock is left behind
    run(workdir, "--unlock")
    run(workdir, "--rerun-incomplete", TARGET)
    log = (workdir / TRAIN_LOG).read_text()
    if killed == "everything":
        assert "resuming from" in log
    else:
        assert "recreated last.pth, model_best.pth, log.csv" in log
    wa, wb = weights(workdir / RUN / "last.pth"), weights(finished / RUN / "last.pth")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-6
    assert (workdir / RUN / "log.csv").exists() and (workdir / RUN / "model_best.pth").exists()


def test_an_edited_learning_rate_retrains_with_it(finished, tmp_path):
    workdir = copy_of(finished, tmp_path)
    write_config(workdir / "tiny.yaml", TINY, **{**ONE_METHOD, "training.lr": 0.003})
    run(workdir, TARGET)
    log = (workdir / TRAIN_LOG).read_text()
    assert "lr: saved 0.001, now 0.003" in log and "training afresh" in log
    assert lr_column(workdir) == [0.003, 0.003]
    assert not same_weights(workdir / RUN / "last.pth", finished / RUN / "last.pth")
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(run(workdir, "-n", TARGET))


def brute_force_hits(topk, positives, n) -> list[bool]:
    """Per query: is one of its first n retrieved database images a ground-truth positive (a plain loop)?"""
    return [any(int(d) in set(positives[q].tolist()) for d in topk[q][:n] if d >= 0)
            for q in range(len(topk))]


def test_every_checkpoint_gives_the_selection_report_with_recomputed_numbers(finished, tmp_path):
    """evaluate.every_checkpoint: both epoch checkpoints are evaluated on the test set and `vpr selection`
    reports them; every number is recomputed here from the rankings files and the index."""
    from vpr.data.index import Index
    from vpr.evaluation_files import read_rankings
    from vpr.models.checkpoint import read_checkpoint_meta

    workdir = copy_of(finished, tmp_path)
    write_config(workdir / "tiny.yaml", TINY, **{**ONE_METHOD, "evaluate.every_checkpoint": True})
    out = RESULTS / "selection"
    run(workdir, *(out / f"netvlad.{ext}" for ext in ("csv", "md", "png")))
    with open(workdir / out / "netvlad.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], r["test set"]) for r in rows] == [("0", "pitts30k"), ("1", "pitts30k")]
    index = Index(workdir / RESULTS / "index" / "pitts30k_test.h5")
    with open(workdir / RUN / "log.csv") as f:
        val = {int(r["epoch"]): float(r["recall@5"]) for r in csv.DictReader(f) if int(r["epoch"]) >= 0}
    hits = {}
    for epoch in (0, 1):
        rankings = read_rankings(workdir / RESULTS / "checkpoints" / "netvlad" / f"e{epoch}"
                                 / "pitts30k_rankings.h5")
        hits[epoch] = {n: brute_force_hits(rankings.topk, index.positives, n) for n in (1, 5, 10)}
        row = rows[epoch]
        assert int(row["queries"]) == index.num_queries
        assert float(row["val R@5"]) == pytest.approx(100 * val[epoch], abs=0.005)
        for n in (1, 5, 10):
            assert float(row[f"R@{n}"]) == pytest.approx(100 * sum(hits[epoch][n]) / index.num_queries,
                                                         abs=0.005)
    # the selected row is the model `vpr select` copied; it is the first epoch with the best val R@5
    selected = read_checkpoint_meta(workdir / RESULTS / "models" / "netvlad.pth")["epoch"]
    assert selected == min(e for e in val if val[e] == max(val.values()))
    assert [r["selected on validation"] for r in rows] == ["1" if e == selected else "0" for e in (0, 1)]
    score = {e: tuple(sum(hits[e][n]) for n in (1, 5, 10)) for e in (0, 1)}
    best = 0 if score[0] >= score[1] else 1
    assert [r["best on test"] for r in rows] == ["1" if e == best else "0" for e in (0, 1)]
    md = (workdir / out / "netvlad.md").read_text()
    assert "selected on validation" in md and "best on test (not a valid selection" in md
    gap_row = next(line for line in md.splitlines() if "McNemar p" in line)
    for n in (1, 5, 10):
        gap = 100 * (sum(hits[best][n]) - sum(hits[selected][n])) / index.num_queries
        p = mcnemar_by_hand(hits[best][n], hits[selected][n])
        assert f"{gap:+.1f} (p = {p:.3g})" in gap_row
    assert (workdir / out / "netvlad.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
