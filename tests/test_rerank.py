"""vpr.rerank against a plain, loop-based statement of k-reciprocal re-ranking (Zhong et al. 2017)."""

import math

import numpy as np
import pytest

from vpr import rerank
from vpr.rerank import blocks, k_reciprocal_rerank
from vpr.rerank.steps import top_k_indices


def _reference(d_qg, d_qq, d_gg, k1, k2, lambda_value, square_input=True):
    """docs/method.md §5.6 step by step, with a dense stacked matrix, Python sets and loops."""
    Q, G = d_qg.shape
    N = Q + G
    S = np.zeros((N, N))
    S[:Q, :Q], S[:Q, Q:], S[Q:, :Q], S[Q:, Q:] = d_qq, d_qg, d_qg.T, d_gg
    if square_input:
        S = S**2
    # Divide each column by its maximum, then transpose: P[i, j] = S[j, i] / max_r S[r, i].
    P = np.zeros((N, N))
    for i in range(N):
        col_max = max(S[r, i] for r in range(N))
        for j in range(N):
            P[i, j] = S[j, i] / col_max
    ranking = [sorted(range(N), key=lambda j, i=i: (P[i, j], j)) for i in range(N)]

    def reciprocal(i, k):
        forward = ranking[i][:k + 1]
        return {j for j in forward if i in ranking[j][:k + 1]}

    half = round(k1 / 2)  # Python rounds half to even, like np.around
    V = np.zeros((N, N))
    for i in range(N):
        R = reciprocal(i, k1)
        expanded = set(R)
        for c in R:
            Rc = reciprocal(c, half)
            if len(Rc & R) > 2 / 3 * len(Rc):
                expanded |= Rc
        total = sum(math.exp(-P[i, j]) for j in expanded)
        for j in expanded:
            V[i, j] = math.exp(-P[i, j]) / total
    if k2 != 1:
        V_qe = np.zeros((N, N))
        for i in range(N):
            for j in range(N):
                V_qe[i, j] = sum(V[r, j] for r in ranking[i][:k2]) / k2
        V = V_qe
    out = np.zeros((Q, G))
    for q in range(Q):
        for g in range(G):
            m = sum(min(V[q, j], V[Q + g, j]) for j in range(N))
            jaccard = 1 - m / (2 - m)
            out[q, g] = (1 - lambda_value) * jaccard + lambda_value * P[q, Q + g]
    return out


