"""Image loading and the MatConvNet input convention shared by extraction, clustering and training.

Images are read with PIL as RGB, resized on the PIL image (bilinear; PIL's bilinear filter is antialiased
when shrinking, which is what torchvision's ``Resize`` does on PIL input), then turned into float32
``(3, H, W)`` tensors on the 0..255 scale minus the VGG ImageNet mean, with no division by a standard
deviation (docs/method.md §1.5).

Tokyo 24/7 queries keep their aspect ratio (shorter side = 640, docs/method.md §5.5), so their tensors differ
in size. :class:`SizeBucketBatchSampler` groups images whose *output* size agrees into common batches
(the output size is computed from the image header, without decoding the image), so variable-size query
sets do not force a batch size of 1. :func:`image_batches` is the loader every image pass uses (extraction,
clustering): those batches from worker processes, a bad image reported as one clean error.

Every image mode Pillow opens becomes 8-bit RGB with its content (:func:`to_rgb8`): 16-bit samples (modes
``I;16*`` and ``I``) are scaled to the nearest 8-bit level, floats (``F``) on the unit scale are multiplied by
255, alpha is dropped, and the other modes use Pillow's own conversion.

EXIF orientation: with ``exif_orientation=True`` an image carrying an EXIF Orientation tag (a phone photo
stored sideways) is turned the way a photo viewer shows it (``PIL.ImageOps.exif_transpose``) before
anything else, and its size is the turned size. The index records which behaviour applies (its attribute
``exif_orientation``: on for the csv and folders formats, off for the paper formats, whose reference reads
the stored pixels as they are); every step that loads an index's images follows it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

from vpr.errors import VprError
from vpr.io import signals_held

VGG_MEAN_RGB = (123.68, 116.779, 103.939)

# EXIF tag number of Orientation; values 2..8 turn or mirror the image (1: as stored)
EXIF_ORIENTATION = 0x0112
# orientations that swap width and height (a quarter turn, possibly mirrored)
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)

# Exceptions PIL raises for files that are not images or are corrupt/truncated.
_PIL_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

# The most pixels an image may have: a larger one is refused from its header, before it is decoded (a
# "decompression bomb": a PNG of a few kilobytes can declare 12,000 x 12,000 pixels, 430 MB decoded as RGB
# and more on the way to a tensor). 100 megapixels is 4 times a 24-megapixel camera's photo, 300 times a
# Pittsburgh image. The commands that read images set it from --max-image-pixels
# (:func:`set_max_image_pixels`); DataLoader workers, forked, inherit it. Pillow's own check (a warning
# above 89 megapixels, an error above twice that) is replaced by this one: it is off.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
_max_pixels = DEFAULT_MAX_IMAGE_PIXELS
Image.MAX_IMAGE_PIXELS = None


def set_max_image_pixels(limit: int | None) -> None:
    """Refuse images of more than ``limit`` pixels from now on (None: :data:`DEFAULT_MAX_IMAGE_PIXELS`)."""
    global _max_pixels
    _max_pixels = DEFAULT_MAX_IMAGE_PIXELS if limit is None else int(limit)


def _check_pixels(path: str | os.PathLike, img: Image.Image) -> None:
    w, h = img.size
    if w * h > _max_pixels:
        raise VprError(f"{path}: {w} x {h} pixels ({w * h / 1e6:.1f} megapixels) is above the limit of "
                       f"{_max_pixels:,} pixels: not decoded (a decompression bomb?); raise the limit with "
                       "--max-image-pixels if the image is genuine")


def to_rgb8(img: Image.Image) -> Image.Image:
    """``img`` as an 8-bit RGB image that keeps its content, whatever its mode.

    Pillow's own ``convert("RGB")`` clips wide samples to 255 (a 16-bit grayscale image becomes white), so:

    * 16-bit integer modes (``I;16``, ``I;16B``, ``I;16L``, ...) and ``I`` (32-bit; what Pillow gives for
      16-bit PNG/PGM files, PGMs with a smaller maxval already stretched to 0..65535): level
      ``round(x / 257)``, clipped to 0..255. 257 = 65535 / 255 is the factor by which PNG widens an 8-bit
      sample v to 16 bits (v·257: the byte repeated), so an 8-bit image saved as 16 bits comes back
      exactly, and any other value maps to its nearest 8-bit level (``x >> 8`` would truncate: up to one
      level darker).
    * ``F`` (32-bit float): when every finite value lies in [0, 1] the image is on the unit scale and is
      multiplied by 255; otherwise its values are taken as 8-bit levels. Rounded, clipped to 0..255; NaN
      becomes 0.
    * Alpha (``LA``, ``PA``, ``RGBA``, palette transparency) is dropped: the stored colours are kept, not
      composited on a background; premultiplied ``La``/``RGBa`` are un-premultiplied first.
    * Everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ...) uses Pillow's
      conversion, which is colorimetric for these (an embedded ICC profile is ignored).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "I" or mode.startswith("I;16"):
        levels = np.rint(np.asarray(img, dtype=np.float64) / 257.0)
    elif mode == "F":
        x = np.asarray(img, dtype=np.float64)
        finite = x[np.isfinite(x)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            x = x * 255.0
        levels = np.rint(np.nan_to_num(x, nan=0.0, posinf=255.0, neginf=0.0))
    else:
        unpremultiplied = {"La": "LA", "RGBa": "RGBA"}.get(mode)
        return (img.convert(unpremultiplied) if unpremultiplied else img).convert("RGB")
    return Image.fromarray(np.clip(levels, 0, 255).astype(np.uint8)).convert("RGB")


@contextlib.contextmanager
def _open_image(path: str | os.PathLike) -> Iterator[Image.Image]:
    """``Image.open`` with a VprError naming ``path`` for a missing, unreadable or non-file path, or an
    image above the pixel limit (checked from the header, before any decoding)."""
    if os.path.isdir(path):
        raise VprError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as img:
            _check_pixels(path, img)
            yield img
    except FileNotFoundError as err:
        raise VprError(f"{path}: image not found") from err
    except _PIL_ERRORS as err:
        raise VprError(f"{path}: unreadable or corrupt image ({err})") from err


def _orientation(img: Image.Image) -> int:
    """The EXIF Orientation value of an opened image (1 when absent or not a valid value); reads only
    the header."""
    try:
        value = img.getexif().get(EXIF_ORIENTATION, 1)
    except _PIL_ERRORS:   # a damaged EXIF block: the pixels as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF Orientation value of an image file (1..8; 1 = as stored, also when there is no tag),
    read from its header without decoding the pixels."""
    with _open_image(path) as img:
        return _orientation(img)


def count_orientation_tags(files: Sequence[str | os.PathLike]) -> int:
    """How many of ``files`` carry an EXIF Orientation tag that turns or mirrors the image (value 2..8);
    reads only the headers. A file that is not a readable image counts as untagged (reading it fails
    later, in the step that decodes it, with its own message)."""
    count = 0
    for f in files:
        try:
            count += exif_orientation(f) != 1
        except VprError:
            pass
    return count


def load_rgb(path: str | os.PathLike, exif_orientation: bool = False) -> Image.Image:
    """Decode an image file into an 8-bit RGB PIL image (:func:`to_rgb8`), turned per its EXIF
    Orientation tag when ``exif_orientation``; a missing, unreadable or non-file path is a VprError
    naming it."""
    with _open_image(path) as img:
        img.load()  # decodes the whole image, so truncation shows up here
        if exif_orientation and _orientation(img) != 1:
            img = ImageOps.exif_transpose(img)
        return to_rgb8(img)


def check_images_exist(files: Sequence[str | os.PathLike]) -> None:
    """Fail early, before any work, when image files are missing (names the first one and the count)."""
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        dirs = [f for f in missing if os.path.isdir(f)]
        if dirs:
            raise VprError(f"{dirs[0]}: is a directory, not an image ({len(dirs)} of {len(files)} image "
                           "path(s) are directories)")
        raise VprError(f"{missing[0]}: image not found ({len(missing)} of {len(files)} image(s) missing)")


def image_size(path: str | os.PathLike, exif_orientation: bool = False) -> tuple[int, int]:
    """(H, W) of an image file, read from its header without decoding the pixels; with
    ``exif_orientation``, the size as shown (width and height swapped by a quarter-turn tag)."""
    with _open_image(path) as img:
        w, h = img.size
        if exif_orientation and _orientation(img) in _TRANSPOSED_ORIENTATIONS:
            w, h = h, w
    return h, w


def shorter_side_size(hw: tuple[int, int], s: int) -> tuple[int, int]:
    """Output (H, W) when the shorter side of an (H, W) image becomes ``s``, keeping the aspect ratio.

    The longer side is truncated to an integer, as torchvision's ``Resize(int)`` does.
    """
    h, w = hw
    if h <= w:
        return s, int(s * w / h)
    return int(s * h / w), s


def resize_fixed(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to exactly ``size = (H, W)``, bilinear with antialias (aspect ratio not kept)."""
    h, w = size
    return img.resize((w, h), Image.Resampling.BILINEAR)


def resize_shorter_side(img: Image.Image, s: int) -> Image.Image:
    """Resize so that the shorter side is ``s`` pixels, keeping the aspect ratio (bilinear, antialias)."""
    return resize_fixed(img, shorter_side_size((img.height, img.width), s))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """float32 (3, H, W): RGB pixels on the 0..255 scale minus :data:`VGG_MEAN_RGB`, no std division."""
    rgb = np.asarray(to_rgb8(img))   # (H, W, 3) uint8, no copy
    out = np.empty((3, *rgb.shape[:2]), dtype=np.float32)
    # One pass per channel straight into the planar float32 output: 4x faster than converting, subtracting
    # and transposing whole arrays (a 480x640 image: about 2 ms instead of 9 in a loader worker).
    for c, mean in enumerate(VGG_MEAN_RGB):
        np.subtract(rgb[:, :, c], np.float32(mean), out=out[c])
    return torch.from_numpy(out)


class ImageListDataset(Dataset):
    """Images of a file list as network inputs; item ``i`` is ``(tensor (3, H, W), i)``.

    ``size=(H, W)`` resizes every image to that size; ``shorter_side=s`` resizes keeping the aspect
    ratio; with neither, images keep their own size. Giving both is an error. ``exif_orientation``: turn
    images per their EXIF Orientation tag (see the module docstring).
    """

    def __init__(self, files: Sequence[str | os.PathLike], size: tuple[int, int] | None = None,
                 shorter_side: int | None = None, exif_orientation: bool = False):
        if size is not None and shorter_side is not None:
            raise ValueError("give either size or shorter_side, not both")
        self.files = [Path(f) for f in files]
        self.size = tuple(size) if size is not None else None
        self.shorter_side = shorter_side
        self.exif_orientation = bool(exif_orientation)

    def __len__(self) -> int:
        return len(self.files)

    def output_size(self, i: int) -> tuple[int, int]:
        """(H, W) of item ``i``'s tensor; reads only the image header when it depends on the image."""
        if self.size is not None:
            return self.size
        hw = image_size(self.files[i], self.exif_orientation)
        return shorter_side_size(hw, self.shorter_side) if self.shorter_side is not None else hw

    def transform(self, img: Image.Image) -> torch.Tensor:
        if self.size is not None:
            img = resize_fixed(img, self.size)
        elif self.shorter_side is not None:
            img = resize_shorter_side(img, self.shorter_side)
        return to_tensor(img)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_rgb(self.files[i], self.exif_orientation)), i


