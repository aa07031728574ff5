"""Raw-pixel thumbnail baseline on a `vpr synth` output directory: how hard is the synthetic data?

Every image is shrunk to a 32x24 (W x H) RGB thumbnail; queries are ranked against the database by the L2
distance between raw pixel values (brute force, numpy). Ground truth = database images within 25 m (UTM, from
the .mat files, scipy cKDTree). Prints Recall@1/5/10 per split. A learned descriptor should beat these
numbers clearly; a data set where they are near 100% would be too easy to show anything.

    python benchmarks/thumbnail_baseline.py DATA_DIR [--size 32 24] [--normalise]

Tokyo 24/7 is scored as the real protocol does: the top 120 results are reduced to the first image of each
panorama (12 consecutive cut-outs) before Recall@N.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from scipy.spatial import cKDTree

PITTS_DB, PITTS_Q = "pitts/raw/Pittsburgh/images", "pitts/raw/Pittsburgh/queries"
TM = "tokyo/raw/tokyoTM/images"
SPLIT_SOURCES = (
    # name, .mat, database image root, query image root, database listed .jpg but stored .png, panorama NMS
    ("pitts30k_train", "pitts/raw/pitts30k_train.mat", PITTS_DB, PITTS_Q, False, False),
    ("pitts30k_val", "pitts/raw/pitts30k_val.mat", PITTS_DB, PITTS_Q, False, False),
    ("pitts30k_test", "pitts/raw/pitts30k_test.mat", PITTS_DB, PITTS_Q, False, False),
    ("pitts250k_test", "pitts/raw/pitts250k_test.mat", PITTS_DB, PITTS_Q, False, False),
    ("tokyoTM_val", "tokyo/raw/tokyoTM_val.mat", TM, TM, False, False),
    ("tokyo247", "tokyo/raw/tokyo247.mat", "tokyo/raw/tokyo247/images", "tokyo/raw/tokyo247/query", True,
     True),
)
RADIUS = 25.0
NS = (1, 5, 10)


def read_db_struct(path: Path) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    s = scipy.io.loadmat(path, squeeze_me=False)["dbStruct"][0, 0]
    db = [str(c[0].item()) for c in s["dbImageFns"]]
    q = [str(c[0].item()) for c in s["qImageFns"]]
    return db, np.asarray(s["utmDb"], dtype=np.float64).T, q, np.asarray(s["utmQ"], dtype=np.float64).T


def thumbnails(paths: list[Path], size: tuple[int, int], normalise: bool) -> np.ndarray:
    out = np.empty((len(paths), size[0] * size[1] * 3), dtype=np.float32)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            out[i] = np.asarray(im.convert("RGB").resize(size, Image.BILINEAR), dtype=np.float32).ravel()
    if normalise:
        out -= out.mean(axis=1, keepdims=True)
        out /= out.std(axis=1, keepdims=True) + 1e-6
    return out


def recall(db: np.ndarray, q: np.ndarray, positives: list[set[int]], panorama: np.ndarray | None
           ) -> list[float]:
    """Recall@N of L2 ranking; with ``panorama``, only the first image of each panorama in the top 120."""
    d2 = (q * q).sum(1)[:, None] - 2 * q @ db.T + (db * db).sum(1)[None, :]
    order = np.argsort(d2, axis=1, kind="stable")
    hits = np.zeros(len(NS))
    for i, row in enumerate(order):
        if panorama is not None:  # keep the first image of every panorama among the top 120
            row = row[:120]
            _, first = np.unique(panorama[row], return_index=True)
            row = row[np.sort(first)]
        for k, n in enumerate(NS):
            if any(int(j) in positives[i] for j in row[:n]):
                hits[k] += 1
    return list(hits / len(q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="output directory of `vpr synth`")
    parser.add_argument("--size", type=int, nargs=2, default=(32, 24), metavar=("W", "H"),
                        help="thumbnail width and height")
    parser.add_argument("--normalise", action="store_true",
                        help="subtract each thumbnail's mean and divide by its std before L2")
    args = parser.parse_args(argv)
    print(f"{'split':16s} {'db':>5s} {'q':>4s}  R@1    R@5    R@10")
    for name, mat, db_root, q_root, png, nms in SPLIT_SOURCES:
        if not (args.data / mat).exists():
            continue
        db_fns, db_utm, q_fns, q_utm = read_db_struct(args.data / mat)
        db_paths = [args.data / db_root / (f[:-4] + ".png" if png else f) for f in db_fns]
        q_paths = [args.data / q_root / f for f in q_fns]
        hits = cKDTree(db_utm).query_ball_point(q_utm, r=RADIUS)
        positives = [set(h) for h in hits]
        panorama = np.arange(len(db_fns)) // 12 if nms else None
        r = recall(thumbnails(db_paths, tuple(args.size), args.normalise),
                   thumbnails(q_paths, tuple(args.size), args.normalise), positives, panorama)
        print(f"{name:16s} {len(db_fns):5d} {len(q_fns):4d}  " + "  ".join(f"{x:5.3f}" for x in r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
