"""Fit PCA-whitening on a features file.

Reads the descriptors of a features file written by `vpr extract` (float32 datasets `db` (Ndb×D) and
`query` (Nq×D)), draws a seeded sample of --samples rows from the chosen subset (default: all rows, the
reference fits on training queries and database together), fits --dim principal components (capped at
min(D, N−1), with a warning) and writes the PCA file (HDF5: U, lams, mu, Utmu) that
`vpr extract --pca` applies. Whitening that the sample cannot support is refused (vpr.whitening): more
components than half the descriptors fitted on, or a kept eigenvalue below 1e-6 of the largest. The PCA
file records the checkpoint the features came from (`checkpoint_sha256`), so that `vpr extract --pca`
refuses it with another model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vpr.commands.options import add_input, add_output, non_negative_int, positive_int
from vpr.errors import VprError

SUBSETS = ("all", "db", "query")  # the keys of vpr.extract.SUBSET_DATASETS (not imported: --help stays light)


def configure(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "--features", required=True, type=Path, metavar="F.h5",
              help="features file with float32 datasets 'db' and 'query' (from 'vpr extract')")
    add_output(parser, "--out", required=True, type=Path, metavar="PCA.h5", help="PCA file to write")
    parser.add_argument("--dim", type=positive_int, default=4096,
                        help="number of principal components to keep (capped at min(D, N-1); with whitening "
                             "at most N/2 of the N descriptors sampled)")
    parser.add_argument("--samples", type=positive_int, default=10000,
                        help="number of descriptors sampled (without replacement) to fit on")
    parser.add_argument("--seed", type=non_negative_int, default=43, help="seed of the row sample")
    parser.add_argument("--subset", choices=SUBSETS, default="all",
                        help="which descriptors to sample from: database, queries or both")
    parser.add_argument("--no-whiten", dest="whiten", action="store_false",
                        help="record that the projection is applied without whitening by default")


def run(args: argparse.Namespace) -> int:
    from vpr.extract import FeaturesFile
    from vpr.pca import fit_pca, sample_rows, save_pca
    from vpr.whitening import count_problem, spectrum_problem

    features = FeaturesFile(args.features)
    total = features.count(args.subset)
    if total < 2:
        raise VprError(f"features file {args.features}: subset '{args.subset}' has {total} descriptor(s); "
                       "PCA needs at least 2")
    rows = sample_rows(total, args.samples, args.seed)
    k = min(args.dim, features.dim, len(rows) - 1)
    problem = count_problem(len(rows), k, args.whiten)
    if problem:
        raise VprError(f"{args.features} ({len(rows)} '{args.subset}' rows sampled): {problem}")
    X = features.read_rows(args.subset, rows)
    source = f"{args.features}:{args.subset} (samples={args.samples}, seed={args.seed})"
    params = fit_pca(X, args.dim, source=source, whiten=args.whiten,
                     checkpoint_sha256=str(features.attrs.get("checkpoint_sha256", "")))
    problem = spectrum_problem(params.lams.tolist(), args.whiten)
    if problem:
        raise VprError(f"{args.features}: {problem}")
    save_pca(args.out, params)
    print(f"wrote {args.out}: {params.dim} components of {params.input_dim}-d descriptors, fitted on "
          f"{params.n_samples} '{args.subset}' rows of {args.features} "
          f"(whitening {'on' if args.whiten else 'off'} by default)", file=sys.stderr)
    return 0
