"""Retrieval and Recall@N (docs/method.md §5.2, §5.4-5.6).

Retrieval is exact nearest-neighbour search on squared Euclidean distances with faiss (``IndexFlatL2`` on
the GPU when faiss sees one; on the CPU ``faiss.knn``, the same blocked BLAS kernel without a copy of the
database), keeping only the top K per query: the reference's dense Nq x Ndb distance matrix plus a full
argsort (8.4 GB per process on Pitts250k-test) is never built.

Tokyo 24/7 spatial non-maximum suppression: retrieve the top ``max(N) * 12`` database images, keep only the
first one of every place (panorama), then compute the recall on the filtered list.

Optional k-reciprocal re-ranking (``vpr.rerank``) works from each image's nearest neighbours (one blocked
exact pass over all query + database pairs) and never builds an (Nq + Ndb)^2 matrix; like the reference it
re-ranks the whole database for every query, and ranks ties by database index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from vpr.errors import VprError

NMS_FACTOR = 12  # a Tokyo 24/7 panorama has 12 database cut-outs
TIE_TOLERANCE = 1e-5  # relative spread of a query's retrieved distances below which they count as equal
TIED_SHARE_LIMIT = 0.01  # `vpr evaluate` refuses to write a recall when more queries than this are tied
RERANK_MAX_ITEMS = None  # no limit: re-ranking memory grows with (Nq + Ndb) x k1
_FAISS_GPU_MAX_K = 2048  # faiss GPU k-selection limit


def _use_faiss_gpu(k: int) -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0 and k <= _FAISS_GPU_MAX_K


def search(db: np.ndarray, queries: np.ndarray, k: int, gpu: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest database rows of every query row by squared L2 distance.

    ``gpu``: the GPU of the faiss index when faiss sees GPUs (faiss numbers them as torch does, in
    CUDA_VISIBLE_DEVICES order: pass a process's own ``torch.device.index``); None: the CPU.
    Returns ``(dist, idx)``: float32 and int64 arrays of shape (Nq, min(k, Ndb)), nearest first.
    """
    import faiss

    db = np.ascontiguousarray(db, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if db.ndim != 2 or queries.ndim != 2 or db.shape[1] != queries.shape[1]:
        raise ValueError(f"db {db.shape} and queries {queries.shape} must be 2-d with equal widths")
    k = min(int(k), db.shape[0])
    if k < 1:
        raise ValueError("k must be positive and the database non-empty")
    if gpu is not None and _use_faiss_gpu(k):
        if not 0 <= gpu < faiss.get_num_gpus():
            raise ValueError(f"GPU {gpu} asked for, faiss sees {faiss.get_num_gpus()}")
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, gpu, faiss.IndexFlatL2(db.shape[1]))
        index.add(db)
        dist, idx = index.search(queries, k)
    else:
        # the brute-force kernel of IndexFlatL2.search, without IndexFlatL2's private copy of the database
        dist, idx = faiss.knn(queries, db, k, metric=faiss.METRIC_L2)
    return dist.astype(np.float32, copy=False), idx.astype(np.int64, copy=False)


def nms_columns(idx: np.ndarray, place: np.ndarray, k: int) -> np.ndarray:
    """Column positions kept by the spatial NMS: the first hit of every place, at most ``k`` per row.

    ``idx`` (Nq x K) holds database indices (-1 = no entry). Returns (Nq x k) int64 positions into the
    columns of ``idx`` in ranking order, -1 padded when fewer than ``k`` places appear in a row.
    """
    idx = np.asarray(idx, dtype=np.int64)
    nq, width = idx.shape
    _, codes = np.unique(np.asarray(place), return_inverse=True)  # place ids -> 0..P-1
    valid = idx >= 0
    places = np.where(valid, codes.reshape(-1)[np.where(valid, idx, 0)], -1)  # -1 never equals a place
    # First occurrence of each place within a row: stable sort by place, mark where the place changes.
    order = np.argsort(places, axis=1, kind="stable")
    sorted_places = np.take_along_axis(places, order, axis=1)
    first_sorted = np.ones_like(sorted_places, dtype=bool)
    first_sorted[:, 1:] = sorted_places[:, 1:] != sorted_places[:, :-1]
    first = np.zeros((nq, width), dtype=bool)
    np.put_along_axis(first, order, first_sorted, axis=1)
    first &= valid
    rank = np.cumsum(first, axis=1) - 1
    keep = first & (rank < k)
    out = np.full((nq, k), -1, dtype=np.int64)
    rows, cols = np.nonzero(keep)
    out[rows, rank[rows, cols]] = cols
    return out


