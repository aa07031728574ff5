"""Collect recall CSVs into the results table, with intervals, published numbers and paired tests.

Each --recall METHOD DATASET CSV names one recall CSV of `vpr evaluate`. Method keys netvlad, sare_ind,
sare_joint, sfrs and data-set keys pitts30k, pitts250k, tokyo get display names and, where OpenIBL's
MODEL_ZOO.md has them, published numbers; other keys are shown as given, without published numbers.

Every Recall@N is shown with its 95 % Wilson score interval over the queries, `85.4 [83.2, 87.5]`; a
published number with the interval its test set's query count implies. With two or more data sets a
"Pooled" column group counts all queries of all test sets as one sample. --compare-to METHOD tests every
other method against METHOD on the same queries (McNemar's exact test on the per-query hits, read from the
rankings file beside each recall CSV, X_recall.csv -> X_rankings.h5, or from --rankings) and marks the
cells significantly above or below it at the 5 % level with ▲ or ▼.

--step-log METHOD DATASET LOG names a log of a step that computed that row's numbers (the workflow passes
every one): a row whose logs hold a warning is marked † with the warnings in a footnote (a missing log is
skipped).

Writes a CSV (one row per method and data set, pooled rows included: R@N and its interval in percent,
published R@N and its interval, p-value and verdict against the baseline) and a Markdown table (one row per
method in order of first appearance, a row of published numbers under each method that has them,
footnotes explaining the interval, the marks and the pooled columns), and prints the Markdown table.
Nothing is written when an input is bad.
"""

from __future__ import annotations

import argparse

from vpr.commands.options import add_input, add_output, positive_int


def configure(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "--recall", nargs=3, action="append", required=True,
              metavar=("METHOD", "DATASET", "CSV"),
              help="one evaluated model: method key, data-set key and its recall CSV (repeat)")
    add_output(parser, "--out-md", required=True, metavar="TABLE.md", help="Markdown table to write")
    add_output(parser, "--out-csv", required=True, metavar="TABLE.csv", help="CSV table to write")
    parser.add_argument("--ns", type=positive_int, nargs="+", default=[1, 5, 10], metavar="N",
                        help="values of N shown (each recall CSV must contain them)")
    parser.add_argument("--compare-to", default=None, metavar="METHOD",
                        help="baseline method (one of the --recall methods): mark the cells significantly "
                             "above/below it on the same queries (McNemar's exact test, 5 %% level)")
    add_input(parser, "--rankings", nargs=3, action="append", default=[],
              metavar=("METHOD", "DATASET", "H5"),
              help="rankings file of one --recall entry for --compare-to (repeat; default: the "
                   "file beside its recall CSV, X_recall.csv -> X_rankings.h5)")
    parser.add_argument("--step-log", nargs=3, action="append", default=[],
                        metavar=("METHOD", "DATASET", "LOG"),
                        help="a log of a step that computed METHOD on DATASET (repeat): its warnings mark "
                             "the cells with a footnote; a log that does not exist is skipped")


def run(args: argparse.Namespace) -> int:
    import sys

    from vpr.errors import VprError
    from vpr.io import atomic_output, open_temporary
    from vpr.table import collect, pooled_rows, table_csv, table_markdown

    ns = list(dict.fromkeys(args.ns))
    if args.rankings and args.compare_to is None:
        raise VprError("--rankings is only read for a comparison: add --compare-to METHOD")
    rankings = {(m, d): path for m, d, path in args.rankings}
    step_logs = {}
    for m, d, log in args.step_log:
        step_logs.setdefault((m, d), []).append(log)
    rows = collect([tuple(r) for r in args.recall], ns, compare_to=args.compare_to, rankings=rankings,
                   step_logs=step_logs)
    rows += pooled_rows(rows, ns, args.compare_to)
    markdown = table_markdown(rows, ns, args.compare_to)
    csv_text = table_csv(rows, ns, args.compare_to)
    for out, text in ((args.out_csv, csv_text), (args.out_md, markdown)):
        with atomic_output(out) as tmp, open_temporary(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    print(markdown, end="")
    print(f"wrote {args.out_md} and {args.out_csv}: {len(rows)} row(s)", file=sys.stderr)
    return 0
