"""The resumable training state: one file per run, written atomically, restored bit for bit.

`resume.pth` holds everything that the rest of the run depends on: model, optimiser and scheduler
states, the run's position and progress (`RunState`), the global negative cache, every rank's RNG states,
and what the run was computed from (the configuration and the content hash of every input file). A run
stopped at any step and started again with the same command continues as if it had never stopped.

The file holds only types that ``torch.load(weights_only=True)`` accepts (tensors, lists, tuples, dicts,
numbers, strings): it is read like every other file, so a crafted file in the run directory executes
nothing, and anything that is not such a state is one error naming the file.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import random
import signal
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vpr.errors import VprError
from vpr.io import atomic_output, open_temporary, sha256sum
from vpr.train.config import weight_options
from vpr.train.mining import Tuple

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
STATE_FORMAT = "vpr-train-state"
STATE_VERSION = 1


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


@dataclass
class RunState:
    """Where a run stands: position, the current chunk's tuples, the epoch's running sums, the history."""

    epoch: int = 0                      # the epoch being trained (= epochs done)
    chunk: int = 0                      # the chunk being trained within the epoch
    step: int = 0                       # steps done within the chunk
    tuples: list[Tuple] | None = None   # the mined tuples of the current chunk (None: not mined yet)
    best_r5: float = -1.0
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)   # one log.csv row per validation
    loss_sum: float = 0.0               # sums over the steps of the current epoch (mean over ranks)
    hard_loss_sum: float = 0.0
    soft_loss_sum: float = 0.0
    loss_steps: int = 0
    mining_s: float = 0.0               # seconds of the current epoch spent mining / training
    train_s: float = 0.0
    finished: bool = False

    def start_epoch(self, epoch: int) -> None:
        """Position at the start of ``epoch`` with the per-epoch sums cleared."""
        fresh = RunState()
        self.epoch, self.chunk, self.step, self.tuples = epoch, 0, 0, None
        for name in ("loss_sum", "hard_loss_sum", "soft_loss_sum", "loss_steps", "mining_s", "train_s"):
            setattr(self, name, getattr(fresh, name))

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["history"] = [dict(row) for row in self.history]
        if self.tuples is not None:
            d["tuples"] = [[t.anchor, t.positive, list(t.negatives), list(t.difficult_positives)]
                           for t in self.tuples]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunState:
        names = {f.name for f in dataclasses.fields(cls)}
        if set(d) != names:
            raise ValueError(f"run state fields {sorted(set(d) ^ names)} missing or unknown")
        state = cls(**d)
        if d["tuples"] is not None:
            state.tuples = [Tuple(int(a), int(p), tuple(map(int, n)), tuple(map(int, dp)))
                            for a, p, n, dp in d["tuples"]]
        state.history = [dict(row) for row in d["history"]]
        return state


def rng_state() -> dict:
    """This process's RNG states as plain lists and tensors (no NumPy objects: weights_only loading).

    Python's, NumPy's and torch's CPU generator: sampling, shuffling and augmentation draw from these.
    Training draws nothing from the CUDA generators (no dropout, no random op on the GPU), so their
    states are not saved: a run resumes on a node with any number of visible GPUs."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    return {"python": [version, list(mt), gauss],
            "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                      "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                      "gauss": float(np_state["gauss"])},
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    # No CUDA generator state is saved or restored: one per GPU seen would fail to restore on a node with
    # fewer visible GPUs, and training never draws from them.


def input_identity(files: dict[str, str | os.PathLike | None], root: str | None) -> dict:
    """What the run is computed from, by content: the SHA-256 of every input file (None: not given).

    Hashing is cheap beside training (index and centers files are small; a VGG16 trunk or a teacher is
    a few hundred MB, under a second to a few seconds) and, unlike paths or modification times, follows
    exactly what changes the weights. ``root`` is the data-set root given on the command line (None: the
    one recorded in the index files, which the index hash covers).
    """
    identity = {name: (sha256sum(path) if path is not None else None) for name, path in files.items()}
    identity["root"] = None if root is None else str(Path(root).resolve())
    return identity


