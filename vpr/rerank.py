"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) of query-gallery distances, as the reference does it.

Used at test time (``vpr evaluate --rerank``, k1=25, k2=1, λ=0) and by SFRS positive selection in
generations ≥ 1 (k1=20, k2=1, λ=0.1). The steps (docs/method.md §5.6), on the stacked set of the Q queries and
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

Two implementations. :func:`k_reciprocal_rerank` takes the three dense distance matrices (memory O(N²)
in its inputs, kept as the reference for the tests and small inputs): rows of P are built and ranked in
blocks (keeping only the top max(k1+1, k2) per row), V is a sparse matrix, and m is accumulated from the
non-zeros through an inverted index (per gallery column j, the items with V[·, j] ≠ 0).

:class:`KReciprocal` on :class:`NeighbourLists` (what vpr uses: :func:`rerank_top_k` for
``vpr evaluate --rerank``, :func:`rerank_pairs` for SFRS) needs only each item's nearest neighbours, its
row scale and the distances of a few pairs: memory O(N·k), from the descriptors by one blocked exact pass
(on the GPU when there is one), with re-ranked distances computed only for the pairs asked for.

Arithmetic is float64; results are float32 like the reference's. Ties in distance are broken by item
index, also at the k-th place of a ranking.
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


# ----------------------------------------------------------------------------------------------------------
# Neighbour-list implementation: memory O(N·k), re-ranked distances only for the pairs asked for.
#
# Everything the steps above need from the stacked matrix S is (a) each item's nearest items in ranking
# order (steps 2, 3 and 5 only look at the first max(k1+1, k2) of every row of P, and P's row scaling does
# not change a row's order), (b) each item's row scale (step 1's column maximum; S is symmetric here), and
# (c) S at the pairs (i, j) with j in R*(i) (step 4) and at the (query, gallery) pairs whose λ·P term is
# asked for (step 7). m[q, g] is non-zero only when R*(q) and R*(g) share an item, so the Jaccard term of
# every other pair is exactly 1 and needs no work.

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
    return _top_k(rows, min(L, rows.shape[1]))


