"""Rank the database images for every query with a model, and show the result: a top-k CSV and a picture
per query. No coordinates and no training are needed.

Input: a database folder and a query folder (--database, --queries: images found recursively, .jpg, .jpeg,
.png, read with their EXIF orientation applied), or an index file (--index, from `vpr index`). Writes
into --out:

  matches.csv      one row per (query, rank): query, rank (1 = nearest), database, distance (Euclidean
                   distance between the L2-normalised descriptors, after --pca when given) and, where the
                   positions are known (an index, or folders whose every file name is
                   @<utm_east>@<utm_north>@...@), query_easting, query_northing, db_easting, db_northing,
                   metres; with an index also correct (1: the database image is a ground-truth positive of
                   the query, within the index's eval_radius)
  pictures/        one PNG per query (named after its path): the query and its first --show matches,
                   labelled with their file names, ranks and distances; with an index framed green
                   (correct) or red

--only-wrong (an index only): pictures only of the queries whose first match is not correct.

Examples:
  vpr retrieve --checkpoint model.pth --database photos/db --queries photos/queries --out matches/
  vpr retrieve --checkpoint model.pth --index index/pitts30k_test.h5 --out matches/ --only-wrong
"""

from __future__ import annotations

import argparse
import csv
import io
import re
from pathlib import Path, PurePosixPath

from vpr.commands.options import add_input, add_output_dir, add_pca_options, non_negative_int, positive_int
from vpr.errors import VprError
from vpr.numeric_precision import PRECISION_HELP, PRECISIONS

CSV_NAME = "matches.csv"
PICTURES = "pictures"


def configure(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "--checkpoint", required=True, help="model file (vpr init-model, vpr train, a released "
              "model)")
    add_input(parser, "--database", type=Path, help="folder of database images (with --queries)")
    add_input(parser, "--queries", type=Path, help="folder of query images (with --database)")
    add_input(parser, "--index", type=Path, help="an index file instead of the two folders (ground truth "
              "known: correct column, coloured frames, --only-wrong)")
    parser.add_argument("--root", type=Path, help="with --index: data-set root overriding the recorded one")
    add_output_dir(parser, "--out", required=True, type=Path, writes=(CSV_NAME, PICTURES),
                   help=f"output folder ({CSV_NAME} and {PICTURES}/)")
    parser.add_argument("--top-k", type=positive_int, default=10, help="matches listed per query")
    parser.add_argument("--show", type=positive_int, default=5,
                        help="matches shown in each query's picture (at most --top-k)")
    parser.add_argument("--pictures", action=argparse.BooleanOptionalAction, default=True,
                        help="draw a picture per query")
    parser.add_argument("--only-wrong", action="store_true",
                        help="with --index: pictures only of the queries whose first match is wrong")
    add_pca_options(parser)
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="DataLoader worker processes")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def _inputs(args: argparse.Namespace):
    """(database files, query files, db labels, query labels, db utm, query utm, positives, exif, shorter)."""
    import numpy as np

    from vpr.data.formats.folders import list_images, parse_utm

    if args.index is not None:
        if args.database is not None or args.queries is not None:
            raise VprError("give either --index or --database and --queries, not both")
        from vpr.data.index import Index

        index = Index(args.index, root=args.root)
        tokyo = index.attrs.get("format") == "tokyo247"
        return (index.db_files(), index.query_files(), index.db_path, index.query_path, index.db_utm,
                index.query_utm, index.positives, index.exif_orientation, tokyo)
    if args.database is None or args.queries is None:
        raise VprError("give --database DIR and --queries DIR (or --index FILE)")
    if args.only_wrong:
        raise VprError("--only-wrong needs ground truth: give --index (folders carry none)")
    found = {}
    for option, folder in (("--database", args.database), ("--queries", args.queries)):
        if not folder.is_dir():
            raise VprError(f"{option} {folder}: not a directory")
        found[option] = list_images(folder)[0]
    db_rel, q_rel = found["--database"], found["--queries"]
    names = [parse_utm(PurePosixPath(p).name) for p in db_rel + q_rel]
    db_utm = q_utm = None
    if all(xy is not None for xy in names):
        coords = np.asarray(names, dtype=np.float64).reshape(-1, 2)
        db_utm, q_utm = coords[:len(db_rel)], coords[len(db_rel):]
    return ([args.database / p for p in db_rel], [args.queries / p for p in q_rel], db_rel, q_rel, db_utm,
            q_utm, None, True, False)


