"""Fit PCA-whitening on a features file.

Reads the descriptors of a features file written by `vpr extract` (float32 datasets `db` (Ndb×D) and
`query` (Nq×D)), draws a seeded sample of --samples rows from the chosen subset (default: all rows, the
reference fits on training queries and database together), fits --dim principal components (capped at
min(D, N−1), with a warning) and writes the PCA file (HDF5: U, lams, mu, Utmu) that
`vpr extract --pca` applies.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

from vpr.commands.options import add_input, add_output, non_negative_int, positive_int
from vpr.errors import VprError
from vpr.io import open_h5

SUBSETS = ("all", "db", "query")
_READ_ROWS = 1024  # rows read from the features file at a time


def configure(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "--features", required=True, type=Path, metavar="F.h5",
              help="features file with float32 datasets 'db' and 'query' (from 'vpr extract')")
    add_output(parser, "--out", required=True, type=Path, metavar="PCA.h5", help="PCA file to write")
    parser.add_argument("--dim", type=positive_int, default=4096,
                        help="number of principal components to keep (capped at min(D, N-1))")
    parser.add_argument("--samples", type=positive_int, default=10000,
                        help="number of descriptors sampled (without replacement) to fit on")
    parser.add_argument("--seed", type=non_negative_int, default=43, help="seed of the row sample")
    parser.add_argument("--subset", choices=SUBSETS, default="all",
                        help="which descriptors to sample from: database, queries or both")
    parser.add_argument("--no-whiten", dest="whiten", action="store_false",
                        help="record that the projection is applied without whitening by default")


def _datasets(f: h5py.File, path: Path, subset: str) -> list[h5py.Dataset]:
    names = ["db", "query"] if subset == "all" else [subset]
    datasets = []
    for name in names:
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise VprError(f"features file {path} has no dataset '{name}'")
        ds = f[name]
        if ds.ndim != 2 or ds.dtype.kind != "f":
            raise VprError(f"features file {path}: dataset '{name}' is {ds.dtype} with shape {ds.shape}, "
                           "expected a 2-D float matrix (N, D)")
        datasets.append(ds)
    if len({ds.shape[1] for ds in datasets}) > 1:
        raise VprError(f"features file {path}: 'db' and 'query' have different descriptor dimensions "
                       f"({datasets[0].shape[1]} and {datasets[1].shape[1]})")
    return datasets


def read_sample(path: Path, subset: str, n_sample: int, seed: int) -> np.ndarray:
    """The seeded sample of rows of ``subset`` (db rows first, then query rows), as float32 (n, D)."""
    from vpr.pca import sample_rows

    with open_h5(path, "features file", "vpr extract") as f:
        datasets = _datasets(f, path, subset)
        total = sum(ds.shape[0] for ds in datasets)
        if total < 2:
            raise VprError(f"features file {path}: subset '{subset}' has {total} descriptor(s); "
                           "PCA needs at least 2")
        wanted = sample_rows(total, n_sample, seed)
        out = np.empty((wanted.size, datasets[0].shape[1]), dtype=np.float32)
        filled, offset = 0, 0
        for ds in datasets:
            rows = wanted[(wanted >= offset) & (wanted < offset + ds.shape[0])] - offset
            # Read contiguous blocks and keep the sampled rows: far faster than h5py point selection.
            for start in range(0, ds.shape[0], _READ_ROWS):
                in_block = rows[(rows >= start) & (rows < start + _READ_ROWS)]
                if in_block.size:
                    block = ds[start:min(start + _READ_ROWS, ds.shape[0])]
                    out[filled:filled + in_block.size] = block[in_block - start]
                    filled += in_block.size
            offset += ds.shape[0]
    if not np.isfinite(out).all():
        raise VprError(f"features file {path}: the sampled descriptors contain NaN or infinite values")
    return out


def run(args: argparse.Namespace) -> int:
    from vpr.pca import fit_pca, save_pca

    X = read_sample(args.features, args.subset, args.samples, args.seed)
    source = f"{args.features}:{args.subset} (samples={args.samples}, seed={args.seed})"
    params = fit_pca(X, args.dim, source=source, whiten=args.whiten)
    save_pca(args.out, params)
    print(f"wrote {args.out}: {params.dim} components of {params.input_dim}-d descriptors, fitted on "
          f"{params.n_samples} '{args.subset}' rows of {args.features} "
          f"(whitening {'on' if args.whiten else 'off'} by default)", file=sys.stderr)
    return 0
