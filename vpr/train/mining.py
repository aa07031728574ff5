"""Hard-negative mining and SFRS positive selection (docs/method.md §4.2, §4.3).

Every rank runs the mining for the whole chunk with the same seeded generator and the same gathered
features, so every rank holds the same tuples and the same negative cache: the cache is global (one entry
per anchor), and the tuples of a step do not depend on how many processes share them.

The reference argsorts the whole database for every query and then walks that ranking. Here only the
distances that the rules look at decide (the anchor's 10 m positives and its negative pool): the chosen
positive and negatives are the same.

The rules compare float64 distances of the difference form Σ(x − y)² (:func:`exact_sq_distances`); ties
go to the smaller database id. :class:`Miner` gets there in two passes so that the per-anchor float64
work stays small: a block of anchors against the whole database by matrix products (float64, on the
model's device, database in column blocks), then, per anchor, the difference form only for the pool items
within a proven error bound of the ``neg_num``-th smallest block distance (:func:`_gemm_error_bound`).
Every item the difference form would choose is inside that set, so the tuples are those of the
one-anchor-at-a-time rules (:func:`hardest_negatives`), exact ties included. On a CPU with a database
above 30 × the pool, products against the whole database cost more than the per-anchor rules on the pool
(O(database) against O(pool) per anchor), so the CPU uses those rules there; on a GPU the products win.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vpr.errors import VprError
from vpr.progress import progress


@dataclass(frozen=True)
class Tuple:
    """One training tuple, as indices: a training query and database images of the training split."""

    anchor: int
    positive: int
    negatives: tuple[int, ...]
    difficult_positives: tuple[int, ...] = ()   # SFRS only


def exact_sq_distances(x: np.ndarray, ys: np.ndarray, rows: int = 128) -> np.ndarray:
    """‖x − y‖² for every row y of ``ys`` in the difference form, float64 (the mining rules' distance; not
    ``vpr.evaluate.squared_distances``, a dense float32 matrix). ``rows`` rows are converted at a time:
    each row's sum is the same whatever the chunking, the float64 copy stays small."""
    x64 = x.astype(np.float64)
    out = np.empty(len(ys))
    for a in range(0, len(ys), rows):
        diff = ys[a:a + rows].astype(np.float64) - x64
        out[a:a + rows] = np.einsum("ij,ij->i", diff, diff)
    return out


