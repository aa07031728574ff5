"""The results table: Recall@N of every (method, data set) with its 95 % interval, the published numbers,
and, against a baseline method, which differences are significant.

Input: the recall CSVs of `vpr evaluate` (:mod:`vpr.evaluation_files`), and for a comparison the rankings
files beside them. Every Recall@N carries its Wilson score interval over the queries (:mod:`vpr.stats`); a
published Recall@N carries the interval that its test set's query count implies. With a baseline method,
every other method is compared with it on the same queries by McNemar's exact test on the per-query hits,
and a cell significantly above (below) the baseline at the 5 % level is marked ▲ (▼).

With two or more data sets, a "pooled" column group treats all queries of all test sets as one sample:
the queries of different test sets are independent, so their hits add up to one binomial count (one
interval) and their per-query hits concatenate into one paired test. Pooling weights each test set by its
number of queries.

Output: a CSV (one row per method and data set, and per method "pooled"; Recall@N and its interval in
percent, published numbers, the p-value and verdict against the baseline) and a Markdown table (one row
per method, one R@N column group per data set, ``85.4 [83.2, 87.5]`` cells, a row of published numbers
under each method that has them, footnotes saying what the interval, the marks and the pooled columns are).

A number computed by a step whose log holds a warning (the logs named per method and data set, e.g. by the
workflow) is marked † in the Markdown table, with the warnings in a footnote, and counted in the CSV's
``warnings`` column.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vpr.errors import VprError
from vpr.evaluation_files import default_rankings_path, read_rankings, read_recall_csv
from vpr.logged_warnings import warning_lines
from vpr.published import (
    MODEL_ZOO_SOURCE,
    QUERY_COUNT_SOURCE,
    dataset_name,
    method_name,
    published,
    query_count,
)
from vpr.stats import SIGNIFICANCE, PairedTest, hits_of, mcnemar_exact, recall_interval, wilson_interval

MISSING = "-"  # Markdown cell of a method that was not evaluated on a data set
POOLED = "pooled"  # data-set key of the pooled rows
MARKS = {"above": "▲", "below": "▼", "no": ""}
WARNED = "†"  # a number computed by a step that logged a warning


@dataclass
class TableRow:
    """One evaluated (method, data set): our recall (fractions) with its interval and query count, the
    published recall (%, or None), and, when compared with a baseline, the per-query hits and the paired
    test against the baseline."""

    method: str
    dataset: str
    recall: dict[int, float]
    interval: dict[int, tuple[float, float]]
    queries: int
    published: dict[int, float] | None
    source: str = ""
    hits: dict[int, np.ndarray] | None = None
    tests: dict[int, PairedTest] | None = None
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (log file, warning line)


def collect(entries: Sequence[tuple[str, str, str | os.PathLike]], ns: Sequence[int],
            compare_to: str | None = None,
            rankings: Mapping[tuple[str, str], str | os.PathLike] | None = None,
            step_logs: Mapping[tuple[str, str], Sequence[str | os.PathLike]] | None = None) -> list[TableRow]:
    """Read every ``(method, dataset, recall CSV)``; each file must hold Recall@N for every N of ``ns``.

    ``step_logs[(method, dataset)]`` lists the logs of the steps that computed a row's numbers: their
    warning lines (:mod:`vpr.logged_warnings`; a missing log holds none) become the row's ``warnings``.

    With ``compare_to`` (a method among the entries), every row on a data set where that method was
    evaluated is tested against it; the rankings file of a row is ``rankings[(method, dataset)]`` or, by
    default, the one beside its recall CSV.
    """
    rows: list[TableRow] = []
    seen: dict[tuple[str, str], str] = {}
    for method, dataset, path in entries:
        key = (method, dataset)
        if key in seen:
            raise VprError(f"{path}: {method} on {dataset} is given twice (also {seen[key]})")
        if dataset == POOLED:
            raise VprError(f"{path}: the data-set key {POOLED!r} is reserved for the pooled columns")
        seen[key] = str(path)
        table = read_recall_csv(path)
        missing = [n for n in ns if n not in table.recall]
        if missing:
            raise VprError(f"{path}: no Recall@{missing[0]} in the file (it has N = "
                           f"{', '.join(map(str, sorted(table.recall)))}); evaluate with --recall-at "
                           f"covering {' '.join(map(str, ns))} or choose other --ns")
        interval = {n: table.interval[n] for n in ns}
        rows.append(TableRow(method, dataset, {n: table.recall[n] for n in ns}, interval, table.queries,
                             published(method, dataset), str(path)))
    rankings = dict(rankings or {})
    unknown = [k for k in rankings if k not in seen]
    if unknown:
        raise VprError(f"--rankings {' '.join(unknown[0])}: no --recall of that method and data set")
    step_logs = dict(step_logs or {})
    unknown = [k for k in step_logs if k not in seen]
    if unknown:
        raise VprError(f"--step-log {' '.join(unknown[0])}: no --recall of that method and data set")
    for row in rows:
        row.warnings = [(str(log), line) for log in step_logs.get((row.method, row.dataset), ())
                        for line in warning_lines(log)]
    if compare_to is not None:
        _compare(rows, ns, compare_to, rankings)
    return rows


def _hits(row: TableRow, ns: Sequence[int], path: Path) -> dict[int, np.ndarray]:
    """Per-query hits@N of a row from its rankings file, checked against its recall CSV."""
    rankings = read_rankings(path)
    if rankings.num_queries != row.queries:
        raise VprError(f"{path} ranks {rankings.num_queries} queries but {row.source} was measured on "
                       f"{row.queries}; they are not from the same evaluation (re-run 'vpr evaluate')")
    # (a ranking shorter than N, of a database or a place list smaller than N, holds all hits at N)
    hits = {n: rankings.hits(n) for n in ns}
    for n in ns:
        if abs(float(hits[n].mean()) - row.recall[n]) > 1e-9:
            raise VprError(f"{path} gives Recall@{n} = {hits[n].mean():.6f} but {row.source} says "
                           f"{row.recall[n]:.6f}; they are not from the same evaluation "
                           "(re-run 'vpr evaluate')")
    return hits


def _compare(rows: list[TableRow], ns: Sequence[int], baseline: str,
             rankings: Mapping[tuple[str, str], str | os.PathLike]) -> None:
    base = {r.dataset: r for r in rows if r.method == baseline}
    if not base:
        methods = ", ".join(dict.fromkeys(r.method for r in rows))
        raise VprError(f"--compare-to {baseline}: no --recall of that method (the table has {methods})")
    for row in rows:
        if row.dataset in base:
            path = rankings.get((row.method, row.dataset)) or default_rankings_path(row.source)
            row.hits = _hits(row, ns, Path(path))
    for row in rows:
        ref = base.get(row.dataset)
        if ref is None or row is ref:
            continue
        if ref.hits[ns[0]].size != row.hits[ns[0]].size:
            raise VprError(f"{row.method} and {baseline} on {row.dataset} rank {row.hits[ns[0]].size} and "
                           f"{ref.hits[ns[0]].size} queries; a paired test needs the same queries")
        row.tests = {n: mcnemar_exact(row.hits[n], ref.hits[n]) for n in ns}


def pooled_rows(rows: Sequence[TableRow], ns: Sequence[int], compare_to: str | None = None
                ) -> list[TableRow]:
    """One row per method evaluated on every data set of ``rows`` (two or more): all queries as one sample.

    With ``compare_to``, the pooled hits are tested against the baseline's pooled hits.
    """
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    if len(datasets) < 2:
        return []
    per_method: dict[str, dict[str, TableRow]] = {}
    for row in rows:
        per_method.setdefault(row.method, {})[row.dataset] = row
    pooled: dict[str, TableRow] = {}
    for method, per in per_method.items():
        parts = [per.get(d) for d in datasets]
        if any(p is None for p in parts):
            continue
        total = sum(p.queries for p in parts)
        hits = {n: sum(hits_of(p.recall[n], p.queries) for p in parts) for n in ns}
        row = TableRow(method, POOLED, {n: hits[n] / total for n in ns},
                       {n: wilson_interval(hits[n], total) for n in ns}, total, None)
        row.warnings = list(dict.fromkeys(w for p in parts for w in p.warnings))
        if all(p.hits is not None for p in parts):
            row.hits = {n: np.concatenate([p.hits[n] for p in parts]) for n in ns}
        pooled[method] = row
    ref = pooled.get(compare_to) if compare_to is not None else None
    if ref is not None and ref.hits is not None:
        for row in pooled.values():
            if row is not ref and row.hits is not None:
                row.tests = {n: mcnemar_exact(row.hits[n], ref.hits[n]) for n in ns}
    return list(pooled.values())


def published_interval(dataset: str, recall_pct: float) -> tuple[float, float] | None:
    """The 95 % interval (%) of a published Recall@N on ``dataset`` from its query count (None: unknown)."""
    count = query_count(dataset)
    if count is None:
        return None
    low, high = recall_interval(recall_pct / 100.0, count, exact=False)
    return 100.0 * low, 100.0 * high


# ------------------------------------------------------------------------------------------------- CSV
def _f2(x: float) -> str:
    return f"{x:.2f}"


def table_csv(rows: Sequence[TableRow], ns: Sequence[int], compare_to: str | None = None) -> str:
    """CSV text, one line per row (pooled rows included): Recall@N and its interval in percent (two
    decimals, empty where the recall CSV has no interval), the published Recall@N with its interval (or
    empty), and against ``compare_to`` McNemar's p-value and the verdict ``above``/``below``/``no``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "dataset", "queries",
                     *(f"R@{n}{s}" for n in ns for s in ("", " ci_low", " ci_high")),
                     *(f"published R@{n}{s}" for n in ns for s in ("", " ci_low", " ci_high")),
                     "published queries", "baseline",
                     *(f"{s} R@{n}" for n in ns for s in ("p", "vs baseline")), "warnings"])
    for row in rows:
        ours = []
        for n in ns:
            ours += [_f2(100.0 * row.recall[n]), *(_f2(100.0 * c) for c in row.interval[n])]
        pub, pub_cells = row.published or {}, []
        for n in ns:
            ci = published_interval(row.dataset, pub[n]) if n in pub else None
            pub_cells += [f"{pub[n]:.1f}" if n in pub else "", *((_f2(c) for c in ci) if ci else ("", ""))]
        pub_queries = query_count(row.dataset) if pub else None
        tests = []
        for n in ns:
            test = row.tests[n] if row.tests else None
            tests += [f"{test.p_value:.4g}", test.verdict()] if test else ["", ""]
        writer.writerow([row.method, row.dataset, row.queries, *ours,
                         *pub_cells, pub_queries or "", compare_to if row.tests else "", *tests,
                         len(row.warnings)])
    return buf.getvalue()


