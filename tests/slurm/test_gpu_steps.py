"""The nested `srun` of multi-node training, as the workflow writes it, on the local cluster's fake GPUs.

Inside the plugin's job step every SLURM_*/SRUN_* variable but the job ID is gone, so the rule's `srun`
states the CPUs and GPUs of each node's task itself: `srun --cpus-per-task=N --gres=gpu:G` must be accepted
in such a job and give its task N CPUs (SLURM_CPUS_PER_TASK, which a plain srun there lacks) and G GPUs.
(On this Slurm, 22.05, a plain srun's step is accounted the job's CPUs too; the difference is the task's
CPU count and binding, which a fake node cannot show.)
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# what the job step of the Snakemake Slurm plugin keeps of Slurm's variables: the job ID (and SLURM_CONF)
AS_THE_PLUGIN = ("for v in $(compgen -e | grep -E '^(SLURM|SRUN)_' | grep -vE '^SLURM_(JOB_ID|CONF)$'); "
                 "do unset $v; done")
SHOW = "bash -c 'echo \"gpus=$CUDA_VISIBLE_DEVICES cpus=$SLURM_CPUS_PER_TASK\"'"


def _step_allocations(cluster, job_id: str) -> dict[str, str]:
    out = cluster.run("sacct", "-n", "-P", "-j", job_id, "-o", "JobID,AllocTRES")
    return {line.split("|")[0].removeprefix(job_id): line.split("|")[1] for line in out.splitlines() if line}


@pytest.mark.parametrize(("step", "expected"), [
    ("srun --nodes=1 --ntasks-per-node=1 --cpus-per-task=4 --gres=gpu:4 --kill-on-bad-exit=1",
     "gpus=0,1,2,3 cpus=4"),
    ("srun --nodes=1 --ntasks-per-node=1 --kill-on-bad-exit=1", "gpus=0,1,2,3 cpus="),   # before this change
])
def test_the_nested_srun_gets_the_cpus_and_gpus_it_names(slurm_cluster, tmp_path, step, expected):
    out = tmp_path / "job-%j.out"
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\n{AS_THE_PLUGIN}\n{step} {SHOW}\n")
    job_id = slurm_cluster.sbatch(f"--chdir={tmp_path}", f"--output={out}", "--nodes=1", "--ntasks=1",
                                  "--cpus-per-task=4", "--gres=gpu:4", script)
    slurm_cluster.wait_finished(job_id, timeout=120)
    assert slurm_cluster.sacct(job_id)["State"] == "COMPLETED"
    assert (tmp_path / f"job-{job_id}.out").read_text().strip() == expected
    steps = _step_allocations(slurm_cluster, job_id)
    assert {"cpu=4", "gres/gpu=4"} <= set(steps[".0"].split(",")), steps
