"""Collect recall CSVs into the results table, beside the published numbers.

Each --recall METHOD DATASET CSV names one recall CSV of `vpr evaluate` (header `n,recall`, recall as a
fraction). Method keys netvlad, sare_ind, sare_joint, sfrs and data-set keys pitts30k, pitts250k, tokyo
get display names and, where OpenIBL's MODEL_ZOO.md has them, published numbers (METHOD.md §5.7); other
keys are shown as given, without published numbers.

Writes a CSV (method, dataset, R@N in percent, published R@N or empty) and a Markdown table (one row per
method in order of first appearance, one R@N column group per data set, `ours (pub. published)` cells,
a footnote naming the source), and prints the Markdown table. Nothing is written when an input is bad.
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


def run(args: argparse.Namespace) -> int:
    import sys

    from vpr.errors import VprError
    from vpr.io import atomic_output
    from vpr.report import collect, table_csv, table_markdown

    ns = list(dict.fromkeys(args.ns))
    if min(ns) < 1:
        raise VprError(f"--ns: values must be positive, got {' '.join(map(str, args.ns))}")
    rows = collect([tuple(r) for r in args.recall], ns)
    markdown = table_markdown(rows, ns)
    csv_text = table_csv(rows, ns)
    with atomic_output(args.out_csv) as tmp:
        tmp.write_text(csv_text, encoding="utf-8")
    with atomic_output(args.out_md) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    print(markdown, end="")
    print(f"wrote {args.out_md} and {args.out_csv}: {len(rows)} result(s)", file=sys.stderr)
    return 0
