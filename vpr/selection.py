"""The selection report: every epoch checkpoint of a trained method on every test set, and what picking the
checkpoint on the test set instead of on validation would have reported.

vpr tests the checkpoint with the best validation Recall@5 (`vpr select`: across epochs and, for SFRS,
across generations). With the workflow's ``evaluate.every_checkpoint`` switch every epoch checkpoint is
also evaluated on the test sets; this module puts those numbers side by side:

* per checkpoint (generation, epoch): its validation R@5 (from the training logs) and its test R@1/5/10;
* per test set, a row pair: **selected on validation** (the checkpoint `vpr select` chose) and **best on
  test** (the checkpoint with the highest test R@1, ties broken by R@5, then R@10, then the earlier
  checkpoint). The second is not a valid model selection: it looks at the test labels. It is there to
  compare with published numbers that were picked this way (docs/reproducing.md). Their gap and McNemar's
  exact test on the same test queries (:mod:`vpr.stats`) say how much of a difference the choice makes.
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
from vpr.stats import PairedTest, mcnemar_exact
from vpr.train.training_log import read_training_log

NS = (1, 5, 10)
# The workflow's evaluate.every_checkpoint when a configuration leaves it out: off, as it multiplies the
# evaluation cost by the number of epochs (the schema states the same default; tests/test_defaults.py).
EVERY_CHECKPOINT_DEFAULT = False
BEST_ON_TEST_NOTE = ("not a valid selection: for comparison with published numbers picked this way")

Key = tuple[int, int]   # (generation, epoch)


def label(key: Key, sfrs: bool) -> str:
    return f"g{key[0]} e{key[1]}" if sfrs else f"e{key[1]}"


@dataclass
class Checkpoint:
    """One epoch checkpoint: its validation R@5 and, per test set, its test recall and per-query hits."""

    key: Key
    val_r5: float
    recall: dict[str, dict[int, float]] = field(default_factory=dict)
    queries: dict[str, int] = field(default_factory=dict)
    hits: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)


@dataclass
class Report:
    method: str
    sfrs: bool
    checkpoints: list[Checkpoint]
    test_sets: list[str]
    selected: Key
    best: dict[str, Key]                          # test set -> best-on-test checkpoint
    tests: dict[str, dict[int, PairedTest]]       # test set -> N -> best on test against selected

    def by_key(self, key: Key) -> Checkpoint:
        return next(c for c in self.checkpoints if c.key == key)


def validation_recalls(logs: Sequence[str | os.PathLike]) -> dict[Key, float]:
    """(generation, epoch) -> validation R@5 of every trained epoch in the training logs (epoch -1, the
    model before training, has no checkpoint and is left out)."""
    out: dict[Key, float] = {}
    for log in logs:
        for row in read_training_log(log):
            key = (int(row["generation"]), int(row["epoch"]))
            if key[1] < 0:
                continue
            if key in out:
                raise VprError(f"{log}: generation {key[0]} epoch {key[1]} appears in two training logs")
            out[key] = row["recall@5"]
    if not out:
        raise VprError(f"{', '.join(map(str, logs))}: no trained epoch in the training log(s)")
    return out


def _read_hits(csv_path: Path, n_expected: dict[int, float]) -> tuple[int, dict[int, np.ndarray]]:
    """The query count and per-query hits@N of one evaluation, the rankings checked against the CSV."""
    rankings_path = default_rankings_path(csv_path)
    rankings = read_rankings(rankings_path)
    hits = {n: rankings.hits(n) for n in NS}
    for n in NS:
        if abs(float(hits[n].mean()) - n_expected[n]) > 1e-9:
            raise VprError(f"{rankings_path} gives Recall@{n} = {hits[n].mean():.6f} but {csv_path} says "
                           f"{n_expected[n]:.6f}; they are not from the same evaluation "
                           "(re-run 'vpr evaluate')")
    return rankings.num_queries, hits


def build_report(method: str, logs: Sequence[str | os.PathLike],
                 recalls: Mapping[tuple[int, int, str], str | os.PathLike], selected: Key) -> Report:
    """Read the training logs and the recall CSVs (``(generation, epoch, test set) -> CSV``, the rankings
    file beside each) of every checkpoint; ``selected`` is the (generation, epoch) `vpr select` chose."""
    val = validation_recalls(logs)
    test_sets = list(dict.fromkeys(t for _, _, t in recalls))
    for g, e, t in recalls:
        if (g, e) not in val:
            raise VprError(f"{recalls[(g, e, t)]}: generation {g} epoch {e} is not in the training log(s) "
                           f"{', '.join(map(str, logs))}")
    if selected not in val:
        raise VprError(f"the selected model is generation {selected[0]} epoch {selected[1]}, which is not in "
                       f"the training log(s) {', '.join(map(str, logs))}")
    checkpoints = []
    for key in sorted(val):
        ckpt = Checkpoint(key, val[key])
        for t in test_sets:
            path = recalls.get((*key, t))
            if path is None:
                raise VprError(f"no recall CSV of generation {key[0]} epoch {key[1]} on {t}: every "
                               "checkpoint of the training log(s) must be evaluated on every test set")
            table = read_recall_csv(path)
            missing = [n for n in NS if n not in table.recall]
            if missing:
                raise VprError(f"{path}: no Recall@{missing[0]}; evaluate with --recall-at including 1 5 10")
            ckpt.recall[t] = {n: table.recall[n] for n in NS}
            ckpt.queries[t], ckpt.hits[t] = _read_hits(Path(path), ckpt.recall[t])
        checkpoints.append(ckpt)
    best, tests = {}, {}
    for t in test_sets:
        # max over (R@1, R@5, R@10); on a tie the earlier checkpoint (max keeps the first maximum)
        top = max(checkpoints, key=lambda c: tuple(c.recall[t][n] for n in NS))
        best[t] = top.key
        chosen = next(c for c in checkpoints if c.key == selected)
        tests[t] = {n: mcnemar_exact(top.hits[t][n], chosen.hits[t][n]) for n in NS}
    return Report(method, method == "sfrs" or any(k[0] for k in val), checkpoints, test_sets, selected,
                  best, tests)


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}"


def report_csv(report: Report) -> str:
    """One row per checkpoint and test set: validation R@5 and test R@1/5/10 in percent (two decimals),
    the test queries, and whether it is the checkpoint selected on validation / the best on test."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "generation", "epoch", "val R@5", "test set", "queries",
                     *(f"R@{n}" for n in NS), "selected on validation", "best on test"])
    for c in report.checkpoints:
        for t in report.test_sets:
            writer.writerow([report.method, c.key[0], c.key[1], _pct(c.val_r5), t, c.queries[t],
                             *(_pct(c.recall[t][n]) for n in NS), int(c.key == report.selected),
                             int(c.key == report.best[t])])
    return buf.getvalue()


