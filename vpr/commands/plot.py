"""Draw the report figures as PNG files.

Modes:
  recall    Recall@N curves of several methods on one data set, from recall CSVs of `vpr evaluate`
            (--recall METHOD CSV, repeated), each with its 95 % interval as a band and error bars;
            --dataset KEY adds the published numbers as crosses, with the interval their query count
            implies.
  training  training loss and validation R@1/R@5 (95 % interval as a band) per epoch from training
            logs (log.csv of `vpr train`, --log LABEL CSV, repeated). Logs of SFRS generations 0, 1, 2,
            ... given in that order are chained on one axis labelled generation.epoch; other logs are
            overlaid on a common epoch axis.
            The epoch -1 row (the model before training) is the first point of each recall curve.
  examples  a grid of example retrievals from a rankings file of `vpr evaluate`: each row a query and
            its top results, framed green when a result is a ground-truth positive of the index (within
            its evaluation radius) and red otherwise. The queries are drawn with --seed, half of them
            correct at rank 1 and half wrong where the data allow, and shown in ascending order.
"""

from __future__ import annotations

import argparse

from vpr.commands.options import add_input, add_max_image_pixels, add_output, non_negative_int, positive_int


def configure(parser: argparse.ArgumentParser) -> None:
    from vpr.plots import LAYOUTS

    modes = parser.add_subparsers(dest="mode", metavar="MODE", required=True,
                                  help="what to draw (see 'vpr plot MODE --help')")
    fmt = parser.formatter_class

    p = modes.add_parser("recall", help="Recall@N curves of several methods on one data set",
                         description="Recall@N curves (N on a log axis), one line per method.",
                         formatter_class=fmt)
    add_input(p, "--recall", nargs=2, action="append", required=True, metavar=("METHOD", "CSV"),
              help="method key and its recall CSV from 'vpr evaluate' (repeat for several methods)")
    p.add_argument("--dataset", default=None,
                   help="data-set key (pitts30k, pitts250k, tokyo): also draw its published numbers")
    p.add_argument("--title", default="", help="figure title (default: from --dataset)")
    add_output(p, "--out", required=True, metavar="PNG", help="PNG file to write")

    p = modes.add_parser("training", help="training loss and validation recall per epoch",
                         description="Training loss and validation R@1/R@5 per epoch, one colour per log.",
                         formatter_class=fmt)
    add_input(p, "--log", nargs=2, action="append", required=True, metavar=("LABEL", "LOG_CSV"),
              help="legend label and a training log.csv (repeat; SFRS generations in order)")
    p.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="chain: generations one after another; overlay: all logs on one epoch axis; "
                        "auto: chain when the logs are consecutive single generations")
    p.add_argument("--title", default="", help="figure title")
    add_output(p, "--out", required=True, metavar="PNG", help="PNG file to write")

    p = modes.add_parser("examples", help="grid of example queries and their top retrievals",
                         description="Example queries and their top retrievals, framed green (positive) "
                                     "or red (not).", formatter_class=fmt)
    add_input(p, "--index", required=True, help="index file of the evaluated split (images, ground truth)")
    add_input(p, "--rankings", required=True, help="rankings HDF5 of 'vpr evaluate' on that index")
    add_output(p, "--out", required=True, metavar="PNG", help="PNG file to write")
    p.add_argument("--queries", type=positive_int, default=6, help="number of queries (rows)")
    p.add_argument("--top", type=positive_int, default=5, help="retrievals shown per query")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the query choice (default: 0)")
    p.add_argument("--root", default=None, help="data-set root (default: the one recorded in the index)")
    p.add_argument("--title", default="", help="figure title (default: index name and colour legend)")
    add_max_image_pixels(p)


def _run_recall(args: argparse.Namespace) -> str:
    from vpr.evaluation_files import read_recall_csv
    from vpr.plots import plot_recall_curves

    curves = [(method, read_recall_csv(path)) for method, path in args.recall]
    plot_recall_curves(curves, args.out, title=args.title, dataset=args.dataset)
    return f"Recall@N curves of {len(curves)} method(s)"


def _run_training(args: argparse.Namespace) -> str:
    from vpr.plots import plot_training
    from vpr.train.training_log import read_training_log

    runs = [(label, read_training_log(path)) for label, path in args.log]
    plot_training(runs, args.out, title=args.title, layout=args.layout)
    return f"training curves of {len(runs)} run(s)"


def _run_examples(args: argparse.Namespace) -> str:
    import numpy as np

    from vpr.data.index import Index
    from vpr.errors import VprError
    from vpr.evaluation_files import read_rankings
    from vpr.plots import plot_examples, select_queries

    index = Index(args.index, root=args.root)
    rankings = read_rankings(args.rankings)
    topk, distances = rankings.topk, rankings.distances
    if topk.shape[0] != index.num_queries:
        raise VprError(f"{args.rankings} ranks {topk.shape[0]} queries but {args.index} has "
                       f"{index.num_queries}; use the rankings of an evaluation of this index")
    if topk.size and topk.max() >= index.num_db:
        raise VprError(f"{args.rankings} refers to database image {topk.max()} but {args.index} has "
                       f"{index.num_db}; use the rankings of an evaluation of this index")
    if topk.shape[1] == 0:
        raise VprError(f"{args.rankings}: the rankings are empty (0 results per query)")
    top = min(args.top, topk.shape[1])
    success = np.array([topk[q, 0] >= 0 and np.isin(topk[q, 0], index.positives[q])
                        for q in range(index.num_queries)], dtype=bool)
    queries = select_queries(success, args.queries, args.seed)
    plot_examples(index, topk, queries, args.out, top=top, distances=distances, title=args.title)
    n_ok = int(success[queries].sum())
    return (f"{len(queries)} example queries ({n_ok} correct at rank 1, {len(queries) - n_ok} wrong), "
            f"top {top}")


def run(args: argparse.Namespace) -> int:
    import sys

    what = {"recall": _run_recall, "training": _run_training, "examples": _run_examples}[args.mode](args)
    print(f"wrote {args.out}: {what}", file=sys.stderr)
    return 0
