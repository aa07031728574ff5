"""The two artifacts of `vpr evaluate`, each with its writer and its reader: the recall CSV and the
rankings file.

**Recall CSV** (header ``n,recall,ci_low,ci_high,queries``): one row per N, Recall@N as a fraction, its
95 % Wilson interval (:mod:`vpr.stats`) as fractions, and the number of queries it was measured on (the same
in every row).

**Rankings file** (HDF5, attribute ``kind = "vpr-rankings"``): ``topk`` (Nq x K int64 database indices,
nearest first, -1 padded), ``distances`` (float32, squared L2 or the re-ranked distance, inf where padded),
``first_positive`` (int64, the 0-based position of the first ground-truth positive in ``topk``, -1 when
none is there; query q is a hit at N when ``0 <= first_positive[q] < N``, which is what the paired tests
of ``vpr table`` use), and the attributes ``recall_n``/``recall`` (the recall table), ``index``,
``features``, ``nms``, ``rerank`` (and ``rr_k1``, ``rr_k2``, ``rr_lambda`` when re-ranked).

By default the rankings file lies beside the recall CSV: ``X_recall.csv`` -> ``X_rankings.h5``, any other
``X.csv`` -> ``X_rankings.h5`` as well (:func:`default_rankings_path`).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vpr.artifacts import RANKINGS
from vpr.errors import VprError
from vpr.io import atomic_output, open_temporary
from vpr.stats import hits_at, hits_of, recall_interval

RECALL_COLUMNS = ("n", "recall", "ci_low", "ci_high", "queries")


# ------------------------------------------------------------------------------------------- recall CSV
@dataclass
class RecallTable:
    """Recall@N (fractions) of one evaluation, the 95 % interval {N: (low, high)} of each and the number of
    queries."""

    recall: dict[int, float]
    interval: dict[int, tuple[float, float]]
    queries: int


def recall_table(recall: dict[int, float], queries: int) -> RecallTable:
    """The recall table of ``queries`` queries with the Wilson interval of every Recall@N."""
    return RecallTable(dict(recall), {n: recall_interval(r, queries) for n, r in recall.items()}, queries)


def write_recall_csv(path: str | os.PathLike, table: RecallTable) -> None:
    """Write ``table`` (with its interval and query count) atomically as a recall CSV."""
    with atomic_output(path) as tmp, open_temporary(tmp, "w", encoding="utf-8") as f:
        f.write(",".join(RECALL_COLUMNS) + "\n")
        for n, r in table.recall.items():
            low, high = table.interval[n]
            f.write(f"{int(n)},{float(r)!r},{float(low)!r},{float(high)!r},{int(table.queries)}\n")


def read_recall_csv(path: str | os.PathLike) -> RecallTable:
    """The recall table of a recall CSV of `vpr evaluate`; VprError naming the file if it is bad."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if row]
    except FileNotFoundError:
        raise VprError(f"{path}: recall CSV not found (create it with 'vpr evaluate')") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise VprError(f"{path}: unreadable recall CSV ({err})") from None
    header = tuple(c.strip() for c in rows[0]) if rows else ()
    if header != RECALL_COLUMNS:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise VprError(f"{path}: not a recall CSV: expected the header '{','.join(RECALL_COLUMNS)}', "
                       f"found {found!r}")
    table = RecallTable({}, {}, 0)
    for line, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != len(header):
                raise ValueError(f"{len(row)} fields")
            n, r = int(row[0]), float(row[1])
            low, high, queries = float(row[2]), float(row[3]), int(row[4])
        except ValueError as err:
            raise VprError(f"{path}: malformed row {line} {','.join(row)!r} ({err}); expected "
                           "'N,fraction,low,high,queries'") from None
        if n < 1 or not math.isfinite(r) or not 0.0 <= r <= 1.0:
            raise VprError(f"{path}: row {line}: N must be positive and the recall a fraction in [0, 1], "
                           f"got N={n}, recall={r}")
        if n in table.recall:
            raise VprError(f"{path}: N={n} appears twice")
        table.recall[n] = r
        if not (0.0 <= low <= r <= high <= 1.0):
            raise VprError(f"{path}: row {line}: the interval [{low}, {high}] must lie in [0, 1] "
                           f"around the recall {r}")
        if queries < 1 or (table.queries and queries != table.queries):
            raise VprError(f"{path}: row {line}: {queries} queries; expected one positive count in "
                           "every row")
        try:
            hits_of(r, queries)
        except ValueError as err:
            raise VprError(f"{path}: row {line}: {err}") from None
        table.interval[n], table.queries = (low, high), queries
    if not table.recall:
        raise VprError(f"{path}: the recall CSV has a header but no rows")
    return table


