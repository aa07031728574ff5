"""Generate the synthetic place-recognition data set in the exact on-disk layout of Pittsburgh and Tokyo.

Streets of a procedural city (buildings with skylines, windows, shop fronts, signs and murals, trees, lamp
posts, road markings) are ray-cast into street-view panorama cut-outs and phone photos, with lighting, season,
time-of-day (Tokyo 24/7 night photos), sign changes between capture dates and transient distractors (cars,
pedestrians, occluders). Written under DIR:

  pitts/raw/pitts30k_{train,val,test}.mat, pitts250k_test.mat, Pittsburgh/images/..., Pittsburgh/queries/...
  tokyo/raw/tokyo247.mat (database listed as .jpg, stored as .png), tokyo247/images/..., tokyo247/query/...
  tokyo/raw/tokyoTM_{train,val}.mat (with time stamps), tokyoTM/images/...
  synth_truth.json   what the generator knows: counts, place ids, panoramas, query positions

Splits lie in geographically disjoint areas; every validation/test query has a database image within 25 m.
The same --seed gives byte-identical files. The tree is built beside DIR and moved into place when complete.
Presets: 'tiny' (tests, a few seconds) and 'demo' (a few hundred images per split, about a minute).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vpr.commands.options import add_output_dir, non_negative_int, positive_int


def configure(parser: argparse.ArgumentParser) -> None:
    from vpr.synth.presets import PRESETS

    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                        help="data-set size: 'tiny' for tests, 'demo' for the README demo")
    add_output_dir(parser, "--out", type=Path, required=True, metavar="DIR",
                   writes=("pitts", "tokyo", "synth_truth.json"),
                   help="output directory (the data-set root holding pitts/ and tokyo/)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="random seed (non-negative); the same seed gives the same bytes")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="processes rendering the images (default 1); any N writes the same bytes")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty DIR, replacing its pitts/, tokyo/ and synth_truth.json")


def run(args: argparse.Namespace) -> int:
    from vpr.synth import generate

    summary = generate(args.preset, args.out, args.seed, force=args.force, progress=sys.stderr.isatty(),
                       workers=args.workers)
    print(f"vpr synth: wrote {summary['images']} images to {summary['out']} "
          f"(preset {summary['preset']}, seed {summary['seed']}, {summary['seconds']:.1f} s)")
    for name, counts in summary["splits"].items():
        print(f"  {name:16s} {counts['num_db']:6d} database  {counts['num_queries']:5d} queries")
    return 0
