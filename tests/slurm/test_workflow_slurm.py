"""The Slurm profile on a real Slurm cluster: the tiny DAG through `--profile profiles/slurm` exactly as
shipped, a training job interrupted mid-epoch (SIGTERM, as pre-emption sends) that is retried and resumes,
and one training job over two nodes.

Snakemake runs as a subprocess with the Slurm executor plugin against the local test cluster of
tests/slurm/start-cluster.sh. The one-node cluster declares the profile's largest requests (4 GPUs, 16 CPUs,
128 GB for a training job) on a 2-core machine, so nothing of the profile is overridden; test-only settings
go through the command line. The evidence comes from Slurm itself (sacct: one job per rule, its state and
allocation) and from the rules' logs (every rank of a training job, the stop and the resume).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from test_workflow import REPO, SNAKEMAKE, TINY, write_config
from vprtest import run_vpr

from vpr.models import load_model

pytestmark = pytest.mark.slurm

PROFILE = REPO / "profiles" / "slurm"
# The first status check 1 s after a submission instead of the plugin's 40 s (the plugin then adds 10 s per
# check that finds nothing finished, so a check comes at most ~20 s after a job ends in these short runs).
FAST_STATUS = ("--slurm-init-seconds-before-status-checks", "1")
# The tiny DAG narrowed to what a Slurm run must show within a few minutes on 2 cores: every rule of the
# SFRS path (two generations, the second with a teacher), one test set. train_baseline runs on two nodes
# in the last test. print_freq 1 puts every iteration in the rule's log; 6 iterations per epoch (the tiny
# split has 3 with 4 processes) leave the interruption time to land inside the epoch.
NARROW = {"off_the_shelf": False, "test_sets": {"pitts30k": "pitts30k_test"}, "training.print_freq": 1,
          "methods.sfrs.iters": 6}
PROCESS_GROUP = re.compile(r"process group: backend=gloo rank=(\d+)/(\d+) local_rank=\d+ host=(\S+)")


def tiny_config(path: Path, methods: tuple[str, ...], **changes) -> Path:
    write_config(path, TINY, **NARROW, **changes)
    config = yaml.safe_load(path.read_text())
    config["methods"] = {m: config["methods"][m] for m in methods}
    config["examples"] = methods[-1]
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake_env(cluster) -> dict[str, str]:
    # The venv's snakemake, vpr and torchrun, for Snakemake and (sbatch --export=ALL) for every job.
    return {**cluster.env, "PATH": f"{Path(sys.executable).parent}:{cluster.env['PATH']}"}


def start_snakemake(cluster, workdir: Path, *args) -> tuple[subprocess.Popen, Path]:
    out = workdir / "snakemake.out"
    with open(out, "w") as f:
        proc = subprocess.Popen([*SNAKEMAKE, "-d", str(workdir), *map(str, args)], stdout=f,
                                stderr=subprocess.STDOUT, text=True, env=snakemake_env(cluster))
    return proc, out


def stop_snakemake(cluster, proc: subprocess.Popen, out: Path) -> None:
    """After a failure: end Snakemake and every Slurm job of its run (nothing is left running)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:   # it waits for jobs it believes are running
            proc.kill()
            proc.wait(timeout=20)
    match = re.search(r"SLURM run ID: (\S+)", out.read_text())
    if match:
        subprocess.run(["scancel", "--name", match.group(1)], env=cluster.env, timeout=30)


def finish(cluster, proc: subprocess.Popen, out: Path, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_snakemake(cluster, proc, out)
        raise AssertionError(f"snakemake still running after {timeout}s:\n{out.read_text()[-6000:]}") \
            from None
    text = out.read_text()
    assert proc.returncode == 0, text[-8000:]
    return text


def run_id(snakemake_output: str) -> str:
    """The plugin's run UUID: the Slurm job name of every job of that Snakemake run."""
    match = re.search(r"SLURM run ID: (\S+)", snakemake_output)
    assert match, snakemake_output[-3000:]
    return match.group(1)


def sacct_jobs(cluster, name: str) -> list[dict[str, str]]:
    """One row per job of the run (allocations only), as sacct reports them."""
    fields = ["JobID", "Comment", "State", "ExitCode", "AllocTRES", "NodeList"]
    out = cluster.run("sacct", "-X", "-n", "-P", "--name", name, "-o", ",".join(fields))
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]


