"""Index one data-set split into an HDF5 index file (the input of every later step).

Reads a NetVLAD-style split file (.mat, MATLAB v5 or v7.3) or a CSV, checks it (fields, counts,
coordinates, every image present under --root), computes the ground truth (evaluation positives within
--eval-radius; for training splits, positives within --train-pos-radius excluding the query's own place,
non-negatives within --train-neg-radius, and queries without positive dropped), and writes the index file
atomically: on any error nothing is written.

Formats: pitts (Pitts30k/Pitts250k .mat; images under ROOT/Pittsburgh/images and ROOT/Pittsburgh/queries),
tokyo247 (tokyo247.mat; ROOT/tokyo247/images, .jpg names resolved to the .png on disk, and
ROOT/tokyo247/query), tokyotm (tokyoTM_train.mat / tokyoTM_val.mat; ROOT/tokyoTM/images; identity = exact
UTM + time stamp), csv (header path,easting,northing,role with role db or query, UTM metres, or
path,lat,lon,role in WGS84 degrees, projected to the UTM zone of most of the points; paths relative to ROOT).
Eastings and northings that all lie within ±180 and ±90 look like degrees and are refused. folders (the public
downloaders' layout: --database and --queries folders of images named @<utm_east>@<utm_north>@...@.jpg, found
recursively, or listed in <folder>_images_paths.txt beside the folder; default ROOT/database and ROOT/queries;
without --root, ROOT is the folder holding both).

A query without a database image within --eval-radius is refused, or with --drop-unmatched-queries left out
of the index, listed under dropped/ and counted (attribute num_unmatched_dropped, and a warning).

EXIF orientation: images of the csv and folders formats are read as a photo viewer shows them (their EXIF
Orientation tag applied, recorded in the index); the paper formats as stored, as the reference reads them.
For csv and folders the printout says how many images carry a rotation tag (read from the image headers).

Examples:
  vpr index --format pitts --mat RAW/pitts30k_test.mat --root RAW --out index/pitts30k_test.h5
  vpr index --format csv --csv set.csv --root DIR --out index/custom_test.h5
  vpr index --format folders --root datasets/pitts30k/images/test --out index/pitts30k_test.h5
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from vpr.commands.options import add_input, add_output, non_negative_int, positive_float
from vpr.errors import VprError


def configure(parser: argparse.ArgumentParser) -> None:
    from vpr.data.formats import FORMATS

    parser.add_argument("--format", required=True, choices=FORMATS, help="format of the split file")
    add_input(parser, "--mat", type=Path, help="the split's .mat file (formats pitts, tokyo247, tokyotm)")
    add_input(parser, "--csv", type=Path, help="the split's CSV file (format csv)")
    parser.add_argument("--database", type=Path,
                        help="format folders: the database image folder (default: ROOT/database)")
    parser.add_argument("--queries", type=Path,
                        help="format folders: the query image folder (default: ROOT/queries)")
    parser.add_argument("--root", type=Path,
                        help="data-set root; the image paths in the index are relative to it (required but "
                             "for format folders with --database and --queries: their common folder)")
    add_output(parser, "--out", type=Path, required=True, help="index file to write (HDF5)")
    parser.add_argument("--split", choices=("train", "val", "test"),
                        help="split name (default: the .mat's whichSet; test for tokyo247 and csv)")
    parser.add_argument("--eval-radius", type=positive_float, default=25.0,
                        help="evaluation positives: database images within this many metres")
    parser.add_argument("--train-pos-radius", type=positive_float, default=10.0,
                        help="training positives: database images within this many metres "
                             "(the query's own place excluded)")
    parser.add_argument("--train-neg-radius", type=positive_float, default=25.0,
                        help="training non-negatives: database images within this many metres")
    parser.add_argument("--seed", type=non_negative_int, default=43,
                        help="seed of the TokyoTM val query/database draw")
    parser.add_argument("--coords", choices=("auto", "utm", "latlon"), default="auto",
                        help="csv only: the coordinate columns hold UTM metres (header easting,northing) or "
                             "latitude/longitude in degrees (header lat,lon), converted to UTM; auto: as the "
                             "header says")
    parser.add_argument("--drop-unmatched-queries", action="store_true",
                        help="drop the queries that have no database image within --eval-radius (listed "
                             "under dropped/ in the index and counted) instead of refusing the split")
    parser.add_argument("--skip-image-check", action="store_true",
                        help="do not check that every listed image exists under --root (for huge trees)")


def run(args: argparse.Namespace) -> int:
    from vpr.data.formats import EXIF_FORMATS, MAT_FORMATS, READERS, read_folders
    from vpr.data.formats.folders import listing_sha256
    from vpr.data.images import count_orientation_tags
    from vpr.data.index import build_index, check_radii
    from vpr.io import sha256sum

    start = time.perf_counter()
    if args.format != "folders" and (args.database is not None or args.queries is not None):
        raise VprError(f"--database and --queries belong to --format folders, not {args.format}")
    if args.format in MAT_FORMATS:
        if args.mat is None or args.csv is not None:
            raise VprError(f"--format {args.format} needs --mat FILE (and no --csv)")
        source = args.mat
    elif args.format == "csv":
        if args.csv is None or args.mat is not None:
            raise VprError("--format csv needs --csv FILE (and no --mat)")
        source = args.csv
    else:
        if args.csv is not None or args.mat is not None:
            raise VprError("--format folders reads --database and --queries folders (no --csv, no --mat)")
        _folders_root(args)
        source = args.root
    check_radii(args.eval_radius, args.train_pos_radius, args.train_neg_radius)
    if args.root is None:
        raise VprError(f"--format {args.format} needs --root DIR (the data-set root)")
    if not args.root.is_dir():
        raise VprError(f"--root {args.root}: not a directory")
    if args.out.is_dir():
        raise VprError(f"--out {args.out}: is a directory")

    kwargs = {"split": args.split, "check_images": not args.skip_image_check}
    if args.format == "tokyotm":
        kwargs["seed"] = args.seed
    if args.coords != "auto":
        if args.format != "csv":
            raise VprError(f"--coords is for --format csv; {args.format} files hold UTM metres")
        kwargs["coords"] = args.coords
    if args.format == "folders":
        records = read_folders(args.database, args.queries, args.root, **kwargs)
        digest = listing_sha256(records)
    else:
        records = READERS[args.format](source, args.root, **kwargs)
        digest = sha256sum(source)
    records.extra_attrs["exif_orientation"] = args.format in EXIF_FORMATS
    rotated = None
    if args.format in EXIF_FORMATS and not args.skip_image_check:   # opens every image: own photos only
        rotated = count_orientation_tags([args.root / p for p in records.db_path + records.query_path])
    summary = build_index(records, args.out, root=args.root, fmt=args.format, source=str(source),
                          source_sha256=digest, eval_radius=args.eval_radius,
                          train_pos_radius=args.train_pos_radius, train_neg_radius=args.train_neg_radius,
                          drop_unmatched=args.drop_unmatched_queries)
    elapsed = time.perf_counter() - start
    dropped = (f", {summary['dropped']} training queries dropped (no database image within "
               f"{args.train_pos_radius:g} m)" if summary["split"] == "train" else "")
    if summary["unmatched_dropped"]:
        unmatched = (f"{summary['unmatched_dropped']} query image(s) dropped (no database image within "
                     f"{args.eval_radius:g} m)")
        dropped += f", {unmatched}"
        logging.getLogger(__name__).warning("%s: %s (--drop-unmatched-queries); recalls on this index "
                                            "count the other %d queries", args.out, unmatched,
                                            summary["queries"])
    if records.extra_attrs.get("coords") == "latlon":
        dropped += f"; latitude/longitude projected to UTM zone {records.extra_attrs['utm_zone']}"
    print(f"{args.out}: {args.format} {summary['split']} split, {summary['db']} database images, "
          f"{summary['queries']} queries{dropped}; {summary['mean_positives']:.2f} positives per query "
          f"within {args.eval_radius:g} m on average; {elapsed:.1f} s")
    if rotated is not None:
        print(f"{args.out}: {rotated} of {summary['db'] + len(records.query_path)} images carry an EXIF "
              "rotation tag (applied: images are read as a photo viewer shows them)")
    return 0


def _folders_root(args: argparse.Namespace) -> None:
    """Fill in the folders of format folders: ROOT/database and ROOT/queries by default, and without
    --root the folder holding both."""
    import os

    if args.root is None:
        if args.database is None or args.queries is None:
            raise VprError("--format folders needs --root DIR, or --database DIR and --queries DIR")
        args.root = Path(os.path.commonpath([args.database.resolve(), args.queries.resolve()]))
    if args.database is None:
        args.database = args.root / "database"
    if args.queries is None:
        args.queries = args.root / "queries"
