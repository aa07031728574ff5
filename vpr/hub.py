"""What the torch.hub entry points of ``hubconf.py`` do: fetch a model file (and a PCA file) with its
SHA-256 checked, load it as an ``EmbedNet`` in eval mode with its PCA-whitening, and give it the input
transform of `vpr describe`.

The released models (``sfrs``, ``netvlad``) take their URL and SHA-256 from the ``external`` section of
``config/released.yaml``, the file the workflow evaluates them from. A download goes through
:func:`vpr.fetch.download` (atomic, length and SHA-256 checked, retried on what can heal) into
``cache_dir`` (default ``<torch.hub.get_dir()>/checkpoints/vpr``); a file already there is used after its
SHA-256 is checked again. A file without a known SHA-256 is loaded with a warning that gives its SHA-256.

``model.transform(image)``: an image file path or a PIL image → the (3, H, W) float tensor `vpr describe`
feeds the network (EXIF orientation applied to files, 8-bit RGB, bilinear resize to the model's
``config.image_size``, pixels on 0..255 minus the VGG mean). ``model(batch)`` gives the L2-normalised
global descriptors, so ``model(model.transform(path)[None])`` equals `vpr describe --checkpoint ... path`.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from pathlib import Path, PurePosixPath

import torch
from PIL import Image

from vpr.data.images import ImageListDataset, load_rgb
from vpr.errors import VprError
from vpr.fetch import _check_sha256, download
from vpr.io import sha256sum
from vpr.models import EmbedNet, load_model_with_pca
from vpr.yamlfile import YamlFileError, load_yaml

log = logging.getLogger(__name__)

RELEASED_CONFIG = Path(__file__).resolve().parents[1] / "config" / "released.yaml"


class ImageTransform:
    """The input of `vpr describe` for one image: a path (read with its EXIF orientation applied, unless
    ``exif_orientation=False``) or a PIL image → float32 (3, H, W) at ``size`` = (H, W)."""

    def __init__(self, size: tuple[int, int], exif_orientation: bool = True) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.exif_orientation = exif_orientation
        self._dataset = ImageListDataset([], size=self.size)

    def __call__(self, image: str | os.PathLike | Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            image = load_rgb(image, self.exif_orientation)
        return self._dataset.transform(image)

    def __repr__(self) -> str:
        return f"ImageTransform(size={self.size}, exif_orientation={self.exif_orientation})"


def released(name: str, config: str | os.PathLike = RELEASED_CONFIG) -> dict:
    """The ``external`` entry ``name`` of the released-models configuration (url, sha256, checkpoint)."""
    try:
        entries = (load_yaml(Path(config)) or {}).get("external") or {}
    except YamlFileError as err:
        raise VprError(str(err)) from None
    if name not in entries:
        raise VprError(f"{config}: no released model {name!r} (known: {', '.join(sorted(entries))})")
    return entries[name]


def default_cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / "vpr"


def cached_download(url: str, sha256: str | None, cache_dir: str | os.PathLike | None = None,
                    filename: str | None = None) -> Path:
    """The file of ``url`` in ``cache_dir`` (downloaded when missing), its SHA-256 checked when given."""
    want = _check_sha256(sha256)
    name = filename or PurePosixPath(urllib.parse.urlsplit(url).path).name
    if not name:
        raise VprError(f"{url}: no file name in the URL; give a filename")
    target = Path(cache_dir or default_cache_dir()) / name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s to %s", url, target)
        download(url, target, want)
    elif want is not None and sha256sum(target) != want:
        raise VprError(f"{target}: SHA-256 {sha256sum(target)} differs from the expected {want} of {url}; "
                       "delete the file to download it again")
    if want is None:
        log.warning("%s: no SHA-256 known for %s, so the file is not checked; its SHA-256 is %s", target, url,
                    sha256sum(target))
    return target


def _local(path: str | os.PathLike, sha256: str | None, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise VprError(f"{path}: {what} not found")
    want = _check_sha256(sha256)
    if want is not None and sha256sum(path) != want:
        raise VprError(f"{path}: SHA-256 {sha256sum(path)} differs from the expected {want}")
    return path


def load(checkpoint: str | os.PathLike | None = None, url: str | None = None, sha256: str | None = None,
         pca: str | os.PathLike | None = None, pca_url: str | None = None, pca_sha256: str | None = None,
         whiten: bool | None = None, cache_dir: str | os.PathLike | None = None) -> EmbedNet:
    """A ready model: ``checkpoint`` (a local model file) or ``url`` (fetched into ``cache_dir``), SHA-256
    ``sha256`` checked when given; PCA-whitening from ``pca`` or ``pca_url`` (``pca_sha256``) attached when
    given (``whiten``: None follows the PCA file). Eval mode, CPU, with ``.transform`` (ImageTransform)."""
    if (checkpoint is None) == (url is None):
        raise VprError("give exactly one of checkpoint (a local model file) and url")
    if pca is not None and pca_url is not None:
        raise VprError("give at most one of pca (a local PCA file) and pca_url")
    model_file = (_local(checkpoint, sha256, "model file") if checkpoint is not None
                  else cached_download(url, sha256, cache_dir))
    pca_file = None
    if pca is not None:
        pca_file = _local(pca, pca_sha256, "PCA file")
    elif pca_url is not None:
        pca_file = cached_download(pca_url, pca_sha256, cache_dir)
    model, _ = load_model_with_pca(model_file, pca_file, whiten=whiten)
    model.transform = ImageTransform(model.config.image_size)
    return model.eval()


def load_released(name: str, config: str | os.PathLike = RELEASED_CONFIG, **kwargs) -> EmbedNet:
    """A released model by its name in ``config`` (its url and sha256; ``kwargs`` as :func:`load`, where a
    ``checkpoint`` or ``url`` given replaces the released file)."""
    if kwargs.get("checkpoint") is None and kwargs.get("url") is None:
        entry = released(name, config)
        kwargs["url"], kwargs["sha256"] = entry.get("url"), kwargs.get("sha256") or entry.get("sha256")
        if not kwargs["url"]:
            raise VprError(f"{config}: released model {name!r} has no url")
    return load(**kwargs)


_LOAD_KEYS = ("checkpoint", "url", "sha256", "pca", "pca_url", "pca_sha256", "whiten", "cache_dir")


def off_the_shelf(backbone: str, images, **kwargs) -> EmbedNet:
    """The off-the-shelf model of `vpr init-model` (trunk + NetVLAD centers clustered on the folders
    ``images``, its keyword options in ``kwargs``), or, without ``images``, a model file as :func:`load`."""
    import tempfile

    from vpr.commands.init_model import make_model

    load_kwargs = {k: kwargs.pop(k) for k in _LOAD_KEYS if k in kwargs}
    if images is None:
        if load_kwargs.get("checkpoint") is None and load_kwargs.get("url") is None:
            raise VprError(f"the off-the-shelf {backbone} model needs images (folders to cluster its NetVLAD "
                           "centers on) or a model file (checkpoint or url)")
        return load(**load_kwargs)
    if load_kwargs.get("checkpoint") is not None or load_kwargs.get("url") is not None:
        raise VprError("give images (to cluster the centers on) or a checkpoint/url, not both")
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    with tempfile.TemporaryDirectory(prefix="vpr-hub-") as tmp:
        out = Path(tmp) / f"{backbone}_off_the_shelf.pth"
        make_model(images, out, backbone, workers=kwargs.pop("workers", 0), **kwargs)
        return load(checkpoint=out, **load_kwargs)
