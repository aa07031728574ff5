"""Hard-negative mining and SFRS positive selection on hand-made feature sets (docs/method.md §4.2, §4.3)."""

import numpy as np
import pytest

from vpr.train.mining import Miner, _gemm_error_bound, difficult_positives


def brute_force_nearest(x, feats, ids):
    best, best_d = None, None
    for i in ids:
        d = sum((float(a) - float(b)) ** 2 for a, b in zip(x, feats[i], strict=True))
        if best_d is None or d < best_d:
            best, best_d = i, d
    return best


def toy_split():
    rng = np.random.default_rng(3)
    db_feats = rng.normal(size=(30, 4)).astype(np.float32)
    q_feats = rng.normal(size=(3, 4)).astype(np.float32)
    # Geography: positives within 10 m and non-negatives within 25 m, written down by hand.
    positives = [np.array([0, 1, 2]), np.array([5, 6]), np.array([10])]
    nonnegatives = [np.array([0, 1, 2, 3, 4]), np.array([5, 6, 7]), np.array([9, 10, 11, 12])]
    return q_feats, db_feats, positives, nonnegatives


def test_positive_is_the_nearest_in_feature_space_and_negatives_the_hardest_true_negatives():
    q_feats, db_feats, positives, nonneg = toy_split()
    miner = Miner(positives, nonneg, neg_num=4, neg_pool=1000)
    tuples = miner.mine([0, 1, 2], q_feats, db_feats, np.random.default_rng(0))
    for t in tuples:
        a = t.anchor
        assert t.positive == brute_force_nearest(q_feats[a], db_feats, positives[a])
        true_negatives = [j for j in range(30) if j not in set(nonneg[a].tolist())]
        # The pool (1000) holds every true negative, so the choice is the 4 nearest of them, in order.
        expected = []
        remaining = list(true_negatives)
        for _ in range(4):
            j = brute_force_nearest(q_feats[a], db_feats, remaining)
            expected.append(j)
            remaining.remove(j)
        assert list(t.negatives) == expected
        assert not set(t.negatives) & set(nonneg[a].tolist())        # never within 25 m
        assert miner.cache[a].tolist() == expected                      # the cache holds the new choice


def test_cached_negatives_stay_in_the_pool():
    q_feats, db_feats, positives, nonneg = toy_split()
    miner = Miner(positives, nonneg, neg_num=3, neg_pool=1000)
    first = miner.mine([0], q_feats, db_feats, np.random.default_rng(0))[0]
    # A pool of 1 random negative plus the cache: the cached 3 are the hardest overall, so they win again.
    small = Miner(positives, nonneg, neg_num=3, neg_pool=1)
    small.cache = {0: np.array(first.negatives)}
    for seed in range(5):
        again = small.mine([0], q_feats, db_feats, np.random.default_rng(seed))[0]
        assert again.negatives == first.negatives
    # Without the cache a pool of 1 cannot find the three hardest.
    picks = {Miner(positives, nonneg, neg_num=1, neg_pool=1).mine([0], q_feats, db_feats,
                                                                 np.random.default_rng(s))[0].negatives
             for s in range(20)}
    assert len(picks) > 1


def test_mining_is_the_same_for_the_same_generator():
    q_feats, db_feats, positives, nonneg = toy_split()
    a = Miner(positives, nonneg, neg_num=2, neg_pool=5).mine([0, 1, 2], q_feats, db_feats,
                                                               np.random.default_rng(7))
    b = Miner(positives, nonneg, neg_num=2, neg_pool=5).mine([0, 1, 2], q_feats, db_feats,
                                                               np.random.default_rng(7))
    assert a == b


def test_difficult_positives_hand_worked():
    positives = np.array([10, 11, 12, 13, 14])
    euclid = np.array([1.0, 2.0, 3.0, 4.0, 5.0])      # Euclidean ranks 0..4 in this order
    jaccard = np.array([5.0, 1.0, 3.0, 0.5, 9.0])     # re-ranked order: 13, 11, 12, 10, 14
    # gaps (re-ranked minus Euclidean rank): 10: +3, 11: 0, 12: 0, 13: -3, 14: 0
    # -> improved first (13), then unchanged in re-ranked order (11, 12, 14); 10 got worse and is dropped.
    def select(pool, num):
        return difficult_positives(positives, euclid, jaccard, pos_pool=pool, pos_num=num).tolist()

    assert select(20, 10) == [13, 11, 12, 14]
    assert select(20, 2) == [13, 11]
    # Only the 3 Euclidean-nearest (10, 11, 12) count: re-ranked 11, 12, 10; gaps 10: +2, 11: -1, 12: -1.
    assert select(3, 10) == [11, 12]


def test_generation_zero_takes_the_euclidean_nearest_positives():
    positives = np.array([7, 3, 9, 1])
    euclid = np.array([0.4, 0.1, 0.3, 0.2])
    assert difficult_positives(positives, euclid, euclid, pos_pool=20, pos_num=3).tolist() == [3, 1, 9]


