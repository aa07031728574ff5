"""Rank the database for every query of a features file and report Recall@N.

Exact search on squared Euclidean distances (faiss, top K only). Recall@N = fraction of queries with a
ground-truth positive (database image within the index's evaluation radius) among the first N results.
Tokyo 24/7 indexes use the spatial non-maximum suppression by default (top max(N) x 12 results, first
image of each panorama kept). Writes the recall table as CSV (`n,recall`, recall as a fraction) and the
per-query rankings as HDF5 (`topk` int64 db indices, -1 padded; `distances` float32 squared L2, or the
re-ranked distance with --rerank, inf where padded; `first_positive` position of the first positive or -1;
the recall table in the attributes `recall_n`, `recall`).
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    from vpr.evaluate import RERANK_MAX_ITEMS

    parser.add_argument("--index", required=True, help="index file of the split (ground truth, place ids)")
    parser.add_argument("--features", required=True, help="features file of the split (from 'vpr extract')")
    parser.add_argument("--out", required=True, help="CSV file for the recall table")
    parser.add_argument("--nms", action=argparse.BooleanOptionalAction, default=None,
                        help="Tokyo 24/7 spatial non-maximum suppression over db place ids "
                             "(default: on for tokyo247 indexes, off otherwise)")
    parser.add_argument("--recall-at", type=int, nargs="+", default=[1, 5, 10, 20], metavar="N",
                        help="values of N for Recall@N")
    parser.add_argument("--rankings", default=None,
                        help="HDF5 file for the per-query rankings "
                             "(default: <out stem>_rankings.h5 beside --out)")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking before the recall")
    parser.add_argument("--rr-k1", type=int, default=25, help="re-ranking k1")
    parser.add_argument("--rr-k2", type=int, default=1, help="re-ranking k2 (1: no query expansion)")
    parser.add_argument("--rr-lambda", type=float, default=0.0,
                        help="re-ranking weight of the original distance")
    parser.add_argument("--rr-max-items", type=int, default=RERANK_MAX_ITEMS,
                        help="refuse re-ranking above this many query + database images (default: no limit; "
                             "memory grows with the number of images times k1)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import h5py
    import numpy as np

    from vpr.data.index import Index
    from vpr.errors import VprError
    from vpr.evaluate import evaluate
    from vpr.extract import read_features
    from vpr.io import atomic_output

    ns = sorted(set(args.recall_at))
    if ns[0] < 1:
        raise VprError(f"--recall-at: values must be positive, got {args.recall_at}")
    index = Index(args.index)
    db, query, _ = read_features(args.features)
    if db.shape[0] != index.num_db or query.shape[0] != index.num_queries:
        raise VprError(f"{args.features} has {db.shape[0]} database and {query.shape[0]} query descriptors "
                       f"but {args.index} lists {index.num_db} database and {index.num_queries} query "
                       "images; extract the features from this index")
    for name, x in (("db", db), ("query", query)):
        if not np.isfinite(x).all():
            raise VprError(f"{args.features}: dataset {name} contains NaN or infinite values")
    nms = args.nms if args.nms is not None else index.attrs.get("format") == "tokyo247"
    rerank = None
    if args.rerank:
        rerank = dict(k1=args.rr_k1, k2=args.rr_k2, lambda_value=args.rr_lambda, max_items=args.rr_max_items)
    result = evaluate(db, query, index.positives, ns, place=index.db_place if nms else None, rerank=rerank)

    out = Path(args.out)
    rankings = Path(args.rankings) if args.rankings else out.with_name(f"{out.stem}_rankings.h5")
    with atomic_output(rankings) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("topk", data=result.topk)
        f.create_dataset("distances", data=result.distances)
        f.create_dataset("first_positive", data=result.first_positive)
        f.attrs.update({
            "recall_n": np.asarray(list(result.recall), dtype=np.int64),
            "recall": np.asarray(list(result.recall.values()), dtype=np.float64),
            "index": str(args.index), "features": str(args.features), "nms": bool(nms),
            "rerank": bool(args.rerank),
        })
        if args.rerank:
            f.attrs.update({"rr_k1": args.rr_k1, "rr_k2": args.rr_k2, "rr_lambda": args.rr_lambda})
    with atomic_output(out) as tmp, open(tmp, "w") as f:
        f.write("n,recall\n")
        for n, r in result.recall.items():
            f.write(f"{n},{r!r}\n")
    for n, r in result.recall.items():
        print(f"Recall@{n}: {100 * r:.2f}%")
    return 0
