"""The warnings in a job's log file: what the workflow repeats on its console and `vpr table` footnotes.

A vpr command logs a warning as ``vpr COMMAND: WARNING: message`` (the logging format of ``vpr.cli``);
Python's ``warnings`` module writes ``file:line: SomethingWarning: message``. Both count. Torch-free and
numpy-free, so that the workflow can import it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

WARNING_LINE = re.compile(r"^vpr [\w-]+: WARNING: |^\S.*?:\d+: \w*Warning: ")


def warning_lines(log: str | os.PathLike) -> list[str]:
    """The warning lines of the log file ``log`` (none when it does not exist or cannot be read)."""
    try:
        text = Path(log).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if WARNING_LINE.search(line)]


def warnings_summary(logs: Iterable[str | os.PathLike]) -> str:
    """Every warning of the given logs, grouped by log, as console text ("" when there is none)."""
    blocks = []
    for log in logs:
        lines = warning_lines(log)
        if lines:
            blocks.append(f"  {log}:\n" + "".join(f"    {line}\n" for line in lines))
    if not blocks:
        return ""
    return (f"vpr workflow: {len(blocks)} job log(s) of this run hold warnings; the numbers they fed are "
            "footnoted in the table:\n" + "".join(blocks))


def logs_written_since(folder: str | os.PathLike, since: float) -> list[Path]:
    """The ``*.log`` files under ``folder`` modified at or after the time stamp ``since``, sorted."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*.log") if p.is_file() and p.stat().st_mtime >= since)
