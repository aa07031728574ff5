"""Extract the global descriptors of every database and query image of an index file.

Loads a model checkpoint (a vpr checkpoint, a training checkpoint or a reference/hub checkpoint),
optionally attaches a PCA-whitening file, and writes one HDF5 features file with float32 datasets `db`
(Ndb x D) and `query` (Nq x D), L2-normalised, in index order. Database images are resized to the model's
image size; queries too, except for Tokyo 24/7 indexes, whose queries keep their aspect ratio with the
shorter side equal to the longer side of the model's image size (640 for 480x640; docs/method.md §5.5).
A missing or unreadable image stops the command before any output is written. The features file records
what it was made from (the index fingerprint and the SHA-256 of the checkpoint and of the PCA file); a PCA
file fitted on another model's descriptors is refused. With --checkpoint-sha256, a checkpoint of other
content than expected is refused before any work.

--precision auto (the default) runs the backbone under bfloat16 autocast where the hardware does that fast
(a CUDA GPU with bfloat16, a CPU with AMX-BF16 or AVX512-BF16) and in float32 elsewhere; the NetVLAD head
and the stored descriptors are float32 in every case. The choice is logged and stored in the file's
`precision` attribute.
"""

from __future__ import annotations

import argparse
import os

from vpr.commands.options import (
    add_input,
    add_max_image_pixels,
    add_output,
    add_pca_options,
    non_negative_int,
    positive_int,
    sha256_hex,
)
from vpr.numeric_precision import PRECISION_HELP, PRECISIONS


def configure(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "--checkpoint", required=True, help="model checkpoint (.pth)")
    parser.add_argument("--checkpoint-sha256", type=sha256_hex, metavar="HEX",
                        help="expected SHA-256 of the checkpoint (64 hex digits): a file of other content is "
                             "refused before any work (the workflow passes an external model's `sha256`)")
    add_input(parser, "--index", required=True, help="index file of the split (from 'vpr index')")
    add_pca_options(parser)
    add_max_image_pixels(parser)
    add_output(parser, "--out", required=True, help="features file to write (HDF5)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="image-loading worker processes")
    parser.add_argument("--root", default=None,
                        help="data-set root to resolve image paths (default: the root recorded in the index)")
    parser.add_argument("--query-resize", choices=("fixed", "shorter-side"), default=None,
                        help="query resizing: the model's fixed image size, or shorter side = the longer "
                             "side of that size keeping the aspect ratio (default: shorter-side for "
                             "tokyo247 indexes, fixed otherwise)")
    parser.add_argument("--device", default=None,
                        help="torch device: auto (default: cuda if available, else cpu), cuda (stop at once "
                             "with what torch and faiss see when no GPU can be used), cuda:N or cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--compile", action="store_true",
                        help="run the model through torch.compile (pays off on long GPU runs)")


def run(args: argparse.Namespace) -> int:
    from vpr.extract import extract_features, resolve_device, write_features

    # before the model code is imported: a GPU job without a usable GPU stops within seconds
    device = resolve_device(args.device)

    from vpr.data.images import check_images_exist
    from vpr.data.index import Index
    from vpr.io import sha256sum, verify_sha256
    from vpr.models import load_model_with_pca
    from vpr.numeric_precision import resolve_precision

    checkpoint_sha256 = None
    if os.path.isfile(args.checkpoint):
        checkpoint_sha256 = verify_sha256(args.checkpoint, args.checkpoint_sha256, "--checkpoint-sha256")
    index = Index(args.index, root=args.root)
    db_files, query_files = index.db_files(), index.query_files()
    check_images_exist(db_files + query_files)  # fail before hours of database extraction
    model, whiten = load_model_with_pca(args.checkpoint, args.pca, whiten=args.whiten,
                                        checkpoint_sha256=checkpoint_sha256)
    size = tuple(int(s) for s in model.config.image_size)
    query_resize = args.query_resize or (
        "shorter-side" if index.attrs.get("format") == "tokyo247" else "fixed")
    shorter_side = max(size) if query_resize == "shorter-side" else None

    precision = resolve_precision(args.precision, device)
    common = dict(batch_size=args.batch_size, workers=args.workers, device=device, precision=precision,
                  compile=args.compile, exif_orientation=index.exif_orientation)
    db = extract_features(model, db_files, size, desc="database", **common)
    query = extract_features(model, query_files, size, shorter_side=shorter_side, desc="queries", **common)
    write_features(args.out, db, query, {
        "checkpoint": str(args.checkpoint),
        "index": str(args.index),
        "image_size": list(size),
        "dim": int(db.shape[1]),
        "pca": str(args.pca or ""),
        "whiten": bool(whiten),
        "query_resize": query_resize,
        "precision": precision.name,
        "index_fingerprint": index.fingerprint,
        "checkpoint_sha256": checkpoint_sha256 or "",
        "pca_sha256": sha256sum(args.pca) if args.pca else "",
    })
    print(f"{args.out}: {db.shape[0]} database and {query.shape[0]} query descriptors, "
          f"dimension {db.shape[1]}")
    return 0