def report_markdown(report: Report) -> str:
    """Per test set the row pair "selected on validation" / "best on test", with gap and McNemar's p."""
    head = ["Test set", "Checkpoint", "Chosen by", "Val R@5", *(f"R@{n}" for n in NS)]
    lines = [f"# Model selection of {report.method}", "",
             "| " + " | ".join(head) + " |", "|" + "|".join([":---"] * 3 + ["---:"] * 4) + "|"]
    for t in report.test_sets:
        sel, top = report.by_key(report.selected), report.by_key(report.best[t])
        for c, how in ((sel, "selected on validation"), (top, f"best on test ({BEST_ON_TEST_NOTE})")):
            cells = [t, label(c.key, report.sfrs), how, f"{100 * c.val_r5:.1f}",
                     *(f"{100 * c.recall[t][n]:.1f}" for n in NS)]
            lines.append("| " + " | ".join(cells) + " |")
        gaps = [f"{100 * (top.recall[t][n] - sel.recall[t][n]):+.1f} (p = {report.tests[t][n].p_value:.3g})"
                for n in NS]
        lines.append("| " + " | ".join([t, "", "gap, best on test - selected (McNemar p)", "", *gaps]) + " |")
    lines += ["", f"{len(report.checkpoints)} checkpoint(s), each evaluated on every test set. "
              "Recall@N in %. Selected on validation: the checkpoint with the best validation R@5 "
              "(`vpr select`), the one the results table reports. Best on test: the checkpoint with the "
              "highest test R@1 (ties: R@5, R@10, then the earlier one); it uses the test labels to choose, "
              "so it is not a valid model selection and over-states what a new test set would give: it "
              "shows what published numbers picked on the test set correspond to. p: two-sided McNemar "
              "exact test of the two checkpoints on the same test queries (1 when they are the same "
              "checkpoint).", ""]
    return "\n".join(lines)


def plot_report(report: Report, out: str | os.PathLike) -> None:
    """Validation R@5 and every test R@N over the checkpoints; the selected checkpoint as a vertical line,
    the best on each test set as a star."""
    from matplotlib.lines import Line2D

    from vpr.plots import _colour_cycle, _new_figure, save_png

    x = np.arange(len(report.checkpoints))
    fig = _new_figure(max(8.5, 0.35 * len(x) + 5.5), 4.6)
    ax = fig.subplots()
    ax.plot(x, [100 * c.val_r5 for c in report.checkpoints], color="black", linewidth=2.2, marker="o",
            label="validation R@5")
    styles = {1: "-", 5: "--", 10: ":"}
    colours = [c["color"] for c in _colour_cycle(len(report.test_sets))]
    for t, colour in zip(report.test_sets, colours, strict=True):
        for n in NS:
            ax.plot(x, [100 * c.recall[t][n] for c in report.checkpoints], color=colour,
                    linestyle=styles[n], marker=".", label=f"{t} R@{n}")
        i = [c.key for c in report.checkpoints].index(report.best[t])
        ax.plot([x[i]], [100 * report.checkpoints[i].recall[t][1]], marker="*", markersize=14, color=colour,
                linestyle="none")
    s = [c.key for c in report.checkpoints].index(report.selected)
    ax.axvline(x[s], color="0.3", linestyle="-.", linewidth=1.2)
    ax.set_xticks(x, [label(c.key, report.sfrs) for c in report.checkpoints],
                  rotation=90 if len(x) > 12 else 0)
    ax.set_xlabel("checkpoint (generation, epoch)" if report.sfrs else "checkpoint (epoch)")
    ax.set_ylabel("Recall@N (%)")
    ax.grid(True, alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="0.3", linestyle="-.", label="selected on validation"),
                Line2D([], [], color="0.3", marker="*", markersize=12, linestyle="none",
                       label="best on test (R@1; not a valid selection)")]
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{report.method}: every checkpoint on validation and test")
    save_png(fig, out)
