"""Rank the database for every query of a features file and report Recall@N.

Exact search on squared Euclidean distances (faiss, top K only). Recall@N = fraction of queries with a
ground-truth positive (database image within the index's evaluation radius) among the first N results.
Tokyo 24/7 indexes use the spatial non-maximum suppression by default (top max(N) x 12 results, first
image of each panorama kept). Each Recall@N comes with its 95 % Wilson score interval over the queries
(vpr.stats). Writes the recall CSV (`n,recall,ci_low,ci_high,queries`, fractions) and the per-query
rankings (HDF5: `topk`, `distances`, `first_positive`), both in the formats of vpr.evaluation_files.

Rankings that are ties throughout (a query whose retrieved distances are all equal within a relative 1e-5,
as for over-whitened descriptors) rank by an arbitrary order: a warning names their number, and when they
are more than 1 % of the queries nothing is written and the command fails. Not checked with --rerank,
whose Jaccard distances tie by construction.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vpr.commands.options import add_input, add_output, positive_int, unit_float


def _default_rankings(args: argparse.Namespace) -> Path:
    from vpr.evaluation_files import default_rankings_path

    return default_rankings_path(args.out)


def _check_ties(distances, features) -> None:
    """Warn about queries whose ranking is a tie throughout; VprError when they are too many to trust."""
    import logging

    from vpr.errors import VprError
    from vpr.evaluate import TIE_TOLERANCE, TIED_SHARE_LIMIT, tied_rankings

    tied = tied_rankings(distances)
    if not tied.any():
        return
    what = (f"{features}: {int(tied.sum())} of {tied.size} queries have retrieved distances all equal within "
            f"a relative {TIE_TOLERANCE:g} (first: query {int(tied.argmax())}, distance "
            f"{float(distances[tied.argmax(), 0]):.6f}); their ranking is a tie-break")
    if tied.mean() > TIED_SHARE_LIMIT:
        raise VprError(f"{what}: no recall written. Degenerate descriptors, e.g. PCA-whitening fitted on too "
                       "few training images (lower pca.dim or set whiten: false)")
    logging.getLogger(__name__).warning("%s", what)


def configure(parser: argparse.ArgumentParser) -> None:
    from vpr.evaluate import RERANK_MAX_ITEMS

    add_input(parser, "--index", required=True, help="index file of the split (ground truth, place ids)")
    add_input(parser, "--features", required=True, help="features file of the split (from 'vpr extract')")
    add_output(parser, "--out", required=True, help="CSV file for the recall table")
    parser.add_argument("--nms", action=argparse.BooleanOptionalAction, default=None,
                        help="Tokyo 24/7 spatial non-maximum suppression over db place ids "
                             "(default: on for tokyo247 indexes, off otherwise)")
    parser.add_argument("--recall-at", type=positive_int, nargs="+", default=[1, 5, 10, 20], metavar="N",
                        help="values of N for Recall@N")
    add_output(parser, "--rankings", default=None, derive=_default_rankings,
               help="HDF5 file for the per-query rankings (default: beside --out, X_recall.csv -> "
                    "X_rankings.h5, other X.csv -> X_rankings.h5)")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking before the recall")
    parser.add_argument("--rr-k1", type=positive_int, default=25, help="re-ranking k1")
    parser.add_argument("--rr-k2", type=positive_int, default=1, help="re-ranking k2 (1: no query expansion)")
    parser.add_argument("--rr-lambda", type=unit_float, default=0.0,
                        help="re-ranking weight of the original distance, 0 to 1")
    parser.add_argument("--rr-max-items", type=positive_int, default=RERANK_MAX_ITEMS,
                        help="refuse re-ranking above this many query + database images (default: no limit; "
                             "memory grows with the number of images times k1)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vpr.data.index import Index
    from vpr.evaluate import evaluate
    from vpr.evaluation_files import recall_table, write_rankings, write_recall_csv
    from vpr.extract import FeaturesFile

    ns = sorted(set(args.recall_at))
    out = Path(args.out)
    rankings = Path(args.rankings)   # given, or derived by vpr.cli before run (check_declared_paths)
    index = Index(args.index)
    features = FeaturesFile(args.features)
    features.check_index(index)  # extracted from this index (fingerprint), before reading the descriptors
    db, query = features.read()
    nms = args.nms if args.nms is not None else index.attrs.get("format") == "tokyo247"
    rerank = None
    if args.rerank:
        rerank = dict(k1=args.rr_k1, k2=args.rr_k2, lambda_value=args.rr_lambda, max_items=args.rr_max_items)
    result = evaluate(db, query, index.positives, ns, place=index.db_place if nms else None, rerank=rerank)
    if not args.rerank:
        _check_ties(result.distances, args.features)

    table = recall_table(result.recall, index.num_queries)
    attrs = {"index": str(args.index), "features": str(args.features), "nms": bool(nms),
             "rerank": bool(args.rerank)}
    if args.rerank:
        attrs.update({"rr_k1": args.rr_k1, "rr_k2": args.rr_k2, "rr_lambda": args.rr_lambda})
    write_rankings(rankings, result.topk, result.distances, result.first_positive, result.recall, **attrs)
    write_recall_csv(out, table)
    for n, r in table.recall.items():
        low, high = table.interval[n]
        print(f"Recall@{n}: {100 * r:.2f}% (95% CI {100 * low:.2f}-{100 * high:.2f}%, "
              f"{table.queries} queries)")
    unmatched = int(index.attrs.get("num_unmatched_dropped", 0))
    if unmatched:
        print(f"({unmatched} query image(s) without a database image within {index.attrs['eval_radius']:g} m "
              f"were dropped from {args.index} when indexing: not counted above)")
    return 0
