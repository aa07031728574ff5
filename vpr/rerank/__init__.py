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

Two implementations. :func:`k_reciprocal_rerank` (``dense``) takes the three dense distance matrices
(memory O(N²) in its inputs, kept as the reference for the tests and small inputs): rows of P are built and
ranked in blocks (keeping only the top max(k1+1, k2) per row), V is a sparse matrix, and m is accumulated
from the non-zeros through an inverted index (per gallery column j, the items with V[·, j] ≠ 0).

:class:`KReciprocal` (``kreciprocal``) on :class:`NeighbourLists` (``neighbour_lists``; what vpr uses:
:func:`rerank_top_k` for ``vpr evaluate --rerank``, :func:`rerank_pairs` for SFRS, in ``descriptors``)
needs only each item's nearest neighbours, its row scale and the distances of a few pairs: memory O(N·k),
from the descriptors by one blocked exact pass (on the GPU when there is one), with re-ranked distances
computed only for the pairs asked for.

Both share the ranking and set steps 2-5 (``steps``) and the block sizes that bound their working memory
(``blocks``). Arithmetic is float64; results are float32 like the reference's. Ties in distance are broken
by item index, also at the k-th place of a ranking.
"""

from __future__ import annotations

from vpr.rerank.dense import k_reciprocal_rerank
from vpr.rerank.descriptors import rerank_pairs, rerank_top_k, reranker
from vpr.rerank.kreciprocal import KReciprocal
from vpr.rerank.neighbour_lists import (
    NeighbourLists,
    neighbour_lists_from_descriptors,
    neighbour_lists_from_matrices,
)

__all__ = [
    "KReciprocal",
    "NeighbourLists",
    "k_reciprocal_rerank",
    "neighbour_lists_from_descriptors",
    "neighbour_lists_from_matrices",
    "rerank_pairs",
    "rerank_top_k",
    "reranker",
]