def squared_l2(a, b):
    return np.clip((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0, None)


def clustered_features(q, g, d=8, seed=0):
    # Clusters of nearby descriptors make the k-reciprocal sets and their expansion non-trivial.
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, d))
    x = centers[rng.integers(0, 5, q + g)] + 0.6 * rng.normal(size=(q + g, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:q], x[q:]


@pytest.mark.parametrize("k1,k2,lambda_value,square_input", [
    (20, 1, 0.1, True),   # SFRS setting
    (25, 1, 0.0, True),   # test-time setting
    (5, 1, 0.3, True),
    (6, 3, 0.3, True),
    (4, 6, 0.0, False),
    (9, 2, 1.0, True),
    (3, 1, 0.5, False),
])
def test_matches_loop_reference(k1, k2, lambda_value, square_input):
    qf, gf = clustered_features(15, 25, seed=k1 + 7 * k2)
    d_qg, d_qq, d_gg = squared_l2(qf, gf), squared_l2(qf, qf), squared_l2(gf, gf)
    expected = _reference(d_qg, d_qq, d_gg, k1, k2, lambda_value, square_input)
    got = k_reciprocal_rerank(d_qg, d_qq, d_gg, k1=k1, k2=k2, lambda_value=lambda_value,
                              square_input=square_input)
    assert got.shape == (15, 25) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_matches_loop_reference_with_asymmetric_inputs_and_large_k():
    # Non-symmetric d_qq/d_gg exercise the column/row convention; k1+1 and k2 above N take everything.
    rng = np.random.default_rng(3)
    d_qg, d_qq, d_gg = rng.uniform(0, 4, (4, 7)), rng.uniform(0, 4, (4, 4)), rng.uniform(0, 4, (7, 7))
    for k1, k2 in ((2, 1), (30, 1), (3, 11)):
        np.testing.assert_allclose(k_reciprocal_rerank(d_qg, d_qq, d_gg, k1, k2, 0.2),
                                   _reference(d_qg, d_qq, d_gg, k1, k2, 0.2), atol=1e-6, rtol=0)


def test_small_blocks_give_the_same_result(monkeypatch):
    # Blocks that straddle nothing, end mid-way and hold a single row must not change the result.
    for name, value in (("BLOCK_ROWS", 4), ("SET_ROWS", 7), ("PAIR_BUDGET", 50), ("OUT_ROWS", 3)):
        monkeypatch.setattr(blocks, name, value)
    qf, gf = clustered_features(11, 19, seed=5)
    d_qg, d_qq, d_gg = squared_l2(qf, gf), squared_l2(qf, qf), squared_l2(gf, gf)
    for k1, k2 in ((6, 1), (5, 3)):
        np.testing.assert_allclose(k_reciprocal_rerank(d_qg, d_qq, d_gg, k1, k2, 0.3),
                                   _reference(d_qg, d_qq, d_gg, k1, k2, 0.3), atol=1e-6, rtol=0)


def test_hand_worked_two_pairs():
    # Points on a line: queries at 0 and 10, gallery at 1 and 11 (1-D squared distances, not re-squared).
    # With k1 = 1 each point's nearest other point is its partner, so R(i, 1) = {i, partner} for all four,
    # and round(1/2) = 0 gives R(c, 0) = {c} ⊂ R(i, 1): the expansion adds nothing.
    # Within a pair P[i, partner] = 1/max = 1/121 (q0, g11: max 121) or 1/100 (q10, g1: max 100), so V
    # gives weights 1/(1+e^{-p}) to self and e^{-p}/(1+e^{-p}) to the partner. Different pairs share no
    # item: m = 0, J = 1. Same pair: m = min(V[q, q], V[g, q]) + min(V[q, g], V[g, g]).
    pos_q, pos_g = np.array([0.0, 10.0]), np.array([1.0, 11.0])
    d = lambda a, b: (a[:, None] - b[None, :]) ** 2  # noqa: E731
    got = k_reciprocal_rerank(d(pos_q, pos_g), d(pos_q, pos_q), d(pos_g, pos_g), k1=1, k2=1,
                              lambda_value=0.0, square_input=False)
    p_q0, p_g1 = 1 / 121, 1 / 100   # P[q0, g1] (max of q0's column 121) and P[g1, q0] (max 100)
    m = min(1 / (1 + math.exp(-p_q0)), math.exp(-p_g1) / (1 + math.exp(-p_g1))) \
        + min(math.exp(-p_q0) / (1 + math.exp(-p_q0)), 1 / (1 + math.exp(-p_g1)))
    # m ≈ 0.4975 + 0.4975 ≈ 0.995 -> J ≈ 1 − 0.995/1.005 ≈ 0.01
    assert got[0, 0] == pytest.approx(1 - m / (2 - m), abs=1e-6)
    assert got[0, 1] == pytest.approx(1.0) and got[1, 0] == pytest.approx(1.0)
    assert got[0, 0] < 0.011


def test_errors():
    d_qg, d_qq, d_gg = np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"d_gg \(3, 3\) \(expected \(4, 4\)\)"):
        k_reciprocal_rerank(np.zeros((2, 4)), d_qq, d_gg)
    with pytest.raises(ValueError, match="k1 and k2 must be positive integers"):
        k_reciprocal_rerank(d_qg, d_qq, d_gg, k1=0)
    with pytest.raises(ValueError, match=r"lambda_value must be in \[0, 1\]"):
        k_reciprocal_rerank(d_qg, d_qq, d_gg, lambda_value=1.5)


# ---------------------------------------------------------------- neighbour-list implementation (O(N·k))

def _dense_top_k(d, k):
    """Sort each row of a dense result by (value, column) and keep k: the tie rule of the sparse path."""
    cols = np.broadcast_to(np.arange(d.shape[1]), d.shape)
    order = np.lexsort((cols, d), axis=1)[:, :k]
    return np.take_along_axis(d, order, 1), order


def _all_pairs(kr, Q, G):
    q, g = np.meshgrid(np.arange(Q), np.arange(G), indexing="ij")
    return kr.pair_distances(q.ravel(), g.ravel()).reshape(Q, G)


@pytest.mark.parametrize("k1,k2,lambda_value,square_input", [
    (20, 1, 0.1, True), (25, 1, 0.0, True), (6, 3, 0.3, True), (4, 6, 0.0, False), (3, 1, 0.5, False),
])
def test_neighbour_lists_equal_the_dense_function(k1, k2, lambda_value, square_input):
    qf, gf = clustered_features(15, 25, seed=k1 + 7 * k2)
    d_qg, d_qq, d_gg = squared_l2(qf, gf), squared_l2(qf, qf), squared_l2(gf, gf)
    dense = k_reciprocal_rerank(d_qg, d_qq, d_gg, k1, k2, lambda_value, square_input)
    lists = rerank.neighbour_lists_from_matrices(d_qg, d_qq, d_gg, max(k1 + 1, k2))
    kr = rerank.KReciprocal(lists, k1, k2, lambda_value, square_input)
    np.testing.assert_allclose(_all_pairs(kr, 15, 25), dense, atol=1e-6, rtol=0)
    dist, idx = kr.top_k(12, lambda a, b: d_qg[a:b], rows_per_block=4)
    want_d, want_i = _dense_top_k(dense, 12)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(dist, want_d, atol=1e-6, rtol=0)