# -------------------------------------------------------------------------------------- rankings file
def default_rankings_path(recall_csv: str | os.PathLike) -> Path:
    """Where `vpr evaluate` puts the rankings without --rankings, and where `vpr table` looks for them."""
    recall_csv = Path(recall_csv)
    stem = recall_csv.stem
    stem = stem[: -len("_recall")] if stem.endswith("_recall") and stem != "_recall" else stem
    return recall_csv.with_name(f"{stem}_rankings.h5")


@dataclass
class Rankings:
    """The contents of a rankings file (see the module docstring)."""

    topk: np.ndarray
    distances: np.ndarray | None
    first_positive: np.ndarray
    attrs: dict = field(default_factory=dict)

    @property
    def num_queries(self) -> int:
        return int(self.topk.shape[0])

    def hits(self, n: int) -> np.ndarray:
        """Per-query hit@N (boolean)."""
        return hits_at(self.first_positive, n)


def write_rankings(path: str | os.PathLike, topk: np.ndarray, distances: np.ndarray,
                   first_positive: np.ndarray, recall: dict[int, float], **attrs) -> None:
    """Write a rankings file atomically; ``attrs`` (index, features, nms, rerank, ...) are stored as given."""
    from vpr.io import atomic_h5

    with atomic_h5(path) as f:
        f.create_dataset("topk", data=np.asarray(topk, dtype=np.int64))
        f.create_dataset("distances", data=np.asarray(distances, dtype=np.float32))
        f.create_dataset("first_positive", data=np.asarray(first_positive, dtype=np.int64))
        f.attrs.update({
            "kind": RANKINGS,
            "recall_n": np.asarray(list(recall), dtype=np.int64),
            "recall": np.asarray(list(recall.values()), dtype=np.float64),
            **attrs,
        })


def read_rankings(path: str | os.PathLike) -> Rankings:
    """Read and check a rankings file of `vpr evaluate`; VprError naming the file if it is not one."""
    from vpr.artifacts import open_artifact

    path = Path(path)
    made_by = "vpr evaluate"
    try:
        with open_artifact(path, RANKINGS) as f:   # a file of another vpr kind is refused, naming it
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
            missing = [name for name in ("topk", "first_positive") if name not in f]
            if missing:
                raise VprError(f"{path}: not a rankings file: no dataset {', '.join(map(repr, missing))} "
                               f"(written by '{made_by}')")
            topk = np.asarray(f["topk"][()])
            first = np.asarray(f["first_positive"][()])
            distances = np.asarray(f["distances"][()]) if "distances" in f else None
    except OSError as err:
        raise VprError(f"{path}: unreadable rankings file ({err})") from None
    if topk.ndim != 2 or topk.dtype.kind not in "iu":
        raise VprError(f"{path}: dataset 'topk' is {topk.dtype} with shape {topk.shape}, expected a 2-D "
                       "integer matrix (queries x K)")
    if first.shape != (topk.shape[0],) or first.dtype.kind not in "iu" or (
            first.size and (first.min() < -1 or first.max() >= max(topk.shape[1], 1))):
        raise VprError(f"{path}: dataset 'first_positive' ({first.dtype}, shape {first.shape}) must hold "
                       f"one position in [-1, {topk.shape[1]}) per query ({topk.shape[0]} queries)")
    if distances is not None and distances.shape != topk.shape:
        distances = None
    return Rankings(topk.astype(np.int64), distances, first.astype(np.int64), attrs)
