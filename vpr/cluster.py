"""Initial NetVLAD centers: k-means on local conv descriptors of training images (docs/method.md §6).

The output is the layout of the reference's ``vgg16_pitts_64_desc_cen.hdf5`` (``centroids`` K×D,
``descriptors`` M×D), so either file can initialise the model; vpr's own carries ``kind`` = "vpr-centers"
(see :mod:`vpr.artifacts`).

Reproducibility: the images are a seeded sample of the *sorted* training image list, and the locations
taken from each image come from a generator seeded by that image's position in the sample, so the result
does not depend on batch order, worker count or the number of processes (the reference samples from an
unordered Python set, docs/method.md §6).

The conv maps may be computed under bfloat16/float16 autocast (``precision``, see
:mod:`vpr.numeric_precision`); they are cast to float32 before the L2 normalisation, so the stored descriptors
are float32 either way.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from vpr import artifacts
from vpr.errors import VprError
from vpr.io import atomic_h5
from vpr.numeric_precision import Precision, channels_last, resolve_precision, to_channels_last
from vpr.progress import progress as progress_bar

# torch and faiss are imported where they are used: `vpr cluster` reads the defaults of cluster() to build
# its options, without paying for them.
if TYPE_CHECKING:
    import torch

    from vpr import distributed
    from vpr.models import EmbedNet

log = logging.getLogger(__name__)


def sample_images(files: Sequence[str], num_images: int, seed: int) -> list[str]:
    """``num_images`` files drawn without replacement from the sorted list (all of them if fewer)."""
    ordered = sorted(set(files))
    rng = np.random.default_rng(seed)
    take = min(num_images, len(ordered))
    return [ordered[i] for i in rng.choice(len(ordered), size=take, replace=False)]


def local_descriptors(model: EmbedNet, files: Sequence[str], positions: Sequence[int], size: tuple[int, int],
                      per_image: int, seed: int, batch_size: int, workers: int, device: torch.device,
                      progress: bool = True, precision: str | Precision = "fp32",
                      exif_orientation: bool = False) -> np.ndarray:
    """L2-normalised conv-map vectors: ``per_image`` distinct random locations from every image.

    ``positions[i]`` is the sample position of ``files[i]``; it seeds that image's location choice.
    """
    import torch
    import torch.nn.functional as F

    from vpr.data.images import image_batches

    precision = resolve_precision(precision, device)
    device = torch.device(device)
    batches = image_batches(files, size, batch_size, workers, device, exif_orientation=exif_orientation)
    model.eval().to(device)
    out = []
    with channels_last(model), torch.inference_mode():
        for images, idx in progress_bar(batches, total=math.ceil(len(files) / batch_size),
                                        desc="cluster: descriptors", unit="batch", disable=not progress):
            with precision.autocast():
                fmap = model.feature_map(to_channels_last(images.to(device, non_blocking=True)))
            fmap = F.normalize(fmap.float(), p=2, dim=1)                            # (B, D, h, w)
            flat = fmap.flatten(2).transpose(1, 2).cpu().numpy()                    # (B, h·w, D)
            for j, i in enumerate(idx.tolist()):
                rng = np.random.default_rng([seed, positions[i]])
                n_loc = flat.shape[1]
                take = rng.choice(n_loc, size=min(per_image, n_loc), replace=False)
                out.append(flat[j, take])
    return np.concatenate(out).astype(np.float32)


def kmeans(descriptors: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    if len(descriptors) < k:
        raise VprError(f"k-means needs at least {k} descriptors for {k} clusters, got {len(descriptors)}; "
                       "sample more images or locations")
    import faiss

    km = faiss.Kmeans(descriptors.shape[1], k, niter=iterations, seed=seed, verbose=False,
                      gpu=faiss.get_num_gpus() > 0, max_points_per_centroid=10**9)
    km.train(np.ascontiguousarray(descriptors, dtype=np.float32))
    return km.centroids.astype(np.float32)


def cluster(model: EmbedNet, files: Sequence[str], out: str | os.PathLike, *, num_images: int = 500,
            per_image: int = 100, iterations: int = 100, seed: int = 43, batch_size: int = 16,
            workers: int = 2, info: distributed.DistInfo | None = None,
            precision: str | Precision = "auto", exif_orientation: bool = False) -> dict:
    """Sample, describe, cluster and write the centers file (rank 0); extraction is shared by all ranks.

    K is the model's (``model.config.num_clusters``). These defaults are those of `vpr cluster`.
    ``exif_orientation``: turn images per their EXIF Orientation tag (as the index says).
    """
    import torch

    from vpr import distributed
    from vpr.data.images import check_images_exist

    info = info or distributed.DistInfo(0, 1, 0, torch.device("cpu"))
    chosen = sample_images(files, num_images, seed)
    check_images_exist(chosen)
    shard = [i for i in distributed.shard(len(chosen), info.rank, info.world_size) if i < len(chosen)]
    local = local_descriptors(model, [chosen[i] for i in shard], shard, tuple(model.config.image_size),
                              per_image, seed, batch_size, workers, info.device, progress=info.is_main,
                              precision=precision, exif_orientation=exif_orientation)
    parts = distributed.gather_objects(local)
    descriptors = np.concatenate([p for p in parts if len(p)])
    summary = {"images": len(chosen), "descriptors": len(descriptors), "dim": descriptors.shape[1]}
    if info.is_main:
        centroids = kmeans(descriptors, model.config.num_clusters, iterations, seed)
        with atomic_h5(out) as f:
            f.create_dataset("centroids", data=centroids)
            f.create_dataset("descriptors", data=descriptors)
            f.attrs.update({"kind": artifacts.CENTERS, "num_images": len(chosen), "per_image": per_image,
                            "iterations": iterations, "seed": seed, "backbone": model.config.backbone})
    distributed.barrier()
    return summary


def read_centers(path: str | os.PathLike, num_clusters: int | None = None,
                 dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(centroids K×D, descriptors M×D) from a centers file, checked against the model's K and D."""
    try:
        with artifacts.open_artifact(path, artifacts.CENTERS) as f:
            centroids = np.asarray(f["centroids"][()], dtype=np.float32)
            descriptors = np.asarray(f["descriptors"][()], dtype=np.float32)
    except (OSError, KeyError) as err:
        raise VprError(f"{path}: unreadable centers file, expected datasets 'centroids' and "
                       f"'descriptors' ({err})") from err
    if centroids.ndim != 2 or descriptors.ndim != 2 or centroids.shape[1] != descriptors.shape[1]:
        raise VprError(f"{path}: centroids {centroids.shape} and descriptors {descriptors.shape} must be "
                       "matrices with the same number of columns")
    if num_clusters is not None and centroids.shape[0] != num_clusters:
        raise VprError(f"{path}: has {centroids.shape[0]} centroids, the model has "
                       f"num_clusters={num_clusters}")
    if dim is not None and centroids.shape[1] != dim:
        raise VprError(f"{path}: centroids have dimension {centroids.shape[1]}, the backbone gives {dim}")
    return centroids, descriptors
