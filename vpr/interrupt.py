"""Stop signals honoured inside long loops, not only between training steps.

A training run polls its stop flag after every optimiser step, where it can save its exact state. The
phases between steps (a feature refresh, mining, the k-reciprocal rows, validation) can take many minutes
on Pitts30k, longer than the grace time Slurm gives before SIGKILL. While :func:`stop_on` is active, every
:func:`check` in those loops (each progress update calls one) raises :class:`StopRequested` once a signal is
pending, so the process exits within one batch. Nothing is saved at that point: the run resumes from its
last resume point (the training loop saves one after every chunk's mining and after every chunk's
training), which reproduces the interrupted run exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

_pending: Callable[[], int | None] | None = None   # the pending signal number, or None


class StopRequested(Exception):
    """A stop signal arrived during ``where`` (a progress label, e.g. "epoch 0 chunk 1: mining")."""

    def __init__(self, signum: int, where: str):
        super().__init__(f"signal {signum} during {where or 'a long loop'}")
        self.signum, self.where = signum, where


@contextlib.contextmanager
def stop_on(pending: Callable[[], int | None]) -> Iterator[None]:
    """Make :func:`check` raise while ``pending()`` returns a signal number."""
    global _pending
    previous, _pending = _pending, pending
    try:
        yield
    finally:
        _pending = previous


def active() -> bool:
    """Whether a :func:`stop_on` is in force."""
    return _pending is not None


def check(where: str = "") -> None:
    """Raise :class:`StopRequested` if a stop signal is pending (no-op outside :func:`stop_on`)."""
    if _pending is not None:
        signum = _pending()
        if signum is not None:
            raise StopRequested(signum, where)