def neighbour_lists_from_matrices(d_qg, d_qq, d_gg, length: int) -> NeighbourLists:
    """Neighbour lists from dense (symmetric) distance matrices: for tests and small inputs."""
    d_qg, d_qq, d_gg = (np.asarray(d, dtype=np.float64) for d in (d_qg, d_qq, d_gg))
    Q, G = d_qg.shape
    N = Q + G
    L = min(N, length)
    idx = np.empty((N, L), dtype=np.int64)
    dist = np.empty((N, L))
    row_max = np.empty(N)
    for a in range(0, N, _BLOCK_ROWS):
        b = min(N, a + _BLOCK_ROWS)
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
    L = min(N, needed + extra)
    keep = max(1, min(N, needed))
    f32 = torch.float32
    norms = torch.empty(N, dtype=f32, device=device)
    for a in range(0, N, block):
        r = _device_rows(x_q, x_g, a, min(N, a + block), device, f32)
        norms[a:a + len(r)] = (r * r).sum(1)
    best_d = torch.full((N, L), float("inf"), device=device)
    best_i = torch.full((N, L), -1, dtype=torch.int64, device=device)
    row_max = torch.zeros(N, device=device)

    def block_dist(rows, a, ca, cb):
        cols = _device_rows(x_q, x_g, ca, cb, device, f32)
        dd = rows @ cols.T
        dd *= -2.0
        dd += norms[a:a + len(rows), None]
        dd += norms[None, ca:cb]
        dd.clamp_(min=0.0)
        lo, hi = max(a, ca), min(a + len(rows), cb)
        if lo < hi:  # the diagonal is exactly 0
            r = torch.arange(lo, hi, device=device)
            dd[r - a, r - ca] = 0.0
        return dd

    def merge(a, b, dd, first_col):
        """Fold the distances dd (rows a..b-1 against columns first_col..) into those rows' lists."""
        cat_d = torch.cat([best_d[a:b], dd], 1)
        cols = torch.arange(first_col, first_col + dd.shape[1], device=device).expand(b - a, -1)
        cat_i = torch.cat([best_i[a:b], cols], 1)
        top_d, pos = torch.topk(cat_d, L, dim=1, largest=False, sorted=False)
        best_d[a:b], best_i[a:b] = top_d, torch.gather(cat_i, 1, pos)
        row_max[a:b] = torch.maximum(row_max[a:b], dd.max(1).values)

    stop = N if only_rows is None else min(N, only_rows.stop)
    for a in range(0, stop, block):
        b = min(N, a + block)
        rows = _device_rows(x_q, x_g, a, b, device, f32)
        for ca in range(a, N, block):
            cb = min(N, ca + block)
            dd = block_dist(rows, a, ca, cb)
            merge(a, b, dd, ca)
            if ca != a:
                merge(ca, cb, dd.T, a)

    done = min(N, -(-stop // block) * block)   # rows whose lists are complete
    bd, bi = best_d[:done].cpu().numpy(), best_i[:done].cpu().numpy()
    order = np.lexsort((bi, bd), axis=1)  # (distance, index)
    bd, bi = np.take_along_axis(bd, order, 1), np.take_along_axis(bi, order, 1)
    # topk breaks ties arbitrarily: where the last kept value equals a value inside the used prefix, an
    # equal item with a smaller index may have been dropped, so that row is ranked over all columns.
    redo = np.flatnonzero(bd[:, keep - 1] >= bd[:, L - 1]) if L < N else np.zeros(0, dtype=np.int64)
    for r in redo:
        row = _device_rows(x_q, x_g, int(r), int(r) + 1, device, f32)
        full = torch.cat([block_dist(row, int(r), ca, min(N, ca + block)) for ca in range(0, N, block)],
                         1).cpu().numpy()
        bi[r] = _ordered_lists(full, L)[0]
        bd[r] = full[0, bi[r]]
    idx = np.full((N, L), -1, dtype=np.int64)
    dist = np.full((N, L), np.inf)
    idx[:done], dist[:done] = bi, bd
    norms_np = norms.cpu().numpy()

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

    return NeighbourLists(idx, dist, row_max.cpu().numpy().astype(np.float64), pair, Q)


def _gather(x_q, x_g, ids: np.ndarray, device):
    import torch

    Q = len(x_q)
    ids = np.asarray(ids, dtype=np.int64)
    out = np.empty((len(ids), x_q.shape[1] if Q else x_g.shape[1]), dtype=np.float32)
    q = ids < Q
    out[q] = x_q[ids[q]]
    out[~q] = x_g[ids[~q] - Q]
    return torch.from_numpy(out).to(device)


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
        half = int(np.around(self.k1 / 2.0))
        R = _reciprocal(rank, min(self.k1, K - 1))
        Rh = _reciprocal(rank, min(half, K - 1))
        rows, cols = _expanded_sets(R, Rh)
        w = np.exp(-self._prep(lists.lookup(rows, cols)) / self.scale[rows])
        w /= np.bincount(rows, weights=w, minlength=N)[rows]
        V = sp.csr_matrix((w, (rows, cols)), shape=(N, N))
        if self.k2 != 1:
            k2 = min(self.k2, N)
            A = sp.csr_matrix((np.full(N * k2, 1.0 / k2), (np.repeat(np.arange(N), k2),
                                                            rank[:, :k2].ravel())), shape=(N, N))
            V = (A @ V).tocsr()
        V.eliminate_zeros()
        V.sort_indices()
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
            cum = np.cumsum(per_q[a:a + _OUT_ROWS])
            b = a + max(1, int(np.searchsorted(cum, _PAIR_BUDGET, side="right")))
            yield qids[a:b]
            a = b

    def pair_distances(self, q: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Re-ranked distances (float32, as the dense function returns them) for pairs (q[n], g[n])."""
        q, g = np.asarray(q, dtype=np.int64), np.asarray(g, dtype=np.int64)
        m = np.zeros(len(q))
        want = q * self.G + g
        for qids in self._blocks(np.unique(q)):
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
            order = _top_k(vals32, k)
            idx[a:b] = order
            dist[a:b] = np.take_along_axis(vals32, order, 1)
        return dist, idx


def _device(device):
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")


def reranker(x_q: np.ndarray, x_g: np.ndarray, k1: int, k2: int, lambda_value: float,
             square_input: bool = True, device=None) -> KReciprocal:
    """:class:`KReciprocal` of query and gallery descriptors (squared L2 distances, as vpr uses them)."""
    if int(k1) != k1 or k1 < 1 or int(k2) != k2 or k2 < 1:
        raise ValueError(f"k1 and k2 must be positive integers, got k1={k1}, k2={k2}")
    lists = neighbour_lists_from_descriptors(x_q, x_g, max(int(k1) + 1, int(k2)), device=_device(device))
    return KReciprocal(lists, k1, k2, lambda_value, square_input)


def rerank_top_k(x_q: np.ndarray, x_g: np.ndarray, k: int, k1: int, k2: int, lambda_value: float,
                 square_input: bool = True, device=None) -> tuple[np.ndarray, np.ndarray]:
    """The k best gallery items of every query after re-ranking over the whole gallery (as the dense
    formula followed by a sort on (float32 distance, gallery index)): (distances float32, indices int64)."""
    import torch

    dev = _device(device)
    kr = reranker(x_q, x_g, k1, k2, lambda_value, square_input, dev)

    def original_rows(a, b):
        q = torch.from_numpy(np.ascontiguousarray(x_q[a:b])).to(dev, torch.float32)
        out = np.empty((b - a, len(x_g)), dtype=np.float32)
        qn = (q * q).sum(1, keepdim=True)
        for c in range(0, len(x_g), 8192):
            g = torch.from_numpy(np.ascontiguousarray(x_g[c:c + 8192])).to(dev, torch.float32)
            d = q @ g.T
            d *= -2.0
            d += qn
            d += (g * g).sum(1)[None]
            out[:, c:c + len(g)] = d.clamp_(min=0.0).cpu().numpy()
        return out

    return kr.top_k(k, original_rows if lambda_value else None, rows_per_block=128)


def rerank_pairs(x_q: np.ndarray, x_g: np.ndarray, pairs: dict[int, np.ndarray], k1: int, k2: int,
                 lambda_value: float, square_input: bool = True, device=None) -> dict[int, np.ndarray]:
    """Re-ranked distances of query q to the gallery items ``pairs[q]`` (float32, in that order), e.g. a
    training anchor to its 10 m positives (SFRS)."""
    kr = reranker(x_q, x_g, k1, k2, lambda_value, square_input, device)
    qs = list(pairs)
    if not qs:
        return {}
    lengths = [len(pairs[q]) for q in qs]
    q = np.repeat(np.asarray(qs, dtype=np.int64), lengths)
    g = np.concatenate([np.asarray(pairs[a], dtype=np.int64) for a in qs])
    d = kr.pair_distances(q, g)
    ends = np.cumsum(lengths)
    return {a: d[e - n:e] for a, n, e in zip(qs, lengths, ends, strict=True)}
