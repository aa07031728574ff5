"""Process-group set-up for `torchrun` (any number of processes and nodes) and plain single processes.

Rank and world size come from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK) and never from the GPU
count. Slurm's SLURM_* variables are only a fallback for `srun` launching one task per process; torchrun's
variables win when both are present (a torchrun inside a Slurm job is the normal case).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import socket
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vpr.devices import DEVICES
from vpr.errors import VprError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(*names: str, default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return default


def read_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables, else Slurm's, else a single process."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return (_env_int("RANK", default=0), _env_int("WORLD_SIZE", default=1),
                _env_int("LOCAL_RANK", default=0))
    if os.environ.get("SLURM_NTASKS") and int(os.environ["SLURM_NTASKS"]) > 1:
        given = [name for name in ("MASTER_ADDR", "MASTER_PORT") if os.environ.get(name)]
        if len(given) == 2:
            return (_env_int("SLURM_PROCID", default=0), _env_int("SLURM_NTASKS", default=1),
                    _env_int("SLURM_LOCALID", default=0))
        if given:
            missing = "MASTER_PORT" if given == ["MASTER_ADDR"] else "MASTER_ADDR"
            raise VprError(f"srun started {os.environ['SLURM_NTASKS']} tasks with {given[0]} set but no "
                           f"{missing}: export both (e.g. MASTER_PORT=$((29500 + SLURM_JOB_ID % 10000))), "
                           "or launch with torchrun")
    return 0, 1, 0


def driver_version() -> str:
    """The NVIDIA kernel driver's version as the driver reports it ("unknown" without one)."""
    try:
        text = open("/proc/driver/nvidia/version").read()
    except OSError:
        return "unknown"
    words = text.split()
    # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15  ..."
    return next((w for w in words if w[:1].isdigit() and w.count(".") >= 1), "unknown")


def gpu_report() -> str:
    """One line: what this process can see of the GPUs (torch, its CUDA build, the driver, faiss)."""
    try:
        import faiss

        faiss_gpus = str(faiss.get_num_gpus()) if hasattr(faiss, "StandardGpuResources") else "no GPU build"
    except Exception as err:  # faiss missing or its CUDA libraries broken: say so, do not hide the rest
        faiss_gpus = f"unavailable ({type(err).__name__})"
    return (f"torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}), driver "
            f"{driver_version()}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}, "
            f"torch.cuda.is_available()={torch.cuda.is_available()}, "
            f"torch.cuda.device_count()={torch.cuda.device_count()}, faiss GPUs={faiss_gpus}")


def local_world_size() -> int:
    """Processes on this node as torchrun states it (LOCAL_WORLD_SIZE); else 1 (the local rank then bounds
    the count from below: srun's per-node task counts are not uniform)."""
    return max(_env_int("LOCAL_WORLD_SIZE", default=1), 1)


def pick_device(local_rank: int, device: str = "auto", local_world: int = 1) -> torch.device:
    """The device of the process with ``local_rank`` among ``local_world`` processes on its node.

    ``cuda``: GPU ``local_rank``, or VprError with :func:`gpu_report` when torch cannot use a GPU or there
    are fewer visible GPUs than local processes (never two processes on one GPU). ``auto``: the same on a
    machine where torch sees a GPU, else the CPU. ``cpu``: the CPU. A process that sees exactly one GPU
    while it is one of several (srun binding one GPU to each task) uses that GPU.
    """
    if device not in DEVICES:
        raise VprError(f"--device {device}: not one of {', '.join(DEVICES)}")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if device == "cuda":
            raise VprError(f"--device cuda: this process cannot use a GPU: {gpu_report()}")
        if os.environ.get("CUDA_VISIBLE_DEVICES"):
            # Slurm sets CUDA_VISIBLE_DEVICES for --gpus even where no CUDA exists (test clusters, CPU nodes).
            warnings.warn(f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']} is set but CUDA is "
                          "not available; running on the CPU with the gloo backend (--device cuda makes "
                          "this an error)", RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    count = torch.cuda.device_count()
    per_task_gpu = count == 1 and "RANK" not in os.environ and "SLURM_LOCALID" in os.environ
    if per_task_gpu:
        return torch.device("cuda", 0)
    if max(local_world, local_rank + 1) > count:
        raise VprError(f"{max(local_world, local_rank + 1)} processes on this node but {count} visible "
                       f"GPU(s): one process per GPU (start fewer processes, ask Slurm for more GPUs per "
                       f"node, or --device cpu); {gpu_report()}")
    return torch.device("cuda", local_rank)


def compute_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a torch.device; None: the current CUDA device when there is one (the model's, under
    DDP), else the CPU. Where mining and re-ranking do their distance work."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")


def init(timeout_minutes: int = 60, device: str = "auto") -> DistInfo:
    """Initialise the default process group when launched with several processes; idempotent.

    ``device`` (auto, cuda, cpu; see :func:`pick_device`) is checked before anything else is done."""
    rank, world, local_rank = read_env()
    device = pick_device(local_rank, device, local_world_size())
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world))
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
        log.info("process group: backend=%s rank=%d/%d local_rank=%d host=%s", backend, rank, world,
                 local_rank, socket.gethostname())
    return DistInfo(rank, world, local_rank, device)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenate equally sized row blocks from every rank in rank order and cut to ``total`` rows.

    The blocks are received straight into one output tensor: the device holds one full matrix plus this
    rank's block, not the blocks and their concatenation (two full matrices)."""
    if not (dist.is_available() and dist.is_initialized()):
        return local[:total]
    local = local.contiguous()
    out = local.new_empty((dist.get_world_size() * local.shape[0], *local.shape[1:]))
    dist.all_gather_single(out, local)
    return out[:total]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on at least one rank (e.g. a stop signal)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` over all ranks (a copy; the input is left alone)."""
    values = values.detach().clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


def broadcast_object(obj, src: int = 0):
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's object, in rank order (on every rank)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def same_on_every_rank(value, what: str, hint: str = "") -> None:
    """VprError on every rank unless ``value`` is the same on all ranks (compared by the SHA-256 of its
    ``repr``; one string per rank crosses the process group). ``what`` names the value in the message."""
    digest = hashlib.sha256(repr(value).encode()).hexdigest()
    digests = gather_objects(digest)
    differing = [r for r, d in enumerate(digests) if d != digests[0]]
    if differing:
        raise VprError(f"{what} differ between ranks: rank(s) {', '.join(map(str, differing))} disagree with "
                       f"rank 0{'; ' + hint if hint else ''}")


def shard(n: int, rank: int, world: int) -> range:
    """The contiguous slice of ``n`` items that ``rank`` handles, padded so every rank has equal length.

    Indices past ``n`` wrap to the beginning (the padding is dropped again after gathering).
    """
    per_rank = -(-n // world)
    return range(rank * per_rank, (rank + 1) * per_rank)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
