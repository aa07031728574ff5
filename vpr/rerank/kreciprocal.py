"""Re-ranking on neighbour lists (:class:`KReciprocal`): memory O(N·k), re-ranked distances computed only
for the (query, gallery) pairs asked for."""

from __future__ import annotations

import numpy as np

from vpr import interrupt
from vpr.rerank import blocks
from vpr.rerank.neighbour_lists import NeighbourLists
from vpr.rerank.steps import sparse_weights, top_k_indices


class KReciprocal:
    """Steps 2-6 on neighbour lists; re-ranked distances (step 7) for the (query, gallery) pairs asked for.

    Equals :func:`k_reciprocal_rerank` on the same distances (k2 > 1 included). Memory: the lists (N·L),
    the sparse V (N·|R*|) and its inverted index; the Jaccard overlap is enumerated per query only over
    gallery items that share a member of R*(q).
    """

    def __init__(self, lists: NeighbourLists, k1: int = 20, k2: int = 1, lambda_value: float = 0.1,
                 square_input: bool = True):
        if int(k1) != k1 or k1 < 1 or int(k2) != k2 or k2 < 1:
            raise ValueError(f"k1 and k2 must be positive integers, got k1={k1}, k2={k2}")
        if not 0.0 <= lambda_value <= 1.0:
            raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
        self.k1, self.k2, self.lam, self.square = int(k1), int(k2), float(lambda_value), square_input
        self.lists = lists
        N, Q = lists.N, lists.Q
        self.Q, self.G, self.N = Q, N - Q, N
        K = min(N, max(self.k1 + 1, self.k2))
        if lists.idx.shape[1] < K:
            raise ValueError(f"neighbour lists hold {lists.idx.shape[1]} items, re-ranking needs {K}")
        scale = self._prep(lists.row_max)
        self.scale = np.where(scale > 0, scale, 1.0)
        rank = lists.idx[:, :K]
        V = sparse_weights(rank, self.k1, self.k2,
                           lambda i, j: self._prep(lists.lookup(i, j)) / self.scale[i])
        self.Vq = V[:Q]
        self.inv = V[Q:].tocsc()  # column j -> the gallery items with V[g, j] != 0
        self.inv.sort_indices()

    def _prep(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        return values * values if self.square else values

    def overlaps(self, qids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Non-zero m[q, g] for the query ids ``qids`` (sorted, unique) as (q, g, m) sorted by (q, g)."""
        Vq, inv = self.Vq, self.inv
        col_len = np.diff(inv.indptr)
        starts_q, ends_q = Vq.indptr[qids], Vq.indptr[qids + 1]
        q_row_len = ends_q - starts_q
        q_rows = np.repeat(qids, q_row_len)
        nz = np.repeat(starts_q - (np.cumsum(q_row_len) - q_row_len), q_row_len) + np.arange(q_row_len.sum())
        q_cols, q_vals = Vq.indices[nz], Vq.data[nz]
        cnt = col_len[q_cols]
        total = int(cnt.sum())
        if not total:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        pos = np.repeat(inv.indptr[q_cols] - (np.cumsum(cnt) - cnt), cnt) + np.arange(total)
        contrib = np.minimum(np.repeat(q_vals, cnt), inv.data[pos])
        keys = np.repeat(q_rows, cnt).astype(np.int64) * self.G + inv.indices[pos]
        uniq, inverse = np.unique(keys, return_inverse=True)
        m = np.bincount(inverse, weights=contrib, minlength=len(uniq))
        return uniq // self.G, uniq % self.G, m

    def _blocks(self, qids: np.ndarray):
        """Runs of ``qids`` whose overlap enumeration stays within the pair budget (at least one id)."""
        col_len = np.diff(self.inv.indptr)
        row_of_nz = np.repeat(np.arange(self.Q), np.diff(self.Vq.indptr))
        per_q = np.bincount(row_of_nz, weights=col_len[self.Vq.indices], minlength=self.Q)[qids]
        a = 0
        while a < len(qids):
            cum = np.cumsum(per_q[a:a + blocks.OUT_ROWS])
            b = a + max(1, int(np.searchsorted(cum, blocks.PAIR_BUDGET, side="right")))
            yield qids[a:b]
            a = b

    def pair_distances(self, q: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Re-ranked distances (float32, as the dense function returns them) for pairs (q[n], g[n])."""
        q, g = np.asarray(q, dtype=np.int64), np.asarray(g, dtype=np.int64)
        m = np.zeros(len(q))
        want = q * self.G + g
        for qids in self._blocks(np.unique(q)):
            interrupt.check("k-reciprocal distances")
            oq, og, om = self.overlaps(qids)
            if not len(oq):
                continue
            keys = oq * self.G + og
            pos = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
            hit = keys[pos] == want
            m[hit] = om[pos[hit]]
        out = (1.0 - self.lam) * (1.0 - m / (2.0 - m))
        if self.lam:
            out += self.lam * self._prep(self.lists.lookup(q, g + self.Q)) / self.scale[q]
        return out.astype(np.float32)

    def top_k(self, k: int, original_rows=None, rows_per_block: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """The k smallest re-ranked distances of every query over the whole gallery, ordered by (float32
        distance, gallery index) — the dense formula's full Q×G result, one block of query rows at a time.

        With λ > 0, ``original_rows(a, b)`` must give S[q, Q + g] for query rows a..b-1 and every gallery
        item (dense, float); with λ = 0 every pair outside the overlaps is exactly 1.
        """
        k = min(int(k), self.G)
        dist = np.empty((self.Q, k), dtype=np.float32)
        idx = np.empty((self.Q, k), dtype=np.int64)
        for a in range(0, self.Q, rows_per_block):
            b = min(self.Q, a + rows_per_block)
            oq, og, om = self.overlaps(np.arange(a, b))
            jac = np.ones((b - a, self.G))
            jac[oq - a, og] = 1.0 - om / (2.0 - om)
            vals = (1.0 - self.lam) * jac
            if self.lam:
                vals += self.lam * self._prep(original_rows(a, b)) / self.scale[a:b, None]
            vals32 = vals.astype(np.float32)
            order = top_k_indices(vals32, k)
            idx[a:b] = order
            dist[a:b] = np.take_along_axis(vals32, order, 1)
        return dist, idx
