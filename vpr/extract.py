"""Descriptor extraction: images -> L2-normalised global descriptors, and the features file.

:func:`extract_features` is the reusable core (no index or file-format assumptions; training reuses it to
refresh its feature cache). The features file is one HDF5 file per (model, split), written by
:func:`write_features` and read only through :class:`FeaturesFile`:

    db      float32 (Ndb, D)   descriptors of the database images, in index order, L2-normalised
    query   float32 (Nq, D)    descriptors of the query images, in index order, L2-normalised
    attrs:  kind ("vpr-features"), checkpoint, index, image_size (H, W), dim, pca ("" when none), whiten,
            query_resize, precision, and what the descriptors were made from: index_fingerprint (the
            index's content fingerprint), checkpoint_sha256 (the checkpoint file), pca_sha256 (the PCA
            file, "" when none)
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from vpr import artifacts
from vpr.data.images import check_images_exist, image_batches
from vpr.distributed import gpu_report
from vpr.errors import VprError
from vpr.io import atomic_h5
from vpr.numeric_precision import Precision, resolve_precision, to_channels_last
from vpr.numeric_precision import channels_last as model_channels_last
from vpr.progress import progress

log = logging.getLogger(__name__)

# the descriptor subsets of a features file, as datasets in row order ("all": db rows first)
SUBSET_DATASETS = {"all": ("db", "query"), "db": ("db",), "query": ("query",)}
_READ_ROWS = 1024  # rows read from a features file at a time when sampling


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a torch.device (None or "auto": CUDA when available, else CPU); VprError for an
    unusable one, with what torch and faiss see (:func:`vpr.distributed.gpu_report`)."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise VprError(f"--device {device}: not a torch device ({err})") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VprError(f"--device {device}: this process cannot use a GPU: {gpu_report()}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VprError(f"--device {device}: there is no GPU {device.index}: {gpu_report()}")
    return device


def extract_features(
    model: torch.nn.Module,
    files: Sequence[str | os.PathLike],
    size: tuple[int, int] | None,
    batch_size: int = 16,
    workers: int = 2,
    shorter_side: int | None = None,
    device: str | torch.device | None = None,
    desc: str = "extract",
    precision: str | Precision = "fp32",
    channels_last: bool = True,
    compile: bool = False,
    exif_orientation: bool = False,
) -> np.ndarray:
    """Descriptors (N, D) float32, L2-normalised, row i for ``files[i]``.

    Images are resized to ``size = (H, W)``, or, when ``shorter_side`` is given, so that their shorter
    side is ``shorter_side`` (``size`` is then ignored). Images of equal output size share batches. The
    model runs in eval mode under ``torch.inference_mode()`` on ``device`` (default: CUDA when available);
    its train/eval mode and its parameters' memory layout are restored afterwards. A missing or unreadable
    image raises VprError naming it, and so does a descriptor with NaN or infinite values (naming the
    precision: float16 overflows on large activations).

    ``precision`` (fp32, tf32, bf16, fp16, auto; see :mod:`vpr.numeric_precision`) is the autocast precision
    of the backbone; the NetVLAD head and the descriptors are float32 in every case. ``channels_last``
    runs the convolutions in channels-last layout; ``compile`` wraps the model in ``torch.compile``
    (compiles once per image size; worth it for long runs on a GPU). ``exif_orientation`` turns images
    per their EXIF Orientation tag (an index's ``exif_orientation``, see :mod:`vpr.data.images`).
    """
    files = list(files)
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    check_images_exist(files)
    if shorter_side is not None:
        size = None
    was_training = model.training
    model.eval()
    model.to(device)
    forward = torch.compile(model) if compile else model
    out: np.ndarray | None = None
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(model_channels_last(model, channels_last))
            stack.enter_context(torch.inference_mode())
            bar = stack.enter_context(progress(total=len(files), desc=desc or "", unit="img",
                                               disable=desc is None))
            for images, idx in image_batches(files, size, batch_size, workers, device, shorter_side,
                                             exif_orientation):
                images = to_channels_last(images.to(device, non_blocking=True), channels_last)
                with precision.autocast():
                    # float32 whatever the precision: the model's head runs with autocast off
                    raw = forward(images).float()
                finite = torch.isfinite(raw).all(dim=1).cpu()
                if not bool(finite.all()):
                    bad = files[int(idx[~finite][0])]
                    raise VprError(f"{bad}: its descriptor has NaN or infinite values under precision "
                                   f"{precision.name} ({int((~finite).sum())} of this batch of {len(idx)}); "
                                   "fp16 overflows on large activations: use fp32, tf32 or bf16")
                desc_batch = F.normalize(raw, p=2, dim=1)
                if out is None:
                    out = np.empty((len(files), desc_batch.shape[1]), dtype=np.float32)
                out[idx.numpy()] = desc_batch.cpu().numpy()
                bar.update(len(idx))
    finally:
        model.train(was_training)
    if out is None:  # no files
        return np.zeros((0, getattr(model, "output_dim", 0)), dtype=np.float32)
    return out


def write_features(path: str | os.PathLike, db: np.ndarray, query: np.ndarray, attrs: dict) -> None:
    """Write a features file atomically (datasets ``db`` and ``query``, float32, plus ``attrs`` and the
    ``kind`` attribute)."""
    with atomic_h5(path) as f:
        f.create_dataset("db", data=np.asarray(db, dtype=np.float32))
        f.create_dataset("query", data=np.asarray(query, dtype=np.float32))
        f.attrs.update(attrs)
        f.attrs["kind"] = artifacts.FEATURES


class FeaturesFile:
    """A features file: its attributes and shapes, checked on opening; descriptors read on demand.

    The one reader of the format (``vpr evaluate`` reads all rows, ``vpr fit-pca`` a sample). A missing or
    unreadable file, a file of another kind, or datasets that are not two float matrices with the same
    number of columns are a VprError naming the file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.shapes: dict[str, tuple[int, int]] = {}
        with self._open() as f:
            self.attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
            for name in ("db", "query"):
                ds = f.get(name)
                if not isinstance(ds, h5py.Dataset):
                    raise VprError(f"features file {self.path} has no dataset '{name}'")
                if ds.ndim != 2 or ds.dtype.kind != "f":
                    raise VprError(f"features file {self.path}: dataset '{name}' is {ds.dtype} with shape "
                                   f"{ds.shape}, expected a 2-D float matrix (N, D)")
                self.shapes[name] = ds.shape
        if self.shapes["db"][1] != self.shapes["query"][1]:
            raise VprError(f"features file {self.path}: 'db' {self.shapes['db']} and 'query' "
                           f"{self.shapes['query']} have different descriptor dimensions")

    def _open(self) -> h5py.File:
        return artifacts.open_artifact(self.path, artifacts.FEATURES)

    @property
    def num_db(self) -> int:
        return self.shapes["db"][0]

    @property
    def num_queries(self) -> int:
        return self.shapes["query"][0]

    @property
    def dim(self) -> int:
        return self.shapes["db"][1]

    def count(self, subset: str = "all") -> int:
        """Number of descriptors in ``subset`` (a key of :data:`SUBSET_DATASETS`)."""
        return sum(self.shapes[name][0] for name in _subset_names(subset))

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """(db, query) float32; NaN or infinite values are a VprError."""
        try:
            with self._open() as f:
                out = tuple(np.asarray(f[name][()], dtype=np.float32) for name in ("db", "query"))
        except (OSError, KeyError) as err:
            raise VprError(f"{self.path}: unreadable or incomplete features file ({err})") from err
        for name, x in zip(("db", "query"), out, strict=True):
            if not np.isfinite(x).all():
                raise VprError(f"{self.path}: dataset {name} contains NaN or infinite values")
        return out

    def read_rows(self, subset: str, rows: np.ndarray) -> np.ndarray:
        """The descriptors at the ascending positions ``rows`` of ``subset`` (for "all": db rows, then
        query rows), float32 (len(rows), D); NaN or infinite values are a VprError."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, self.dim), dtype=np.float32)
        filled, offset = 0, 0
        try:
            with self._open() as f:
                for name in _subset_names(subset):
                    ds = f[name]
                    mine = rows[(rows >= offset) & (rows < offset + ds.shape[0])] - offset
                    # contiguous blocks, keeping the wanted rows: far faster than h5py point selection
                    for start in range(0, ds.shape[0], _READ_ROWS):
                        in_block = mine[(mine >= start) & (mine < start + _READ_ROWS)]
                        if in_block.size:
                            block = ds[start:min(start + _READ_ROWS, ds.shape[0])]
                            out[filled:filled + in_block.size] = block[in_block - start]
                            filled += in_block.size
                    offset += ds.shape[0]
        except (OSError, KeyError) as err:
            raise VprError(f"{self.path}: unreadable or incomplete features file ({err})") from err
        if not np.isfinite(out).all():
            raise VprError(f"features file {self.path}: the sampled descriptors contain NaN or infinite "
                           "values")
        return out

    def check_index(self, index) -> None:
        """VprError unless these features were extracted from ``index`` (a :class:`vpr.data.index.Index`).

        The index fingerprint recorded at extraction must equal the index's.
        """
        recorded = self.attrs.get("index_fingerprint")
        if not recorded:
            raise VprError(f"{self.path} records no index fingerprint: extract the features again with "
                           "'vpr extract'")
        if recorded != index.fingerprint:
            raise VprError(f"features of {self.path} were extracted from another index "
                           f"({self.attrs.get('index', '?')}, fingerprint {recorded[:16]}) than {index.path} "
                           f"(fingerprint {index.fingerprint[:16]}); extract them from this index")
        if self.num_db != index.num_db or self.num_queries != index.num_queries:
            raise VprError(f"{self.path} has {self.num_db} database and {self.num_queries} query descriptors "
                           f"but {index.path} lists {index.num_db} database and {index.num_queries} query "
                           "images; extract the features from this index")


def _subset_names(subset: str) -> tuple[str, ...]:
    if subset not in SUBSET_DATASETS:
        raise ValueError(f"subset must be one of {', '.join(SUBSET_DATASETS)}, got {subset!r}")
    return SUBSET_DATASETS[subset]

