"""The image-descriptor network: backbone → NetVLAD → normalisation [→ PCA-whitening].

See docs/method.md §2.4 and §5.3.

``EmbedNet.forward`` gives the global descriptor: the (K, D) VLAD is intra-normalised (L2 per cluster row),
flattened cluster-major (index k·D + d) and L2-normalised; with a PCA head attached it is then projected,
y = U_wᵀ(x − μ), and L2-normalised again. ``EmbedNet.regions`` gives the nine SFRS region descriptors.

Under autocast (``--precision bf16|fp16``) only the backbone runs in reduced precision: its map is cast to
float32 and everything after it (NetVLAD, normalisations, PCA) runs with autocast switched off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vpr.errors import VprError
from vpr.models.backbones import build_backbone as _build_backbone
from vpr.models.backbones import check_backbone, default_trainable_from
from vpr.models.netvlad import NetVLAD
from vpr.numeric_precision import autocast_off
from vpr.pca import PCAParams, pca_projection


def _is_positive_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0


@dataclass
class ModelConfig:
    """Everything needed to rebuild an EmbedNet before loading its weights."""

    backbone: str = "vgg16"
    num_clusters: int = 64
    trainable_from: str | None = None  # None: the backbone's default (vgg16, small: conv5)
    image_size: tuple[int, int] = (480, 640)  # (H, W) the model was trained / extracted at
    pca_dim: int | None = None
    # Added to the (0..255 minus VGG mean) input before the backbone, per RGB channel: a model trained with
    # another mean m gets VGG_MEAN − m here (the NetVLAD authors' MatConvNet models). None: no shift.
    input_shift: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        check_backbone(self.backbone, self.trainable_from)
        if self.trainable_from is None:
            self.trainable_from = default_trainable_from(self.backbone)
        if not _is_positive_int(self.num_clusters):
            raise VprError(f"num_clusters must be a positive integer, got {self.num_clusters!r}")
        self.num_clusters = int(self.num_clusters)
        size = tuple(self.image_size) if isinstance(self.image_size, (list, tuple)) else ()
        if len(size) != 2 or not all(_is_positive_int(s) for s in size):
            raise VprError(f"image_size must be two positive integers (H, W), got {self.image_size!r}")
        self.image_size = (int(size[0]), int(size[1]))
        if self.pca_dim is not None and not _is_positive_int(self.pca_dim):
            raise VprError(f"pca_dim must be a positive integer or None, got {self.pca_dim!r}")
        if self.pca_dim is not None:
            self.pca_dim = int(self.pca_dim)
        if self.input_shift is not None:
            shift = tuple(self.input_shift) if isinstance(self.input_shift, (list, tuple)) else ()
            if len(shift) != 3 or not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                                          and np.isfinite(v) for v in shift):
                raise VprError(f"input_shift must be three finite numbers (R, G, B), "
                               f"got {self.input_shift!r}")
            self.input_shift = tuple(float(v) for v in shift)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        if self.input_shift is None:
            del d["input_shift"]  # files stay readable by vpr versions without the field
        else:
            d["input_shift"] = list(self.input_shift)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        if not isinstance(d, dict):
            raise VprError(f"model_config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise VprError(f"model_config has unknown key(s) {', '.join(map(str, unknown))} "
                           f"(known: {', '.join(sorted(known))})")
        return cls(**d)


def _vlad_to_descriptor(v: torch.Tensor) -> torch.Tensor:
    """(…, K, D) VLAD → (…, K·D): intra-normalise each cluster row, flatten cluster-major, L2-normalise."""
    return F.normalize(F.normalize(v, p=2, dim=-1).flatten(-2), p=2, dim=-1)


def _empty_pca_layer(n: int, dim: int, device: torch.device, dtype: torch.dtype) -> nn.Conv2d:
    # Built on the meta device: the default init of a 32768→4096 conv costs seconds and is overwritten anyway.
    # The PCA projection is fitted, never trained, so its parameters are frozen.
    with torch.device("meta"):
        layer = nn.Conv2d(n, dim, kernel_size=1, bias=True)
    layer = layer.to_empty(device=device).to(dtype)
    layer.requires_grad_(False)
    return layer


class EmbedNet(nn.Module):
    """Backbone + NetVLAD (+ optional PCA-whitening head); parameter names match the reference."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = replace(config)  # own copy: attach_pca updates pca_dim
        self.base_model = _build_backbone(config.backbone, config.trainable_from)
        self.net_vlad = NetVLAD(config.num_clusters, self.base_model.dim)
        self.pca_layer: nn.Conv2d | None = None
        if config.pca_dim is not None:
            # zero until attach_pca or a checkpoint fills it
            self.pca_layer = _empty_pca_layer(self.vlad_dim, config.pca_dim, torch.device("cpu"),
                                              torch.float32)
            self.pca_layer.weight.zero_()
            self.pca_layer.bias.zero_()

    @property
    def vlad_dim(self) -> int:
        return self.net_vlad.num_clusters * self.net_vlad.dim

    @property
    def output_dim(self) -> int:
        return self.vlad_dim if self.pca_layer is None else self.pca_layer.out_channels

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images → (B, D, h, w) conv map (vgg16: conv5_3 before its ReLU)."""
        if self.config.input_shift is not None:
            x = x + torch.tensor(self.config.input_shift, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return self.base_model(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.feature_map(x)
        with autocast_off(fmap):   # the head in float32 even when the backbone ran under autocast
            return self.project(_vlad_to_descriptor(self.net_vlad(fmap)))

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """The PCA(-whitening) head on NetVLAD descriptors ``v`` (…, K·D): normalise(U_wᵀ(v − μ)); ``v``
        unchanged when the model has no head."""
        if self.pca_layer is None:
            return v
        # the 1×1 convolution on a 1×1 map, written as the equivalent matrix product
        w = self.pca_layer.weight.flatten(1)
        return F.normalize(F.linear(v, w, self.pca_layer.bias), p=2, dim=-1)

    def regions(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 9, K·D) region descriptors [global, top, bottom, left, right, TL, TR, BL, BR] (no PCA)."""
        fmap = self.feature_map(x)
        with autocast_off(fmap):
            return _vlad_to_descriptor(self.net_vlad.regions(fmap))

    def init_netvlad(self, centroids: np.ndarray, descriptors: np.ndarray) -> float:
        """Initialise NetVLAD from k-means centers and sample descriptors (see NetVLAD.init_params)."""
        return self.net_vlad.init_params(centroids, descriptors)

    @torch.no_grad()
    def attach_pca(self, params: PCAParams, whiten: bool = True, dim: int | None = None) -> None:
        """Attach the PCA(-whitening) head y = U_wᵀ(x − μ), then L2, as a 1×1 conv (weight U_wᵀ, bias −U_wᵀμ:
        :func:`vpr.pca.pca_projection`).

        ``params.U`` (K·D × k) has principal directions as columns in descending eigenvalue order. ``dim``
        keeps only the first ``dim`` components (default all k). With ``whiten``, U_w = U·diag(λ^−½),
        otherwise U_w = U.
        """
        n = self.vlad_dim
        if params.U.dim() != 2 or params.U.shape[0] != n:
            raise VprError(f"PCA matrix U has shape {tuple(params.U.shape)}, the model's descriptors have "
                           f"{n} dimensions")
        k = params.dim
        if tuple(params.lams.shape) != (k,):
            raise VprError(f"PCA eigenvalues have shape {tuple(params.lams.shape)}, expected ({k},) "
                           "to match U")
        if params.mu.numel() != n:
            raise VprError(f"PCA mean has {params.mu.numel()} entries, expected {n}")
        if dim is None:
            dim = k
        if not 1 <= dim <= k:
            raise VprError(f"PCA dimension {dim} is out of range 1..{k} (the PCA file has {k} components)")
        params = params.truncated(dim)
        if whiten and not bool((torch.isfinite(params.lams) & (params.lams > 0)).all()):
            raise VprError("PCA eigenvalues must be positive and finite for whitening")
        weight, bias = pca_projection(params, whiten)
        layer = _empty_pca_layer(n, dim, self.net_vlad.centroids.device, self.net_vlad.centroids.dtype)
        layer.weight.copy_(weight.reshape(dim, n, 1, 1))
        layer.bias.copy_(bias)
        self.pca_layer = layer
        self.config.pca_dim = dim


def build_model(config: ModelConfig) -> EmbedNet:
    """A randomly initialised EmbedNet (no downloads) with backbone layers frozen per trainable_from."""
    return EmbedNet(config)
