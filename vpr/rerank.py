"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) of query-gallery distances, as the reference does it.

Used at test time (``vpr evaluate --rerank``, k1=25, k2=1, λ=0) and by SFRS positive selection in
generations ≥ 1 (k1=20, k2=1, λ=0.1). The steps (METHOD.md §5.6), on the stacked set of the Q queries and
G gallery items, N = Q+G, with the stacked distance matrix S = [[d_qq, d_qg], [d_qgᵀ, d_gg]]:

1. P[i, :] = S[:, i]² / max(S[:, i]²) — the reference squares the distances it is given (already squared
   L2, so effectively the 4th power; ``square_input=False`` skips this quirk), divides each column by its
   maximum and transposes. Everything below ranks and weighs row i of P.
2. R(i, k) = {j among the k+1 nearest of i : i among the k+1 nearest of j} (k-reciprocal neighbours; the
   k+1 include the item itself).
3. The expanded set R*(i) = R(i, k1) ∪ every R(c, round(k1/2)) with c ∈ R(i, k1) and
   |R(c, round(k1/2)) ∩ R(i, k1)| > 2/3 |R(c, round(k1/2))|. round() is NumPy's, half to even (25/2 → 12).
4. V[i, j] = exp(−P[i, j]) / Σ_{j' ∈ R*(i)} exp(−P[i, j']) for j ∈ R*(i), 0 elsewhere.
5. If k2 > 1, V[i] ← mean of V over the k2 nearest rows of i (query expansion, self included).
6. Jaccard distance J[q, g] = 1 − m/(2 − m) with m = Σ_j min(V[q, j], V[g, j]).
7. Result = (1−λ)·J + λ·P, restricted to query rows and gallery columns (Q×G).

The implementation never builds a dense N×N copy: rows of P are built and ranked in blocks (keeping only
the top max(k1+1, k2) per row), V is a sparse matrix, and m is accumulated from the non-zeros through an
inverted index (per gallery column j, the items with V[·, j] ≠ 0). Arithmetic is float64; the result is
float32 like the reference's. Ties in distance are broken by item index.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# Block sizes bounding the working memory (tests shrink them to exercise the block boundaries).
_BLOCK_ROWS = 512  # rows of P built at a time
_SET_ROWS = 2048  # rows whose k-reciprocal sets are formed at a time
_PAIR_BUDGET = 1 << 22  # (query non-zero, gallery non-zero) pairs processed at a time
_OUT_ROWS = 512  # at most this many query rows of the result computed at a time


