"""One mining refresh of training on the synthetic train split: wall time, extraction vs ranking/mining.

A refresh describes every training query and database image with the current model, then mines the tuples
of one chunk of anchors (the nearest 10 m positive, the hardest negatives of a random pool plus the cache;
SFRS generation >= 1 also re-ranks with k-reciprocal distances first). Timed three ways in one run:

* plain: the plain float32 extraction loop (PIL → tensor → model, batch 16, NCHW, main process) and, per
  anchor, the whole database ranked by a full argsort (the reference's mining) before the same selection;
* vpr fp32: ``extract_features`` (loader workers, channels-last) and vpr's pool-only ``Miner``;
* vpr with ``--precision`` (default auto).

Defaults follow the demo configuration (small backbone, K=16, 128×160, cache 160 = every training query,
negative pool 200); there the work is so small (about 2 s) that fixed costs and the machine's load
dominate, so ``--backbone vgg16 --size 168 224`` (the synthetic images' own size) is the figure to read.
Usage:

    python benchmarks/mining_speed.py [--data DIR] [--backbone small] [--size 128 160] [--sfrs]
"""

from __future__ import annotations

import argparse
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from benchcommon import Timer, init_netvlad, machine, synth_indexes
from extract_speed import plain_loop

from vpr.data.index import Index
from vpr.extract import extract_features
from vpr.models import ModelConfig, build_model
from vpr.numeric_precision import resolve_precision
from vpr.train.config import TrainConfig
from vpr.train.mining import Miner, hardest_negatives
from vpr.train.trainer import Trainer


def plain_mining(miner: Miner, anchors, q_feats, db_feats, rng) -> None:
    """The reference's way: rank the whole database for each anchor, then take positive and negatives."""
    for a in anchors:
        d = ((db_feats - q_feats[a]) ** 2).sum(1)
        order = np.argsort(d)
        positives = miner.train_positives[a]
        _ = order[np.isin(order, positives)][:1]
        hardest_negatives(q_feats[a], db_feats, miner.train_nonnegatives[a], np.zeros(0, dtype=np.int64),
                          rng, miner.neg_pool, miner.neg_num)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="vpr-bench-") as work:
        run(Path(work))


def run(work: Path) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="synthetic data-set root (vpr synth output); default: generate one")
    parser.add_argument("--backbone", default="small")
    parser.add_argument("--size", type=int, nargs=2, default=[128, 160], metavar=("H", "W"))
    parser.add_argument("--clusters", type=int, default=16)
    parser.add_argument("--cache-size", type=int, default=160, help="anchors mined per refresh")
    parser.add_argument("--neg-pool", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16, help="extraction batch (extract_batch_size)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--sfrs", action="store_true", help="also time SFRS generation >= 1 re-ranking")
    args = parser.parse_args()
    size = tuple(args.size)
    print(machine())
    train = Index(synth_indexes(Path(args.data) if args.data else None, work, ["pitts30k_train"])
                  ["pitts30k_train"])
    q_files, db_files = train.query_files(), train.db_files()
    torch.manual_seed(0)
    trainable = "conv5" if args.backbone == "vgg16" else "full"
    model = build_model(ModelConfig(backbone=args.backbone, num_clusters=args.clusters,
                                    trainable_from=trainable, image_size=size))
    init_netvlad(model, sorted(db_files)[::8][:60], size)
    cfg = TrainConfig(backbone=args.backbone, neg_pool=args.neg_pool, cache_size=args.cache_size)
    anchors = list(np.random.default_rng(0).permutation(train.num_queries)[:args.cache_size])
    print(f"one refresh: {len(q_files)} queries + {len(db_files)} database images, {args.backbone} "
          f"{size[0]}x{size[1]} K={args.clusters}; {len(anchors)} anchors, negative pool {args.neg_pool}")

    rows = {}
    # warm-up of every path (oneDNN primitives for both precisions, page cache), not timed
    plain_loop(model, q_files[:args.batch_size], size, args.batch_size)
    for precision in ("fp32", args.precision):
        extract_features(model, q_files[:args.batch_size], size, args.batch_size, 0, device="cpu", desc=None,
                         precision=precision)
    with Timer() as t_ext:
        q = plain_loop(model, q_files, size, args.batch_size)
        db = plain_loop(model, db_files, size, args.batch_size)
    miner = Miner(train.train_positives, train.train_nonnegatives, cfg.neg_num, cfg.neg_pool)
    with Timer() as t_min:
        plain_mining(miner, anchors, q, db, np.random.default_rng(1))
    rows["plain (fp32 loop, full argsort)"] = (t_ext.seconds, t_min.seconds, None)
    for precision in ("fp32", args.precision):
        resolved = resolve_precision(precision, "cpu")
        common = dict(batch_size=args.batch_size, workers=args.workers, device="cpu", precision=resolved,
                      desc=None)
        with Timer() as t_ext:
            q = extract_features(model, q_files, size, **common)
            db = extract_features(model, db_files, size, **common)
        miner = Miner(train.train_positives, train.train_nonnegatives, cfg.neg_num, cfg.neg_pool)
        with Timer() as t_min:
            miner.mine(anchors, q, db, np.random.default_rng(1))
        t_jac = None
        if args.sfrs:
            ctx = types.SimpleNamespace(cfg=cfg, train_index=train, info=types.SimpleNamespace(device="cpu"))
            with Timer() as t:
                jac = Trainer.jaccard_rows(ctx, anchors, q, db)
                Miner(train.train_positives, train.train_nonnegatives, cfg.neg_num, cfg.neg_pool).mine(
                    anchors, q, db, np.random.default_rng(1), jac, sfrs=True)
            t_jac = t.seconds
        rows[f"vpr --precision {precision} [{resolved.name}]"] = (t_ext.seconds, t_min.seconds, t_jac)

    base = sum(rows["plain (fp32 loop, full argsort)"][:2])
    print(f"{'':>34}  {'extraction':>10}  {'ranking/mining':>14}  {'total':>7}  {'extraction share':>16}")
    for name, (ext, mine, jac) in rows.items():
        total = ext + mine
        print(f"{name:>34}  {ext:9.2f}s  {mine:13.3f}s  {total:6.2f}s  {100 * ext / total:15.1f}%   "
              f"x{base / total:.2f} vs plain" + (f"   (SFRS re-ranking + mining {jac:.2f} s)" if jac else ""))


if __name__ == "__main__":
    main()
