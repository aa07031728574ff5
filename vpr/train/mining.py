"""Hard-negative mining and SFRS positive selection (METHOD.md §4.2, §4.3; DECISIONS.md "Training").

Every rank runs the mining for the whole chunk with the same seeded generator and the same gathered
features, so every rank holds the same tuples and the same negative cache: the cache is global (one entry
per anchor), and the tuples of a step do not depend on how many processes share them.

The reference argsorts the whole database for every query and then walks that ranking. Here only the
distances that the rules look at are computed (the anchor's 10 m positives and its negative pool): the
chosen positive and negatives are the same, at O(pool) instead of O(database) per anchor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vpr.errors import VprError


@dataclass(frozen=True)
class Tuple:
    """One training tuple, as indices: a training query and database images of the training split."""

    anchor: int
    positive: int
    negatives: tuple[int, ...]
    difficult_positives: tuple[int, ...] = ()   # SFRS only


def squared_distances(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """‖x − y‖² for every row y of ``ys``, in float64 so ties are rare and reproducible."""
    diff = ys.astype(np.float64) - x.astype(np.float64)
    return np.einsum("ij,ij->i", diff, diff)


def order_by(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Indices that sort ``values`` ascending, ties broken by the smaller id (a stable, world-free order)."""
    return np.lexsort((ids, values))


def nearest_positive(q_feat: np.ndarray, db_feats: np.ndarray, positives: np.ndarray) -> int:
    """The 10 m positive nearest to the anchor in feature space (NetVLAD's 'best potential positive')."""
    d = squared_distances(q_feat, db_feats[positives])
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
    d = squared_distances(q_feat, db_feats[pool])
    return pool[order_by(d, pool)[:neg_num]]


def difficult_positives(
    positives: np.ndarray,
    euclid: np.ndarray,
    jaccard: np.ndarray,
    pos_pool: int,
    pos_num: int,
) -> np.ndarray:
    """SFRS difficult positives (METHOD.md §4.3).

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


class Miner:
    """Builds the tuples of one chunk of anchors and keeps the global negative cache."""

    def __init__(self, train_positives: list[np.ndarray], train_nonnegatives: list[np.ndarray],
                 neg_num: int, neg_pool: int, pos_num: int = 10, pos_pool: int = 20):
        self.train_positives = train_positives
        self.train_nonnegatives = train_nonnegatives
        self.neg_num, self.neg_pool = neg_num, neg_pool
        self.pos_num, self.pos_pool = pos_num, pos_pool
        self.cache: dict[int, np.ndarray] = {}

    def mine(
        self,
        anchors: list[int],
        q_feats: np.ndarray,
        db_feats: np.ndarray,
        rng: np.random.Generator,
        jaccard_rows: dict[int, np.ndarray] | None = None,
        sfrs: bool = False,
    ) -> list[Tuple]:
        """Tuples for ``anchors`` (in that order), updating the negative cache.

        ``jaccard_rows[a]`` is anchor a's re-ranked distance to every training database image (SFRS
        generation ≥ 1); without it the Euclidean distances stand in (generation 0).
        """
        tuples = []
        for a in anchors:
            positives = self.train_positives[a]
            positive = nearest_positive(q_feats[a], db_feats, positives)
            negatives = hardest_negatives(q_feats[a], db_feats, self.train_nonnegatives[a],
                                          self.cache.get(a, np.zeros(0, dtype=np.int64)), rng,
                                          self.neg_pool, self.neg_num)
            self.cache[a] = negatives
            hard_pos: tuple[int, ...] = ()
            if sfrs:
                euclid = squared_distances(q_feats[a], db_feats[positives])
                jac = jaccard_rows[a][positives] if jaccard_rows is not None else euclid
                hard_pos = tuple(int(i) for i in difficult_positives(positives, euclid, jac,
                                                                     self.pos_pool, self.pos_num))
            tuples.append(Tuple(int(a), positive, tuple(int(i) for i in negatives), hard_pos))
        return tuples

    def state_dict(self) -> dict:
        return {int(k): v.tolist() for k, v in self.cache.items()}

    def load_state_dict(self, state: dict) -> None:
        self.cache = {int(k): np.asarray(v, dtype=np.int64) for k, v in state.items()}