def spatial_nms(dist: np.ndarray, idx: np.ndarray, place: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rankings after the spatial NMS: the first database image of every place, ``k`` per row.

    ``dist``/``idx`` are the (Nq x K) distances and database indices of :func:`search`. Returns
    ``(dist, idx)`` of shape (Nq x k): indices -1 padded, distances inf where padded.
    """
    idx = np.asarray(idx, dtype=np.int64)
    cols = nms_columns(idx, place, k)
    safe = np.maximum(cols, 0)
    kept_idx = np.where(cols >= 0, np.take_along_axis(idx, safe, 1), -1)
    kept_dist = np.where(cols >= 0, np.take_along_axis(np.asarray(dist), safe, 1), np.float32(np.inf))
    return kept_dist.astype(np.float32), kept_idx


def first_positive_rank(idx: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
    """Position (0-based) of the first ground-truth positive in each ranking row, -1 when none is there."""
    idx = np.asarray(idx)
    if len(positives) != idx.shape[0]:
        raise ValueError(f"{idx.shape[0]} ranking rows but {len(positives)} positive lists")
    ranks = np.full(idx.shape[0], -1, dtype=np.int64)
    for q, row in enumerate(idx):
        hits = np.flatnonzero(np.isin(row, positives[q]) & (row >= 0))
        if hits.size:
            ranks[q] = hits[0]
    return ranks


def recall_at(idx: np.ndarray, positives: Sequence[np.ndarray], ns: Iterable[int]) -> dict[int, float]:
    """Recall@N for every N: the fraction of queries with a positive among their first N results.

    ``idx`` must hold at least max(N) columns unless it already ranks the whole database (or, after the
    NMS, every place); -1 entries never count as hits.
    """
    return recall_from_ranks(first_positive_rank(idx, positives), ns)


def recall_from_ranks(first: np.ndarray, ns: Iterable[int]) -> dict[int, float]:
    """Recall@N from the first-positive positions of :func:`first_positive_rank` (-1 = no positive)."""
    return {int(n): float(np.mean((first >= 0) & (first < n))) for n in ns}


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense squared Euclidean distances (len(a) x len(b)), float32, clipped at 0."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    d = a @ b.T
    d *= -2.0  # in place: one matrix-sized buffer only
    d += (a * a).sum(1)[:, None]
    d += (b * b).sum(1)[None, :]
    return np.maximum(d, 0.0, out=d)


def rerank_search(db: np.ndarray, queries: np.ndarray, k: int, k1: int, k2: int, lambda_value: float,
                  max_items: int | None = RERANK_MAX_ITEMS) -> tuple[np.ndarray, np.ndarray]:
    """Top-k after k-reciprocal re-ranking (Zhong et al. 2017) of the squared distances over the whole
    database, ties by database index; memory O((Nq + Ndb) x k1), see ``vpr.rerank``."""
    n = len(db) + len(queries)
    if max_items is not None and n > max_items:
        raise VprError(f"--rerank: {len(queries)} queries + {len(db)} database images are above the limit "
                       f"of {max_items} images set with --rr-max-items")
    from vpr.rerank import rerank_top_k

    try:
        return rerank_top_k(queries, db, k, k1, k2, lambda_value, square_input=True)
    except ValueError as err:
        raise VprError(f"--rerank: {err}") from err


def tied_rankings(distances: np.ndarray, tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """Per query (row of ``distances``, nearest first, inf where padded): whether its ranking is a tie
    throughout, i.e. it holds at least two finite distances and the largest exceeds the smallest by at most
    ``tolerance`` · max(1, smallest). Squared L2 distances of unit vectors lie in [0, 4] and float32
    rounding moves them by about 1e-6, so such a ranking is an arbitrary order of equal distances (the
    regular simplex of over-whitened descriptors, docs/method.md §5.3)."""
    d = np.asarray(distances, dtype=np.float64)
    finite = np.isfinite(d)
    low = np.where(finite, d, np.inf).min(axis=1)
    high = np.where(finite, d, -np.inf).max(axis=1)
    return (finite.sum(axis=1) >= 2) & (high - low <= tolerance * np.maximum(1.0, np.abs(low)))


@dataclass
class Evaluation:
    """Rankings (after NMS, -1 padded), their distances (inf where padded), first-positive positions
    (-1 = none in the list) and the recall table."""

    topk: np.ndarray
    distances: np.ndarray
    first_positive: np.ndarray
    recall: dict[int, float]


def evaluate(db: np.ndarray, queries: np.ndarray, positives: Sequence[np.ndarray], ns: Sequence[int],
             place: np.ndarray | None = None, rerank: dict | None = None) -> Evaluation:
    """Rank the database for every query and compute Recall@N.

    ``place`` (db place ids) switches on the spatial NMS: the top ``max(ns) * 12`` results are filtered
    down to ``max(ns)``. ``rerank`` = dict(k1=, k2=, lambda_value=[, max_items=]) re-ranks first.
    """
    n_max = max(ns)
    k = n_max * NMS_FACTOR if place is not None else n_max
    if rerank is not None:
        dist, idx = rerank_search(db, queries, k, **rerank)
    else:
        dist, idx = search(db, queries, k)
    if place is not None:
        dist, idx = spatial_nms(dist, idx, place, n_max)
    first = first_positive_rank(idx, positives)
    return Evaluation(topk=idx, distances=dist, first_positive=first, recall=recall_from_ranks(first, ns))