def sacct_steps(cluster, job_id: str) -> list[dict[str, str]]:
    fields = ["JobID", "JobName", "NTasks", "NodeList", "State"]
    out = cluster.run("sacct", "-n", "-P", "-j", job_id, "-o", ",".join(fields))
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]


def planned_jobs(cluster, workdir: Path, *args) -> Counter:
    """Jobs per rule of a dry run with the same arguments (the local rules excluded)."""
    proc = subprocess.run([*SNAKEMAKE, "-d", str(workdir), *map(str, args), "-n"], capture_output=True,
                          text=True, env=snakemake_env(cluster))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stats = proc.stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    counts = Counter({m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)})
    for local in ("all", "resolved_config"):   # local rules: they run in Snakemake, not as Slurm jobs
        del counts[local]
    return counts


def rule_of(comment: str) -> str:
    """The rule name of the plugin's --comment: rule_<rule> or rule_<rule>_wildcards_<values>."""
    match = re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", comment)
    assert match, comment
    return match.group(1)


def ranks(log_text: str) -> dict[int, tuple[int, str]]:
    """rank -> (world size, host) from the "process group" lines of one training run."""
    found = [(int(r), int(n), host) for r, n, host in PROCESS_GROUP.findall(log_text)]
    by_rank = {r: (n, host) for r, n, host in found}
    assert len(by_rank) == len(found), f"a rank logged twice:\n{log_text}"
    return by_rank


