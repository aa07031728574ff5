"""The index file: one HDF5 file per data-set split, the contract between all pipeline steps.

Layout (schema version 1; documented in README.md, "The index file"):

    db/path                     utf-8 strings (Ndb,)  image paths relative to the data-set root
    db/utm                      float64 (Ndb, 2)      easting, northing
    db/place                    int64 (Ndb,)          place id (Tokyo 24/7: panorama id, used by the NMS)
    query/path, query/utm, query/place                the same for the queries
    query/positives_indptr      int64 (Nq+1,)         evaluation ground truth: database images within
    query/positives_indices     int64                 eval_radius, ascending, CSR form
  training splits only:
    query/train_positives_indptr/_indices             within train_pos_radius (10 m), same place excluded
    query/train_nonnegatives_indptr/_indices          within train_neg_radius (25 m), same place included
    dropped/path, dropped/utm                         training queries dropped for having no positive
  attributes: schema_version, format, split, eval_radius, train_pos_radius, train_neg_radius, source,
    source_sha256, root, num_dropped
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from vpr.data.geometry import csr_rows, radius_neighbours
from vpr.errors import VprError
from vpr.io import atomic_h5, open_h5

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


def _check_utm(name: str, utm: np.ndarray, n: int, source: str) -> np.ndarray:
    utm = np.asarray(utm, dtype=np.float64)
    if utm.shape != (n, 2):
        raise VprError(f"{source}: {name} coordinates have shape {utm.shape}, expected ({n}, 2)")
    bad = np.flatnonzero(~np.isfinite(utm).all(axis=1))
    if bad.size:
        raise VprError(f"{source}: {name} coordinates are NaN or infinite for {bad.size} image(s), "
                       f"first at index {bad[0]}")
    return utm


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
) -> dict:
    """Compute the ground truth of one split and write its index file atomically.

    Raises VprError (and writes nothing) on inconsistent input. Returns a summary for logging.
    """
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
    same_place = (q_place, db_place)

    dropped = np.zeros(0, dtype=np.int64)
    train = records.split == "train"
    if train:
        pos_ptr, pos_idx = radius_neighbours(db_utm, q_utm, train_pos_radius, exclude_same_place=same_place)
        keep = np.flatnonzero(np.diff(pos_ptr) > 0)
        dropped = np.setdiff1d(np.arange(n_q), keep)
        if keep.size == 0:
            raise VprError(f"{source}: no training query has a database image within {train_pos_radius} m")
        kept_rows = csr_rows(pos_ptr, pos_idx)
        dropped_path = [query_path[i] for i in dropped]
        dropped_utm = q_utm[dropped]
        query_path = [query_path[i] for i in keep]
        q_utm, q_place = q_utm[keep], q_place[keep]
        same_place = (q_place, db_place)
        pos_ptr = np.zeros(keep.size + 1, dtype=np.int64)
        np.cumsum([len(kept_rows[i]) for i in keep], out=pos_ptr[1:])
        pos_idx = np.concatenate([kept_rows[i] for i in keep]).astype(np.int64)
        nonneg_ptr, nonneg_idx = radius_neighbours(db_utm, q_utm, train_neg_radius)

    eval_ptr, eval_idx = radius_neighbours(db_utm, q_utm, eval_radius, exclude_same_place=same_place)
    no_gt = np.flatnonzero(np.diff(eval_ptr) == 0)
    if no_gt.size:
        first = ", ".join(query_path[i] for i in no_gt[:3])
        raise VprError(f"{source}: {no_gt.size} query image(s) have no database image within "
                       f"{eval_radius} m (first: {first}); every evaluation query needs a positive")

    with atomic_h5(out) as f:
        f.create_dataset("db/path", data=records.db_path, dtype=_STR)
        f.create_dataset("db/utm", data=db_utm)
        f.create_dataset("db/place", data=db_place)
        f.create_dataset("query/path", data=query_path, dtype=_STR)
        f.create_dataset("query/utm", data=q_utm)
        f.create_dataset("query/place", data=q_place)
        f.create_dataset("query/positives_indptr", data=eval_ptr)
        f.create_dataset("query/positives_indices", data=eval_idx)
        if train:
            f.create_dataset("query/train_positives_indptr", data=pos_ptr)
            f.create_dataset("query/train_positives_indices", data=pos_idx)
            f.create_dataset("query/train_nonnegatives_indptr", data=nonneg_ptr)
            f.create_dataset("query/train_nonnegatives_indices", data=nonneg_idx)
            f.create_dataset("dropped/path", data=dropped_path, dtype=_STR)
            f.create_dataset("dropped/utm", data=dropped_utm.reshape(-1, 2))
        f.attrs.update({
            "schema_version": SCHEMA_VERSION,
            "format": fmt,
            "split": records.split,
            "eval_radius": float(eval_radius),
            "train_pos_radius": float(train_pos_radius),
            "train_neg_radius": float(train_neg_radius),
            "source": os.path.basename(str(source)),
            "source_sha256": source_sha256,
            "root": str(Path(root).resolve()),
            "num_dropped": int(dropped.size),
            **records.extra_attrs,
        })
    return {"split": records.split, "db": n_db, "queries": len(query_path), "dropped": int(dropped.size),
            "mean_positives": float(np.diff(eval_ptr).mean())}


class Index:
    """An index file loaded into memory (paths, coordinates, places and ground truth).

    ``root`` overrides the data-set root recorded in the file when resolving image paths.
    """

    def __init__(self, path: str | os.PathLike, root: str | os.PathLike | None = None):
        self.path = Path(path)
        try:
            with open_h5(self.path, "index file", "vpr index") as f:
                self.attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
                if self.attrs.get("schema_version") != SCHEMA_VERSION:
                    raise VprError(f"{self.path}: not a vpr index file of schema version {SCHEMA_VERSION} "
                                   f"(found {self.attrs.get('schema_version')!r})")
                self.db_path = list(f["db/path"].asstr()[()])
                self.db_utm = f["db/utm"][()]
                self.db_place = f["db/place"][()]
                self.query_path = list(f["query/path"].asstr()[()])
                self.query_utm = f["query/utm"][()]
                self.query_place = f["query/place"][()]
                self.positives = csr_rows(f["query/positives_indptr"][()], f["query/positives_indices"][()])
                self.train_positives = self.train_nonnegatives = None
                if "query/train_positives_indptr" in f:
                    self.train_positives = csr_rows(f["query/train_positives_indptr"][()],
                                                    f["query/train_positives_indices"][()])
                    self.train_nonnegatives = csr_rows(f["query/train_nonnegatives_indptr"][()],
                                                       f["query/train_nonnegatives_indices"][()])
        except (OSError, KeyError) as err:
            raise VprError(f"{self.path}: unreadable or incomplete index file ({err})") from err
        self.root = Path(root) if root is not None else Path(self.attrs["root"])

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
