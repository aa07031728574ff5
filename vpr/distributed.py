"""Process-group set-up for `torchrun` (any number of processes and nodes) and plain single processes.

Rank and world size come from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK) and never from the GPU
count. Slurm's SLURM_* variables are only a fallback for `srun` launching one task per process; torchrun's
variables win when both are present (a torchrun inside a Slurm job is the normal case).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

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
    if os.environ.get("SLURM_NTASKS") and int(os.environ["SLURM_NTASKS"]) > 1 and "MASTER_ADDR" in os.environ:
        return (_env_int("SLURM_PROCID", default=0), _env_int("SLURM_NTASKS", default=1),
                _env_int("SLURM_LOCALID", default=0))
    return 0, 1, 0


def pick_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        # Slurm sets CUDA_VISIBLE_DEVICES for --gpus even where no CUDA exists (test clusters, CPU nodes).
        warnings.warn(f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']} is set but CUDA is not "
                      "available; running on the CPU with the gloo backend", RuntimeWarning, stacklevel=2)
    return torch.device("cpu")


def compute_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a torch.device; None: the current CUDA device when there is one (the model's, under
    DDP), else the CPU. Where mining and re-ranking do their distance work."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")


def init(timeout_minutes: int = 60) -> DistInfo:
    """Initialise the default process group when launched with several processes; idempotent."""
    rank, world, local_rank = read_env()
    device = pick_device(local_rank)
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
    """Concatenate equally sized row blocks from every rank in rank order and cut to ``total`` rows."""
    if not (dist.is_available() and dist.is_initialized()):
        return local[:total]
    blocks = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(blocks, local.contiguous())
    return torch.cat(blocks)[:total]


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


def shard(n: int, rank: int, world: int) -> range:
    """The contiguous slice of ``n`` items that ``rank`` handles, padded so every rank has equal length.

    Indices past ``n`` wrap to the beginning (the padding is dropped again after gathering).
    """
    per_rank = -(-n // world)
    return range(rank * per_rank, (rank + 1) * per_rank)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