def node_resources(cluster) -> dict[str, str]:
    out = cluster.run("scontrol", "show", "node", "-o", cluster.nodes[0])
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def wait_for_line(path: Path, pattern: str, proc: subprocess.Popen, out: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if re.search(pattern, text):
            return text
        assert proc.poll() is None, f"snakemake ended before {path} showed {pattern!r}:\n{out.read_text()}"
        assert time.monotonic() < deadline, f"no {pattern!r} in {path} after {timeout}s:\n{text}"
        time.sleep(0.1)


def test_the_dag_runs_on_slurm_and_an_interrupted_training_job_resumes(slurm_cluster, tmp_path):
    cluster = slurm_cluster
    if not cluster.system_conf:
        pytest.skip("/etc/slurm/slurm.conf belongs to another Slurm installation: srun inside the plugin's "
                    "jobs (which drop SLURM_CONF) would not find the test cluster")
    # The profile's largest requests must fit the node, else its jobs would never start.
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    requests = [*profile["set-resources"].values(), profile["default-resources"]]
    node = node_resources(cluster)
    need = {"gpu": max(r.get("gpu", 0) for r in requests), "cpus": max(r["cpus_per_task"] for r in requests
            if "cpus_per_task" in r), "mem": max(r["mem_mb"] for r in requests if "mem_mb" in r)}
    have = {"gpu": int(node["Gres"].rsplit(":", 1)[1]), "cpus": int(node["CPUTot"]),
            "mem": int(node["RealMemory"])}
    assert all(have[k] >= need[k] for k in need), (
        f"node {cluster.nodes[0]} has {have}, the profile needs {need}: a cluster started without "
        f"start-cluster.sh --gpus/--cpus/--mem is running in {cluster.state}; stop it")

    config = tiny_config(tmp_path / "tiny.yaml", ("sfrs",))
    # --slurm-keep-successful-logs: the Slurm log of the interrupted job stays for the checks below.
    args = ("--profile", PROFILE, "--configfile", config, *FAST_STATUS, "--slurm-keep-successful-logs")
    planned = planned_jobs(cluster, tmp_path, *args)
    assert planned["train_sfrs"] == 2 and planned["synth"] == 1 and planned["evaluate"] == 1, planned

    t0 = time.monotonic()
    proc, out = start_snakemake(cluster, tmp_path, *args)
    log = tmp_path / "results-tiny" / "logs" / "train" / "sfrs_gen0.log"
    try:
        # Interrupt generation 0 once it has trained an iteration, as pre-emption with a grace time (or
        # sbatch --signal) does: SIGTERM to the tasks of the job's steps, the batch script left alone.
        # slurmstepd signals every process of the step (Snakemake, torchrun, the workers); the workers
        # finish the iteration, save resume.pth and exit 143, torchrun fails, and Snakemake retries the
        # rule (retries: 2) in the same allocation. A plain scancel (the whole job killed, the rule
        # resubmitted as a new job) is tested in test_job_end_slurm.py.
        wait_for_line(log, r"epoch 0 chunk 0 iteration 1/", proc, out, timeout=240)
        name = run_id(out.read_text())
        queued = cluster.run("squeue", "-h", "--name", name, "-t", "RUNNING", "-o", "%i|%k")
        job = [line.split("|")[0] for line in queued.split() if line.endswith("|rule_train_sfrs_wildcards_0")]
        assert len(job) == 1, queued
        interrupted = job[0]
        cluster.run("scancel", "--signal=TERM", interrupted)
        # Snakemake deletes a rule's log before every attempt: read the stop before the retry starts.
        first = wait_for_line(log, r"stopped by signal", proc, out, timeout=60)
        text = finish(cluster, proc, out, timeout=420)
    except BaseException:
        stop_snakemake(cluster, proc, out)
        raise
    elapsed = time.monotonic() - t0

    results = tmp_path / "results-tiny"
    assert (results / "table.md").is_file() and (results / "sfrs" / "pitts30k_recall.csv").is_file()

    # Every planned job ran as its own Slurm job and completed.
    jobs = sacct_jobs(cluster, name)
    assert all(j["State"] == "COMPLETED" for j in jobs), jobs
    assert Counter(rule_of(j["Comment"]) for j in jobs) == planned, (jobs, text[-4000:])
    assert len({j["Comment"] for j in jobs}) == len(jobs)        # no job ran twice

    # A training job holds the profile's allocation and runs all its worker processes in it: one torchrun
    # with --nproc-per-node=4 (its 4 GPUs) in a job step of one task; the rule's log has ranks 0-3 of 4.
    train = {j["Comment"]: j for j in jobs if rule_of(j["Comment"]) == "train_sfrs"}
    for job in train.values():
        tres = job["AllocTRES"].split(",")
        assert "gres/gpu=4" in tres and "cpu=16" in tres, job
    steps = {}
    for generation in (0, 1):
        job_id = train[f"rule_train_sfrs_wildcards_{generation}"]["JobID"]
        steps[generation] = [(s["JobID"].removeprefix(job_id), s["NTasks"], s["State"])
                             for s in sacct_steps(cluster, job_id)]
    assert steps[1] == [("", "", "COMPLETED"), (".batch", "1", "COMPLETED"), (".0", "1", "COMPLETED")], steps
    final = log.read_text()
    for text_ in (first, final, (results / "logs" / "train" / "sfrs_gen1.log").read_text()):
        assert {r: n for r, (n, _) in ranks(text_).items()} == {0: 4, 1: 4, 2: 4, 3: 4}, text_

    # The interrupted attempt stopped on the signal and saved; Snakemake ran the rule again in the same
    # job (a second step), and that attempt resumed where the first stopped.
    assert interrupted == train["rule_train_sfrs_wildcards_0"]["JobID"]
    assert steps[0] == [("", "", "COMPLETED"), (".batch", "1", "COMPLETED"), (".0", "1", "FAILED"),
                        (".1", "1", "COMPLETED")], steps
    stopped = re.search(r"stopped by signal 15 at epoch 0, chunk 0, iteration (\d+);", first)
    assert stopped, first
    step = int(stopped.group(1))
    assert 1 <= step < 6
    assert f"resuming from results-tiny/train/sfrs/gen0/resume.pth: epoch 0, chunk 0, iteration {step}\n" \
        in final
    trained = [int(i) for i in re.findall(r"epoch 0 chunk 0 iteration (\d+)/6", final)]
    assert trained == list(range(step + 1, 7)), final
    slurm_log = tmp_path / ".snakemake" / "slurm_logs" / "rule_train_sfrs" / "0" / f"{interrupted}.log"
    assert "Trying to restart job" in slurm_log.read_text()
    assert (results / "train" / "sfrs" / "gen0" / "last.pth").is_file()
    print(f"\nSlurm DAG: {len(jobs)} jobs in {elapsed:.0f} s; generation 0 stopped at iteration {step}")


MULTI_NODE = [f"train_baseline:{r}" for r in ("nodes=2", "tasks=2", "mpi=srun", 'gres="gpu:1"',
                                               "tasks_per_gpu=0", "cpus_per_task=1", "mem_mb=3000",
                                               "slurm_partition=gpu")]


def test_training_on_two_nodes_equals_one_process_with_the_same_global_batch(slurm_cluster_2nodes, tmp_path):
    cluster = slurm_cluster_2nodes
    config = tiny_config(tmp_path / "tiny.yaml", ("netvlad",))
    # The inputs of the training job, made locally (no Slurm).
    inputs = ["results-tiny/index/pitts30k_train.h5", "results-tiny/index/pitts30k_val.h5",
              "results-tiny/centers.h5"]
    prep = subprocess.run([*SNAKEMAKE, "-d", str(tmp_path), "--configfile", str(config), "--cores", "2",
                           *inputs], capture_output=True, text=True, env=snakemake_env(cluster))
    assert prep.returncode == 0, prep.stdout + prep.stderr

    # The profile's commented multi-node example, scaled to the test nodes (2 CPUs each): one task and one
    # GPU per node. On the command line --set-resources replaces the profile's set-resources, which only
    # concern rules that do not run here. --retries 0: a failure shows at once.
    t0 = time.monotonic()
    proc, out = start_snakemake(cluster, tmp_path, "--profile", PROFILE, "--configfile", config,
                                *FAST_STATUS, "--retries", "0", "results-tiny/train/netvlad/last.pth",
                                "--set-resources", *MULTI_NODE)
    try:
        text = finish(cluster, proc, out, timeout=300)
    except BaseException:
        stop_snakemake(cluster, proc, out)
        raise
    elapsed = time.monotonic() - t0

    # The command the workflow built: one torchrun per node, a c10d rendezvous on the first node.
    command = re.search(r"^Shell command: (srun .*)$", text, re.M)
    assert command, text
    command = command.group(1)
    assert command.startswith("srun --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 --gres=gpu:1 "
                              "--kill-on-bad-exit=1 torchrun --nnodes=2 --nproc-per-node=1 "
                              "--rdzv-backend=c10d --rdzv-endpoint=$(scontrol show hostnames "), command
    assert ":$((29500 + SLURM_JOB_ID % 10000)) --rdzv-id=$SLURM_JOB_ID " in command, command

    [job] = sacct_jobs(cluster, run_id(text))
    assert (job["Comment"], job["State"], job["NodeList"]) == (
        "rule_train_baseline_wildcards_netvlad", "COMPLETED", "node[1-2]"), job
    steps = {s["JobID"]: s for s in sacct_steps(cluster, job["JobID"])}
    step = steps[f"{job['JobID']}.0"]
    assert (step["JobName"], step["NTasks"], step["NodeList"], step["State"]) == (
        "torchrun", "2", "node[1-2]", "COMPLETED"), steps
    log = (tmp_path / "results-tiny" / "logs" / "train" / "netvlad.log").read_text()
    assert ranks(log) == {0: (2, "node1"), 1: (2, "node2")}, log

    # The same training as one process with both tuples of each step: the same weights.
    vpr_args = shlex.split(command.split(" -m vpr.cli ", 1)[1].split(" >> ", 1)[0])
    for flag, value in (("--tuple-size", "2"), ("--out", str(tmp_path / "one"))):
        vpr_args[vpr_args.index(flag) + 1] = value
    run_vpr(*vpr_args, cwd=tmp_path)
    two = load_model(tmp_path / "results-tiny" / "train" / "netvlad" / "last.pth").state_dict()
    one = load_model(tmp_path / "one" / "last.pth").state_dict()
    start = torch.load(tmp_path / "one" / "resume.pth", weights_only=True)["run"]["history"]
    assert len(start) == 2 and start[1]["loss"] > 0   # it did train
    assert one.keys() == two.keys()
    diff = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert diff <= 1e-5
    print(f"\ntwo nodes: training job {elapsed:.0f} s, max |w(2 nodes) - w(1 process)| = {diff:.1e}")
