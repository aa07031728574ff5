"""The steps both re-ranking implementations share (docs/method.md §5.6): ranking rows exactly (ties by
index), the k-reciprocal sets R(i, k), their expansion R*(i) and the sparse weights V with the k2 query
expansion (steps 2-5 of the ``vpr.rerank`` docstring)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from vpr.rerank import blocks


def top_k_indices(rows: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest entries of each row, ascending; ties broken by index, also at the k-th
    place (an item equal to the k-th value with a smaller index is never left out)."""
    n = rows.shape[1]
    k = min(k, n)
    if k < n:
        kth = np.partition(rows, k - 1, axis=1)[:, k - 1:k]
        mask = rows <= kth
        counts = mask.sum(1)
        out = np.empty((rows.shape[0], k), dtype=np.int64)
        plain = np.flatnonzero(counts == k)
        if len(plain):
            out[plain] = np.nonzero(mask[plain])[1].reshape(len(plain), k)
        for r in np.flatnonzero(counts != k):  # ties at the k-th value: the smallest indices among them
            cand = np.flatnonzero(mask[r])
            out[r] = cand[np.lexsort((cand, rows[r, cand]))[:k]]
        idx = out
    else:
        idx = np.broadcast_to(np.arange(n), rows.shape).copy()
    vals = np.take_along_axis(rows, idx, axis=1)
    order = np.lexsort((idx, vals), axis=1)
    return np.take_along_axis(idx, order, axis=1)


def reciprocal_sets(rank: np.ndarray, k: int) -> np.ndarray:
    """R(i, k) for every i as an (N, k+1) array in forward order, -1 where not reciprocal."""
    n = rank.shape[0]
    fwd = rank[:, :k + 1]
    out = np.empty_like(fwd)
    for a in range(0, n, blocks.SET_ROWS):
        f = fwd[a:a + blocks.SET_ROWS]
        back = rank[f, :k + 1]  # (c, k+1, k+1)
        ok = (back == np.arange(a, a + len(f))[:, None, None]).any(axis=2)
        out[a:a + blocks.SET_ROWS] = np.where(ok, f, -1)
    return out


def expanded_sets(R: np.ndarray, Rh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 3 for every row: (row ids, member ids) of R*(i), each set sorted and without duplicates."""
    n = R.shape[0]
    rows_out, cols_out = [], []
    for a in range(0, n, blocks.SET_ROWS):
        r = R[a:a + blocks.SET_ROWS]  # (c, k1+1)
        valid = r >= 0
        cand = Rh[np.where(valid, r, 0)]  # (c, k1+1, h+1): R(c, h) of each member c
        cand_ok = cand >= 0
        inter = ((cand[..., None] == r[:, None, None, :]) & valid[:, None, None, :]).any(-1) & cand_ok
        n_inter, n_cand = inter.sum(-1), cand_ok.sum(-1)
        keep = valid & (3 * n_inter > 2 * n_cand)  # |R(c,h) ∩ R(i,k1)| > 2/3 |R(c,h)|, exactly
        members = np.concatenate([np.where(valid, r, -1),
                                  np.where(keep[..., None] & cand_ok, cand, -1).reshape(len(r), -1)], axis=1)
        members.sort(axis=1)
        dup = np.zeros_like(members, dtype=bool)
        dup[:, 1:] = members[:, 1:] == members[:, :-1]
        good = (members >= 0) & ~dup
        row_ids = np.broadcast_to(np.arange(a, a + len(r))[:, None], members.shape)
        rows_out.append(row_ids[good])
        cols_out.append(members[good])
    return np.concatenate(rows_out), np.concatenate(cols_out)


def sparse_weights(rank: np.ndarray, k1: int, k2: int, p_at: Callable[[np.ndarray, np.ndarray], np.ndarray]
                   ) -> sp.csr_matrix:
    """Steps 2-5: V (N×N, sparse, sorted indices, no explicit zeros) from the ranked top entries ``rank``
    (N, K) of every row of P, with ``p_at(i, j)`` giving P[i, j] at index arrays."""
    N, K = rank.shape
    half = int(np.around(k1 / 2.0))
    R = reciprocal_sets(rank, min(k1, K - 1))
    Rh = reciprocal_sets(rank, min(half, K - 1))
    rows, cols = expanded_sets(R, Rh)
    w = np.exp(-p_at(rows, cols))
    w /= np.bincount(rows, weights=w, minlength=N)[rows]
    V = sp.csr_matrix((w, (rows, cols)), shape=(N, N))
    if k2 != 1:
        k2 = min(k2, N)
        A = sp.csr_matrix((np.full(N * k2, 1.0 / k2), (np.repeat(np.arange(N), k2), rank[:, :k2].ravel())),
                          shape=(N, N))
        V = (A @ V).tocsr()
    V.eliminate_zeros()
    V.sort_indices()
    return V
