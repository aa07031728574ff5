"""Pick the model to test: the checkpoint with the best recorded validation Recall@5.

Given the `model_best.pth` of one run, this copies it; given those of several SFRS generations, it picks
the best across generations (the reference's selection spans all generations, docs/method.md §4.4). Ties keep
the earlier file. The chosen file is copied unchanged (atomically) to --out.
"""

from __future__ import annotations

import argparse

from vpr.commands.options import add_input, add_output


def configure(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "--checkpoints", nargs="+", required=True,
              help="candidate checkpoints written by 'vpr train' (they record their val recall)")
    add_output(parser, "--out", required=True, help="where to copy the chosen checkpoint")


def run(args: argparse.Namespace) -> int:
    import shutil

    import torch

    from vpr.errors import VprError
    from vpr.io import atomic_output
    from vpr.models.checkpoint import read_checkpoint_meta

    best, best_r5 = None, float("-inf")
    for path in args.checkpoints:
        meta = read_checkpoint_meta(path)
        recall = meta.get("recall")
        if not isinstance(recall, dict) or "5" not in recall:
            raise VprError(f"{path}: records no validation recall; expected a checkpoint written by "
                           "'vpr train' at the end of an epoch")
        r5 = float(recall["5"])
        print(f"{path}: generation {meta.get('generation', 0)}, epoch {meta.get('epoch')}, "
              f"val R@5 {100 * r5:.2f}")
        if r5 > best_r5:
            best, best_r5 = path, r5
    with atomic_output(args.out) as tmp:
        shutil.copyfile(best, tmp)
    torch.load(args.out, map_location="cpu", weights_only=True)   # the copy is readable
    print(f"selected {best} (val R@5 {100 * best_r5:.2f}) -> {args.out}")
    return 0
