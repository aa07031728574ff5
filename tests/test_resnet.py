"""The ResNet-18/50 trunks (backbones resnet18, resnet50), on random initialisation.

The forward is checked against torchvision's own ResNet (ordinary, eval-mode BatchNorm2d) applied stage by
stage on the ImageNet-normalised pixels, with the weights handed over in torchvision's state-dict format
through ``load_trunk``: the key mapping, the frozen batch norm and the input normalisation are all checked.
"""

from __future__ import annotations

import csv
import math
import time

import pytest
import torch
import torchvision
from vprtest import run_vpr

from vpr.data.images import VGG_MEAN_RGB
from vpr.errors import VprError
from vpr.models import ModelConfig, build_model, load_model, load_trunk
from vpr.train.config import make_config
from vpr.train.trainer import initial_model


def _torchvision_resnet(arch: str, seed: int) -> torchvision.models.ResNet:
    """torchvision's ResNet with random weights and non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("arch, dim", [("resnet18", 256),
                                       pytest.param("resnet50", 1024, marks=pytest.mark.slow)])
def test_trunk_equals_torchvision_resnet_through_layer3(tmp_path, arch, dim):
    net = _torchvision_resnet(arch, seed=1)
    weights = tmp_path / f"{arch}.pth"
    state = net.state_dict()   # torchvision's format: layer4, fc, num_batches_tracked included
    if arch == "resnet50":   # keep the file small (its layer4 alone is 15M parameters)
        state = {k: v for k, v in state.items() if not k.startswith(("layer4.", "fc."))}
    torch.save(state, weights)
    model = build_model(ModelConfig(backbone=arch, num_clusters=2, image_size=(32, 48)))
    load_trunk(model, weights)
    pixels = torch.randint(0, 256, (1, 3, 32, 48)).float()
    vpr_input = pixels - torch.tensor(VGG_MEAN_RGB).view(1, 3, 1, 1)   # what vpr's data path gives
    x = (pixels / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        for stage in (net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3):
            x = stage(x)
        fmap = model.feature_map(vpr_input)
        train_fmap = model.train().feature_map(vpr_input)   # frozen batch norm: no batch statistics
    assert fmap.shape == (1, dim, 2, 3) == x.shape   # stride 16
    torch.testing.assert_close(fmap, x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(train_fmap, fmap, rtol=0, atol=0)


def test_trainable_from_names_the_first_trainable_stage():
    model = build_model(ModelConfig(backbone="resnet18", num_clusters=2))
    assert model.config.trainable_from == "layer3"
    trainable = {n.split(".")[2] for n, p in model.named_parameters()
                 if p.requires_grad and n.startswith("base_model")}
    assert trainable == {"6"}   # .base = [conv1, bn1, relu, maxpool, layer1, layer2, layer3]
    for stage, first in (("layer2", 5), ("layer1", 4), ("full", 0)):
        model = build_model(ModelConfig(backbone="resnet18", num_clusters=2, trainable_from=stage))
        trainable = {int(n.split(".")[2]) for n, p in model.named_parameters()
                     if p.requires_grad and n.startswith("base_model")}
        # the batch norms (1 and inside the stages) hold buffers only: conv1 (0) and the stages train
        assert trainable == {i for i in (0, 4, 5, 6) if i >= first}
    with pytest.raises(VprError, match="trainable_from 'conv5' is not valid for backbone 'resnet50'"):
        ModelConfig(backbone="resnet50", trainable_from="conv5")


def test_trunk_file_missing_a_stage_is_one_error(tmp_path):
    state = _torchvision_resnet("resnet18", seed=0).state_dict()
    weights = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer3.")}, weights)
    model = build_model(ModelConfig(backbone="resnet18", num_clusters=2))
    with pytest.raises(VprError, match=r"partial\.pth: the resnet18 trunk needs all .*missing: 6\.0\."):
        load_trunk(model, weights)


@pytest.mark.slow
def test_tiny_training_with_resnet18(tiny_data, tmp_path):
    """`vpr cluster` and one epoch of `vpr train` (NetVLAD, triplet) with resnet18 at 64×80: only layer3 of
    the trunk moves, and the validation (an extraction with the trained model) is logged."""
    size = ["--image-size", "64", "80"]
    centers = tmp_path / "centers.h5"
    run_vpr("cluster", "--index", tiny_data["train"], "--out", centers, "--backbone", "resnet18", *size,
            "--num-clusters", "4", "--images", "20", "--per-image", "10", "--iterations", "10",
            "--workers", "0")
    out = tmp_path / "run"
    start = time.perf_counter()
    run_vpr("train", "--train-index", tiny_data["train"], "--val-index", tiny_data["val"], "--centers",
            centers, "--backbone", "resnet18", "--trainable-from", "layer3", "--num-clusters", "4", *size,
            "--device", "cpu", "--out", out, "--epochs", "1", "--neg-num", "2", "--neg-pool", "20",
            "--cache-size", "40", "--iters", "4", "--workers", "0", "--extract-batch-size", "16")
    print(f"resnet18 tiny training: {time.perf_counter() - start:.1f} s")
    cfg = make_config(None, {"backbone": "resnet18", "trainable_from": "layer3", "num_clusters": 4,
                             "image_size": [64, 80]})
    initial, trained = initial_model(cfg, centers, None), load_model(out / "checkpoint_e0.pth")
    assert trained.config.backbone == "resnet18" and trained.config.trainable_from == "layer3"
    state0, state1 = initial.state_dict(), trained.state_dict()
    assert state0.keys() == state1.keys()
    moved = {k.split(".")[2] for k in state0 if k.startswith("base_model")
             and not torch.equal(state0[k], state1[k])}
    assert moved == {"6"}   # only layer3 of the trunk was trained
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["-1", "0"] and math.isfinite(float(rows[1]["loss"]))
    assert 0 <= float(rows[1]["recall@5"]) <= 1
