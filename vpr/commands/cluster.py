"""Compute the initial NetVLAD centers: k-means on local conv descriptors of training images.

Samples --images training images (queries and database of the index, seeded), takes --per-image random
L2-normalised conv5_3 vectors from each (500 x 100 = 50,000 by default), and runs faiss k-means with
--num-clusters centers for --iterations iterations. The output has the datasets `centroids` (K x D) and
`descriptors` (M x D), the layout of the reference's vgg16_pitts_64_desc_cen.hdf5. Runs under torchrun too
(the ranks share the extraction). --precision auto (the default) computes the conv maps under bfloat16
autocast where the hardware does that fast; the descriptors are normalised and stored in float32.
"""

from __future__ import annotations

import argparse
import inspect

from vpr.cluster import cluster
from vpr.commands.options import add_input, add_max_image_pixels, add_output, non_negative_int, positive_int
from vpr.devices import DEVICE_HELP, DEVICES
from vpr.numeric_precision import PRECISION_HELP, PRECISIONS
from vpr.train.config import TrainConfig

# One home per default: the sampling and k-means options are those of the library function cluster(); the
# model (backbone, image size, K) is the one `vpr train` builds by default, whose centers these must be.
SAMPLING = {name: p.default for name, p in inspect.signature(cluster).parameters.items()
            if p.default is not inspect.Parameter.empty}
MODEL = TrainConfig()


def configure(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "--index", required=True, help="index file of the training split")
    add_output(parser, "--out", required=True, help="output HDF5 file (centroids, descriptors)")
    add_max_image_pixels(parser)
    add_input(parser, "--trunk", help="pretrained trunk weights (<index>.weight/.bias); default: random "
              "initialisation seeded by --seed")
    parser.add_argument("--backbone", default=MODEL.backbone,
                        help="backbone: vgg16, small, efficientnet_lite0, resnet18 or resnet50")
    parser.add_argument("--image-size", type=positive_int, nargs=2, default=MODEL.image_size,
                        metavar=("H", "W"), help="image size the descriptors are computed at")
    parser.add_argument("--num-clusters", type=positive_int, default=MODEL.num_clusters,
                        help="number of centers K")
    parser.add_argument("--images", type=positive_int, default=SAMPLING["num_images"],
                        help="number of sampled training images")
    parser.add_argument("--per-image", type=positive_int, default=SAMPLING["per_image"],
                        help="random locations taken per image")
    parser.add_argument("--iterations", type=positive_int, default=SAMPLING["iterations"],
                        help="k-means iterations")
    parser.add_argument("--seed", type=non_negative_int, default=SAMPLING["seed"],
                        help="seed of the image and location sampling, k-means and the random initialisation")
    parser.add_argument("--batch-size", type=positive_int, default=SAMPLING["batch_size"],
                        help="images per forward pass")
    parser.add_argument("--workers", type=non_negative_int, default=SAMPLING["workers"],
                        help="DataLoader worker processes")
    parser.add_argument("--root", help="data-set root overriding the one recorded in the index file")
    parser.add_argument("--precision", choices=PRECISIONS, default=SAMPLING["precision"], help=PRECISION_HELP)
    parser.add_argument("--device", choices=DEVICES, default="auto", help=DEVICE_HELP)


def run(args: argparse.Namespace) -> int:
    import torch

    from vpr import distributed

    # before the model code is imported: a GPU job without a usable GPU stops within seconds
    info = distributed.init(device=args.device)
    from vpr.data.index import Index
    from vpr.models import ModelConfig, build_model, load_trunk

    index = Index(args.index, root=args.root)
    try:
        torch.manual_seed(args.seed)
        model = build_model(ModelConfig(backbone=args.backbone, num_clusters=args.num_clusters,
                                        image_size=tuple(args.image_size)))
        if args.trunk:
            load_trunk(model, args.trunk)
        files = [str(p) for p in index.query_files() + index.db_files()]
        summary = cluster(model, files, args.out, num_images=args.images, per_image=args.per_image,
                          iterations=args.iterations, seed=args.seed, batch_size=args.batch_size,
                          workers=args.workers, info=info, precision=args.precision,
                          exif_orientation=index.exif_orientation)
        if info.is_main:
            print(f"{args.out}: {args.num_clusters} centers from {summary['descriptors']} descriptors "
                  f"({summary['dim']}-d) of {summary['images']} images")
    finally:
        distributed.cleanup()
    return 0
