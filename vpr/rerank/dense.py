"""The dense reference formula: :func:`k_reciprocal_rerank` on the three dense distance matrices (memory
O(N²) in its inputs; kept as the reference for the tests and small inputs). Rows of P are built and ranked
in blocks (keeping only the top max(k1+1, k2) per row), V is a sparse matrix, and m is accumulated from the
non-zeros through an inverted index (per gallery column j, the items with V[·, j] ≠ 0)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from vpr.rerank import blocks
from vpr.rerank.steps import sparse_weights, top_k_indices


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
            for a in range(lo, hi, blocks.BLOCK_ROWS):
                yield a, min(a + blocks.BLOCK_ROWS, hi)

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
        b = a + min(blocks.OUT_ROWS, max(1, int(np.searchsorted(cum, blocks.PAIR_BUDGET, side="right"))))
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
        rank[a:b] = top_k_indices(raw / S.scale[a:b, None], K)

    # Steps 2-5: k-reciprocal sets, their expansion, the sparse weights V and the query expansion.
    V = sparse_weights(rank, k1, k2, S.gather)

    # Steps 6-7: Jaccard distance of query rows to gallery rows, mixed with the original distances.
    out = np.empty((Q, G), dtype=np.float32)
    for a, b, m in _overlap_blocks(V[:Q], V[Q:]):
        jaccard = 1.0 - m / (2.0 - m)
        original = S._prep(d_qg[a:b]) / S.scale[a:b, None]
        out[a:b] = (1.0 - lambda_value) * jaccard + lambda_value * original
    return out
