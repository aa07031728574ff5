"""Helpers shared by the test modules: running the real `vpr` command from this environment, and reading
which of its processes are still there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

VPR = [sys.executable, "-m", "vpr.cli"]

# For a Snakemake run in a subprocess: its shell commands call `vpr`, which lives beside this interpreter
# (CI does not put .venv/bin on PATH).
WITH_VPR_ON_PATH = {**os.environ,
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_vpr(*args, check: bool = True, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([*VPR, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"vpr {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


# A progress line of vpr.progress (written to stderr when it is not a terminal, as under pytest).
PROGRESS_LINE = re.compile(r"^.+: \d+(/\d+)? \w+( \([\d.]+ %\))?, [\d.e+-]+ \w+/s, .+ elapsed")


def without_progress(err: str) -> str:
    """``err`` without its progress lines: what is left of a failing command's stderr is its error."""
    return "".join(line for line in err.splitlines(keepends=True) if not PROGRESS_LINE.match(line))


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after "pid (comm)": state, ppid, pgrp, session, ...; None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def alive(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"
