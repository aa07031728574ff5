"""The resumable training state: one file per run, written atomically, restored bit for bit.

`resume.pth` holds everything that the rest of the run depends on: model, optimiser and scheduler
states, the position (epoch, chunk, step), the tuples mined for the current chunk, the global negative
cache, the epoch history for the log, the best score, and every rank's RNG states. A run stopped at any
step and started again with the same command continues as if it had never stopped.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import numpy as np
import torch

from vpr.errors import VprError
from vpr.io import atomic_output
from vpr.train.config import RUNTIME_ONLY

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopFlag:
    """Set by SIGTERM/SIGUSR1 (Slurm pre-emption, scancel, torchrun shutdown); polled once per step."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def install(self) -> StopFlag:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def raised(self) -> bool:
        return self.signum is not None


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: str | os.PathLike, state: dict) -> None:
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | os.PathLike) -> dict:
    # The file holds Python/NumPy RNG states and config dicts besides tensors: it is our own file,
    # written by save_state, so the full unpickler is used for it (never for model files from elsewhere).
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: say which one
        raise VprError(f"{path}: unreadable training state ({err}); "
                       "delete it to start the run afresh") from err


def check_compatible(path: Path, saved: dict, current: dict) -> None:
    """A resume file must come from the same configuration; say which keys differ."""
    diff = sorted(k for k in set(saved) | set(current)
                  if k not in RUNTIME_ONLY and saved.get(k) != current.get(k))
    if diff:
        details = "; ".join(f"{k}: saved {saved.get(k)!r}, now {current.get(k)!r}" for k in diff)
        raise VprError(f"{path}: this run directory holds a checkpoint of a different configuration "
                       f"({details}); use another --out directory or delete the file to start afresh")
