"""Re-ranking straight from query and gallery descriptors, what vpr calls: :func:`rerank_top_k` for
``vpr evaluate --rerank`` and :func:`rerank_pairs` for SFRS positive selection, both through
:func:`reranker` (neighbour lists by exact search on the GPU when there is one)."""

from __future__ import annotations

import numpy as np

from vpr.rerank.kreciprocal import KReciprocal
from vpr.rerank.neighbour_lists import neighbour_lists_from_descriptors


def reranker(x_q: np.ndarray, x_g: np.ndarray, k1: int, k2: int, lambda_value: float,
             square_input: bool = True, device=None) -> KReciprocal:
    """:class:`KReciprocal` of query and gallery descriptors (squared L2 distances, as vpr uses them)."""
    if int(k1) != k1 or k1 < 1 or int(k2) != k2 or k2 < 1:
        raise ValueError(f"k1 and k2 must be positive integers, got k1={k1}, k2={k2}")
    from vpr.distributed import compute_device

    k = max(int(k1) + 1, int(k2))
    lists = neighbour_lists_from_descriptors(x_q, x_g, k, device=compute_device(device))
    return KReciprocal(lists, k1, k2, lambda_value, square_input)


def rerank_top_k(x_q: np.ndarray, x_g: np.ndarray, k: int, k1: int, k2: int, lambda_value: float,
                 square_input: bool = True, device=None) -> tuple[np.ndarray, np.ndarray]:
    """The k best gallery items of every query after re-ranking over the whole gallery (as the dense
    formula followed by a sort on (float32 distance, gallery index)): (distances float32, indices int64)."""
    import torch

    from vpr.distributed import compute_device

    dev = compute_device(device)
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
