"""Compute the global descriptor of one or more images (a folder stands for its images: .jpg, .jpeg, .png
found recursively, in sorted path order). Images are read with their EXIF orientation applied (as a photo
viewer shows them) unless --no-exif-orientation.

Prints each image's descriptor shape and L2 norm. With --out, saves the descriptors: a `.npy` file holds
the stacked float32 array (N x D, rows in argument order); an `.h5`/`.hdf5` file holds the dataset
`descriptors` (N x D) and `paths` (the image arguments).
"""

from __future__ import annotations

import argparse

from vpr.commands.options import add_input, add_max_image_pixels, add_output, add_pca_options, positive_int


def configure(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    add_input(parser, "--checkpoint", required=True, help="model checkpoint (.pth)")
    add_pca_options(parser)
    add_max_image_pixels(parser)
    parser.add_argument("--resize", choices=("fixed", "shorter-side"), default="fixed",
                        help="the model's fixed image size, or shorter side = the longer side of that size "
                             "keeping the aspect ratio")
    add_output(parser, "--out", default=None, help="save the descriptors to this .npy or .h5 file")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--exif-orientation", action=argparse.BooleanOptionalAction, default=True,
                        help="turn each image per its EXIF Orientation tag (off: the pixels as stored, "
                             "as the paper data sets are read)")


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    import h5py
    import numpy as np

    from vpr.data.formats.folders import list_images
    from vpr.errors import VprError
    from vpr.extract import extract_features
    from vpr.io import atomic_output, open_temporary
    from vpr.models import load_model_with_pca

    suffix = Path(args.out).suffix.lower() if args.out else None
    if suffix not in (None, ".npy", ".h5", ".hdf5"):
        raise VprError(f"--out {args.out}: unknown file type, expected a .npy, .h5 or .hdf5 file")
    images = []
    for p in args.images:   # a folder stands for its images
        images += [str(Path(p) / rel) for rel in list_images(p)[0]] if os.path.isdir(p) else [p]
    model, whiten = load_model_with_pca(args.checkpoint, args.pca, whiten=args.whiten)
    size = tuple(int(s) for s in model.config.image_size)
    shorter_side = max(size) if args.resize == "shorter-side" else None
    desc = extract_features(model, images, size, batch_size=args.batch_size, workers=0,
                            shorter_side=shorter_side, device=args.device, desc="describe",
                            exif_orientation=args.exif_orientation)
    for path, d in zip(images, desc, strict=True):
        print(f"{path}\tshape {tuple(d.shape)}\tnorm {float(np.linalg.norm(d)):.6f}")
    if args.out:
        with atomic_output(args.out) as tmp:
            if suffix == ".npy":
                with open_temporary(tmp, "wb") as f:  # np.save(path) would append ".npy" to the name
                    np.save(f, desc)
            else:
                # through a file object: HDF5 must not open (and lock) the flocked temporary itself
                with open_temporary(tmp, "r+b") as raw, h5py.File(raw, "w") as f:
                    f.create_dataset("descriptors", data=desc)
                    f.create_dataset("paths", data=[str(p) for p in images], dtype=h5py.string_dtype())
                    f.attrs.update({"checkpoint": str(args.checkpoint), "pca": str(args.pca or ""),
                                    "whiten": bool(whiten), "image_size": list(size), "resize": args.resize,
                                    "exif_orientation": bool(args.exif_orientation)})
        print(f"{args.out}: {desc.shape[0]} descriptor(s) of dimension {desc.shape[1]}")
    return 0
