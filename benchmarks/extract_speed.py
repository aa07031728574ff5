"""Extraction speed of vpr against a plain float32 loop, and the recall cost of bfloat16 descriptors.

Speed: images/s of ``vpr.extract.extract_features`` (DataLoader workers, channels-last, ``--precision``,
default auto) against a plain loop over the same JPEG files (PIL decode → resize → tensor → model in
float32, NCHW, batch 4, in the main process), both after one warm-up batch, on synthetic JPEGs written to
a temporary directory. The vpr path in float32 (channels-last only) is timed too, to separate the two
effects. VGG16 at 480×640 by default (``--backbone``, ``--size``, ``--images`` to run smaller).

Recall: Recall@1/5/10 with float32 and bfloat16 descriptors on the synthetic test sets (pitts30k_test,
pitts250k_test, tokyo247 of ``vpr synth --preset demo``, generated in a temporary directory unless
``--data`` names one), for a seeded random-init model whose NetVLAD is initialised by k-means on training
images (the demo configuration: small backbone, K=16, 128×160). Also the cosine between the two versions of
each descriptor and how often the top-1 results agree. One query is more than a point of these small sets,
so the recall difference is also given over the queries of all sets together. Usage:

    python benchmarks/extract_speed.py [--images 16] [--size 480 640] [--backbone vgg16] [--data DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from benchcommon import Timer, init_netvlad, machine, synth_indexes, write_jpegs
from PIL import Image

from vpr.data.images import ImageListDataset
from vpr.data.index import Index
from vpr.evaluate import evaluate, recall_from_ranks
from vpr.extract import extract_features
from vpr.models import ModelConfig, build_model
from vpr.numeric_precision import resolve_precision

MEAN = np.array([123.68, 116.779, 103.939], dtype=np.float32)
NS = (1, 5, 10)


def plain_tensor(path: Path, size: tuple[int, int]) -> torch.Tensor:
    img = Image.open(path).convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return torch.from_numpy((np.asarray(img, dtype=np.float32) - MEAN).transpose(2, 0, 1).copy())


@torch.inference_mode()
def plain_loop(model, files: list[Path], size: tuple[int, int], batch: int) -> np.ndarray:
    """The baseline: decode, resize and run one batch after the other, float32, default (NCHW) layout."""
    model.eval()
    out = []
    for i in range(0, len(files), batch):
        x = torch.stack([plain_tensor(f, size) for f in files[i:i + batch]])
        out.append(F.normalize(model(x), p=2, dim=1).numpy())
    return np.concatenate(out)


def speed(args) -> float:
    size = tuple(args.size)
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=args.backbone, num_clusters=args.clusters, image_size=size))
    with tempfile.TemporaryDirectory() as tmp:
        files = write_jpegs(Path(tmp), args.images, size, seed=0)
        alpha = init_netvlad(model, files[:8], size, precision=args.precision)
        model.eval()
        print(f"NetVLAD from k-means on {min(8, len(files))} of the images: alpha {alpha:.0f}")
        with Timer() as t:
            ds = ImageListDataset(files, size=size)
            for i in range(len(ds)):
                ds[i]
        ms = 1000 * t.seconds / len(files)
        print(f"image loading (decode, resize, to tensor) in one process: {ms:.1f} ms/image")
        common = dict(batch_size=args.batch_size, workers=args.workers, device="cpu", desc=None)
        methods = {"plain float32 loop": lambda fs: plain_loop(model, fs, size, args.batch_size)}
        for name, precision in (("vpr fp32 (channels-last, workers)", "fp32"),
                                (f"vpr --precision {args.precision}", args.precision)):
            resolved = resolve_precision(precision, "cpu")
            methods[f"{name} [{resolved.name}]"] = (
                lambda fs, p=resolved: extract_features(model, fs, size, precision=p, **common))
        if args.compile:
            methods[f"vpr --precision {args.precision} --compile"] = (
                lambda fs: extract_features(model, fs, size, precision=resolved, compile=True, **common))
        for name, run in methods.items():
            with Timer() as t:
                run(files[:args.batch_size])          # warm-up: oneDNN primitives, page cache, compilation
            print(f"  warm-up {name}: {t.seconds:.1f} s", flush=True)
        # The machine is shared: its load changes from minute to minute. Every round runs all methods back
        # to back and its ratios compare neighbours in time; the median over rounds is reported.
        secs: dict[str, list[float]] = {name: [] for name in methods}
        feats = {}
        for r in range(args.rounds):
            for name, run in methods.items():
                with Timer() as t:
                    feats[name] = run(files)
                secs[name].append(t.seconds)
            print(f"  round {r + 1}: " + ", ".join(f"{len(files) / v[-1]:.2f}" for v in secs.values())
                  + " images/s", flush=True)
    plain = "plain float32 loop"
    ref = feats[plain]
    print(f"\n{args.backbone} {size[0]}x{size[1]}, {len(files)} JPEGs, batch {args.batch_size}, "
          f"{args.workers} loader workers for vpr; median of {args.rounds} rounds (ratios within a round)")
    ratio = {}
    for name, v in secs.items():
        r = np.asarray(secs[plain]) / np.asarray(v)
        ratio[name] = float(np.median(r))
        cos = (feats[name] * ref).sum(1)
        print(f"  {name:>42}: {len(files) / np.median(v):6.2f} images/s  x{ratio[name]:4.2f} "
              f"(rounds {r.min():.2f}-{r.max():.2f})   cosine to plain: min {cos.min():.5f} "
              f"mean {cos.mean():.5f}")
    return ratio[[k for k in ratio if k.startswith(f"vpr --precision {args.precision} [")][0]]


def describe_split(model, index: Index, size, precision, batch_size: int, workers: int):
    tokyo = index.attrs.get("format") == "tokyo247"
    common = dict(batch_size=batch_size, workers=workers, device="cpu", precision=precision, desc=None)
    db = extract_features(model, index.db_files(), size, **common)
    q = extract_features(model, index.query_files(), size, shorter_side=max(size) if tokyo else None,
                         **common)
    return db, q


def recall(args, work: Path) -> float:
    size = tuple(args.recall_size)
    indexes = synth_indexes(Path(args.data) if args.data else None, work,
                            ["pitts30k_train", *args.recall_sets])
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=args.recall_backbone, num_clusters=args.recall_clusters,
                                    image_size=size)).eval()
    train = Index(indexes["pitts30k_train"])
    rng = np.random.default_rng(43)
    files = sorted(train.db_files() + train.query_files())
    chosen = [files[i] for i in rng.choice(len(files), size=min(200, len(files)), replace=False)]
    alpha = init_netvlad(model, chosen, size, precision="fp32")
    print(f"\nrecall: {args.recall_backbone} {size[0]}x{size[1]}, K={args.recall_clusters}, random init "
          f"(seed 0), NetVLAD from k-means on {len(chosen)} training images (alpha {alpha:.0f})")
    first: dict[str, list[np.ndarray]] = {"fp32": [], "bf16": []}
    for name in args.recall_sets:
        index = Index(indexes[name])
        place = index.db_place if index.attrs.get("format") == "tokyo247" else None
        res, feats, secs = {}, {}, {}
        for precision in ("fp32", "bf16"):
            t0 = time.perf_counter()
            db, q = describe_split(model, index, size, precision, args.batch_size * 4, args.workers)
            secs[precision] = time.perf_counter() - t0
            feats[precision] = (db, q)
            res[precision] = evaluate(db, q, index.positives, NS, place=place)
            first[precision].append(res[precision].first_positive)
        cos = np.concatenate([(a * b).sum(1) for a, b in zip(feats["fp32"], feats["bf16"], strict=True)])
        top1 = float(np.mean(res["fp32"].topk[:, 0] == res["bf16"].topk[:, 0]))
        diffs = [100 * (res["bf16"].recall[n] - res["fp32"].recall[n]) for n in NS]
        print(f"  {name} ({index.num_db} db, {index.num_queries} queries; NMS {place is not None}):")
        for p in ("fp32", "bf16"):
            print(f"    {p}: " + "  ".join(f"R@{n} {100 * res[p].recall[n]:5.1f}" for n in NS)
                  + f"   (extraction {secs[p]:.1f} s)")
        print("    bf16 - fp32 (points): "
              + "  ".join(f"R@{n} {d:+.2f}" for n, d in zip(NS, diffs, strict=True))
              + f"; cosine min {cos.min():.5f} mean {cos.mean():.5f}; top-1 same {100 * top1:.0f}%")
    # One query is 1.1-1.25 points of these small sets, so the 0.5-point criterion is read on all
    # queries of the three sets together.
    pooled = {p: recall_from_ranks(np.concatenate(first[p]), NS) for p in first}
    diffs = [100 * (pooled["bf16"][n] - pooled["fp32"][n]) for n in NS]
    print(f"  all {len(np.concatenate(first['fp32']))} test queries pooled: bf16 - fp32 (points): "
          + "  ".join(f"R@{n} {d:+.2f}" for n, d in zip(NS, diffs, strict=True)))
    return max(map(abs, diffs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="vgg16", help="backbone of the speed test (vgg16 or small)")
    parser.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--images", type=int, default=16, help="synthetic JPEGs of the speed test")
    parser.add_argument("--clusters", type=int, default=64, help="NetVLAD clusters K of the speed test")
    parser.add_argument("--batch-size", type=int, default=4, help="images per batch (both paths)")
    parser.add_argument("--workers", type=int, default=2, help="vpr's DataLoader workers")
    parser.add_argument("--precision", default="auto", help="vpr's precision (fp32, bf16, auto)")
    parser.add_argument("--compile", action="store_true", help="also time vpr with torch.compile")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (all methods in each)")
    parser.add_argument("--recall-sets", nargs="+", default=["pitts30k_test", "pitts250k_test", "tokyo247"],
                        choices=["pitts30k_test", "pitts250k_test", "tokyo247"])
    parser.add_argument("--data", help="synthetic data-set root (vpr synth output); default: generate one")
    parser.add_argument("--recall-backbone", default="small", help="backbone of the recall comparison")
    parser.add_argument("--recall-size", type=int, nargs=2, default=[128, 160], metavar=("H", "W"))
    parser.add_argument("--recall-clusters", type=int, default=16)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-recall", action="store_true")
    args = parser.parse_args()
    print(machine())
    verdict = []
    if not args.skip_speed:
        ratio = speed(args)
        verdict.append(f"speed-up x{ratio:.2f} ({'meets' if ratio >= 3 else 'below'} the 3x target)")
    if not args.skip_recall:
        with tempfile.TemporaryDirectory(prefix="vpr-bench-") as work:
            worst = recall(args, Path(work))
        verdict.append(f"largest pooled |recall difference| {worst:.2f} points "
                       f"({'within' if worst <= 0.5 else 'above'} 0.5)")
    print("\n" + "; ".join(verdict))


if __name__ == "__main__":
    main()