class SizeBucketBatchSampler(Sampler[list[int]]):
    """Batches of indices whose images have the same output size.

    Indices are grouped by size (groups in order of their first index); within a group they stay in
    ascending order and are cut into batches of at most ``batch_size``. With a single size this is plain
    sequential batching.
    """

    def __init__(self, sizes: Sequence[tuple[int, int]], batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(sizes):
            buckets.setdefault(tuple(s), []).append(i)
        self.batches = [idx[j:j + batch_size] for idx in buckets.values()
                        for j in range(0, len(idx), batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Guarded(Dataset):
    """Returns an image load error as data instead of raising it inside a DataLoader worker.

    A VprError raised in a worker reaches the main process wrapped in a traceback text; returning the
    message lets :func:`image_batches` re-raise it as the same clean one-line error.
    """

    def __init__(self, dataset: ImageListDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            tensor, _ = self.dataset[i]
        except VprError as err:
            return None, i, str(err)
        return tensor, i, None


def _collate(items):
    errors = [e for _, _, e in items if e is not None]
    if errors:
        return None, None, errors[0]
    return torch.stack([t for t, _, _ in items]), torch.tensor([i for _, i, _ in items]), None


def image_batches(files: Sequence[str | os.PathLike], size: tuple[int, int] | None, batch_size: int,
                  workers: int, device: torch.device, shorter_side: int | None = None,
                  exif_orientation: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images (B, 3, H, W), row indices into files)`` batches, images of one output size per batch.

    Resizing and EXIF orientation as in :class:`ImageListDataset`; loaded by ``workers`` processes. A
    missing or unreadable image raises VprError naming it (in this process, not as a worker's traceback).
    """
    dataset = ImageListDataset(files, size=size, shorter_side=shorter_side, exif_orientation=exif_orientation)
    if dataset.size is not None:
        sizes = [dataset.size] * len(dataset)
    else:
        sizes = [dataset.output_size(i) for i in range(len(dataset))]
    loader = DataLoader(_Guarded(dataset), batch_sampler=SizeBucketBatchSampler(sizes, batch_size),
                        num_workers=workers, collate_fn=_collate, pin_memory=device.type == "cuda")
    # Starting the loader's workers is not interruptible: an exception raised inside it by a signal leaves a
    # half-made iterator whose finaliser prints a traceback. The signal takes effect once they have started.
    with signals_held():
        batches = iter(loader)
    for images, idx, error in batches:
        if error is not None:
            raise VprError(error)
        yield images, idx
