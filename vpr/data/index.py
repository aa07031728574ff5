"""The index file: one HDF5 file per data-set split, the contract between all pipeline steps.

Layout (schema version 1; documented in docs/formats.md, "Index file"):

    db/path                     utf-8 strings (Ndb,)  image paths relative to the data-set root
    db/utm                      float64 (Ndb, 2)      easting, northing
    db/place                    int64 (Ndb,)          place id (Tokyo 24/7: panorama id, used by the NMS)
    query/path, query/utm, query/place                the same for the queries
    query/positives_indptr      int64 (Nq+1,)         evaluation ground truth: database images within
    query/positives_indices     int64                 eval_radius, ascending, CSR form
  training splits only:
    query/train_positives_indptr/_indices             within train_pos_radius (10 m), same place excluded
    query/train_nonnegatives_indptr/_indices          within train_neg_radius (25 m), same place included
    dropped/path, dropped/utm                         queries dropped: training queries without a training
                                                      positive, then (--drop-unmatched-queries) queries
                                                      without an evaluation positive
  attributes: kind ("vpr-index"), schema_version, fingerprint, format, split, eval_radius,
    train_pos_radius, train_neg_radius, source, source_sha256, root, num_dropped (all dropped queries),
    num_unmatched_dropped (those without an evaluation positive), and a reader's own (csv in degrees:
    coords, utm_zone), and exif_orientation (true: the image loader applies each image's EXIF
    Orientation tag; csv and folders formats)

``fingerprint`` identifies the content: the SHA-256 of every dataset above except ``dropped/*`` (paths,
coordinates, places, ground truth), computed from the arrays themselves (:func:`index_fingerprint`), not
from the HDF5 bytes, so it does not depend on chunking, compression or library version. Files derived from
an index (features) record it, and their consumers compare it with the index they are given. The reader
(:class:`Index`) recomputes it and refuses a file whose content no longer matches (edited after it was
built), and checks the ground truth's structure: one row per query, database indices in 0..Ndb-1.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from vpr import artifacts
from vpr.data.geometry import csr_rows, csr_select, radius_neighbours
from vpr.errors import VprError
from vpr.io import atomic_h5

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
_STR = h5py.string_dtype("utf-8")


@dataclass
class SplitRecords:
    """One split as a format reader returns it: images, coordinates and place ids, before geometry."""

    split: str
    db_path: list[str]
    db_utm: np.ndarray
    db_place: np.ndarray
    query_path: list[str]
    query_utm: np.ndarray
    query_place: np.ndarray
    extra_attrs: dict = field(default_factory=dict)


# the datasets the fingerprint covers (all but dropped/*), in the order they are hashed
FINGERPRINTED = ("db/path", "db/utm", "db/place", "query/path", "query/utm", "query/place",
                 "query/positives_indptr", "query/positives_indices",
                 "query/train_positives_indptr", "query/train_positives_indices",
                 "query/train_nonnegatives_indptr", "query/train_nonnegatives_indices")
_PATH_DATASETS = ("db/path", "query/path")
_FLOAT_DATASETS = ("db/utm", "query/utm")


def index_fingerprint(datasets: Mapping[str, np.ndarray | list[str]]) -> str:
    """Hex SHA-256 of an index's content: the :data:`FINGERPRINTED` datasets present in ``datasets``.

    Each is hashed as its name, then its values in a fixed encoding: paths as UTF-8 strings each preceded
    by its byte length, coordinates as little-endian float64, ids and ground truth as little-endian int64,
    every array preceded by its shape. The same content gives the same fingerprint however it is stored.
    """
    digest = hashlib.sha256(b"vpr index fingerprint 1\0")
    for name in FINGERPRINTED:
        if name not in datasets:
            continue
        digest.update(name.encode() + b"\0")
        value = datasets[name]
        if name in _PATH_DATASETS:
            digest.update(len(value).to_bytes(8, "little"))
            for path in value:
                raw = str(path).encode("utf-8")
                digest.update(len(raw).to_bytes(8, "little") + raw)
            continue
        arr = np.ascontiguousarray(value, dtype="<f8" if name in _FLOAT_DATASETS else "<i8")
        digest.update(np.asarray(arr.shape, dtype="<i8").tobytes() + arr.tobytes())
    return digest.hexdigest()


def _check_utm(name: str, utm: np.ndarray, n: int, source: str) -> np.ndarray:
    utm = np.asarray(utm, dtype=np.float64)
    if utm.shape != (n, 2):
        raise VprError(f"{source}: {name} coordinates have shape {utm.shape}, expected ({n}, 2)")
    bad = np.flatnonzero(~np.isfinite(utm).all(axis=1))
    if bad.size:
        raise VprError(f"{source}: {name} coordinates are NaN or infinite for {bad.size} image(s), "
                       f"first at index {bad[0]}")
    return utm


def check_radii(eval_radius: float, train_pos_radius: float, train_neg_radius: float) -> None:
    """Refuse radii that make no sense, naming the option: each finite and positive, and the training
    positive radius not above the non-negative radius (a positive farther than ``train_neg_radius`` would
    also be an eligible negative)."""
    for name, value in (("--eval-radius", eval_radius), ("--train-pos-radius", train_pos_radius),
                        ("--train-neg-radius", train_neg_radius)):
        if not (math.isfinite(value) and value > 0):
            raise VprError(f"{name} must be positive and finite (metres), got {value}")
    if train_pos_radius > train_neg_radius:
        raise VprError(f"--train-pos-radius {train_pos_radius:g} is above --train-neg-radius "
                       f"{train_neg_radius:g}: training positives between the two would also be eligible "
                       "negatives; the positive radius must not exceed the non-negative radius")


def build_index(
    records: SplitRecords,
    out: str | os.PathLike,
    *,
    root: str | os.PathLike,
    fmt: str,
    source: str,
    source_sha256: str,
    eval_radius: float = 25.0,
    train_pos_radius: float = 10.0,
    train_neg_radius: float = 25.0,
    drop_unmatched: bool = False,
) -> dict:
    """Compute the ground truth of one split and write its index file atomically.

    Raises VprError (and writes nothing) on inconsistent input. Returns a summary for logging.
    ``drop_unmatched``: drop (and list) the queries without an evaluation positive instead of refusing.
    """
    datasets = ground_truth(records, source, eval_radius, train_pos_radius, train_neg_radius, drop_unmatched)
    num_dropped = len(datasets.get("dropped/path", []))
    num_unmatched = int(datasets.pop("num_unmatched_dropped", 0))
    with atomic_h5(out) as f:
        for name, value in datasets.items():
            f.create_dataset(name, data=value, dtype=_STR if name.endswith("/path") else None)
        f.attrs.update({
            "kind": artifacts.INDEX,
            "schema_version": SCHEMA_VERSION,
            "fingerprint": index_fingerprint(datasets),
            "format": fmt,
            "split": records.split,
            "eval_radius": float(eval_radius),
            "train_pos_radius": float(train_pos_radius),
            "train_neg_radius": float(train_neg_radius),
            "source": os.path.basename(str(source)),
            "source_sha256": source_sha256,
            "root": str(Path(root).resolve()),
            "num_dropped": num_dropped,
            "num_unmatched_dropped": num_unmatched,
            **records.extra_attrs,
        })
    mean_positives = float(np.diff(datasets["query/positives_indptr"]).mean())
    return {"split": records.split, "db": len(records.db_path), "queries": len(datasets["query/path"]),
            "dropped": num_dropped - num_unmatched, "unmatched_dropped": num_unmatched,
            "mean_positives": mean_positives}


def ground_truth(records: SplitRecords, source: str, eval_radius: float = 25.0,
                 train_pos_radius: float = 10.0, train_neg_radius: float = 25.0, drop_unmatched: bool = False
                 ) -> dict[str, np.ndarray | list[str]]:
    """The datasets of one split's index file (HDF5 name -> value): the images, each query's positives
    within ``eval_radius`` and, for a training split, the training positives and non-negatives and the
    queries dropped for having no training positive. A query without an evaluation positive is refused
    (VprError), or with ``drop_unmatched`` dropped, listed under ``dropped/`` and counted in the extra key
    ``num_unmatched_dropped`` (not a dataset: the caller takes it out). Raises VprError on inconsistent
    input."""
    check_radii(eval_radius, train_pos_radius, train_neg_radius)
    if records.split not in SPLITS:
        raise VprError(f"{source}: unknown split {records.split!r}, expected one of {', '.join(SPLITS)}")
    n_db, n_q = len(records.db_path), len(records.query_path)
    if n_db == 0 or n_q == 0:
        raise VprError(f"{source}: the split has {n_db} database image(s) and {n_q} query image(s); "
                       "both must be non-empty")
    db_utm = _check_utm("database", records.db_utm, n_db, source)
    q_utm = _check_utm("query", records.query_utm, n_q, source)
    db_place = np.asarray(records.db_place, dtype=np.int64)
    q_place = np.asarray(records.query_place, dtype=np.int64)
    if db_place.shape != (n_db,) or q_place.shape != (n_q,):
        raise VprError(f"{source}: place ids do not match the number of images")
    query_path = list(records.query_path)

    train: dict[str, np.ndarray | list[str]] = {}
    if records.split == "train":
        keep, train = _training_ground_truth(db_utm, db_place, query_path, q_utm, q_place, source,
                                             train_pos_radius, train_neg_radius)
        query_path = [query_path[i] for i in keep]
        q_utm, q_place = q_utm[keep], q_place[keep]

    eval_ptr, eval_idx = radius_neighbours(db_utm, q_utm, eval_radius, exclude_same_place=(q_place, db_place))
    no_gt = np.flatnonzero(np.diff(eval_ptr) == 0)
    unmatched: dict[str, np.ndarray | list[str]] = {}
    if no_gt.size and not drop_unmatched:
        first = ", ".join(query_path[i] for i in no_gt[:3])
        raise VprError(f"{source}: {no_gt.size} query image(s) have no database image within "
                       f"{eval_radius} m (first: {first}); every evaluation query needs a positive "
                       "(--drop-unmatched-queries drops and counts them)")
    if no_gt.size:
        if no_gt.size == len(query_path):
            raise VprError(f"{source}: none of the {len(query_path)} queries has a database image within "
                           f"{eval_radius} m; nothing to evaluate (are the coordinates in metres?)")
        keep = np.setdiff1d(np.arange(len(query_path)), no_gt)
        unmatched = {"dropped/path": [query_path[i] for i in no_gt],
                     "dropped/utm": q_utm[no_gt].reshape(-1, 2)}
        eval_ptr, eval_idx = csr_select(eval_ptr, eval_idx, keep)
        query_path, q_utm, q_place = [query_path[i] for i in keep], q_utm[keep], q_place[keep]
        train = _keep_query_rows(train, keep)

    datasets: dict[str, np.ndarray | list[str]] = {
        "db/path": list(records.db_path), "db/utm": db_utm, "db/place": db_place,
        "query/path": query_path, "query/utm": q_utm, "query/place": q_place,
        "query/positives_indptr": eval_ptr, "query/positives_indices": eval_idx,
    }
    datasets.update(train)
    if unmatched:   # after the training queries dropped, if any
        datasets["dropped/path"] = list(datasets.get("dropped/path", [])) + unmatched["dropped/path"]
        datasets["dropped/utm"] = np.concatenate([datasets.get("dropped/utm", np.zeros((0, 2))),
                                                  unmatched["dropped/utm"]])
        datasets["num_unmatched_dropped"] = len(unmatched["dropped/path"])
    return datasets


def _keep_query_rows(train: dict, keep: np.ndarray) -> dict:
    """The training datasets (CSR rows per query) restricted to the queries ``keep``."""
    out = dict(train)
    for name in ("query/train_positives", "query/train_nonnegatives"):
        if f"{name}_indptr" in train:
            out[f"{name}_indptr"], out[f"{name}_indices"] = csr_select(train[f"{name}_indptr"],
                                                                       train[f"{name}_indices"], keep)
    return out


def _training_ground_truth(db_utm: np.ndarray, db_place: np.ndarray, query_path: list[str], q_utm: np.ndarray,
                           q_place: np.ndarray, source: str, train_pos_radius: float, train_neg_radius: float
                           ) -> tuple[np.ndarray, dict[str, np.ndarray | list[str]]]:
    """The queries kept (those with a database image within ``train_pos_radius``) and the training
    datasets over them: positives, non-negatives (within ``train_neg_radius``) and the dropped queries."""
    pos_ptr, pos_idx = radius_neighbours(db_utm, q_utm, train_pos_radius,
                                         exclude_same_place=(q_place, db_place))
    keep = np.flatnonzero(np.diff(pos_ptr) > 0)
    dropped = np.setdiff1d(np.arange(len(query_path)), keep)
    if keep.size == 0:
        raise VprError(f"{source}: no training query has a database image within {train_pos_radius} m")
    pos_ptr, pos_idx = csr_select(pos_ptr, pos_idx, keep)
    nonneg_ptr, nonneg_idx = radius_neighbours(db_utm, q_utm[keep], train_neg_radius)
    return keep, {
        "query/train_positives_indptr": pos_ptr, "query/train_positives_indices": pos_idx,
        "query/train_nonnegatives_indptr": nonneg_ptr, "query/train_nonnegatives_indices": nonneg_idx,
        "dropped/path": [query_path[i] for i in dropped], "dropped/utm": q_utm[dropped].reshape(-1, 2),
    }


class Index:
    """An index file loaded into memory (paths, coordinates, places and ground truth).

    ``root`` overrides the data-set root recorded in the file when resolving image paths.
    """

    def __init__(self, path: str | os.PathLike, root: str | os.PathLike | None = None):
        self.path = Path(path)
        try:
            with artifacts.open_artifact(self.path, artifacts.INDEX) as f:
                self.attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
                if self.attrs.get("schema_version") != SCHEMA_VERSION:
                    raise VprError(f"{self.path}: not a vpr index file of schema version {SCHEMA_VERSION} "
                                   f"(found {self.attrs.get('schema_version')!r})")
                data = {name: (list(f[name].asstr()[()]) if name in _PATH_DATASETS else f[name][()])
                        for name in FINGERPRINTED if name in f}
        except (OSError, KeyError) as err:
            raise VprError(f"{self.path}: unreadable or incomplete index file ({err})") from err
        for name in FINGERPRINTED[:8]:   # all but the training ground truth
            if name not in data:
                raise VprError(f"{self.path}: unreadable or incomplete index file (no dataset {name})")
        n_db, n_q = len(data["db/path"]), len(data["query/path"])
        if (np.shape(data["db/utm"]) != (n_db, 2) or np.shape(data["db/place"]) != (n_db,)
                or np.shape(data["query/utm"]) != (n_q, 2) or np.shape(data["query/place"]) != (n_q,)):
            raise VprError(f"{self.path}: coordinates or place ids do not match the number of images")
        content = index_fingerprint(data)
        if "fingerprint" not in self.attrs:
            raise VprError(f"{self.path}: records no fingerprint: rebuild it with 'vpr index'")
        if self.attrs["fingerprint"] != content:
            raise VprError(f"{self.path}: its content does not match the fingerprint stored when it was "
                           "built (edited since?): rebuild it with 'vpr index'")
        self.db_path, self.db_utm, self.db_place = data["db/path"], data["db/utm"], data["db/place"]
        self.query_path, self.query_utm = data["query/path"], data["query/utm"]
        self.query_place = data["query/place"]
        self.positives = self._ground_truth(data, "positives")
        self.train_positives = self.train_nonnegatives = None
        if "query/train_positives_indptr" in data:
            self.train_positives = self._ground_truth(data, "train_positives")
            self.train_nonnegatives = self._ground_truth(data, "train_nonnegatives")
        self.root = Path(root) if root is not None else Path(self.attrs["root"])

    def _ground_truth(self, data: dict, name: str) -> list[np.ndarray]:
        """The rows of one CSR ground-truth list, checked: one row per query, database indices in range."""
        n_db, n_q = len(data["db/path"]), len(data["query/path"])
        indptr = np.asarray(data.get(f"query/{name}_indptr"), dtype=np.int64)
        indices = np.asarray(data.get(f"query/{name}_indices"), dtype=np.int64)
        if (indptr.shape != (n_q + 1,) or indptr[0] != 0 or indptr[-1] != len(indices)
                or np.any(np.diff(indptr) < 0)):
            raise VprError(f"{self.path}: query/{name}_indptr is not a valid row pointer for {n_q} queries "
                           f"and {len(indices)} indices")
        bad = np.flatnonzero((indices < 0) | (indices >= n_db))
        if bad.size:
            raise VprError(f"{self.path}: query/{name}_indices holds {indices[bad[0]]}, outside the "
                           f"{n_db} database images (0..{n_db - 1})")
        return csr_rows(indptr, indices)

    @property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the index's content (see :func:`index_fingerprint`)."""
        return self.attrs["fingerprint"]

    @property
    def exif_orientation(self) -> bool:
        """Whether its images are read turned per their EXIF Orientation tag (csv and folders formats;
        false or absent in the paper formats' indexes: as stored)."""
        return bool(self.attrs.get("exif_orientation", False))

    @property
    def split(self) -> str:
        return self.attrs["split"]

    @property
    def num_db(self) -> int:
        return len(self.db_path)

    @property
    def num_queries(self) -> int:
        return len(self.query_path)

    def db_files(self) -> list[Path]:
        return [self.root / p for p in self.db_path]

    def query_files(self) -> list[Path]:
        return [self.root / p for p in self.query_path]