def order_by(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Indices that sort ``values`` ascending, ties broken by the smaller id (a stable, world-free order)."""
    return np.lexsort((ids, values))


def nearest_positive(q_feat: np.ndarray, db_feats: np.ndarray, positives: np.ndarray) -> int:
    """The 10 m positive nearest to the anchor in feature space (NetVLAD's 'best potential positive')."""
    d = exact_sq_distances(q_feat, db_feats[positives])
    return int(positives[order_by(d, positives)[0]])


def hardest_negatives(
    q_feat: np.ndarray,
    db_feats: np.ndarray,
    non_negatives: np.ndarray,
    cached: np.ndarray,
    rng: np.random.Generator,
    neg_pool: int,
    neg_num: int,
) -> np.ndarray:
    """The ``neg_num`` nearest of (``neg_pool`` random true negatives ∪ the anchor's cached negatives).

    True negatives are all database images outside the 25 m non-negative set.
    """
    candidates = np.setdiff1d(np.arange(len(db_feats)), non_negatives, assume_unique=False)
    if len(candidates) < neg_num:
        raise VprError(f"only {len(candidates)} database images are true negatives for a training query, "
                       f"fewer than neg_num={neg_num}; lower neg_num or use a larger training split")
    pool = rng.choice(candidates, size=min(neg_pool, len(candidates)), replace=False)
    pool = np.union1d(pool, cached)
    d = exact_sq_distances(q_feat, db_feats[pool])
    return pool[order_by(d, pool)[:neg_num]]


def difficult_positives(
    positives: np.ndarray,
    euclid: np.ndarray,
    jaccard: np.ndarray,
    pos_pool: int,
    pos_num: int,
) -> np.ndarray:
    """SFRS difficult positives (docs/method.md §4.3).

    ``euclid`` and ``jaccard`` are the anchor's distances to each entry of ``positives``. Take the
    ``pos_pool`` Euclidean-nearest positives; a positive's gap is its rank under ``jaccard`` minus its rank
    under ``euclid``. Keep those that moved up (gap < 0, largest improvement first), then those that kept
    their rank (gap = 0, in re-ranked order); at most ``pos_num``.
    """
    e_order = order_by(euclid, positives)[:pos_pool]
    pool = positives[e_order]
    j_order = np.lexsort((np.arange(len(pool)), jaccard[e_order]))   # ties keep the Euclidean order
    j_rank = np.empty(len(pool), dtype=np.int64)
    j_rank[j_order] = np.arange(len(pool))
    gap = j_rank - np.arange(len(pool))
    improved = np.flatnonzero(gap < 0)
    improved = improved[np.lexsort((j_rank[improved], gap[improved]))]
    same = np.flatnonzero(gap == 0)
    same = same[np.argsort(j_rank[same], kind="stable")]
    return pool[np.concatenate([improved, same])[:pos_num]]


def _gemm_error_bound(dim: int, sq_norm_x: float, sq_norm_max: float) -> float:
    """Twice the largest possible difference between the float64 product form ‖x‖² + ‖y‖² − 2x·y and the
    float64 difference form Σ(x − y)² of the same float32/float16 vectors, for any y with ‖y‖² ≤
    ``sq_norm_max``. Each form is within (γ_(d+2) + 3u)·(‖x‖² + ‖y‖² + 2‖x‖‖y‖) of the true value (u the
    float64 unit roundoff, γ_n = nu/(1 − nu), any summation order, FMA or not: products of float32 values
    are exact in float64, sums and the subtraction x − y round); the factor 2 covers the selection
    argument in :meth:`Miner._negatives` (both the threshold and the item may be off by the bound)."""
    u = 2.0 ** -53
    gamma = (dim + 2) * u / (1 - (dim + 2) * u)
    scale = sq_norm_x + sq_norm_max + 2.0 * math.sqrt(sq_norm_x * sq_norm_max)
    return 4.0 * (gamma + 3 * u) * scale * 1.01   # 1 % for the rounding of this bound itself


def block_sq_distances(x: np.ndarray, db: np.ndarray, db_sq_norms, device, col_block: int) -> np.ndarray:
    """(len(x), len(db)) float64 squared distances in the product form, computed on ``device`` with the
    database converted to float64 one column block at a time (``db_sq_norms``: its float64 ‖y‖², a tensor
    on ``device``)."""
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=torch.float64)
    out = torch.empty((len(x), len(db)), dtype=torch.float64, device=device)
    for c in range(0, len(db), col_block):
        cols = torch.from_numpy(np.ascontiguousarray(db[c:c + col_block])).to(device=device,
                                                                              dtype=torch.float64)
        block = out[:, c:c + len(cols)]
        block.copy_(xt @ cols.T)
        block.mul_(-2.0).add_((xt * xt).sum(1, keepdim=True)).add_(db_sq_norms[c:c + len(cols)][None])
    return out.cpu().numpy()


class Miner:
    """Builds the tuples of one chunk of anchors and keeps the global negative cache."""

    def __init__(self, train_positives: list[np.ndarray], train_nonnegatives: list[np.ndarray],
                 neg_num: int, neg_pool: int, pos_num: int = 10, pos_pool: int = 20,
                 device=None, anchor_block: int = 128, col_block: int | None = None):
        self.train_positives = train_positives
        self.train_nonnegatives = train_nonnegatives
        self.neg_num, self.neg_pool = neg_num, neg_pool
        self.pos_num, self.pos_pool = pos_num, pos_pool
        self.device = device
        self.anchor_block, self.col_block = anchor_block, col_block
        # On a CPU the products against the whole database cost O(database) per anchor and the per-anchor
        # rules O(pool): above this database size (measured crossover on a 2-core AVX-512 CPU: between
        # 10,000 and 91,464 images with a pool of 1,000) the per-anchor rules are faster.
        self.cpu_products_max_db = 30 * neg_pool
        self.cache: dict[int, np.ndarray] = {}

    def _negatives(self, q_feat: np.ndarray, db_feats: np.ndarray, d_row: np.ndarray, sq_norm_max: float,
                   non_negatives: np.ndarray, cached: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """:func:`hardest_negatives` (same random draws, same result) from the product-form row ``d_row``.

        Let t be the n-th smallest product-form distance in the pool and e the bound of
        :func:`_gemm_error_bound` (halved: one form's error against the other). An item chosen by the
        difference form has difference-form distance ≤ its n-th smallest value ≤ t + e/2, so product form
        ≤ t + e: re-scoring only the pool items up to t + e with the difference form gives the same choice.
        """
        n_db = len(db_feats)
        keep = np.ones(n_db, dtype=bool)
        keep[non_negatives] = False
        candidates = np.flatnonzero(keep)  # = setdiff1d(arange(n_db), non_negatives)
        if len(candidates) < self.neg_num:
            raise VprError(f"only {len(candidates)} database images are true negatives for a training query, "
                           f"fewer than neg_num={self.neg_num}; lower neg_num or use a larger training split")
        pool = rng.choice(candidates, size=min(self.neg_pool, len(candidates)), replace=False)
        pool = np.union1d(pool, cached)
        d = d_row[pool]
        n = min(self.neg_num, len(pool))
        t = np.partition(d, n - 1)[n - 1]
        q64 = np.asarray(q_feat, dtype=np.float64)
        near = pool[d <= t + _gemm_error_bound(q_feat.shape[0], float(q64 @ q64), sq_norm_max)]
        exact = exact_sq_distances(q_feat, db_feats[near])
        return near[order_by(exact, near)[:self.neg_num]]

    def mine(
        self,
        anchors: list[int],
        q_feats: np.ndarray,
        db_feats: np.ndarray,
        rng: np.random.Generator,
        jaccard_rows: dict[int, np.ndarray] | None = None,
        sfrs: bool = False,
        desc: str | None = None,
    ) -> list[Tuple]:
        """Tuples for ``anchors`` (in that order), updating the negative cache.

        ``desc``: the label of the progress display (``vpr.progress``); None: silent.

        ``jaccard_rows[a]`` holds anchor a's re-ranked distances to its 10 m positives, in the order of
        ``train_positives[a]`` (SFRS generation ≥ 1); without it the Euclidean distances stand in
        (generation 0). Features may be float32 or float16.
        """
        from vpr.distributed import compute_device

        device = compute_device(self.device)
        with progress(total=len(anchors), desc=desc or "", unit="query", disable=desc is None) as bar:
            if device.type == "cpu" and len(db_feats) > self.cpu_products_max_db:
                return self._mine_per_anchor(anchors, q_feats, db_feats, rng, jaccard_rows, sfrs, bar)
            return self._mine_in_blocks(anchors, q_feats, db_feats, rng, jaccard_rows, sfrs, bar, device)

    def _mine_in_blocks(self, anchors, q_feats, db_feats, rng, jaccard_rows, sfrs, bar,
                        device) -> list[Tuple]:
        """The same tuples, a block of anchors at a time (one product with the whole database each)."""
        import torch

        # database rows converted to float64 at a time: 64 MiB (512 rows of 32,768-d)
        col_block = self.col_block or max(64, (1 << 26) // (8 * max(1, db_feats.shape[1])))
        norms = np.empty(len(db_feats))
        for c in range(0, len(db_feats), col_block):
            block = np.asarray(db_feats[c:c + col_block], dtype=np.float64)
            norms[c:c + len(block)] = np.einsum("ij,ij->i", block, block)
        norms_t = torch.from_numpy(norms).to(device)
        sq_norm_max = float(norms.max()) if len(norms) else 0.0
        tuples = []
        for s in range(0, len(anchors), self.anchor_block):
            block = list(anchors[s:s + self.anchor_block])
            d_rows = block_sq_distances(q_feats[block], db_feats, norms_t, device, col_block)
            for r, a in enumerate(block):
                positives = self.train_positives[a]
                euclid = exact_sq_distances(q_feats[a], db_feats[positives])
                positive = int(positives[order_by(euclid, positives)[0]])
                negatives = self._negatives(q_feats[a], db_feats, d_rows[r], sq_norm_max,
                                            self.train_nonnegatives[a],
                                            self.cache.get(a, np.zeros(0, dtype=np.int64)), rng)
                self.cache[a] = negatives
                hard_pos = self._sfrs_positives(a, positives, euclid, jaccard_rows) if sfrs else ()
                tuples.append(Tuple(int(a), positive, tuple(int(i) for i in negatives), hard_pos))
            bar.update(len(block))
        return tuples

    def _mine_per_anchor(self, anchors, q_feats, db_feats, rng, jaccard_rows, sfrs, bar) -> list[Tuple]:
        """The same tuples, one anchor at a time (difference form on the anchor's pool only)."""
        tuples = []
        for a in anchors:
            positives = self.train_positives[a]
            euclid = exact_sq_distances(q_feats[a], db_feats[positives])
            positive = int(positives[order_by(euclid, positives)[0]])
            negatives = hardest_negatives(q_feats[a], db_feats, self.train_nonnegatives[a],
                                          self.cache.get(a, np.zeros(0, dtype=np.int64)), rng,
                                          self.neg_pool, self.neg_num)
            self.cache[a] = negatives
            tuples.append(Tuple(int(a), positive, tuple(int(i) for i in negatives),
                                self._sfrs_positives(a, positives, euclid, jaccard_rows) if sfrs else ()))
            bar.update(1)
        return tuples

    def _sfrs_positives(self, a, positives, euclid, jaccard_rows) -> tuple[int, ...]:
        jac = np.asarray(jaccard_rows[a]) if jaccard_rows is not None else euclid
        if len(jac) != len(positives):
            raise ValueError(f"jaccard_rows[{a}] has {len(jac)} entries for {len(positives)} positives")
        return tuple(int(i) for i in difficult_positives(positives, euclid, jac, self.pos_pool, self.pos_num))

    def state_dict(self) -> dict:
        return {int(k): v.tolist() for k, v in self.cache.items()}

    def load_state_dict(self, state: dict) -> None:
        self.cache = {int(k): np.asarray(v, dtype=np.int64) for k, v in state.items()}
