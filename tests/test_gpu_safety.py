"""GPU paths made safe without a GPU: `--device cuda` fails at once and says what it sees, never two
processes on one GPU, the srun launch needs both MASTER_* variables, resume does not depend on the GPU count.

This machine has no GPU, so what torch reports about CUDA is patched in-process where a test needs a GPU to
be "there" (``torch.cuda.is_available``/``device_count``); nothing is ever run on the patched device.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from vprtest import run_vpr

from vpr import distributed
from vpr.errors import VprError

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID", "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES")


@pytest.fixture
def clean_env(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_cuda_requested_without_a_usable_gpu_is_one_line_with_what_torch_and_faiss_see(clean_env):
    clean_env.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    fake_gpus(clean_env, 0)
    with pytest.raises(VprError) as err:
        distributed.pick_device(0, "cuda")
    msg = str(err.value)
    assert "\n" not in msg
    for part in (f"torch {torch.__version__}", f"CUDA build {torch.version.cuda}", "driver ",
                 "CUDA_VISIBLE_DEVICES=0,1", "torch.cuda.device_count()=0", "faiss GPUs="):
        assert part in msg, (part, msg)


def test_auto_without_cuda_is_the_cpu_with_a_warning_when_slurm_gave_gpus(clean_env):
    fake_gpus(clean_env, 0)
    assert distributed.pick_device(0, "auto") == torch.device("cpu")
    clean_env.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.warns(RuntimeWarning, match="--device cuda makes this an error"):
        assert distributed.pick_device(0, "auto") == torch.device("cpu")
    assert distributed.pick_device(3, "cpu", local_world=4) == torch.device("cpu")


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_more_local_processes_than_gpus_names_both_numbers(clean_env, device):
    # the case: torchrun starts 4 ranks in a step that sees 1 GPU; rank 0 must not share cuda:0
    fake_gpus(clean_env, 1)
    with pytest.raises(VprError, match=r"^4 processes on this node but 1 visible GPU"):
        distributed.pick_device(0, device, local_world=4)
    fake_gpus(clean_env, 2)
    with pytest.raises(VprError, match=r"^3 processes on this node but 2 visible GPU"):
        distributed.pick_device(2, device, local_world=1)   # no LOCAL_WORLD_SIZE: the local rank bounds it


def test_one_gpu_per_local_process(clean_env):
    fake_gpus(clean_env, 4)
    assert [distributed.pick_device(r, "cuda", local_world=4) for r in range(4)] == \
        [torch.device("cuda", r) for r in range(4)]
    # srun binding one GPU to each task: every task sees its own GPU as device 0
    fake_gpus(clean_env, 1)
    clean_env.setenv("SLURM_LOCALID", "3")
    assert distributed.pick_device(3, "cuda") == torch.device("cuda", 0)


def test_init_refuses_before_any_process_group(clean_env):
    fake_gpus(clean_env, 1)
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "4"),
                        ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")):
        clean_env.setenv(name, value)
    with pytest.raises(VprError, match="4 processes on this node but 1 visible GPU"):
        distributed.init(device="cuda", timeout_minutes=1)
    assert not torch.distributed.is_initialized()


def test_srun_launch_needs_master_port_as_well_as_master_addr(clean_env):
    clean_env.setenv("SLURM_NTASKS", "2")
    clean_env.setenv("SLURM_PROCID", "1")
    clean_env.setenv("SLURM_LOCALID", "1")
    assert distributed.read_env() == (0, 1, 0)   # neither: a single process inside a bigger job
    clean_env.setenv("MASTER_ADDR", "node1")
    with pytest.raises(VprError, match="MASTER_ADDR set but no MASTER_PORT"):
        distributed.read_env()
    clean_env.setenv("MASTER_PORT", "29511")
    assert distributed.read_env() == (1, 2, 1)
    clean_env.delenv("MASTER_ADDR")
    with pytest.raises(VprError, match="MASTER_PORT set but no MASTER_ADDR"):
        distributed.read_env()


@pytest.mark.slow   # two real vpr processes (torch import each)
def test_vpr_train_and_extract_with_device_cuda_stop_at_once_without_a_gpu(tmp_path):
    # real commands, as a GPU job on a node whose torch cannot use the GPU Slurm gave it
    for name in ("train.h5", "val.h5", "centers.h5", "model.pth", "index.h5"):
        (tmp_path / name).write_bytes(b"x")
    env = {"CUDA_VISIBLE_DEVICES": "0"}
    commands = [
        ["train", "--device", "cuda", "--train-index", tmp_path / "train.h5", "--val-index",
         tmp_path / "val.h5", "--centers", tmp_path / "centers.h5", "--out", tmp_path / "run"],
        ["extract", "--device", "cuda", "--checkpoint", tmp_path / "model.pth", "--index",
         tmp_path / "index.h5", "--out", tmp_path / "f.h5"],
    ]
    for args in commands:
        start = time.monotonic()
        proc = run_vpr(*args, check=False, env=env)
        elapsed = time.monotonic() - start
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1 and "cannot use a GPU" in lines[0] and "CUDA_VISIBLE_DEVICES=0" in lines[0]
        assert "Traceback" not in proc.stderr and elapsed < 60   # torch import included, on a loaded machine
    assert not (tmp_path / "run").exists() and not (tmp_path / "f.h5").exists()


def test_resume_state_holds_no_gpu_state_and_restores_on_a_node_with_fewer(monkeypatch):
    from vpr.train.checkpointing import rng_state, set_rng_state

    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    state = rng_state()
    assert "cuda" not in state   # nothing is saved that depends on the GPU count
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    # restored where one GPU is visible, the CUDA states are left alone (torch.cuda.set_rng_state_all
    # would raise IndexError on a state of more GPUs)
    fake_gpus(monkeypatch, 1)

    def refuse(states):
        raise IndexError("list index out of range")

    monkeypatch.setattr(torch.cuda, "set_rng_state_all", refuse)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


# ------------------------------------------------------------------------------ precision that says what ran

def test_tf32_is_a_choice_for_cuda_only_and_runs_float32_tensors():
    from vpr.numeric_precision import PRECISIONS, choose_precision

    assert "tf32" in PRECISIONS
    chosen = choose_precision("tf32", "cuda")
    assert (chosen.name, chosen.reduced, str(chosen.dtype)) == ("tf32", False, "torch.float32")
    with pytest.raises(VprError, match="--precision tf32: TF32 tensor-core maths is for CUDA devices only, "
                                       "this device is cpu"):
        choose_precision("tf32", "cpu")


@pytest.mark.parametrize(("name", "tf32"),
                         [("fp32", False), ("tf32", True), ("bf16", False), ("fp16", False)])
def test_on_cuda_tf32_maths_is_on_exactly_for_tf32_and_restored_after(name, tf32):
    # torch's own defaults (cuDNN convolutions in TF32) are what "fp32" used to run with
    from vpr.numeric_precision import Precision

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.allow_tf32, matmul.allow_tf32)
    try:
        for outside in (True, False):
            cudnn.allow_tf32 = matmul.allow_tf32 = outside
            with Precision(name, "cuda").math():
                assert (cudnn.allow_tf32, matmul.allow_tf32) == (tf32, tf32)
            assert (cudnn.allow_tf32, matmul.allow_tf32) == (outside, outside)
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before


def test_cpu_precisions_leave_the_cuda_settings_alone():
    from vpr.numeric_precision import Precision

    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    for name in ("fp32", "bf16"):
        with Precision(name, "cpu").autocast():
            assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


class BrightOverflows(torch.nn.Module):
    """A model whose descriptor overflows to inf for bright images: what fp16 does to VGG16 activations."""

    output_dim = 4

    def forward(self, x):
        mean = x.mean(dim=(1, 2, 3))
        d = torch.stack([mean, mean + 1, mean + 2, mean + 3], dim=1)
        return torch.where((mean > 0)[:, None], torch.full_like(d, float("inf")), d)


def test_a_non_finite_descriptor_is_an_error_naming_the_image_and_the_precision(tmp_path):
    from PIL import Image

    from vpr.extract import extract_features

    files = []
    for i, value in enumerate((0, 0, 255, 0)):   # 0..255 minus the mean: dark < 0, white > 0
        files.append(tmp_path / f"{i}.png")
        Image.new("RGB", (16, 12), (value,) * 3).save(files[-1])
    with pytest.raises(VprError) as err:
        extract_features(BrightOverflows(), files, (12, 16), batch_size=2, workers=0, device="cpu",
                         precision="fp32")
    assert str(err.value).startswith(f"{files[2]}: its descriptor has NaN or infinite values under precision "
                                     "fp32 (1 of this batch of 2)"), err.value
    ok = extract_features(BrightOverflows(), [files[0], files[1]], (12, 16), workers=0, device="cpu")
    assert np.isfinite(ok).all()


def test_vpr_extract_of_an_overflowing_checkpoint_names_the_image_and_writes_nothing(tmp_path, capsys):
    from test_extract import SIZE, _make_dataset

    from vpr.cli import main
    from vpr.models import ModelConfig, build_model, save_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="small", image_size=SIZE)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 4 and "vlad" not in name.lower() and "pool" not in name.lower():
                p.mul_(1e30)   # float32 tops out at 3.4e38: two such layers overflow
    save_model(tmp_path / "huge.pth", model)
    index, db_files, _ = _make_dataset(tmp_path)
    out = tmp_path / "feat.h5"
    rc = main(["extract", "--precision", "fp32", "--checkpoint", str(tmp_path / "huge.pth"), "--index",
               str(index), "--out", str(out), "--batch-size", "2", "--workers", "0", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert f"{db_files[0]}: its descriptor has NaN or infinite values under precision fp32" in err[0]
    assert not out.exists()



@pytest.mark.slow
def test_the_gpu_check_runs_its_cpu_smoke_mode_and_writes_its_figures(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    proc = subprocess.run([str(script), "--cpu-smoke", "--out", str(tmp_path)], capture_output=True,
                          text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = results["sections"]
    assert all(s["ok"] for s in sections.values()), {k: s.get("error") for k, s in sections.items()}
    assert all(case["exit"] == 2 for case in sections["fail loudly"]["result"].values())
    rows = sections["extraction"]["result"]["rows"]
    # two independent implementations of the same fp32 descriptor: the plain loop and vpr's extraction
    assert rows["plain fp32 loop (torch defaults)"]["cosine_to_vpr_fp32_min"] > 0.9999
    assert all(r["images_per_s"] > 0 for r in rows.values())
    training = sections["training step"]["result"]["rows"]
    assert set(training) == {"netvlad fp32", "netvlad bf16", "sfrs fp32", "sfrs bf16"}
    # faiss on the CPU against a float64 brute force written in the script: the same top-k everywhere
    assert sections["retrieval"]["result"]["rows_identical"] == 1.0
    assert "| extraction | ok |" in (tmp_path / "gpu_check.md").read_text()


def _compare_on_two_ranks(rank: int, store: str, out: str, values: list) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        distributed.same_on_every_rank(values[rank], "the tuples", "one GPU model")
        Path(out, str(rank)).write_text("same")
    except VprError as err:
        Path(out, str(rank)).write_text(str(err))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_tuples_that_differ_between_ranks_stop_every_rank(tmp_path):
    # two real gloo processes; the second mined one negative differently (what float32 SFRS rows on GPUs of
    # different models can do)
    from torch.multiprocessing import spawn

    from vpr.train.mining import Tuple

    tuples = [Tuple(0, 5, (7, 8), ()), Tuple(1, 6, (9, 3), ())]
    other = [tuples[0], Tuple(1, 6, (9, 4), ())]
    for name, values in (("same", [tuples, list(tuples)]), ("differ", [tuples, other])):
        out = tmp_path / name
        out.mkdir()
        spawn(_compare_on_two_ranks, args=(str(tmp_path / f"{name}.store"), str(out), values), nprocs=2)
        results = [(out / str(r)).read_text() for r in range(2)]
        if name == "same":
            assert results == ["same", "same"]
        else:
            assert results == ["the tuples differ between ranks: rank(s) 1 disagree with rank 0; one GPU "
                               "model"] * 2
