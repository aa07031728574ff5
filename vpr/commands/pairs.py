"""Write retrieval results as a pair list for structure-from-motion and localisation tools (the format of
hloc's pairs files, read by its matching and triangulation steps): one line `query_name db_name` per pair,
the first --top-k database images of every query in ranking order (nearest first), queries in their order.

Input: the rankings file of `vpr evaluate` (--rankings; names from the index file it records, or --index:
the image paths relative to the data-set root, as stored in the index) or the matches.csv of
`vpr retrieve` (--matches; names as written there: relative to --queries and --database, or the index's).
Padding of a rankings file (Tokyo 24/7 non-maximum suppression can leave fewer than K places) is skipped,
so such a query has fewer lines. A name containing white space is refused: the format splits on it.

Examples:
  vpr pairs --rankings results/sfrs/pitts30k_rankings.h5 --top-k 20 --out pairs-pitts30k.txt
  vpr pairs --matches matches/matches.csv --top-k 5 --out pairs.txt
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from vpr.commands.options import add_input, add_output, positive_int
from vpr.errors import VprError


def configure(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "--rankings", help="rankings file of 'vpr evaluate' (HDF5)")
    add_input(parser, "--index", help="with --rankings: the index file the rankings were made on "
              "(default: the one recorded in the rankings file)")
    add_input(parser, "--matches", help="matches.csv of 'vpr retrieve' instead of --rankings")
    parser.add_argument("--top-k", type=positive_int, required=True,
                        help="database images listed per query (at most what the input holds)")
    add_output(parser, "--out", required=True, help="the pair list to write (text, one pair per line)")


def _ranked_names(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(query name, database names nearest first) per query, at most --top-k each."""
    k = args.top_k
    if args.rankings:
        from vpr.data.index import Index
        from vpr.evaluation_files import read_rankings

        rankings = read_rankings(args.rankings)
        index_path = args.index or rankings.attrs.get("index")
        if not index_path:
            raise VprError(f"{args.rankings}: records no index file; give --index")
        index = Index(index_path)
        topk = rankings.topk
        if topk.shape[0] != index.num_queries or (topk.size and topk.max() >= index.num_db):
            top = int(topk.max()) if topk.size else -1
            raise VprError(f"{args.rankings}: {topk.shape[0]} queries ranking database indices up to {top}, "
                           f"but {index_path} has {index.num_queries} queries and {index.num_db} database "
                           "images: not its rankings")
        if k > topk.shape[1]:
            raise VprError(f"{args.rankings}: holds the top {topk.shape[1]} per query, fewer than "
                           f"--top-k {k}")
        return [(index.query_path[q], [index.db_path[j] for j in row[:k] if j >= 0])
                for q, row in enumerate(topk)]
    from vpr.commands.retrieve import CSV_NAME

    path = Path(args.matches)
    ranked: dict[str, dict[int, str]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"query", "rank", "database"} <= set(reader.fieldnames or ()):
                raise VprError(f"{path}: not a {CSV_NAME} of 'vpr retrieve' (no query, rank and database "
                               "columns)")
            for line, row in enumerate(reader, start=2):
                try:
                    rank = int(row["rank"])
                except (TypeError, ValueError):
                    raise VprError(f"{path}: line {line}: rank {row['rank']!r} is not an integer") from None
                ranked.setdefault(row["query"], {})[rank] = row["database"]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise VprError(f"{path}: unreadable matches CSV ({err})") from None
    out = []
    for query, by_rank in ranked.items():
        if sorted(by_rank) != list(range(1, len(by_rank) + 1)):
            raise VprError(f"{path}: the ranks of query {query} are not 1..{len(by_rank)}")
        if k > len(by_rank):
            raise VprError(f"{path}: holds the top {len(by_rank)} of query {query}, fewer than --top-k {k}")
        out.append((query, [by_rank[r] for r in range(1, k + 1)]))
    return out


def run(args: argparse.Namespace) -> int:
    from vpr.io import atomic_output, open_temporary

    if bool(args.rankings) == bool(args.matches):
        raise VprError("give exactly one of --rankings and --matches")
    if args.index and not args.rankings:
        raise VprError("--index goes with --rankings")
    source = args.rankings or args.matches
    ranked = _ranked_names(args)
    lines = []
    for query, names in ranked:
        for name in (query, *names):
            if not name or any(c.isspace() for c in name):
                raise VprError(f"{source}: image name {name!r} is empty or contains white space, which the "
                               "pair-list format cannot hold")
        lines += [f"{query} {name}\n" for name in names]
    with atomic_output(args.out) as tmp, open_temporary(tmp, "w", encoding="utf-8") as f:
        f.write("".join(lines))
    print(f"{args.out}: {len(lines)} pairs, top {args.top_k} of {len(ranked)} queries from {source}")
    return 0
