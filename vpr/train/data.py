"""Training tuples as image batches, with the reference's colour jitter made reproducible.

Every random choice of the jitter comes from a generator seeded by the tuple's identity (seed,
generation, epoch, chunk, position in the chunk), never from a global RNG: a tuple looks the same whichever
rank or DataLoader worker loads it, and again after a resume.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from vpr.data.images import load_rgb, resize_fixed, to_tensor
from vpr.train.mining import Tuple

# ColorJitter(brightness=0.7, contrast=0.7, saturation=0.7, hue=0.5) as the reference (docs/method.md §1.5).
JITTER = {"brightness": 0.7, "contrast": 0.7, "saturation": 0.7, "hue": 0.5}


def color_jitter(img: Image.Image, gen: torch.Generator) -> Image.Image:
    """Brightness, contrast, saturation factors uniform in [0.3, 1.7] and a hue shift uniform in
    [−0.5, 0.5], applied in a random order (torchvision's ColorJitter, with an explicit generator)."""
    import torchvision.transforms.functional as TF  # only with jitter: importing it costs about 1.5 s

    def uniform(lo: float, hi: float) -> float:
        return float(torch.empty(1).uniform_(lo, hi, generator=gen))

    ops = {
        0: lambda im, f: TF.adjust_brightness(im, f),
        1: lambda im, f: TF.adjust_contrast(im, f),
        2: lambda im, f: TF.adjust_saturation(im, f),
        3: lambda im, f: TF.adjust_hue(im, f),
    }
    order = torch.randperm(4, generator=gen).tolist()
    factors = {i: uniform(1 - JITTER[k], 1 + JITTER[k]) for i, k in enumerate(("brightness", "contrast",
                                                                                  "saturation"))}
    factors[3] = uniform(-JITTER["hue"], JITTER["hue"])
    for i in order:
        img = ops[i](img, factors[i])
    return img


class TupleDataset(Dataset):
    """Item ``i`` = the images of ``tuples[i]``: [anchor, positive, negatives..., difficult positives...].

    Returns ``(images (M, 3, H, W), number of negatives, number of difficult positives)``. Images are turned
    per their EXIF Orientation tag when ``exif_orientation`` (the training index's attribute).
    """

    def __init__(self, tuples: Sequence[Tuple], query_files: Sequence[str | os.PathLike],
                 db_files: Sequence[str | os.PathLike], size: tuple[int, int], jitter: bool,
                 seed_key: Sequence[int], exif_orientation: bool = False):
        self.tuples = list(tuples)
        self.query_files, self.db_files = list(query_files), list(db_files)
        self.size = tuple(size)
        self.jitter = jitter
        self.seed_key = [int(k) for k in seed_key]
        self.exif_orientation = exif_orientation

    def __len__(self) -> int:
        return len(self.tuples)

    def _load(self, path, gen: torch.Generator) -> torch.Tensor:
        img = load_rgb(path, self.exif_orientation)
        if self.jitter:
            img = color_jitter(img, gen)
        return to_tensor(resize_fixed(img, self.size))

    def __getitem__(self, i: int):
        t = self.tuples[i]
        seed = np.random.SeedSequence(self.seed_key + [i]).generate_state(1)[0]
        gen = torch.Generator().manual_seed(int(seed))
        db_ids = [t.positive, *t.negatives, *t.difficult_positives]
        files = [self.query_files[t.anchor]] + [self.db_files[j] for j in db_ids]
        return torch.stack([self._load(f, gen) for f in files]), len(t.negatives), len(t.difficult_positives)


def collate_tuples(items):
    """Concatenate the images of several tuples (their lengths may differ) and keep their layout."""
    images = torch.cat([x for x, _, _ in items])
    layout = [(n_neg, n_pos) for _, n_neg, n_pos in items]
    return images, layout


class RankStepSampler(Sampler[list[int]]):
    """The tuples this rank trains on, one batch per step.

    Step s of the chunk holds global tuples [s·G, (s+1)·G) with G = world · tuple_size; rank r takes the
    r-th block of ``tuple_size`` of them. The global batch of a step is therefore the same whatever the
    number of processes, which is what makes a 2-process run equal a 1-process run with twice the tuples.
    """

    def __init__(self, steps: int, rank: int, world: int, tuple_size: int, start_step: int = 0):
        self.steps, self.rank, self.world, self.tuple_size = steps, rank, world, tuple_size
        self.start_step = start_step

    def __iter__(self):
        g = self.world * self.tuple_size
        for s in range(self.start_step, self.steps):
            base = s * g + self.rank * self.tuple_size
            yield list(range(base, base + self.tuple_size))

    def __len__(self) -> int:
        return self.steps - self.start_step
