"""The results table: Recall@N of every (method, data set) beside the published numbers.

Input: the recall CSV files of `vpr evaluate` (header ``n,recall``, recall as a fraction). Output: a CSV
(one row per method and data set, Recall@N in percent, published numbers or empty) and a Markdown table
(one row per method, one group of R@N columns per data set, percent with one decimal, the published
number beside ours as ``90.1 (pub. 90.7)``, and a footnote naming where the published numbers come from).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vpr.errors import VprError
from vpr.published import MODEL_ZOO_SOURCE, dataset_name, method_name, published

MISSING = "-"  # Markdown cell of a method that was not evaluated on a data set


def read_recall_csv(path: str | os.PathLike) -> dict[int, float]:
    """{N: Recall@N as a fraction} from a recall CSV of `vpr evaluate`; VprError naming the file if bad."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if row]
    except FileNotFoundError:
        raise VprError(f"{path}: recall CSV not found (create it with 'vpr evaluate')") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise VprError(f"{path}: unreadable recall CSV ({err})") from None
    if not rows or [c.strip() for c in rows[0]] != ["n", "recall"]:
        header = ",".join(rows[0]) if rows else "an empty file"
        raise VprError(f"{path}: not a recall CSV: expected the header 'n,recall', found {header!r}")
    recall: dict[int, float] = {}
    for line, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != 2:
                raise ValueError(f"{len(row)} fields")
            n, r = int(row[0]), float(row[1])
        except ValueError as err:
            raise VprError(f"{path}: malformed row {line} {','.join(row)!r} ({err}); expected 'N,fraction'"
                           ) from None
        if n < 1 or not math.isfinite(r) or not 0.0 <= r <= 1.0:
            raise VprError(f"{path}: row {line}: N must be positive and the recall a fraction in [0, 1], "
                           f"got N={n}, recall={r}")
        if n in recall:
            raise VprError(f"{path}: N={n} appears twice")
        recall[n] = r
    if not recall:
        raise VprError(f"{path}: the recall CSV has a header but no rows")
    return recall


@dataclass
class TableRow:
    """One evaluated (method, data set): our recall (fractions) and the published one (%), if any."""

    method: str
    dataset: str
    recall: dict[int, float]
    published: dict[int, float] | None
    source: str = ""


def collect(entries: Sequence[tuple[str, str, str | os.PathLike]], ns: Sequence[int]) -> list[TableRow]:
    """Read every ``(method, dataset, recall CSV)``; each file must hold Recall@N for every N of ``ns``."""
    rows: list[TableRow] = []
    seen: dict[tuple[str, str], str] = {}
    for method, dataset, path in entries:
        key = (method, dataset)
        if key in seen:
            raise VprError(f"{path}: {method} on {dataset} is given twice (also {seen[key]})")
        seen[key] = str(path)
        recall = read_recall_csv(path)
        missing = [n for n in ns if n not in recall]
        if missing:
            raise VprError(f"{path}: no Recall@{missing[0]} in the file (it has N = "
                           f"{', '.join(map(str, sorted(recall)))}); evaluate with --recall-at covering "
                           f"{' '.join(map(str, ns))} or choose other --ns")
        rows.append(TableRow(method, dataset, {n: recall[n] for n in ns}, published(method, dataset),
                             str(path)))
    return rows


def _pct(fraction: float) -> str:
    return f"{100.0 * fraction:.1f}"


def table_csv(rows: Sequence[TableRow], ns: Sequence[int]) -> str:
    """CSV text: method, dataset, R@N (percent, two decimals) for each N, then published R@N or empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "dataset", *(f"R@{n}" for n in ns), *(f"published R@{n}" for n in ns)])
    for row in rows:
        pub = row.published or {}
        writer.writerow([row.method, row.dataset, *(f"{100.0 * row.recall[n]:.2f}" for n in ns),
                         *((f"{pub[n]:.1f}" if n in pub else "") for n in ns)])
    return buf.getvalue()


def table_markdown(rows: Sequence[TableRow], ns: Sequence[int]) -> str:
    """Markdown: one row per method (in order of appearance), one R@N column group per data set."""
    methods = list(dict.fromkeys(r.method for r in rows))
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    by_key = {(r.method, r.dataset): r for r in rows}
    header = ["Method", *(f"{dataset_name(d)} R@{n}" for d in datasets for n in ns)]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---", *(["---:"] * (len(header) - 1))]) + "|"]
    for m in methods:
        cells = [method_name(m)]
        for d in datasets:
            row = by_key.get((m, d))
            for n in ns:
                if row is None:
                    cells.append(MISSING)
                    continue
                cell = _pct(row.recall[n])
                if row.published and n in row.published:
                    cell += f" (pub. {row.published[n]:.1f})"
                cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    note = "Recall@N in % on the test split of each data set"
    if len(by_key) < len(methods) * len(datasets):
        note += f"; {MISSING}: not evaluated"
    lines += ["", f"{note}. pub.: published number, from {MODEL_ZOO_SOURCE}."]
    return "\n".join(lines) + "\n"
