"""The selection report on hand-made evaluations (in-process, no model): which checkpoint is selected and
which is best on test, their gap and McNemar's p, each against a statement written here; and the errors of
an incomplete set of evaluations. The real path (Snakemake, `vpr selection`) is in test_train_workflow.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from vpr.errors import VprError
from vpr.evaluation_files import recall_table, write_rankings, write_recall_csv
from vpr.selection import build_report, report_csv, report_markdown
from vpr.stats import interval_columns
from vpr.train.training_log import write_training_log

QUERIES = 12
VAL_QUERIES = 40   # every validation recall below is a whole number of hits out of 40


def log_rows(generation, val_r5):
    """log.csv rows: the model before training (epoch -1) and one row per epoch with its val R@5."""
    rows = [{"generation": generation, "epoch": -1, "loss": 0, "recall@1": 0.1, "recall@5": 0.2}]
    rows += [{"generation": generation, "epoch": e, "loss": 1.0, "recall@1": r / 2, "recall@5": r}
             for e, r in enumerate(val_r5)]
    for row in rows:   # the intervals a log of `vpr train` carries (the report does not read them)
        row.update(interval_columns({1: row["recall@1"], 5: row["recall@5"]}, VAL_QUERIES))
    return rows


def evaluation(folder, name, first_positive):
    """A recall CSV and the rankings file beside it for the given first-positive positions (-1: none)."""
    first = np.asarray(first_positive)
    recall = {n: float(np.mean((first >= 0) & (first < n))) for n in (1, 5, 10)}
    path = folder / f"{name}_recall.csv"
    write_recall_csv(path, recall_table(recall, len(first)))
    topk = np.tile(np.arange(10), (len(first), 1))
    write_rankings(folder / f"{name}_rankings.h5", topk, np.zeros(topk.shape), first, recall)
    return path


def mcnemar_by_hand(a, b):
    """McNemar's exact test written out: 2 P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), capped at 1."""
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    m = only_a + only_b
    if m == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(m, i) for i in range(min(only_a, only_b) + 1)) / 2 ** m)


@pytest.fixture
def sfrs_runs(tmp_path):
    """Two SFRS generations (1 + 2 epochs), each checkpoint evaluated on one test set of 12 queries."""
    logs = [tmp_path / "gen0.csv", tmp_path / "gen1.csv"]
    write_training_log(logs[0], log_rows(0, [0.5]))
    write_training_log(logs[1], log_rows(1, [0.75, 0.7]))
    rng = np.random.default_rng(3)
    first = {key: rng.integers(-1, 10, QUERIES) for key in [(0, 0), (1, 0), (1, 1)]}
    first[(1, 1)][:6] = 0   # generation 1 epoch 1: the best R@1 on test (at least 6 of 12)
    first[(1, 0)][:6] = np.where(first[(1, 0)][:6] == 0, 1, first[(1, 0)][:6])
    recalls = {(g, e, "pitts30k"): evaluation(tmp_path, f"g{g}e{e}", f) for (g, e), f in first.items()}
    return logs, recalls, first


def test_selected_and_best_on_test_with_their_gap_and_mcnemar_p(sfrs_runs):
    logs, recalls, first = sfrs_runs
    report = build_report("sfrs", logs, recalls, selected=(1, 0))   # the best val R@5: 75 %
    hits1 = {k: [0 <= p < 1 for p in f] for k, f in first.items()}
    best = max(first, key=lambda k: tuple(sum(0 <= p < n for p in first[k]) for n in (1, 5, 10)))
    assert best == (1, 1) and report.best == {"pitts30k": (1, 1)}
    lines = report_csv(report).splitlines()
    assert lines[0] == ("method,generation,epoch,val R@5,test set,queries,R@1,R@5,R@10,"
                        "selected on validation,best on test")
    assert [line.split(",")[1:4] + line.split(",")[-2:] for line in lines[1:]] == [
        ["0", "0", "50.00", "0", "0"], ["1", "0", "75.00", "1", "0"], ["1", "1", "70.00", "0", "1"]]
    for line, key in zip(lines[1:], first, strict=True):
        assert float(line.split(",")[6]) == pytest.approx(100 * sum(hits1[key]) / QUERIES, abs=0.005)
    gap = 100 * (sum(hits1[(1, 1)]) - sum(hits1[(1, 0)])) / QUERIES
    p = mcnemar_by_hand(hits1[(1, 1)], hits1[(1, 0)])
    assert gap > 0 and p < 1   # a real difference to report
    md = report_markdown(report)
    assert "| pitts30k | g1 e0 | selected on validation | 75.0 |" in md
    assert "| pitts30k | g1 e1 | best on test (not a valid selection" in md
    assert f"{gap:+.1f} (p = {p:.3g})" in md


def test_a_checkpoint_without_its_evaluation_is_one_error(sfrs_runs):
    logs, recalls, _ = sfrs_runs
    del recalls[(1, 1, "pitts30k")]
    with pytest.raises(VprError, match="no recall CSV of generation 1 epoch 1 on pitts30k"):
        build_report("sfrs", logs, recalls, selected=(1, 0))


def test_a_selected_model_outside_the_logs_is_one_error(sfrs_runs):
    logs, recalls, _ = sfrs_runs
    with pytest.raises(VprError, match="generation 2 epoch 0, which is not in the training log"):
        build_report("sfrs", logs, recalls, selected=(2, 0))