def _picture_name(label: str) -> str:
    """A file name for the picture of the query at ``label`` (its relative path), unique per path."""
    return re.sub(r"[^A-Za-z0-9._@-]", "_", label.replace("/", "__")) + ".png"


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from vpr.evaluate import search
    from vpr.extract import extract_features, resolve_device
    from vpr.io import atomic_output, open_temporary
    from vpr.models import load_model_with_pca
    from vpr.plots import plot_query_matches

    start = time.perf_counter()
    db_files, q_files, db_labels, q_labels, db_utm, q_utm, positives, exif, tokyo = _inputs(args)
    model, _ = load_model_with_pca(args.checkpoint, args.pca, whiten=args.whiten)
    size = tuple(int(s) for s in model.config.image_size)
    device = resolve_device(args.device)
    common = dict(batch_size=args.batch_size, workers=args.workers, device=device, precision=args.precision,
                  exif_orientation=exif)
    db = extract_features(model, db_files, size, desc="database", **common)
    query = extract_features(model, q_files, size, shorter_side=max(size) if tokyo else None, desc="queries",
                             **common)
    described = time.perf_counter()
    dist2, idx = search(db, query, args.top_k)
    dist = np.sqrt(np.maximum(dist2, 0.0))
    correct = None
    if positives is not None:
        correct = np.stack([np.isin(row, positives[q]) for q, row in enumerate(idx)]).reshape(idx.shape)

    header = ["query", "rank", "database", "distance"]
    if db_utm is not None:
        header += ["query_easting", "query_northing", "db_easting", "db_northing"]
    if correct is not None:
        header.append("correct")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    for q in range(len(q_files)):
        for r in range(idx.shape[1]):
            j = int(idx[q, r])
            row = [q_labels[q], r + 1, db_labels[j], f"{float(dist[q, r]):.6f}"]
            if db_utm is not None:
                row += [f"{v:.2f}" for v in (*q_utm[q], *db_utm[j])]
            if correct is not None:
                row.append(int(correct[q, r]))
            writer.writerow(row)
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_output(args.out / CSV_NAME) as tmp, open_temporary(tmp, "w", encoding="utf-8") as f:
        f.write(text.getvalue())

    drawn, searched = 0, time.perf_counter()
    if args.pictures:
        show = min(args.show, idx.shape[1])
        for q in range(len(q_files)):
            if args.only_wrong and correct[q, 0]:
                continue
            labels = [f"#{r + 1} {PurePosixPath(db_labels[int(idx[q, r])]).name}\nd = {float(dist[q, r]):.3g}"
                      for r in range(show)]
            plot_query_matches(q_files[q], [db_files[int(j)] for j in idx[q, :show]],
                               args.out / PICTURES / _picture_name(q_labels[q]), labels,
                               f"query {PurePosixPath(q_labels[q]).name}",
                               correct=None if correct is None else correct[q, :show], exif_orientation=exif)
            drawn += 1
    end = time.perf_counter()
    hits = "" if correct is None else (f"; first match correct for {int(correct[:, 0].sum())} of "
                                       f"{len(q_files)} queries")
    print(f"{args.out / CSV_NAME}: top {idx.shape[1]} of {len(db_files)} database images for {len(q_files)} "
          f"queries{hits}; {drawn} picture(s) in {args.out / PICTURES}; {end - start:.1f} s (description "
          f"{described - start:.1f} s, search and CSV {searched - described:.1f} s, pictures "
          f"{end - searched:.1f} s)")
    return 0
