"""Radius queries on UTM coordinates, returned in CSR form (indptr, indices)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def radius_neighbours(
    db_utm: np.ndarray,
    query_utm: np.ndarray,
    radius: float,
    exclude_same_place: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Database images within ``radius`` metres (Euclidean, inclusive) of every query.

    Returns CSR arrays: ``indptr`` (Nq+1, int64) and ``indices`` (int64, ascending within each query).
    ``exclude_same_place=(query_place, db_place)`` drops database images whose place id equals the
    query's (the reference excludes same-identity images from positives; this only matters for TokyoTM,
    where the query set and the database coincide).
    """
    tree = cKDTree(np.asarray(db_utm, dtype=np.float64))
    hits = tree.query_ball_point(np.asarray(query_utm, dtype=np.float64), r=radius, return_sorted=True)
    lists = [np.asarray(h, dtype=np.int64) for h in hits]
    if exclude_same_place is not None:
        query_place, db_place = exclude_same_place
        lists = [h[db_place[h] != query_place[i]] for i, h in enumerate(lists)]
    indptr = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum([len(h) for h in lists], out=indptr[1:])
    indices = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
    return indptr, indices.astype(np.int64, copy=False)


def csr_rows(indptr: np.ndarray, indices: np.ndarray) -> list[np.ndarray]:
    """Split CSR arrays into one array per row."""
    return [indices[indptr[i]:indptr[i + 1]] for i in range(len(indptr) - 1)]


def csr_select(indptr: np.ndarray, indices: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CSR arrays of the rows ``keep`` only (in that order)."""
    rows = csr_rows(indptr, indices)
    new_ptr = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum([len(rows[i]) for i in keep], out=new_ptr[1:])
    kept = [rows[i] for i in keep]
    return new_ptr, (np.concatenate(kept) if kept else np.zeros(0)).astype(np.int64)