def differences(saved: dict, config: dict, inputs: dict) -> list[str]:
    """One phrase per option or input in which the state ``saved`` differs from the current run."""
    out = []
    # the options each run uses: an SFRS generation's own temperature, not the other generations'
    before, current = weight_options(saved["config"]), weight_options(config)
    for key in sorted(set(before) | set(current)):
        if before.get(key) != current.get(key):
            out.append(f"{key}: saved {before.get(key)!r}, now {current.get(key)!r}")
    for key in sorted(set(saved["inputs"]) | set(inputs)):
        before, now = saved["inputs"].get(key), inputs.get(key)
        if before == now:
            continue
        if key == "root":
            out.append(f"root: saved {before!r}, now {now!r}")
        elif before is None or now is None:
            out.append(f"{key}: {'not given' if before is None else 'given'} before, "
                       f"{'not given' if now is None else 'given'} now")
        else:
            out.append(f"{key}: file content changed")
    return out


def save_state(path: str | os.PathLike, state: dict) -> None:
    with atomic_output(path) as tmp, open_temporary(tmp, "wb") as f:   # never through a link swapped in
        torch.save({"format": STATE_FORMAT, "version": STATE_VERSION, **state}, f)


def load_state(path: str | os.PathLike) -> dict:
    """The training state in ``path``, read with ``weights_only=True``; a foreign file is a VprError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or a pickle with objects: say which file
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise VprError(f"{path}: not a vpr training state (unreadable, or it holds objects other than "
                       f"tensors and plain values: {type(err).__name__}: {first}); remove it or use "
                       "another --out directory") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise VprError(f"{path}: not a vpr training state (no '{STATE_FORMAT}' marker: e.g. a model "
                       "checkpoint copied here); remove it or use another --out directory")
    if state.get("version") != STATE_VERSION:
        raise VprError(f"{path}: training state of version {state.get('version')!r}; this vpr reads "
                       f"version {STATE_VERSION}; remove it or use another --out directory")
    try:
        state["run"] = RunState.from_dict(state["run"])
        for key in ("config", "inputs", "model", "optimizer", "scheduler", "miner", "rng"):
            state[key]
    except (KeyError, TypeError, ValueError) as err:
        raise VprError(f"{path}: incomplete vpr training state ({err}); remove it or use another "
                       "--out directory") from None
    return state


def check_finite(model: torch.nn.Module, where: str) -> None:
    """Refuse to go on (and to save) with a NaN or infinite weight."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise VprError(f"training diverged: weight {name} is not finite {where}; nothing was saved "
                           "from this point; lower --lr (or check the inputs) and start again")


class RunLock:
    """An exclusive ``flock`` on ``DIR/run.lock`` while a process works in the run directory.

    The kernel releases it when the process ends in any way (exit, signal, crash), so a stale lock
    cannot outlive its owner. The lock file is opened without following a symlink, and only a plain file
    with no other name (no hard link) is taken and written: a ``run.lock`` planted in a shared directory
    to point elsewhere is refused, never truncated.
    """

    def __init__(self, out: Path):
        self.path = out / "run.lock"
        self._fd: int | None = None

    def _open(self) -> int:
        """The lock file's descriptor: created afresh (O_EXCL), else the existing plain file opened
        without following a symlink; anything else is a VprError naming it."""
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            return os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            pass
        try:
            fd = os.open(self.path, flags)
        except OSError as err:
            if err.errno == errno.ELOOP or self.path.is_symlink():
                raise VprError(f"{self.path}: is a symbolic link; vpr never writes through a link in a run "
                               "directory: remove it") from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            what = "not a plain file" if not stat.S_ISREG(st.st_mode) else \
                f"a hard link ({st.st_nlink} names for one file)"
            raise VprError(f"{self.path}: is {what}; vpr writes only a lock file of its own here: remove it")
        return fd

    def acquire(self) -> str | None:
        """Take the lock; None on success, else the one-line reason (another process holds it, or the
        lock file is not vpr's own)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = self._open()
        except VprError as err:
            return str(err)
        except OSError as err:
            return f"{self.path.parent}: cannot work in this run directory ({err.strerror})"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            return (f"run directory {self.path.parent} is in use by another vpr train (pid {owner}); "
                    "wait for it to end or use another --out directory")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)   # no pid of a process that is gone
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