@pytest.mark.parametrize("k1,k2,lambda_value", [(20, 1, 0.1), (25, 1, 0.0), (5, 3, 0.3)])
def test_descriptor_path_equals_the_dense_function(monkeypatch, k1, k2, lambda_value):
    # Tiny blocks: row and column blocks straddle the query/gallery boundary and end mid-way.
    monkeypatch.setattr(blocks, "PAIR_BUDGET", 40)
    monkeypatch.setattr(blocks, "OUT_ROWS", 3)
    qf, gf = clustered_features(13, 29, d=16, seed=k1)
    qf, gf = qf.astype(np.float32), gf.astype(np.float32)
    x64 = lambda a: a.astype(np.float64)  # noqa: E731
    d_qg, d_qq, d_gg = (squared_l2(x64(a), x64(b)) for a, b in ((qf, gf), (qf, qf), (gf, gf)))
    dense = k_reciprocal_rerank(d_qg, d_qq, d_gg, k1, k2, lambda_value)
    lists = rerank.neighbour_lists_from_descriptors(qf, gf, max(k1 + 1, k2), block=6)
    assert lists.idx.shape == (42, min(42, max(k1 + 1, k2) + 8))
    kr = rerank.KReciprocal(lists, k1, k2, lambda_value)
    np.testing.assert_allclose(_all_pairs(kr, 13, 29), dense, atol=1e-6, rtol=0)
    dist, idx = rerank.rerank_top_k(qf, gf, 10, k1, k2, lambda_value)
    want_d, want_i = _dense_top_k(dense, 10)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(dist, want_d, atol=1e-6, rtol=0)
    pairs = {3: np.array([7, 0, 28]), 11: np.array([5])}
    got = rerank.rerank_pairs(qf, gf, pairs, k1, k2, lambda_value)
    for q, gs in pairs.items():
        np.testing.assert_allclose(got[q], dense[q, gs], atol=1e-6, rtol=0)


def _tied_points():
    # Integer grid points (exact in float32 and float64): duplicates, and many equal distances.
    rng = np.random.default_rng(11)
    pts = rng.integers(0, 3, size=(30, 3)).astype(np.float32)
    pts[5] = pts[17] = pts[2]           # three identical items across queries and gallery
    return pts[:10], pts[10:]


@pytest.mark.parametrize("k1,k2,lambda_value,square_input", [
    (4, 1, 0.0, True), (6, 1, 0.3, True), (3, 2, 0.2, False), (8, 4, 0.1, True),
])
def test_ties_are_ranked_by_index_like_the_loop_reference(k1, k2, lambda_value, square_input):
    qf, gf = _tied_points()
    x64 = lambda a: a.astype(np.float64)  # noqa: E731
    d_qg, d_qq, d_gg = (squared_l2(x64(a), x64(b)) for a, b in ((qf, gf), (qf, qf), (gf, gf)))
    expected = _reference(d_qg, d_qq, d_gg, k1, k2, lambda_value, square_input)
    dense = k_reciprocal_rerank(d_qg, d_qq, d_gg, k1, k2, lambda_value, square_input)
    np.testing.assert_allclose(dense, expected, atol=1e-6, rtol=0)
    # Tiny blocks and a short list: the ties at the list's end force the exact whole-row pass.
    lists = rerank.neighbour_lists_from_descriptors(qf, gf, max(k1 + 1, k2), extra=1, block=4)
    kr = rerank.KReciprocal(lists, k1, k2, lambda_value, square_input)
    got = _all_pairs(kr, 10, 20)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    dist, idx = kr.top_k(20, lambda a, b: d_qg[a:b])
    np.testing.assert_array_equal(idx, _dense_top_k(expected.astype(np.float32), 20)[1])


def test_exact_top_k_keeps_the_smallest_index_among_ties_at_the_cut():
    rows = np.array([[3.0, 1.0, 1.0, 1.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]])
    np.testing.assert_array_equal(top_k_indices(rows, 3), [[4, 1, 2], [0, 1, 2]])


def test_neighbour_path_errors():
    qf, gf = clustered_features(3, 4)
    with pytest.raises(ValueError, match="k1 and k2 must be positive integers"):
        rerank.rerank_top_k(qf, gf, 2, 0, 1, 0.0)
    lists = rerank.neighbour_lists_from_descriptors(qf, gf, 3, extra=0)
    with pytest.raises(ValueError, match="neighbour lists hold 3 items, re-ranking needs 6"):
        rerank.KReciprocal(lists, 5, 1, 0.0)


def test_a_partial_pass_gives_the_leading_rows_their_whole_lists():
    qf, gf = clustered_features(9, 30, d=12, seed=4)
    full = rerank.neighbour_lists_from_descriptors(qf, gf, 6, block=5)
    part = rerank.neighbour_lists_from_descriptors(qf, gf, 6, block=5, only_rows=range(12))
    np.testing.assert_array_equal(part.idx[:15], full.idx[:15])   # whole blocks: rows 0..14
    np.testing.assert_array_equal(part.row_max[:15], full.row_max[:15])
    assert (part.idx[15:] == -1).all()
    # Every list is the exact nearest items (brute force, ties by index).
    x = np.concatenate([qf, gf]).astype(np.float64)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    want = np.array([sorted(range(39), key=lambda j, i=i: (d[i, j], j))[:6] for i in range(39)])
    np.testing.assert_array_equal(full.idx[:, :6], want)
