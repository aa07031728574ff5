"""Progress of long loops (extraction, clustering, mining, training) that a person can follow.

On a terminal, :func:`progress` is a tqdm bar, as before. When standard error is not a terminal (a Snakemake
log, a Slurm output file), tqdm would be silent; :func:`progress` then writes a line

    extract: 1200/25000 img (4.8 %), 38.2 img/s, 31 s elapsed, about 10 min 23 s left

whenever :func:`interval` seconds (30 by default; the environment variable ``VPR_PROGRESS_INTERVAL``
changes it, e.g. for tests) have passed since the last line, whenever another 5 % is done, and at the end.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from vpr import interrupt
from vpr.errors import VprError

DEFAULT_INTERVAL = 30.0  # seconds between two lines at most
STEPS = 20  # and a line at least every 1/20 = 5 % of the total
ENV = "VPR_PROGRESS_INTERVAL"


def interval() -> float:
    """Seconds between two progress lines at most: ``VPR_PROGRESS_INTERVAL`` or 30."""
    value = os.environ.get(ENV)
    if value is None or not value.strip():
        return DEFAULT_INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        raise VprError(f"{ENV}={value!r}: not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise VprError(f"{ENV}={value!r}: must be a non-negative number of seconds")
    return seconds


def duration(seconds: float) -> str:
    """``3725`` -> ``1 h 02 min``, ``133`` -> ``2 min 13 s``, ``7.4`` -> ``7 s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


class LineProgress:
    """The tqdm calls vpr uses (iteration, ``update``, ``set_postfix``, ``close``, a context manager), as
    lines on a stream that is not a terminal."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, every: float | None = None,
                 stream: TextIO | None = None):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.n = desc, unit, initial
        self.every = interval() if every is None else every
        self.stream = stream
        self.start = self.last_time = time.monotonic()
        self.last_step = self._step(initial)
        self.last_n = initial   # the count the last line showed
        self.postfix = ""
        self.closed = False

    def _step(self, n: int) -> int:
        return n * STEPS // self.total if self.total else 0

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.1f} %)"
        parts.append(f"{rate:.3g} {self.unit}/s")
        parts.append(f"{duration(elapsed)} elapsed")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"about {duration((self.total - self.n) / rate)} left")
        text = ", ".join(parts) + (f", {self.postfix}" if self.postfix else "")
        return f"{self.desc}: {text}" if self.desc else text

    def _write(self) -> None:
        stream = self.stream or sys.stderr
        print(self.line(), file=stream, flush=True)
        self.last_time = time.monotonic()
        self.last_step = self._step(self.n)
        self.last_n = self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last_time >= self.every or self._step(self.n) > self.last_step:
            self._write()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n != self.last_n:   # the final count, unless the last line showed it
                self._write()

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, initial: int = 0, interruptible: bool = True):
    """A tqdm bar on a terminal, a :class:`LineProgress` otherwise; with ``disable``, a silent tqdm.

    ``interruptible``: inside :func:`vpr.interrupt.stop_on` (a training run), every update and iteration is
    a :func:`vpr.interrupt.check`, where a pending stop signal raises; a loop that polls the stop flag
    itself passes False."""
    if disable or sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial)
    else:
        bar = LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
    return _Interruptible(bar, desc) if interruptible and interrupt.active() else bar


class _Interruptible:
    """A progress bar whose updates and iterations check for a pending stop signal."""

    def __init__(self, bar, where: str):
        self._bar, self._where = bar, where

    def __iter__(self) -> Iterator:
        for item in self._bar:
            interrupt.check(self._where)
            yield item

    def update(self, n: int = 1) -> None:
        self._bar.update(n)
        interrupt.check(self._where)

    def __enter__(self) -> _Interruptible:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.__exit__(*exc)

    def __getattr__(self, name: str):   # set_postfix, close, n, ...
        return getattr(self._bar, name)
