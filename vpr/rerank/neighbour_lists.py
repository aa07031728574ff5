"""The neighbour-list implementation's input: :class:`NeighbourLists`, each item's nearest items with their
distances, its row scale and exact distances at arbitrary pairs, from dense matrices (tests, small inputs)
or by one blocked exact search over the descriptors (what vpr uses).

Everything the re-ranking steps need from the stacked matrix S is (a) each item's nearest items in ranking
order (steps 2, 3 and 5 only look at the first max(k1+1, k2) of every row of P, and P's row scaling does
not change a row's order), (b) each item's row scale (step 1's column maximum; S is symmetric here), and
(c) S at the pairs (i, j) with j in R*(i) (step 4) and at the (query, gallery) pairs whose λ·P term is
asked for (step 7). m[q, g] is non-zero only when R*(q) and R*(g) share an item, so the Jaccard term of
every other pair is exactly 1 and needs no work.
"""

from __future__ import annotations

import numpy as np

from vpr import interrupt
from vpr.rerank import blocks
from vpr.rerank.steps import top_k_indices

_LIST_EXTRA = 8  # neighbours kept beyond max(k1+1, k2): ties reaching past them trigger an exact row pass


class NeighbourLists:
    """Each item's nearest items (``idx``, (N, L), self included, ordered by distance then index), their
    distances ``dist`` (S values, float64), the row scales of step 1 (max over the row of S, squared when
    ``square_input``; 1 for an all-zero row) and ``pair(i, j)``: S at arbitrary index pairs (float64)."""

    def __init__(self, idx: np.ndarray, dist: np.ndarray, row_max: np.ndarray, pair, num_queries: int):
        self.idx, self.dist, self.row_max, self.pair = idx, dist, row_max, pair
        self.Q = int(num_queries)
        self.N = idx.shape[0]
        self._sorted = None  # (sorted keys i*N + j of the lists, their positions), built on first lookup

    def lookup(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """S[i, j] for index arrays: from the lists where j is in i's list, else from ``pair``."""
        out = np.empty(i.shape, dtype=np.float64)
        if self._sorted is None:
            keys = (self.idx + (np.arange(self.N, dtype=np.int64) * self.N)[:, None]).ravel()
            order = np.argsort(keys, kind="stable")
            self._sorted = (keys[order], order)
        flat_keys, order = self._sorted
        want = i.astype(np.int64) * self.N + j
        pos = np.minimum(np.searchsorted(flat_keys, want), len(flat_keys) - 1)
        hit = flat_keys[pos] == want
        out[hit] = self.dist.ravel()[order[pos[hit]]]
        if (~hit).any():
            out[~hit] = self.pair(i[~hit], j[~hit])
        return out


def _stacked_rows_dense(d_qg, d_qq, d_gg, a: int, b: int) -> np.ndarray:
    """Rows a..b-1 of the stacked matrix S = [[d_qq, d_qg], [d_qgᵀ, d_gg]] (float64)."""
    Q = d_qg.shape[0]
    parts = []
    for lo, hi, left, right in ((0, Q, d_qq, d_qg), (Q, Q + d_qg.shape[1], d_qg.T, d_gg)):
        s, e = max(a, lo), min(b, hi)
        if s < e:
            parts.append(np.hstack([left[s - lo:e - lo], right[s - lo:e - lo]]))
    return np.asarray(np.vstack(parts), dtype=np.float64)


def _ordered_lists(rows: np.ndarray, L: int) -> np.ndarray:
    """Indices of the L smallest entries of each row, ordered by (value, index) exactly."""
    return top_k_indices(rows, min(L, rows.shape[1]))


def neighbour_lists_from_matrices(d_qg, d_qq, d_gg, length: int) -> NeighbourLists:
    """Neighbour lists from dense (symmetric) distance matrices: for tests and small inputs."""
    d_qg, d_qq, d_gg = (np.asarray(d, dtype=np.float64) for d in (d_qg, d_qq, d_gg))
    Q, G = d_qg.shape
    N = Q + G
    L = min(N, length)
    idx = np.empty((N, L), dtype=np.int64)
    dist = np.empty((N, L))
    row_max = np.empty(N)
    for a in range(0, N, blocks.BLOCK_ROWS):
        b = min(N, a + blocks.BLOCK_ROWS)
        rows = _stacked_rows_dense(d_qg, d_qq, d_gg, a, b)
        idx[a:b] = _ordered_lists(rows, L)
        dist[a:b] = np.take_along_axis(rows, idx[a:b], 1)
        row_max[a:b] = rows.max(axis=1)

    def pair(i, j):
        out = np.empty(i.shape)
        iq, jq = i < Q, j < Q
        for mask, mat, r, c in ((iq & jq, d_qq, i, j), (iq & ~jq, d_qg, i, j - Q),
                                (~iq & jq, d_qg, j, i - Q), (~iq & ~jq, d_gg, i - Q, j - Q)):
            out[mask] = mat[r[mask], c[mask]]
        return out

    return NeighbourLists(idx, dist, row_max, pair, Q)


def _device_rows(x_q, x_g, a: int, b: int, device, dtype):
    """Rows a..b-1 of the stacked descriptors as a torch tensor on ``device`` (any input dtype)."""
    import torch

    Q = len(x_q)
    parts = []
    if a < Q:
        parts.append(np.asarray(x_q[a:min(b, Q)]))
    if b > Q:
        parts.append(np.asarray(x_g[max(a - Q, 0):b - Q]))
    block = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return torch.from_numpy(np.ascontiguousarray(block)).to(device=device, dtype=dtype)


def neighbour_lists_from_descriptors(x_q: np.ndarray, x_g: np.ndarray, needed: int, extra: int = _LIST_EXTRA,
                                     device=None, block: int | None = None,
                                     only_rows: range | None = None) -> NeighbourLists:
    """Neighbour lists of the stacked query + gallery descriptors by exact search.

    One blocked pass over the pairs (block × block, float32 on ``device``: the model's device, the GPU when
    there is one) keeps each item's nearest ``needed + extra`` items and its farthest distance; no N×N
    matrix exists. The distance is symmetric, so only blocks on and above the diagonal are computed and
    each updates the lists of both its row and its column items. Distances are squared L2 by the same
    float32 formula as ``vpr.evaluate`` (‖a‖² + ‖b‖² − 2a·b, clipped at 0), the diagonal exactly 0. The
    kept lists break ties arbitrarily at their end, so a row whose ties there reach back into its first
    ``needed`` entries is ranked again over the whole row: the first ``needed`` are exact (distance, then
    index). Descriptors may be float16 (kept so in memory) or float32. ``only_rows`` limits the pass to
    the row blocks of a leading range of rows (their lists are complete, the others' unset: for timing a
    part of a pass that is too long to run).
    """
    import torch

    device = torch.device(device or "cpu")
    Q, G = len(x_q), len(x_g)
    N = Q + G
    d = x_q.shape[1] if Q else x_g.shape[1]
    if block is None:
        block = max(256, min(4096, (1 << 26) // (4 * d)))   # 64 MiB of float32 descriptors per block
    search = _BlockedSearch(x_q, x_g, device, block, min(N, needed + extra))
    stop = N if only_rows is None else min(N, only_rows.stop)
    search.scan(stop)
    idx, dist = search.ranked_lists(stop, max(1, min(N, needed)))
    pair = _exact_pairs(x_q, x_g, search.norms.cpu().numpy(), device)
    return NeighbourLists(idx, dist, search.row_max.cpu().numpy().astype(np.float64), pair, Q)


class _BlockedSearch:
    """The blocked exact pass of :func:`neighbour_lists_from_descriptors`: float32 on ``device``, squared
    norms of all items, and per item the ``L`` nearest items found so far (unordered) and its farthest
    distance."""

    def __init__(self, x_q, x_g, device, block: int, L: int):
        import torch

        self.x_q, self.x_g, self.device, self.block, self.L = x_q, x_g, device, block, L
        self.N = N = len(x_q) + len(x_g)
        self.norms = torch.empty(N, dtype=torch.float32, device=device)
        for a in range(0, N, block):
            r = self.rows(a, min(N, a + block))
            self.norms[a:a + len(r)] = (r * r).sum(1)
        self.best_d = torch.full((N, L), float("inf"), device=device)
        self.best_i = torch.full((N, L), -1, dtype=torch.int64, device=device)
        self.row_max = torch.zeros(N, device=device)

    def rows(self, a: int, b: int):
        import torch

        return _device_rows(self.x_q, self.x_g, a, b, self.device, torch.float32)

    def block_dist(self, rows, a: int, ca: int, cb: int):
        """Squared L2 distances of ``rows`` (items a..) to the items ca..cb-1, the diagonal exactly 0."""
        import torch

        cols = self.rows(ca, cb)
        dd = rows @ cols.T
        dd *= -2.0
        dd += self.norms[a:a + len(rows), None]
        dd += self.norms[None, ca:cb]
        dd.clamp_(min=0.0)
        lo, hi = max(a, ca), min(a + len(rows), cb)
        if lo < hi:  # the diagonal is exactly 0
            r = torch.arange(lo, hi, device=self.device)
            dd[r - a, r - ca] = 0.0
        return dd

    def merge(self, a: int, b: int, dd, first_col: int) -> None:
        """Fold the distances dd (rows a..b-1 against columns first_col..) into those rows' lists."""
        import torch

        cat_d = torch.cat([self.best_d[a:b], dd], 1)
        cols = torch.arange(first_col, first_col + dd.shape[1], device=self.device).expand(b - a, -1)
        cat_i = torch.cat([self.best_i[a:b], cols], 1)
        top_d, pos = torch.topk(cat_d, self.L, dim=1, largest=False, sorted=False)
        self.best_d[a:b], self.best_i[a:b] = top_d, torch.gather(cat_i, 1, pos)
        self.row_max[a:b] = torch.maximum(self.row_max[a:b], dd.max(1).values)

    def scan(self, stop: int) -> None:
        """The pass over the blocks on and above the diagonal, for the row blocks starting before ``stop``."""
        N, block = self.N, self.block
        for a in range(0, stop, block):
            interrupt.check("k-reciprocal neighbour lists")
            b = min(N, a + block)
            rows = self.rows(a, b)
            for ca in range(a, N, block):
                cb = min(N, ca + block)
                dd = self.block_dist(rows, a, ca, cb)
                self.merge(a, b, dd, ca)
                if ca != a:
                    self.merge(ca, cb, dd.T, a)

    def ranked_lists(self, stop: int, keep: int) -> tuple[np.ndarray, np.ndarray]:
        """(idx, dist) of all items, ordered by (distance, index), the first ``keep`` of each exact; rows the
        pass did not complete are -1 / inf."""
        import torch

        N, L, block = self.N, self.L, self.block
        done = min(N, -(-stop // block) * block)   # rows whose lists are complete
        bd, bi = self.best_d[:done].cpu().numpy(), self.best_i[:done].cpu().numpy()
        order = np.lexsort((bi, bd), axis=1)  # (distance, index)
        bd, bi = np.take_along_axis(bd, order, 1), np.take_along_axis(bi, order, 1)
        # topk breaks ties arbitrarily: where the last kept value equals a value inside the used prefix, an
        # equal item with a smaller index may have been dropped, so that row is ranked over all columns.
        redo = np.flatnonzero(bd[:, keep - 1] >= bd[:, L - 1]) if L < N else np.zeros(0, dtype=np.int64)
        for r in redo:
            row = self.rows(int(r), int(r) + 1)
            parts = [self.block_dist(row, int(r), ca, min(N, ca + block)) for ca in range(0, N, block)]
            full = torch.cat(parts, 1).cpu().numpy()
            bi[r] = _ordered_lists(full, L)[0]
            bd[r] = full[0, bi[r]]
        idx = np.full((N, L), -1, dtype=np.int64)
        dist = np.full((N, L), np.inf)
        idx[:done], dist[:done] = bi, bd
        return idx, dist


def _exact_pairs(x_q, x_g, norms_np: np.ndarray, device):
    """``pair(i, j)``: S at arbitrary index pairs, by the float32 formula of the search (float64 out)."""
    d = x_q.shape[1] if len(x_q) else x_g.shape[1]

    def pair(i, j):
        out = np.empty(len(i), dtype=np.float64)
        step = max(16, (1 << 25) // (4 * d))   # gathered rows: 32 MiB of float32 per side
        for s in range(0, len(i), step):
            ii, jj = i[s:s + step], j[s:s + step]
            dot = (_gather(x_q, x_g, ii, device) * _gather(x_q, x_g, jj, device)).sum(1).cpu().numpy()
            dd = np.maximum(norms_np[ii] + norms_np[jj] - 2.0 * dot, 0.0)
            dd[ii == jj] = 0.0
            out[s:s + len(ii)] = dd
        return out

    return pair


def _gather(x_q, x_g, ids: np.ndarray, device):
    import torch

    Q = len(x_q)
    ids = np.asarray(ids, dtype=np.int64)
    out = np.empty((len(ids), x_q.shape[1] if Q else x_g.shape[1]), dtype=np.float32)
    q = ids < Q
    out[q] = x_q[ids[q]]
    out[~q] = x_g[ids[~q] - Q]
    return torch.from_numpy(out).to(device)
