"""The selection report of one trained method: every epoch checkpoint on validation and on the test sets.

--training-log LOG names the log.csv of each training run of the method (SFRS: one per generation, in
order): the validation R@5 of every epoch checkpoint. --recall GENERATION EPOCH TEST_SET CSV names the
recall CSV of `vpr evaluate` of that checkpoint on that test set (the rankings file beside it,
X_recall.csv -> X_rankings.h5, gives the per-query hits); every checkpoint of the logs needs one per test
set. --selected MODEL is the model `vpr select` chose (it records its generation and epoch).

Writes a CSV (one row per checkpoint and test set: validation R@5, test R@1/5/10, which one was selected
on validation and which is best on test), a Markdown table (per test set the row pair "selected on
validation" / "best on test", the latter not a valid selection, with their gap and McNemar's p), and a PNG
(validation and test curves over the checkpoints, the selected one marked). Nothing is written when an
input is bad.
"""

from __future__ import annotations

import argparse

from vpr.commands.options import add_input, add_output, non_negative_int


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, help="method key shown in the report (e.g. sfrs)")
    add_input(parser, "--training-log", action="append", required=True, metavar="LOG",
              help="log.csv of a training run of the method (repeat: SFRS, one per generation)")
    add_input(parser, "--recall", nargs=4, action="append", required=True,
              metavar=("GENERATION", "EPOCH", "TEST_SET", "CSV"),
              help="recall CSV of one epoch checkpoint on one test set (repeat: every checkpoint on every "
                   "test set)")
    add_input(parser, "--selected", required=True, metavar="MODEL",
              help="the model 'vpr select' chose (its recorded generation and epoch are marked)")
    add_output(parser, "--out-csv", required=True, metavar="REPORT.csv", help="CSV to write")
    add_output(parser, "--out-md", required=True, metavar="REPORT.md", help="Markdown table to write")
    add_output(parser, "--out-plot", required=True, metavar="REPORT.png", help="figure to write")


def run(args: argparse.Namespace) -> int:
    from vpr.errors import VprError
    from vpr.io import atomic_output, open_temporary
    from vpr.models.checkpoint import read_checkpoint_meta
    from vpr.selection import build_report, plot_report, report_csv, report_markdown

    recalls = {}
    for g, e, t, path in args.recall:
        try:
            key = (non_negative_int(g), non_negative_int(e), t)
        except argparse.ArgumentTypeError as err:
            raise VprError(f"--recall {g} {e} {t} {path}: GENERATION and EPOCH: {err}") from None
        if key in recalls:
            raise VprError(f"--recall {g} {e} {t}: given twice ({recalls[key]} and {path})")
        recalls[key] = path
    meta = read_checkpoint_meta(args.selected)
    if not isinstance(meta.get("epoch"), int):
        raise VprError(f"{args.selected}: records no epoch; expected a model chosen by 'vpr select' from "
                       "checkpoints of 'vpr train'")
    selected = (int(meta.get("generation", 0)), int(meta["epoch"]))
    report = build_report(args.method, args.training_log, recalls, selected)
    markdown = report_markdown(report)
    for out, text in ((args.out_csv, report_csv(report)), (args.out_md, markdown)):
        with atomic_output(out) as tmp, open_temporary(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    plot_report(report, args.out_plot)
    print(markdown, end="")
    return 0
