"""The files of a training run directory (docs/formats.md, "training run directory"): where each one lies,
which of them a fresh start removes, and how the declared outputs of a finished run are (re)created from
the kept epoch checkpoints."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from vpr.io import atomic_output, open_temporary
from vpr.train.checkpointing import RunState
from vpr.train.config import TrainConfig
from vpr.train.training_log import write_training_log


class CannotRecreate(Exception):
    """A finished run's declared output is missing and so is the epoch checkpoint it is copied from."""


@dataclass
class RunPaths:
    out: Path

    @property
    def resume(self) -> Path:
        return self.out / "resume.pth"

    @property
    def best(self) -> Path:
        return self.out / "model_best.pth"

    @property
    def last(self) -> Path:
        return self.out / "last.pth"

    @property
    def log(self) -> Path:
        return self.out / "log.csv"

    def epoch(self, generation: int, epoch: int, sfrs: bool) -> Path:
        return self.out / (f"checkpoint_g{generation}_e{epoch}.pth" if sfrs else f"checkpoint_e{epoch}.pth")

    def run_files(self) -> list[Path]:
        """Every file a training run writes here (the lock aside): what a fresh start removes."""
        fixed = [self.resume, self.best, self.last, self.log]
        epochs = sorted(self.out.glob("checkpoint_e*.pth")) + sorted(self.out.glob("checkpoint_g*_e*.pth"))
        return [p for p in fixed + epochs if p.is_file()]

    def clear(self, why: str) -> None:
        """Remove every file of an earlier run here, so nothing stale is ever taken for this run's."""
        old = self.run_files()
        for path in old:
            path.unlink()
        if why or old:
            because = f"{why}; " if why else ""
            print(f"{self.out}: {because}removed {len(old)} file(s) of an earlier run, training afresh")

    def final_sources(self, cfg: TrainConfig, state: RunState) -> dict[Path, Path]:
        """The declared outputs that are copies of an epoch checkpoint, and that checkpoint."""
        sfrs = cfg.method == "sfrs"
        return {self.last: self.epoch(cfg.generation, cfg.epochs_this_run - 1, sfrs),
                self.best: self.epoch(cfg.generation, state.best_epoch, sfrs)}

    def write_final_outputs(self, cfg: TrainConfig, state: RunState) -> None:
        """(Re)write the declared outputs from the kept epoch files and the history (rank 0)."""
        for dst, src in self.final_sources(cfg, state).items():
            copy_atomically(src, dst)
        write_training_log(self.log, state.history)

    def restore_outputs(self, cfg: TrainConfig, state: RunState) -> list[str]:
        """Recreate the missing declared outputs of a finished run (rank 0); the names recreated."""
        missing = [p for p in (self.last, self.best, self.log) if not p.exists()]
        sources = self.final_sources(cfg, state)
        for dst in missing:
            if dst in sources and not sources[dst].is_file():
                raise CannotRecreate(f"{dst.name} is missing and so is {sources[dst].name}, the epoch "
                                     "checkpoint it is copied from")
        for dst in missing:
            if dst in sources:
                copy_atomically(sources[dst], dst)
            else:
                write_training_log(self.log, state.history)
        return [p.name for p in missing]


def copy_atomically(src: Path, dst: Path) -> None:
    with atomic_output(dst) as tmp, open(src, "rb") as source, open_temporary(tmp, "wb") as target:
        shutil.copyfileobj(source, target)