def test_sfrs_tuples_carry_difficult_positives():
    q_feats, db_feats, positives, nonneg = toy_split()
    miner = Miner(positives, nonneg, neg_num=2, neg_pool=1000, pos_num=2, pos_pool=20)
    t = miner.mine([0], q_feats, db_feats, np.random.default_rng(0), sfrs=True)[0]
    d = {i: float(((q_feats[0] - db_feats[i]) ** 2).sum()) for i in positives[0]}
    assert list(t.difficult_positives) == sorted(d, key=d.get)[:2]
    # Re-ranked distances, one per positive in train_positives order: 2 moved up past 0 and 1.
    t = Miner(positives, nonneg, neg_num=2, neg_pool=1000, pos_num=3, pos_pool=20).mine(
        [0], q_feats, db_feats, np.random.default_rng(0), {0: np.array([0.5, 0.4, 0.1])}, sfrs=True)[0]
    order = sorted(d, key=d.get)
    assert t.difficult_positives[0] == 2 and set(t.difficult_positives) <= set(order)
    with pytest.raises(ValueError, match=r"jaccard_rows\[0\] has 1 entries for 3 positives"):
        miner.mine([0], q_feats, db_feats, np.random.default_rng(0), {0: np.array([0.5])}, sfrs=True)


# ------------------------------------------------ block mining against the one-anchor-at-a-time rules

def old_rules(anchors, q_feats, db_feats, positives, nonneg, cache, rng, neg_num, neg_pool):
    """The rules written out per anchor: float64 difference-form distances, ties to the smaller id."""
    out = []
    for a in anchors:
        x = q_feats[a].astype(np.float64)
        dist = lambda ids, x=x: ((db_feats[ids].astype(np.float64) - x) ** 2).sum(1)  # noqa: E731
        pos = positives[a]
        positive = int(pos[np.lexsort((pos, dist(pos)))[0]])
        candidates = np.setdiff1d(np.arange(len(db_feats)), nonneg[a])
        pool = rng.choice(candidates, size=min(neg_pool, len(candidates)), replace=False)
        pool = np.union1d(pool, cache.get(a, np.zeros(0, dtype=np.int64)))
        negatives = pool[np.lexsort((pool, dist(pool)))[:neg_num]]
        cache[a] = negatives
        out.append((a, positive, tuple(int(i) for i in negatives)))
    return out


def near_tie_split(dtype, seed=0, n_db=300, dim=96):
    rng = np.random.default_rng(seed)
    db = rng.normal(size=(n_db, dim)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[rng.integers(0, n_db, 12)] + 0.3 * rng.normal(size=(12, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    # Exact ties: duplicated rows. Near-ties: rows one float32 ulp apart in a single coordinate, and rows
    # mirrored through the anchor (x - (y - x)), equal distance in exact arithmetic.
    db[100:140] = db[40:80]
    db[140:180] = np.nextafter(db[40:80], np.float32(2), dtype=np.float32)
    db[180:190] = 2 * q[:10] - db[190:200]
    db, q = db.astype(dtype), q.astype(dtype)
    positives = [np.sort(rng.choice(n_db, size=rng.integers(1, 8), replace=False)) for _ in range(12)]
    nonneg = [np.union1d(p, rng.choice(n_db, size=10, replace=False)) for p in positives]
    return q, db, positives, nonneg


@pytest.mark.parametrize("dtype,neg_pool,blocks,per_anchor", [
    (np.float32, 1000, (5, 7), False), (np.float32, 60, (256, 2048), False),
    (np.float16, 150, (3, 64), False),
    (np.float32, 1000, (5, 7), True),
])
def test_block_mining_chooses_what_the_per_anchor_rules_choose(dtype, neg_pool, blocks, per_anchor):
    q, db, positives, nonneg = near_tie_split(dtype)
    anchors = [3, 0, 11, 5, 7, 1, 2, 4, 6, 8, 9, 10]
    miner = Miner(positives, nonneg, neg_num=10, neg_pool=neg_pool, anchor_block=blocks[0],
                  col_block=blocks[1], device="cpu")
    if per_anchor:  # the CPU path for databases too large for the products
        miner.cpu_products_max_db = 0
    cache: dict = {}
    for epoch in range(3):  # the cache carries over
        got = miner.mine(anchors, q, db, np.random.default_rng(epoch))
        want = old_rules(anchors, q, db, positives, nonneg, cache, np.random.default_rng(epoch), 10, neg_pool)
        assert [(t.anchor, t.positive, t.negatives) for t in got] == want
    # The duplicated rows really are in play: some anchor's choice holds a tie pair.
    chosen = {i for t in got for i in t.negatives}
    assert any(i in chosen and i + 60 in chosen for i in range(40, 80)) or neg_pool < 1000


def test_gemm_error_bound_covers_the_two_forms():
    rng = np.random.default_rng(2)
    for dim in (8, 4096):
        x = rng.normal(size=dim).astype(np.float32)
        ys = (x + rng.normal(size=(200, dim)) * rng.uniform(1e-4, 2, (200, 1))).astype(np.float32)
        x64, y64 = x.astype(np.float64), ys.astype(np.float64)
        diff_form = ((y64 - x64) ** 2).sum(1)
        prod_form = x64 @ x64 + (y64 * y64).sum(1) - 2 * y64 @ x64
        bound = _gemm_error_bound(dim, float(x64 @ x64), float((y64 * y64).sum(1).max()))
        assert np.abs(diff_form - prod_form).max() <= bound / 2
        assert bound < 1e-9 * (1 + float(x64 @ x64))   # tight enough to leave the re-scored set small