class _Stacked:
    """Row access to P (step 1) without materialising the stacked N×N matrix."""

    def __init__(self, d_qg: np.ndarray, d_qq: np.ndarray, d_gg: np.ndarray, square_input: bool):
        self.d_qg, self.d_qq, self.d_gg = d_qg, d_qq, d_gg
        self.Q, self.G = d_qg.shape
        self.N = self.Q + self.G
        self.square = square_input
        self.scale = np.ones(self.N)  # column maxima of the (squared) stacked matrix

    def _prep(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        return values * values if self.square else values

    def raw_rows(self, a: int, b: int) -> np.ndarray:
        """Unscaled rows a..b-1 of P, i.e. columns a..b-1 of the stacked matrix; a block must not straddle
        the query/gallery boundary."""
        Q = self.Q
        if b <= Q:
            cols = np.hstack([self.d_qq[:, a:b].T, self.d_qg[a:b, :]])
        else:
            cols = np.hstack([self.d_qg[:, a - Q:b - Q].T, self.d_gg[:, a - Q:b - Q].T])
        return self._prep(cols)

    def blocks(self):
        for lo, hi in ((0, self.Q), (self.Q, self.N)):
            for a in range(lo, hi, _BLOCK_ROWS):
                yield a, min(a + _BLOCK_ROWS, hi)

    def gather(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """P[i, j] for index arrays of the same shape (S[j, i]² / scale[i])."""
        Q = self.Q
        out = np.empty(i.shape, dtype=np.float64)
        iq, jq = i < Q, j < Q
        for mask, mat, r, c in ((jq & iq, self.d_qq, j, i), (jq & ~iq, self.d_qg, j, i - Q),
                                (~jq & iq, self.d_qg, i, j - Q), (~jq & ~iq, self.d_gg, j - Q, i - Q)):
            if mask.any():
                out[mask] = mat[r[mask], c[mask]]
        return self._prep(out) / self.scale[i]


def _top_k(rows: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest entries of each row, ascending; ties broken by index."""
    n = rows.shape[1]
    if k < n:
        idx = np.argpartition(rows, k - 1, axis=1)[:, :k]
    else:
        idx = np.broadcast_to(np.arange(n), rows.shape).copy()
    vals = np.take_along_axis(rows, idx, axis=1)
    order = np.lexsort((idx, vals), axis=1)
    return np.take_along_axis(idx, order, axis=1)


def _reciprocal(rank: np.ndarray, k: int) -> np.ndarray:
    """R(i, k) for every i as an (N, k+1) array in forward order, -1 where not reciprocal."""
    n = rank.shape[0]
    fwd = rank[:, :k + 1]
    out = np.empty_like(fwd)
    for a in range(0, n, _SET_ROWS):
        f = fwd[a:a + _SET_ROWS]
        back = rank[f, :k + 1]  # (c, k+1, k+1)
        ok = (back == np.arange(a, a + len(f))[:, None, None]).any(axis=2)
        out[a:a + _SET_ROWS] = np.where(ok, f, -1)
    return out


def _expanded_sets(R: np.ndarray, Rh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 3 for every row: (row ids, member ids) of R*(i), each set sorted and without duplicates."""
    n = R.shape[0]
    rows_out, cols_out = [], []
    for a in range(0, n, _SET_ROWS):
        r = R[a:a + _SET_ROWS]  # (c, k1+1)
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


def _overlap_blocks(Vq: sp.csr_matrix, Vg: sp.csr_matrix):
    """Yield (a, b, m[a:b]) with m[q, g] = Σ_j min(Vq[q, j], Vg[g, j]), from the non-zeros only (inverted
    index over columns j), for consecutive blocks of query rows."""
    Q, G = Vq.shape[0], Vg.shape[0]
    inv = Vg.tocsc()  # column j -> the gallery items with V[g, j] != 0
    inv.sort_indices()
    col_len = np.diff(inv.indptr)
    q_row_len = np.diff(Vq.indptr)
    pairs_per_row = np.bincount(np.repeat(np.arange(Q), q_row_len), weights=col_len[Vq.indices], minlength=Q)
    a = 0
    while a < Q:
        # A block of query rows whose pair count stays within the budget (at least one row).
        cum = np.cumsum(pairs_per_row[a:])
        b = a + min(_OUT_ROWS, max(1, int(np.searchsorted(cum, _PAIR_BUDGET, side="right"))))
        lo, hi = Vq.indptr[a], Vq.indptr[b]
        q_rows = np.repeat(np.arange(a, b), q_row_len[a:b])
        q_cols, q_vals = Vq.indices[lo:hi], Vq.data[lo:hi]
        cnt = col_len[q_cols]
        total = int(cnt.sum())
        m = np.zeros((b - a, G), dtype=np.float64)
        if total:
            # Position of every pair's gallery non-zero inside inv.indices/data.
            starts = np.repeat(inv.indptr[q_cols] - (np.cumsum(cnt) - cnt), cnt)
            pos = starts + np.arange(total)
            contrib = np.minimum(np.repeat(q_vals, cnt), inv.data[pos])
            flat = (np.repeat(q_rows, cnt) - a) * G + inv.indices[pos]
            m = np.bincount(flat, weights=contrib, minlength=(b - a) * G).reshape(b - a, G)
        yield a, b, m
        a = b


def k_reciprocal_rerank(d_qg: np.ndarray, d_qq: np.ndarray, d_gg: np.ndarray, k1: int = 20, k2: int = 1,
                        lambda_value: float = 0.1, square_input: bool = True) -> np.ndarray:
    """Re-ranked Q×G distances from the query-gallery (Q×G), query-query (Q×Q) and gallery-gallery (G×G)
    distance matrices (squared L2 in vpr), following the module docstring's steps.

    ``square_input=True`` reproduces the reference's squaring of the given (already squared) distances;
    ``False`` uses them as given. Returns float32 (Q×G).
    """
    d_qg, d_qq, d_gg = (np.asarray(d) for d in (d_qg, d_qq, d_gg))
    if d_qg.ndim != 2:
        raise ValueError(f"d_qg must be a (Q, G) matrix, got shape {d_qg.shape}")
    Q, G = d_qg.shape
    if d_qq.shape != (Q, Q) or d_gg.shape != (G, G):
        raise ValueError(f"distance matrices do not fit together: d_qg {d_qg.shape}, d_qq {d_qq.shape} "
                         f"(expected {(Q, Q)}), d_gg {d_gg.shape} (expected {(G, G)})")
    if int(k1) != k1 or k1 < 1 or int(k2) != k2 or k2 < 1:
        raise ValueError(f"k1 and k2 must be positive integers, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    k1, k2 = int(k1), int(k2)
    half = int(np.around(k1 / 2.0))
    S = _Stacked(d_qg, d_qq, d_gg, square_input)
    N = S.N
    if Q == 0 or G == 0:
        return np.zeros((Q, G), dtype=np.float32)

    # Step 1-2: ranked top entries of every row of P (row scaling does not change a row's order).
    K = min(N, max(k1 + 1, k2))
    rank = np.empty((N, K), dtype=np.int64)
    for a, b in S.blocks():
        raw = S.raw_rows(a, b)
        col_max = raw.max(axis=1)
        S.scale[a:b] = np.where(col_max > 0, col_max, 1.0)  # an all-zero row stays unscaled (no 0/0)
        rank[a:b] = _top_k(raw / S.scale[a:b, None], K)

    # Steps 2-4: k-reciprocal sets, their expansion, and the sparse weights V.
    R = _reciprocal(rank, min(k1, K - 1))
    Rh = _reciprocal(rank, min(half, K - 1))
    rows, cols = _expanded_sets(R, Rh)
    w = np.exp(-S.gather(rows, cols))
    w /= np.bincount(rows, weights=w, minlength=N)[rows]
    V = sp.csr_matrix((w, (rows, cols)), shape=(N, N))

    # Step 5: query expansion over the k2 nearest rows.
    if k2 != 1:
        k2 = min(k2, N)
        A = sp.csr_matrix((np.full(N * k2, 1.0 / k2), (np.repeat(np.arange(N), k2), rank[:, :k2].ravel())),
                          shape=(N, N))
        V = (A @ V).tocsr()
    V.eliminate_zeros()
    V.sort_indices()

    # Steps 6-7: Jaccard distance of query rows to gallery rows, mixed with the original distances.
    out = np.empty((Q, G), dtype=np.float32)
    for a, b, m in _overlap_blocks(V[:Q], V[Q:]):
        jaccard = 1.0 - m / (2.0 - m)
        original = S._prep(d_qg[a:b]) / S.scale[a:b, None]
        out[a:b] = (1.0 - lambda_value) * jaccard + lambda_value * original
    return out
