"""The NetVLAD aggregation layer (Arandjelović et al., CVPR 2016; docs/method.md §2.2).

For a map of local descriptors x_i (i over the h·w locations), after L2-normalising each x_i:

    a_k(x_i) = softmax_k(w_kᵀ x_i)                  (1×1 convolution without bias: "vladv1", b_k = 0)
    V(k, :)  = Σ_i a_k(x_i) (x_i − c_k)

The layer always computes in the dtype of its parameters (float32), with autocast switched off, whatever
precision the backbone ran in: with α in the hundreds, a bfloat16 softmax input would lose the ranking of
the assignments (bfloat16 keeps 8 significant bits).

The layer returns V unnormalised, shape (B, K, D); intra-normalisation, flattening and the final L2 are
done by the embedding head (vpr.models.embed). ``regions`` returns the nine SFRS region VLADs from a single
assignment pass: each quarter of the map is aggregated separately, and because every step is per location
the halves and the whole image are sums of quarters.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vpr.errors import VprError
from vpr.numeric_precision import autocast_off

#: region order of ``NetVLAD.regions`` / ``EmbedNet.regions``
REGION_NAMES = ("global", "top", "bottom", "left", "right", "TL", "TR", "BL", "BR")


class NetVLAD(nn.Module):
    """NetVLAD pooling: (B, D, h, w) map → (B, K, D) unnormalised VLAD."""

    def __init__(self, num_clusters: int, dim: int) -> None:
        super().__init__()
        self.num_clusters = num_clusters
        self.dim = dim
        self.conv = nn.Conv2d(dim, num_clusters, kernel_size=1, bias=False)
        # Placeholder only: random centroids do not train well, init_params must overwrite them.
        self.centroids = nn.Parameter(torch.rand(num_clusters, dim))

    def _assign(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised descriptors (B, D, h, w) and soft assignments (B, K, h, w)."""
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise VprError(f"NetVLAD expects a (B, {self.dim}, h, w) map, got shape {tuple(x.shape)}")
        x = F.normalize(x.to(self.centroids.dtype), p=2, dim=1)
        a = F.softmax(self.conv(x), dim=1)
        return x, a

    def _aggregate(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Σ_i a_k(x_i)(x_i − c_k) over the last axis: x (..., D, n), a (..., K, n) → (..., K, D)."""
        return a @ x.transpose(-1, -2) - a.sum(-1).unsqueeze(-1) * self.centroids

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast_off(x):
            x, a = self._assign(x)
            return self._aggregate(x.flatten(2), a.flatten(2))

    def quarters(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised VLADs of the 2×2 quarters of the map, (B, 4, K, D), order TL, TR, BL, BR."""
        b, _, h, w = x.shape
        if h % 2 or w % 2:
            raise VprError(f"region descriptors need a feature map with even height and width, got {h}×{w} "
                           "(choose an image size whose map is even, e.g. 480×640 → 30×40 for vgg16)")

        def split(t: torch.Tensor) -> torch.Tensor:
            # (B, C, h, w) → (B, 4, C, h/2 · w/2), quarter index = row·2 + col
            c = t.shape[1]
            t = t.reshape(b, c, 2, h // 2, 2, w // 2).permute(0, 2, 4, 1, 3, 5)
            return t.reshape(b, 4, c, (h // 2) * (w // 2))

        with autocast_off(x):
            x, a = self._assign(x)
            return self._aggregate(split(x), split(a))

    def regions(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised VLADs of the nine regions (B, 9, K, D) in the order of ``REGION_NAMES``."""
        q = self.quarters(x)
        tl, tr, bl, br = q.unbind(1)
        return torch.stack([tl + tr + bl + br, tl + tr, bl + br, tl + bl, tr + br, tl, tr, bl, br], dim=1)

    @torch.no_grad()
    def init_params(self, centroids: np.ndarray, descriptors: np.ndarray) -> float:
        """Initialise from k-means centers (K×D) and sample descriptors (M×D); return α.

        ĉ_k = c_k/‖c_k‖; for each descriptor d_j take the two largest similarities s¹_j ≥ s²_j of ĉ_kᵀd_j;
        α = −ln(0.01) / mean_j(s¹_j − s²_j), so the top-two assignment ratio is about 100 on average.
        Sets the conv weights to α·ĉ_k and the centroids to the raw c_k.
        """
        centroids = np.asarray(centroids)
        descriptors = np.asarray(descriptors)
        k, d = self.num_clusters, self.dim
        if centroids.shape != (k, d):
            raise VprError(f"centroids have shape {centroids.shape}, the model expects ({k}, {d})")
        if descriptors.ndim != 2 or descriptors.shape[1] != d or descriptors.shape[0] == 0:
            raise VprError(f"descriptors have shape {descriptors.shape}, the model expects (M, {d}), M ≥ 1")
        if k < 2:
            raise VprError("NetVLAD initialisation needs at least 2 clusters")
        c = torch.from_numpy(centroids).double()
        norms = c.norm(dim=1, keepdim=True)
        if not torch.isfinite(c).all() or (norms == 0).any():
            raise VprError("centroids contain a zero, NaN or infinite row")
        c_hat = c / norms
        gaps = []
        for chunk in torch.from_numpy(descriptors).split(8192):  # bounded memory for large M
            top2 = (chunk.double() @ c_hat.T).topk(2, dim=1).values
            gaps.append(top2[:, 0] - top2[:, 1])
        mean_gap = torch.cat(gaps).mean().item()
        if not math.isfinite(mean_gap) or mean_gap <= 0:
            raise VprError(f"cannot initialise NetVLAD: mean top-1 − top-2 similarity is {mean_gap} "
                           "(duplicate centroids or degenerate descriptors)")
        alpha = -math.log(0.01) / mean_gap
        self.conv.weight.copy_((alpha * c_hat).reshape(k, d, 1, 1).to(self.conv.weight))
        self.centroids.copy_(c.to(self.centroids))
        return alpha
