"""The Snakemake workflow: lint, config validation, the paper DAG, and the demo DAG end to end (tiny data).

Snakemake runs as a real subprocess with the shipped Snakefile and profiles.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile")]


def snakemake(workdir, *args, check=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run([*SNAKEMAKE, "-d", str(workdir), *map(str, args)], capture_output=True, text=True,
                          env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_config(path, base, **changes):
    config = yaml.safe_load((REPO / "config" / base).read_text())
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(yaml.safe_dump(config))
    return path


def test_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, "--lint", "--configfile", REPO / "config" / "demo.yaml", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr


def test_no_configfile_is_a_clear_error(tmp_path):
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "--configfile config/config.yaml" in proc.stdout + proc.stderr


@pytest.mark.parametrize("change, message", [
    ({"train.learning_rate": 0.1}, "learning_rate"),                  # unknown key
    ({"model.num_clusters": "many"}, "num_clusters"),                 # wrong type
    ({"test_sets": ["pitts30k", "oxford"]}, "oxford"),                 # unknown data set
])
def test_a_bad_config_fails_validation_naming_the_key(tmp_path, change, message):
    config = write_config(tmp_path / "bad.yaml", "demo.yaml", **change)
    proc = snakemake(tmp_path, "-n", "--configfile", config, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out and "validat" in out.lower()


def paper_config(tmp_path, tiny_data):
    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    for name in ("vd16_offtheshelf_conv5_3_max.pth", "vgg16_pitts_64_desc_cen.hdf5"):
        (pretrained / name).write_bytes(b"")   # present; a dry run does not read them
    return write_config(tmp_path / "paper.yaml", "config.yaml",
                        **{"data.pitts_root": str(tiny_data["data"] / "pitts" / "raw"),
                           "data.tokyo_root": str(tiny_data["data"] / "tokyo" / "raw"),
                           "model.trunk": str(pretrained / "vd16_offtheshelf_conv5_3_max.pth"),
                           "model.centers": str(pretrained / "vgg16_pitts_64_desc_cen.hdf5")})


def test_paper_dag_lists_every_step(tmp_path, tiny_data):
    proc = snakemake(tmp_path, "-n", "--configfile", paper_config(tmp_path, tiny_data))
    out = proc.stdout
    counts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    # 5 splits; 3 baselines + 4 SFRS generations; the untrained model and 4 trained methods, each with
    # a PCA and 3 test sets.
    assert counts["index"] == 5 and counts["train_baseline"] == 3 and counts["train_sfrs"] == 4
    assert counts["initial_model"] == 1 and counts["select_model"] == 4
    assert counts["fit_pca"] == 5 and counts["evaluate"] == 15
    assert "cluster" not in counts          # the paper config uses the reference's centres file
    assert counts["table"] == 1 and counts["plot_recall"] == 3


def test_missing_raw_data_names_the_file_and_how_to_get_it(tmp_path, tiny_data):
    config = paper_config(tmp_path, tiny_data)
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["tokyo_root"] = str(tmp_path / "nowhere")
    config.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", "--configfile", config, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert str(tmp_path / "nowhere" / "tokyo247.mat") in out and "README.md" in out


TINY = {
    "data.synth": {"preset": "tiny", "seed": 0, "out": "data/synth"},
    "model.image_size": [96, 128],
    "model.num_clusters": 8,
    "cluster.images": 40,
    "cluster.per_image": 20,
    "cluster.iterations": 10,
    "train.epochs": 1,
    "train.cache_size": 20,
    "train.neg_num": 3,
    "train.neg_pool": 20,
    "train.workers": 0,
    "methods.sfrs.generations": 2,
    "methods.sfrs.pos_num": 3,
    "methods.sfrs.pos_pool": 6,
    "methods.sfrs.rerank_k1": 4,
    "pca.dim": 32,
    "evaluate.workers": 0,
}


def read_recall(path):
    with open(path) as f:
        return {int(r["n"]): 100 * float(r["recall"]) for r in csv.DictReader(f)}


def val_history(log_csv):
    """{N: {epoch: val recall@N in %}} for N = 1, 5 from a training log.csv (epoch -1: initial model)."""
    with open(log_csv) as f:
        rows = list(csv.DictReader(f))
    return {n: {int(r["epoch"]): 100 * float(r[f"recall@{n}"]) for r in rows} for n in (1, 5)}


# Measured on two demo DAG runs (README, "What training buys on the synthetic data"): every run's best
# val R@5 exceeds the untrained model's 46.2 by 6.2 to 17.5 points, and the best method's mean test R@5
# exceeds the untrained model's by 6.6 and 9.4. Val R@1 gains are not robust on 80 queries (-1.2 to +11.2
# between the two runs), so they are not asserted. The margins asserted sit below the measured ones.
VAL_R5_MARGIN = 5.0
TEST_R5_MARGIN = 5.0


@pytest.mark.slow
def test_the_demo_dag_runs_end_to_end_and_training_beats_the_untrained_model(tmp_path):
    """`make demo`'s DAG (config/demo.yaml as shipped, demo preset) with the local profile."""
    demo = ["--profile", REPO / "profiles" / "local", "--configfile", REPO / "config" / "demo.yaml"]
    snakemake(tmp_path, *demo, "--cores", "2")
    results = tmp_path / "results"
    methods = ("untrained", "netvlad", "sare_ind", "sare_joint", "sfrs")
    test_sets = ("pitts30k", "pitts250k", "tokyo")
    recall = {(m, t): read_recall(results / m / f"{t}_recall.csv") for m in methods for t in test_sets}
    assert all(list(r) == [1, 5, 10, 20] for r in recall.values())
    table = (results / "table.md").read_text()
    assert all(name in table for name in ("NetVLAD", "SFRS"))
    for png in ("recall_tokyo", "training_sfrs", "examples_pitts30k"):
        assert (results / "plots" / f"{png}.png").stat().st_size > 1000

    # Learning: every trained run's best epoch above the initial model (epoch -1) on the val split.
    runs = {m: results / "train" / m / "log.csv" for m in ("netvlad", "sare_ind", "sare_joint")}
    runs.update({f"sfrs g{g}": results / "train" / "sfrs" / f"gen{g}" / "log.csv" for g in (0, 1)})
    for name, log_csv in runs.items():
        history = val_history(log_csv)
        best = {n: max(h[e] for e in h if e >= 0) for n, h in history.items()}
        assert best[5] >= history[5][-1] + VAL_R5_MARGIN, (name, history)

    # On the test sets (PCA-whitened, as in the paper) the best method clearly beats the untrained model.
    def mean_r5(method):
        return sum(recall[method, t][5] for t in test_sets) / len(test_sets)

    assert max(mean_r5(m) for m in methods[1:]) >= mean_r5("untrained") + TEST_R5_MARGIN, recall

    # SFRS generation 1 learned from a teacher (its soft loss is active), generation 0 without one.
    soft = {}
    for g in (0, 1):
        with open(results / "train" / "sfrs" / f"gen{g}" / "log.csv") as f:
            soft[g] = [float(r["loss_soft"]) for r in csv.DictReader(f) if int(r["epoch"]) >= 0]
    assert soft[0] == [0.0] and all(v > 0 for v in soft[1])
    # A second run has nothing to do.
    again = snakemake(tmp_path, *demo, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
