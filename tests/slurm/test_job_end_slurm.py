"""A training job that Slurm ends before its rule finishes: a plain `scancel` and a time limit that runs out.

The shipped profile (profiles/slurm) reads job states from squeue (`slurm-status-command: squeue`). With
sacct, the Slurm plugin 2.8.0 compares the state with exact names and takes sacct's "CANCELLED by <uid>"
for a running job, so a workflow whose job was cancelled by hand waited forever. Each test runs Snakemake
with that profile against the local test cluster and checks, with times measured here, that Snakemake sees
the job's end and resubmits the rule (retries: 2) within the bound stated in docs/workflow.md, and that the
new job's `vpr train` resumes from the state the killed one saved.

Only the status checks are made faster (the first one 1 s after a submission, FAST_STATUS): the interval
the bound is made of still grows by 10 s per check, as in a real run. The training job asks for one fake
GPU (one process) instead of the profile's four, to keep the tests short on 2 cores.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from test_workflow import SNAKEMAKE
from test_workflow_slurm import (
    FAST_STATUS,
    PROFILE,
    finish,
    run_id,
    sacct_jobs,
    snakemake_env,
    start_snakemake,
    stop_snakemake,
    tiny_config,
    wait_for_line,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# docs/workflow.md: a job's end is seen at the plugin's next status check. The plugin waits 10 s longer
# after every check that finds no job finished, up to a fixed 180 s; the margin covers the squeue call.
STATUS_INTERVAL_CAP = 180
MARGIN = 15
BOUND = STATUS_INTERVAL_CAP + MARGIN

TARGET = "results-tiny/train/netvlad/last.pth"
INPUTS = ["results-tiny/index/pitts30k_train.h5", "results-tiny/index/pitts30k_val.h5",
          "results-tiny/centers.h5"]
COMMENT = "rule_train_baseline_wildcards_netvlad"   # the plugin's --comment of the training job
LOG = Path("results-tiny/logs/train/netvlad.log")


# The profile's training request scaled to one fake GPU and one CPU. On the command line --set-resources
# replaces the profile's entry for train_baseline only.
TRAIN_RESOURCES = ["--set-resources", *(f"train_baseline:{r}" for r in (
    "slurm_partition=gpu", "gpu=1", "tasks_per_gpu=0", "cpus_per_task=1", "mem_mb=3000", "runtime=30"))]


@pytest.fixture(scope="module")
def prepared(slurm_cluster, tmp_path_factory) -> Path:
    """The training job's inputs (index files, centers), made once without Slurm."""
    if not slurm_cluster.system_conf:
        pytest.skip("/etc/slurm/slurm.conf belongs to another Slurm installation: srun inside the plugin's "
                    "jobs (which drop SLURM_CONF) would not find the test cluster")
    workdir = tmp_path_factory.mktemp("prepared")
    config = tiny_config(workdir / "tiny.yaml", ("netvlad",))
    proc = subprocess.run([*SNAKEMAKE, "-d", str(workdir), "--configfile", str(config), "--cores", "2",
                           *INPUTS], capture_output=True, text=True, env=snakemake_env(slurm_cluster),
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir


def start_training(cluster, prepared: Path, tmp_path: Path, iters: int):
    """Snakemake with the shipped profile on the training target, in a copy of the prepared work directory
    (modification times kept, so nothing is rerun), training `iters` steps of one epoch. Returns once the
    training job trains (its first iteration logged): the work directory, the Snakemake process and its
    output file, the run's job name and the training job's ID."""
    workdir = tmp_path / "w"
    shutil.copytree(prepared, workdir, symlinks=True, ignore=shutil.ignore_patterns("locks", "tiny.yaml"))
    config = tiny_config(tmp_path / "tiny.yaml", ("netvlad",), **{"methods.netvlad.iters": iters})
    proc, out = start_snakemake(cluster, workdir, "--profile", PROFILE, "--configfile", config,
                                *FAST_STATUS, TARGET, *TRAIN_RESOURCES)
    try:
        wait_for_line(workdir / LOG, r"epoch 0 chunk 0 iteration 1/", proc, out, timeout=300)
        name = run_id(out.read_text())
        [job] = training_jobs(cluster, name)
    except BaseException:
        stop_snakemake(cluster, proc, out)
        raise
    return workdir, proc, out, name, job


def training_jobs(cluster, name: str) -> list[str]:
    """IDs of the run's training jobs that squeue knows (any state), oldest first."""
    out = cluster.run("squeue", "-h", "--states=all", "--name", name, "-o", "%i|%k")
    return sorted((line.split("|")[0] for line in out.split() if line.endswith(f"|{COMMENT}")), key=int)


def wait_for_resubmission(cluster, name: str, first: str, proc, out: Path, since: float) -> tuple[str, float]:
    """The job Snakemake submits for the rule's next attempt, and the seconds from `since` to its
    submission; fails once the bound has passed."""
    while True:
        later = [j for j in training_jobs(cluster, name) if int(j) > int(first)]
        if later:
            return later[0], time.monotonic() - since
        assert proc.poll() is None, f"snakemake ended without resubmitting:\n{out.read_text()[-4000:]}"
        assert time.monotonic() - since < BOUND, (
            f"job {first} ended {BOUND} s ago and Snakemake has not resubmitted the rule:\n"
            f"{out.read_text()[-4000:]}")
        time.sleep(0.5)


def stopped_at(text: str) -> int:
    """The iteration at which `vpr train` stopped on SIGTERM (its state saved)."""
    stopped = re.search(r"stopped by signal 15 at epoch 0, chunk 0, iteration (\d+);", text)
    assert stopped, text
    return int(stopped.group(1))


def test_a_plain_scancel_of_a_training_job_is_retried_and_the_retry_resumes(slurm_cluster, prepared,
                                                                           tmp_path):
    cluster = slurm_cluster
    iters = 8
    t_start = time.monotonic()
    workdir, proc, out, name, cancelled = start_training(cluster, prepared, tmp_path, iters)
    log = workdir / LOG
    try:
        cluster.run("scancel", cancelled)            # what a user types: SIGTERM, KillWait, SIGKILL
        t_cancel = time.monotonic()
        # Snakemake deletes a rule's log before the next attempt: read the stop before it starts.
        step = stopped_at(wait_for_line(log, r"stopped by signal", proc, out, timeout=60))
        retry, waited = wait_for_resubmission(cluster, name, cancelled, proc, out, t_cancel)
        text = finish(cluster, proc, out, timeout=400)
    except BaseException:
        stop_snakemake(cluster, proc, out)
        raise
    elapsed = time.monotonic() - t_start

    # What sacct records (and what the plugin's sacct status would have compared with "CANCELLED").
    states = {j["JobID"]: j["State"] for j in sacct_jobs(cluster, name)}
    assert states == {cancelled: "CANCELLED by 0", retry: "COMPLETED"}, states
    assert f"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED'" in text, text[-4000:]
    assert 1 <= step < iters
    final = log.read_text()
    assert f"resuming from results-tiny/train/netvlad/resume.pth: epoch 0, chunk 0, iteration {step}\n" \
        in final
    trained = [int(i) for i in re.findall(rf"epoch 0 chunk 0 iteration (\d+)/{iters}", final)]
    assert trained == list(range(step + 1, iters + 1)), final
    assert (workdir / TARGET).is_file()
    print(f"\nplain scancel: resubmitted {waited:.0f} s after the scancel (bound {BOUND} s); "
          f"stopped at iteration {step}; run {elapsed:.0f} s")


def test_a_training_job_past_its_time_limit_is_retried_and_the_retry_resumes(slurm_cluster, prepared,
                                                                            tmp_path):
    cluster = slurm_cluster
    # Far more steps than the test waits for: the time limit ends the first attempt mid-epoch; once the
    # retry has resumed, the test has what it checks and stops the run.
    t_start = time.monotonic()
    workdir, proc, out, name, timed_out = start_training(cluster, prepared, tmp_path, iters=30000)
    log = workdir / LOG
    try:
        # Its time runs out while it trains: the limit lowered to 1 minute (Slurm's unit), as an
        # administrator can; a job submitted with --time=1 would not reach its training loop on a loaded
        # 2-core machine. Slurm ends it at its next time-limit check (every 30 s) with SIGTERM, SIGKILL
        # KillWait later; the stop line marks the job's end.
        cluster.run("scontrol", "update", f"JobId={timed_out}", "TimeLimit=1")
        step = stopped_at(wait_for_line(log, r"stopped by signal", proc, out, timeout=150))
        t_end = time.monotonic()
        retry, waited = wait_for_resubmission(cluster, name, timed_out, proc, out, t_end)
        resumed = wait_for_line(log, r"resuming from", proc, out, timeout=180)
        text = out.read_text()
    finally:
        stop_snakemake(cluster, proc, out)
    elapsed = time.monotonic() - t_start

    jobs = {j["JobID"]: j for j in sacct_jobs(cluster, name)}
    assert jobs[timed_out]["State"] == "TIMEOUT", jobs
    assert f"SLURM-job '{timed_out}' failed, SLURM status is: 'TIMEOUT'" in text, text[-4000:]
    # The retry runs with the rule's own limit (30 minutes), not the lowered one.
    assert cluster.run("sacct", "-X", "-n", "-P", "-j", retry, "-o", "TimelimitRaw").strip() == "30"
    assert f"resuming from results-tiny/train/netvlad/resume.pth: epoch 0, chunk 0, iteration {step}\n" \
        in resumed
    print(f"\ntime limit: resubmitted {waited:.0f} s after the job's end (bound {BOUND} s); "
          f"stopped at iteration {step}; run {elapsed:.0f} s")
