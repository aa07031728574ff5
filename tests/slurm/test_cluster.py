"""The local test cluster itself: fake GPUs, multi-task steps, accounting, cancellation and two nodes.

These prove what the Snakemake Slurm profile relies on: `--gpus` reaches CUDA_VISIBLE_DEVICES, `srun`
starts one process per task, sacct reports final states (COMPLETED, FAILED, CANCELLED).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm


def _run_job(cluster, tmp_path: Path, *sbatch_args: str, wrap: str) -> tuple[str, str]:
    """Submit a job, wait for it to leave the queue and return (job ID, its output file's text)."""
    out = tmp_path / "job-%j.out"
    job_id = cluster.sbatch(f"--chdir={tmp_path}", f"--output={out}", *sbatch_args, "--wrap", wrap)
    cluster.wait_finished(job_id, timeout=120)
    return job_id, (tmp_path / f"job-{job_id}.out").read_text()


@pytest.mark.parametrize(("gpus", "visible"), [(1, "0"), (2, "0,1")])
def test_gpus_reach_cuda_visible_devices(slurm_cluster, tmp_path, gpus, visible):
    job_id, out = _run_job(slurm_cluster, tmp_path, f"--gpus={gpus}",
                           wrap='echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"')
    assert out.strip() == f"CUDA_VISIBLE_DEVICES={visible}"
    record = slurm_cluster.sacct(job_id)
    assert record["State"] == "COMPLETED"
    assert f"gres/gpu={gpus}" in record["AllocTRES"].split(",")


def test_two_tasks_run_two_processes(slurm_cluster, tmp_path):
    job_id, out = _run_job(slurm_cluster, tmp_path, "--ntasks=2",
                           wrap='srun bash -c \'echo "task $SLURM_PROCID of $SLURM_NTASKS pid $$"\'')
    lines = sorted(out.splitlines())
    assert [line.rsplit(" pid ", 1)[0] for line in lines] == ["task 0 of 2", "task 1 of 2"]
    assert len({line.rsplit(" pid ", 1)[1] for line in lines}) == 2  # two separate processes
    assert slurm_cluster.sacct(job_id)["State"] == "COMPLETED"


def test_srun_in_a_job_without_slurm_conf_finds_the_cluster(slurm_cluster, tmp_path):
    # What the Snakemake plugin's job steps do: srun with SLURM_CONF removed from the environment.
    if not slurm_cluster.system_conf:
        pytest.skip("/etc/slurm/slurm.conf belongs to another Slurm installation")
    job_id, out = _run_job(slurm_cluster, tmp_path,
                           wrap='env -u SLURM_CONF srun bash -c \'echo "step on $SLURMD_NODENAME"\'')
    assert out.strip() == "step on localhost"
    assert slurm_cluster.sacct(job_id)["State"] == "COMPLETED"


def test_failing_job_is_failed_with_its_exit_code(slurm_cluster, tmp_path):
    job_id, _ = _run_job(slurm_cluster, tmp_path, wrap="exit 3")
    record = slurm_cluster.sacct(job_id)
    assert (record["State"], record["ExitCode"]) == ("FAILED", "3:0")


def test_cancelled_job_is_killed_and_cancelled(slurm_cluster, tmp_path):
    pid_file = tmp_path / "pid"
    job_id = slurm_cluster.sbatch(f"--chdir={tmp_path}", "--output=/dev/null",
                                  "--wrap", f"echo $$ > {pid_file}; exec sleep 300")
    slurm_cluster.wait_state(job_id, ("RUNNING",), timeout=120)
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the job never wrote its PID"
        time.sleep(0.1)
    pid = int(pid_file.read_text())
    slurm_cluster.run("scancel", job_id)
    assert slurm_cluster.sacct(job_id)["State"].startswith("CANCELLED")  # "CANCELLED by 0"
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"the job's sleep (pid {pid}) survived scancel"
        time.sleep(0.1)


def test_two_nodes_each_run_a_task(slurm_cluster_2nodes, tmp_path):
    cluster = slurm_cluster_2nodes
    assert cluster.nodes == ["node1", "node2"]
    # Each slurmd has its own network namespace and hostname: the task reports both.
    job_id, out = _run_job(cluster, tmp_path, "--nodes=2", "--ntasks-per-node=1",
                           wrap='srun bash -c \'echo "$SLURMD_NODENAME $(hostname)"\'')
    assert sorted(out.splitlines()) == ["node1 node1", "node2 node2"]
    # (Not sacct's NodeList: right after the job it can still name only the batch host, node1.)
    assert cluster.sacct(job_id)["State"] == "COMPLETED"