# -------------------------------------------------------------------------------------------- Markdown
def _pct(fraction: float) -> str:
    return f"{100.0 * fraction:.1f}"


def _cell(row: TableRow, n: int) -> str:
    low, high = row.interval[n]
    cell = f"{_pct(row.recall[n])} [{_pct(low)}, {_pct(high)}]"
    if row.tests:
        mark = MARKS[row.tests[n].verdict()]
        cell += f" {mark}" if mark else ""
    if row.warnings:
        cell += f" {WARNED}"
    return cell


def _published_cell(dataset: str, pub: dict[int, float] | None, n: int) -> str:
    if not pub or n not in pub:
        return MISSING
    ci = published_interval(dataset, pub[n])
    return f"{pub[n]:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def table_markdown(rows: Sequence[TableRow], ns: Sequence[int], compare_to: str | None = None) -> str:
    """Markdown: one row per method (in order of appearance) followed by its published row where there is
    one, one R@N column group per data set (the pooled group last), and the footnotes."""
    methods = list(dict.fromkeys(r.method for r in rows))
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    by_key = {(r.method, r.dataset): r for r in rows}
    real = [d for d in datasets if d != POOLED]
    header = ["Method", *(f"{'Pooled' if d == POOLED else dataset_name(d)} R@{n}"
                          for d in datasets for n in ns)]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---", *(["---:"] * (len(header) - 1))]) + "|"]
    any_published = False
    for m in methods:
        name = method_name(m) + (" (baseline)" if compare_to is not None and m == compare_to else "")
        cells = [name]
        for d in datasets:
            row = by_key.get((m, d))
            cells += [_cell(row, n) if row is not None else MISSING for n in ns]
        lines.append("| " + " | ".join(cells) + " |")
        pubs = {d: published(m, d) for d in real}
        if any(pubs.values()):
            any_published = True
            cells = [f"{method_name(m)}, published"]
            for d in datasets:
                cells += [_published_cell(d, pubs.get(d), n) for n in ns]
            lines.append("| " + " | ".join(cells) + " |")

    counts = {}
    for d in real:
        qs = sorted({r.queries for r in rows if r.dataset == d})
        if qs:
            counts[d] = "/".join(f"{q:,}" for q in qs)
    notes = ["Recall@N in % on the test split of each data set; [low, high]: its 95 % Wilson score interval "
             "over the queries" + (f" ({', '.join(f'{dataset_name(d)} {c}' for d, c in counts.items())} "
                                   "queries)" if counts else "") + "."]
    if POOLED in datasets:
        notes.append(f"Pooled: all queries of the {len(real)} test sets as one sample: their hits add up to "
                     "one binomial count and one paired test, which takes the test sets' queries to be "
                     "independent (no query image in two test sets; Pitts30k-test and Pitts250k-test are "
                     "cut from the same Pittsburgh queries, vpr's synthetic ones are not); each test set "
                     "weighs by its number of queries. Only methods evaluated on every test set have pooled "
                     "cells.")
    if compare_to is not None:
        notes.append(f"▲ / ▼: significantly above / below {method_name(compare_to)} on the same queries at "
                     f"the {100 * SIGNIFICANCE:g} % level (two-sided McNemar exact test: a binomial test on "
                     "the queries that one method hits and the other misses); no mark: not significant. "
                     "Each cell is tested on its own, without a correction for the number of cells.")
    if len(by_key) < len(methods) * len(datasets):
        notes.append(f"{MISSING}: not evaluated.")
    warned = {}
    for r in rows:
        for log, line in r.warnings:
            warned.setdefault((log, line), []).append(f"{method_name(r.method)} on {r.dataset}")
    if warned:
        listed = "; ".join(f"`{log}`: {line}" for log, line in dict.fromkeys(k for k in warned))
        notes.append(f"{WARNED}: a step that computed this number logged a warning; check it before trusting "
                     f"the number. {listed}.")
    if any_published:
        shown = [d for d in real if any(published(m, d) for m in methods)]
        sizes = ", ".join(f"{dataset_name(d)} {query_count(d):,}" for d in shown if query_count(d))
        notes.append(f"Published rows: from {MODEL_ZOO_SOURCE}; their interval is the one their query count "
                     f"implies ({sizes} queries; {QUERY_COUNT_SOURCE}).")
    lines += ["", "\n\n".join(notes)]
    return "\n".join(lines) + "\n"
