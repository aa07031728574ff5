"""Make a ready off-the-shelf model from a folder of photos: no coordinates, no index, no training.

The backbone's trunk (efficientnet_lite0: the packaged ImageNet weights; vgg16: --trunk weights, e.g. the
MatConvNet VGG16 conversion) plus a NetVLAD layer whose --num-clusters centers are k-means centers of conv
descriptors of the given images (up to --max-images of them, a seeded sample; --per-image random locations
each), exactly as `vpr cluster` + `vpr train --init-only` build the 'off-the-shelf' model of the results.
Images are found recursively (.jpg, .jpeg, .png) and read with their EXIF orientation applied. The model
file works wherever a checkpoint is accepted (`vpr describe`, `vpr retrieve`, `vpr extract`).

Example:
  vpr init-model --backbone efficientnet_lite0 --images photos/ --out model.pth
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vpr.commands.options import add_input, add_output, non_negative_int, positive_int
from vpr.numeric_precision import PRECISION_HELP, PRECISIONS


def configure(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "--images", required=True, type=Path, nargs="+", metavar="DIR",
              help="folders of images the NetVLAD centers are clustered on (searched recursively)")
    add_output(parser, "--out", required=True, type=Path, help="model file to write (.pth)")
    parser.add_argument("--backbone", default="efficientnet_lite0",
                        help="backbone: efficientnet_lite0 (ImageNet weights, offline), vgg16, resnet18 or "
                             "resnet50 (give --trunk: for resnet, torchvision's ImageNet file) or small "
                             "(random weights: tests only)")
    add_input(parser, "--trunk", type=Path, help="pretrained trunk weights (<index>.weight/.bias); needed "
              "for vgg16 to be of any use")
    parser.add_argument("--num-clusters", type=positive_int, default=64, help="NetVLAD clusters K")
    parser.add_argument("--image-size", type=positive_int, nargs=2, default=[480, 640], metavar=("H", "W"),
                        help="image size of the model (clustering and, later, description)")
    parser.add_argument("--max-images", type=positive_int, default=500,
                        help="images sampled for the clustering (seeded; all of them when fewer)")
    parser.add_argument("--per-image", type=positive_int, default=100,
                        help="random locations taken per image")
    parser.add_argument("--iterations", type=positive_int, default=100, help="k-means iterations")
    parser.add_argument("--seed", type=non_negative_int, default=43,
                        help="seed of the sampling, k-means and any random initialisation")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="DataLoader worker processes")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def make_model(images, out, backbone: str = "efficientnet_lite0", trunk=None, num_clusters: int = 64,
               image_size=(480, 640), max_images: int = 500, per_image: int = 100, iterations: int = 100,
               seed: int = 43, batch_size: int = 16, workers: int = 2, precision: str = "auto",
               device=None) -> dict:
    """Write the off-the-shelf model of the images under the folders ``images`` to ``out`` (what this
    command does; the defaults are its options'); returns the clustering summary of vpr.cluster.cluster."""
    import tempfile

    import torch

    from vpr import distributed
    from vpr.cluster import cluster
    from vpr.data.formats.folders import list_images
    from vpr.extract import resolve_device
    from vpr.models import ModelConfig, build_model, load_trunk
    from vpr.train.config import make_config
    from vpr.train.trainer import save_initial_model

    images = [Path(d) for d in images]
    files = [str(folder / rel) for folder in images for rel in list_images(folder)[0]]
    cfg = make_config(None, {"backbone": backbone, "num_clusters": num_clusters,
                             "image_size": list(image_size), "seed": seed})
    torch.manual_seed(seed)
    model = build_model(ModelConfig(backbone=backbone, num_clusters=num_clusters,
                                    image_size=tuple(image_size)))
    if trunk:
        load_trunk(model, trunk)
    info = distributed.DistInfo(0, 1, 0, resolve_device(device))
    with tempfile.TemporaryDirectory(prefix="vpr-init-model-") as tmp:
        centers = Path(tmp) / "centers.h5"
        summary = cluster(model, files, centers, num_images=max_images, per_image=per_image,
                          iterations=iterations, seed=seed, batch_size=batch_size, workers=workers, info=info,
                          precision=precision, exif_orientation=True)
        save_initial_model(cfg, centers, trunk, out, method="off-the-shelf",
                           centers_from={"images": [str(d) for d in images], "num_images": summary["images"],
                                         "per_image": per_image, "seed": seed})
    return {**summary, "files": len(files)}


def run(args: argparse.Namespace) -> int:
    import time

    start = time.perf_counter()
    summary = make_model(args.images, args.out, args.backbone, args.trunk, args.num_clusters, args.image_size,
                         args.max_images, args.per_image, args.iterations, args.seed, args.batch_size,
                         args.workers, args.precision, args.device)
    print(f"{args.out}: {args.backbone} trunk + NetVLAD ({args.num_clusters} centers from "
          f"{summary['descriptors']} descriptors of {summary['images']} of {summary['files']} images), "
          f"image size {args.image_size[0]}x{args.image_size[1]}; {time.perf_counter() - start:.1f} s")
    return 0
