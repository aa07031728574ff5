"""How long indexing a Pitts250k-test-sized split takes (83,952 database images, 8,280 queries).

Builds ``SplitRecords`` with street-like UTM coordinates (a grid of streets, one panorama of 24 views every
~10 m, queries scattered along the streets) and times ``build_index`` on it, for the test split (evaluation
positives only) and as a training split (training positives, non-negatives, dropped queries). With
``--mat`` it also times reading the same split back from a MATLAB v5 .mat file through ``read_pitts``
(without the image check). Prints the times; no assertion.

    .venv/bin/python benchmarks/index_speed.py [--db 83952] [--queries 8280] [--mat]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from vpr.data.index import SplitRecords, build_index

VIEWS = 24  # 2 pitches x 12 yaws per Pittsburgh panorama


def street_points(rng: np.random.Generator, n: int, block: float = 120.0, size: float = 4000.0) -> np.ndarray:
    """n points on a grid of streets (every ``block`` m across ``size`` m) at a 585000/4477000 origin."""
    along = rng.uniform(0.0, size, n)
    street = rng.integers(0, int(size / block) + 1, n) * block
    horizontal = rng.random(n) < 0.5
    east = np.where(horizontal, along, street)
    north = np.where(horizontal, street, along)
    return np.stack([585000.0 + east, 4477000.0 + north], axis=1)


def make_records(n_db: int, n_q: int, split: str, seed: int) -> SplitRecords:
    rng = np.random.default_rng(seed)
    n_pano = -(-n_db // VIEWS)
    pano = street_points(rng, n_pano)
    db_place = np.arange(n_db) // VIEWS
    db_utm = pano[db_place]
    db_path = [f"Pittsburgh/images/{p // 1000:03d}/{p:06d}_pitch{1 + v // 12}_yaw{1 + v % 12}.jpg"
               for p, v in zip(db_place, np.arange(n_db) % VIEWS, strict=True)]
    # queries near database panoramas (a few metres of GPS noise), so every query has a 25 m positive
    noise = np.clip(rng.normal(0.0, 6.0, (n_q, 2)), -15.0, 15.0)
    q_utm = pano[rng.integers(0, n_pano, n_q)] + noise
    q_place = n_pano + np.arange(n_q)
    q_path = [f"Pittsburgh/queries/{i // 1000:03d}/{i:06d}_pitch1_yaw1.jpg" for i in range(n_q)]
    return SplitRecords(split, db_path, db_utm, db_place, q_path, q_utm, q_place)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=int, default=83952, help="database images")
    parser.add_argument("--queries", type=int, default=8280, help="query images")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--mat", action="store_true", help="also time reading a v5 .mat of that size")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        for split in ("test", "train"):
            t0 = time.perf_counter()
            records = make_records(args.db, args.queries, split, args.seed)
            t1 = time.perf_counter()
            summary = build_index(records, Path(tmp) / f"{split}.h5", root=tmp, fmt="pitts",
                                  source="synthetic", source_sha256="0" * 64)
            t2 = time.perf_counter()
            print(f"{split}: {summary['db']} db, {summary['queries']} queries, {summary['dropped']} dropped, "
                  f"{summary['mean_positives']:.1f} positives/query; records {t1 - t0:.2f} s, "
                  f"build_index {t2 - t1:.2f} s")
        if args.mat:
            import scipy.io

            from vpr.data.formats import read_pitts

            records = make_records(args.db, args.queries, "test", args.seed)

            def cell(strings: list[str]) -> np.ndarray:
                out = np.empty((len(strings), 1), dtype=object)
                out[:, 0] = [s.split("/", 2)[2] for s in strings]
                return out

            mat = Path(tmp) / "pitts250k_test.mat"
            scipy.io.savemat(mat, {"dbStruct": {
                "whichSet": "test", "dbImageFns": cell(records.db_path), "utmDb": records.db_utm.T,
                "qImageFns": cell(records.query_path), "utmQ": records.query_utm.T,
                "numImages": float(args.db), "numQueries": float(args.queries)}})
            t0 = time.perf_counter()
            read = read_pitts(mat, tmp, check_images=False)
            t1 = time.perf_counter()
            build_index(read, Path(tmp) / "from_mat.h5", root=tmp, fmt="pitts", source=str(mat),
                        source_sha256="0" * 64)
            t2 = time.perf_counter()
            print(f"from .mat (v5): read_pitts {t1 - t0:.2f} s, build_index {t2 - t1:.2f} s")


if __name__ == "__main__":
    main()
