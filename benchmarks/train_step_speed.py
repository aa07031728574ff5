"""One training iteration per precision, and how far the bfloat16 loss is from the float32 one.

Runs vpr's own ``vpr.train.objective.batch_loss`` (forward of all images of the tuple, the loss, then
backward and an SGD step) on one fixed tuple: the NetVLAD/SARE tuple of 12 images (anchor, positive, 10
negatives; triplet loss) and the SFRS tuple of 22 (anchor, positive, 10 negatives, 10 difficult positives;
generation 1 with a teacher, SARE-ind + soft loss). Each precision starts from the same weights, so the
first loss values are directly comparable: the script prints the relative loss difference and the cosine
between the float32 and bfloat16 gradients. ``plain`` is the float32 NCHW baseline; ``+cl`` variants feed
the batch in channels-last layout. Images are synthetic JPEGs; NetVLAD is initialised by k-means on their
conv descriptors (realistic α). Usage:

    python benchmarks/train_step_speed.py [--backbone vgg16] [--size 256 320] [--steps 2]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np
import torch
from benchcommon import Timer, init_netvlad, machine, write_jpegs

from vpr.data.images import load_rgb, resize_fixed, to_tensor
from vpr.models import ModelConfig, build_model
from vpr.numeric_precision import resolve_precision, to_channels_last
from vpr.train.config import TrainConfig
from vpr.train.objective import TupleForward, batch_loss

VARIANTS = {"plain fp32": ("fp32", False), "fp32+cl": ("fp32", True), "bf16+cl": ("bf16", True)}


def tuple_images(files: list[Path], size: tuple[int, int]) -> torch.Tensor:
    """Anchor, its positive (the anchor shifted by 1/16 of the width and darkened), then the others."""
    imgs = [to_tensor(resize_fixed(load_rgb(f), size)) for f in files]
    anchor = imgs[0]
    positive = torch.roll(anchor, shifts=size[1] // 16, dims=2) * 0.9
    return torch.stack([anchor, positive, *imgs[1:-1]])


def step(model, teacher, cfg, images, layout, precision, cl, optimizer):
    """One iteration through batch_loss; returns (loss, gradients of the trainable parameters)."""
    loss, _, _ = batch_loss(cfg, TupleForward(model), to_channels_last(images, cl), layout,
                            precision=resolve_precision(precision, "cpu"), device=torch.device("cpu"),
                            teacher=teacher)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    optimizer.step()
    return loss.item(), grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="vgg16", help="vgg16 or small")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 320], metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=3, help="timed rounds (one iteration of each variant)")
    parser.add_argument("--clusters", type=int, default=64, help="NetVLAD clusters K")
    parser.add_argument("--methods", nargs="+", default=["netvlad", "sfrs"], choices=["netvlad", "sfrs"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    size = tuple(args.size)
    print(machine())
    print(f"backbone {args.backbone}, {size[0]}x{size[1]}, K={args.clusters}; "
          f"s/iteration = median of {args.steps} rounds after the first iteration")

    torch.manual_seed(0)
    trainable = "conv5" if args.backbone == "vgg16" else "full"
    model0 = build_model(ModelConfig(backbone=args.backbone, num_clusters=args.clusters,
                                     trainable_from=trainable, image_size=size))
    with tempfile.TemporaryDirectory() as tmp:
        files = write_jpegs(Path(tmp), 23, size, seed=1)
        alpha = init_netvlad(model0, files[:8], size, precision="fp32")
        all_images = tuple_images(files, size)
    print(f"NetVLAD alpha = {alpha:.0f}")
    for method in args.methods:
        if method == "netvlad":
            cfg = TrainConfig(method="baseline", loss="triplet", backbone=args.backbone).validate()
            images, layout = all_images[:12], [(10, 0)]
        else:
            cfg = TrainConfig(method="sfrs", loss="sare_ind", generation=1, backbone=args.backbone).validate()
            images, layout = all_images[:22], [(10, 10)]
        print(f"\n{method}: tuple of {len(images)} images ({cfg.loss}"
              f"{', generation 1 with teacher' if method == 'sfrs' else ''})")
        state, first = {}, {}
        for name in args.variants:
            precision, cl = VARIANTS[name]
            model = copy.deepcopy(model0).train()
            teacher = copy.deepcopy(model0).eval().requires_grad_(False) if method == "sfrs" else None
            opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
            state[name] = (model, teacher, opt, precision, cl)
            first[name] = step(model, teacher, cfg, images, layout, precision, cl, opt)   # same weights
        # One iteration of every variant per round, so that the machine's changing load hits all alike.
        secs: dict[str, list[float]] = {name: [] for name in args.variants}
        for _ in range(args.steps):
            for name, (model, teacher, opt, precision, cl) in state.items():
                with Timer() as t:
                    step(model, teacher, cfg, images, layout, precision, cl, opt)
                secs[name].append(t.seconds)
        base = args.variants[0]
        base_loss, base_grad = first[base]
        for name, (loss, grads) in first.items():
            rel = abs(loss - base_loss) / max(abs(base_loss), 1e-12)
            cos = float(torch.nn.functional.cosine_similarity(grads.double(), base_grad.double(), dim=0))
            ratio = float(np.median(np.asarray(secs[base]) / np.asarray(secs[name])))
            print(f"  {name:>10}: {np.median(secs[name]):7.2f} s/iteration  x{ratio:4.2f}   first loss "
                  f"{loss:.6f}  rel. diff {rel:.2e}  grad cosine {cos:.5f}")

if __name__ == "__main__":
    main()
