"""ResNet-18 and ResNet-50 trunks (torchvision's architectures) cut after ``layer3`` (conv4_x): stride 16.

Why ``layer3``: deep-visual-geo-localization-benchmark (Berton et al., CVPR 2022) aggregates ResNet maps
with NetVLAD and GeM after conv4_x ("resnet18conv4", "resnet50conv4": the last residual stage removed),
reporting equal or better recall than the full trunk at a fraction of its size and descriptor length; it
is also the stride-16 cut that matches VGG16's conv5_3 (480×640 → 30×40, the map the SFRS regions split
into quarters). ``dim``: 256 (ResNet-18) and 1024 (ResNet-50), so K = 64 gives 16,384- and 65,536-d VLADs.

``.base`` = [conv1, bn1, relu, maxpool, layer1, layer2, layer3] (module indices 0-6 give the state-dict
keys). Batch norm is torchvision's ``FrozenBatchNorm2d``: the ImageNet statistics and affine terms are
buffers, fixed, so train- and eval-mode forwards are identical (training batches are a few tuples of one
place: their batch statistics would be a poor estimate). ``trainable_from``: layer3 (the default: the last
kept stage trains, like vgg16's conv5), layer2, layer1, full (conv1 too).

Weights: random initialisation (torchvision's: Kaiming-normal fan_out convolutions, batch norm identity),
or ImageNet weights through ``load_trunk`` from a local file: torchvision's own state dict
(``resnet18-f37072fd.pth``, ``resnet50-0676ba61.pth``: keys ``conv1``, ``bn1``, ``layer1``…, its
``layer4`` and ``fc`` ignored) or one with this trunk's ``<index>.`` keys. Nothing is downloaded.

Input: vpr's data path gives RGB on 0..255 minus the VGG mean; torchvision's ImageNet weights expect
(p/255 − mean)/std per channel, which ``forward`` computes first.
"""

from __future__ import annotations

import torch
from torch import nn

from vpr.data.images import VGG_MEAN_RGB

#: torchvision's ImageNet normalisation (on 0..1 pixels)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision module name -> index in ``.base``
STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")


class _ResNetTrunk(nn.Module):
    arch: str
    dim: int
    frozen_modules = {"layer3": 6, "layer2": 5, "layer1": 4, "full": 0}
    default_trainable_from = "layer3"

    def __init__(self) -> None:
        super().__init__()
        import torchvision  # here, not at the top: importing it costs every vpr process about 1.5 s
        from torchvision.ops import FrozenBatchNorm2d

        net = getattr(torchvision.models, self.arch)(weights=None, norm_layer=FrozenBatchNorm2d)
        self.base = nn.Sequential(*(getattr(net, name) for name in STAGES))
        mean = torch.tensor(VGG_MEAN_RGB) / 255.0 - torch.tensor(IMAGENET_MEAN)
        # x/255 (the VGG mean added back) − ImageNet mean, over the ImageNet std: (x/255 + shift)/std
        self.register_buffer("_shift", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x / 255.0 + self._shift.to(x.dtype)) / self._std.to(x.dtype)
        return self.base(x)

    @staticmethod
    def trunk_state(state: dict) -> dict:
        """A torchvision ResNet state dict (keys ``conv1.…``, ``layer1.…``) renamed to ``.base`` keys; layer4,
        fc and batch-norm ``num_batches_tracked`` dropped. A dict already in ``.base`` keys is returned as is.
        """
        if not any(isinstance(k, str) and k.startswith(("conv1.", "layer1.")) for k in state):
            return state
        index = {name: i for i, name in enumerate(STAGES)}
        out = {}
        for key, value in state.items():
            head, _, rest = str(key).partition(".")
            if head in index and not rest.endswith("num_batches_tracked"):
                out[f"{index[head]}.{rest}"] = value
        return out


class ResNet18Backbone(_ResNetTrunk):
    """ResNet-18 through layer3: stride 16, 256 channels."""

    arch = "resnet18"
    dim = 256


class ResNet50Backbone(_ResNetTrunk):
    """ResNet-50 through layer3: stride 16, 1024 channels."""

    arch = "resnet50"
    dim = 1024
