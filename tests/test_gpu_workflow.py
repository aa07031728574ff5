"""The workflow's GPU requests, as `snakemake -n -p` builds them: `use_gpu` makes every GPU rule demand the
GPU (`--device cuda`), a rule's GPUs are given once, and multi-node training states each node's CPUs and GPUs
and a rendezvous port of its own."""

from __future__ import annotations

import pytest
from test_workflow import TINY, fresh_copy, shell_commands, snakemake, snakemake_in, write_config

GPU_RULES = ("cluster", "train_baseline", "train_sfrs", "extract_train", "extract_test")


@pytest.mark.slow
@pytest.mark.parametrize("use_gpu", [True, False])
def test_use_gpu_passes_device_cuda_to_every_gpu_rule_and_nothing_else(tmp_path, use_gpu):
    config = write_config(tmp_path / "tiny.yaml", TINY, use_gpu=use_gpu)
    commands = shell_commands(snakemake(tmp_path, "-n", "-p", "--configfile", config).stdout)
    assert set(GPU_RULES) <= set(commands), sorted(commands)
    for rule, lines in commands.items():
        for line in lines:
            assert ("--device cuda" in line) == (use_gpu and rule in GPU_RULES), (rule, line)


def slurm_dry_run(tmp_path, *resources):
    root = fresh_copy(tmp_path)
    return snakemake_in(root, "--profile", "profiles/slurm", "-n", "-p", "results/train/sfrs/gen0/last.pth",
                        "--set-resources", 'train_sfrs:slurm_partition="gpu"', *resources)


@pytest.mark.slow
@pytest.mark.parametrize(("resources", "message"), [
    # the profile's old advice: a typed gres beside the rule's own gpu=1 (Slurm: --gres=gpu:a100:4 --gpus=1)
    (['train_sfrs:gres="gpu:a100:4"'], "GPU resources given twice (gres: 'gpu:a100:4' and gpu: 1)"),
    (["train_sfrs:gpu=4", "train_sfrs:nodes=2", "train_sfrs:tasks=2", "train_sfrs:mpi=srun"],
     "gpu: 4 on 2 nodes: Slurm does not promise an even split"),
])
def test_a_gpu_request_slurm_cannot_honour_is_refused_by_the_dry_run(tmp_path, resources, message):
    proc = slurm_dry_run(tmp_path, *resources)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("resources", "launch"), [
    (["train_sfrs:gpu=4"], "torchrun --standalone --nnodes=1 --nproc-per-node=4 -m vpr.cli train "),
    (['train_sfrs:gres="gpu:a100:4"', "train_sfrs:gpu=0"],
     "torchrun --standalone --nnodes=1 --nproc-per-node=4 -m vpr.cli train "),
    (['train_sfrs:gres="gpu:2"', "train_sfrs:gpu=0", "train_sfrs:nodes=2", "train_sfrs:tasks=2",
      "train_sfrs:mpi=srun", "train_sfrs:cpus_per_task=6"],
     "srun --nodes=2 --ntasks-per-node=1 --cpus-per-task=6 --gres=gpu:2 --kill-on-bad-exit=1 torchrun "
     "--nnodes=2 --nproc-per-node=2 --rdzv-backend=c10d --rdzv-endpoint=$(scontrol show hostnames "),
])
def test_the_torchrun_command_follows_the_gpus_of_one_node(tmp_path, resources, launch):
    proc = slurm_dry_run(tmp_path, *resources)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [command] = [line.split("Shell command: ", 1)[1] for line in proc.stdout.splitlines()
                 if "Shell command: " in line and " -m vpr.cli train " in line]
    assert command.startswith(launch), command
    assert "--device cuda" in command   # the paper's config sets use_gpu
    if "srun" in launch:
        assert ":$((29500 + SLURM_JOB_ID % 10000)) --rdzv-id=$SLURM_JOB_ID -m vpr.cli" in command
