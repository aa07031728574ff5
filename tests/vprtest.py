"""Helpers shared by the test modules: running the real `vpr` command from this environment."""

from __future__ import annotations

import os
import subprocess
import sys

VPR = [sys.executable, "-m", "vpr.cli"]


def run_vpr(*args, check: bool = True, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([*VPR, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"vpr {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc
