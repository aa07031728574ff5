"""How long reading a folders-format data set takes: 100,000 `@`-named image files (empty files in a
temporary folder, the flat layout of VPR-datasets-downloader), found by a directory walk or from a
``database_images_paths.txt`` file list, and their names parsed into UTM coordinates (``read_folders``,
without the EXIF count of `vpr index`, which opens every image). Prints the times (median of --rounds);
no assertion.

    .venv/bin/python benchmarks/folders_speed.py [--db 100000] [--queries 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from benchcommon import machine

from vpr.data.formats.folders import read_folders


def make_tree(root: Path, n_db: int, n_q: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for folder, n in (("database", n_db), ("queries", n_q)):
        (root / folder).mkdir(parents=True)
        east = 585000 + rng.uniform(0, 4000, n)
        north = 4477000 + rng.uniform(0, 4000, n)
        for i in range(n):
            # @east@north@zone@letter@lat@lon@pano@tile@heading@...@.jpg, as the downloader names them
            (root / folder / f"@{east[i]:.2f}@{north[i]:.2f}@17@T@40.44@-79.99@{i:06d}@{i % 24:02d}@@@@@@.jpg"
             ).touch()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        make_tree(root, args.db, args.queries)
        print(f"made {args.db} + {args.queries} empty files in {time.perf_counter() - start:.1f} s")
        read = lambda: read_folders(root / "database", root / "queries", root)  # noqa: E731
        walk = [timed(read) for _ in range(args.rounds)]
        records = read_folders(root / "database", root / "queries", root)
        for folder, paths in (("database", records.db_path), ("queries", records.query_path)):
            (root / f"{folder}_images_paths.txt").write_text(
                "\n".join(p.split("/", 1)[1] for p in paths) + "\n")
        listed = [timed(read) for _ in range(args.rounds)]
        n = args.db + args.queries
        for what, times in (("directory walk", walk), ("file lists", listed)):
            t = statistics.median(times)
            print(f"{what}: {n} names read and parsed in {t:.2f} s (median of {args.rounds}: "
                  f"{', '.join(f'{x:.2f}' for x in times)}), {n / t:,.0f} names/s")


if __name__ == "__main__":
    main()
