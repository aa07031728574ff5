"""The ImageNet EfficientNet-Lite0 trunk (backbone efficientnet_lite0), weights from the installed package.

The trunk is checked against a re-statement of the network written out here from the package's raw state
dict (unfolded batch norm, TensorFlow SAME padding, ReLU6), so the packaged weights are really the ones used.
"""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from vprtest import run_vpr

from vpr.data.images import VGG_MEAN_RGB
from vpr.errors import VprError
from vpr.models import ModelConfig, build_model, load_model, save_model
from vpr.models.efficientnet import fold_batch_norm, packaged_weights_path

# (expand, kernel, stride, in, out) of blocks 0..10, from the EfficientNet-B0 table (Lite: same blocks)
BLOCKS = [(1, 3, 1, 32, 16), (6, 3, 2, 16, 24), (6, 3, 1, 24, 24), (6, 5, 2, 24, 40), (6, 5, 1, 40, 40),
          (6, 3, 2, 40, 80), (6, 3, 1, 80, 80), (6, 3, 1, 80, 80), (6, 5, 1, 80, 112), (6, 5, 1, 112, 112),
          (6, 5, 1, 112, 112)]


@pytest.fixture(scope="module")
def package_state():
    return torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig(backbone="efficientnet_lite0", num_clusters=4, image_size=(64, 80)))


def _tf_same_pad(x, k, s):
    def one(n):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        return total // 2, total - total // 2
    (t, b), (le, r) = one(x.shape[-2]), one(x.shape[-1])
    return F.pad(x, (le, r, t, b))


def _conv_bn(state, x, conv, bn, stride=1, groups=1):
    w = state[conv].double()
    x = F.conv2d(_tf_same_pad(x, w.shape[-1], stride), w, stride=stride, groups=groups)
    keys = ("running_mean", "running_var", "weight", "bias")
    mean, var, gamma, beta = (state[f"{bn}.{k}"].double() for k in keys)
    return F.batch_norm(x, mean, var, gamma, beta, training=False, eps=1e-3)


def reference_trunk(state, pixels: torch.Tensor, upto: int) -> torch.Tensor:
    """Lite0 on 0..255 RGB pixels (N, 3, H, W) up to and including block ``upto``, float64, unfolded BN."""
    x = pixels.double() / 127.5 - 1.0
    x = torch.clamp(_conv_bn(state, x, "_conv_stem.weight", "_bn0", stride=2), 0, 6)
    for i, (expand, _k, stride, c_in, c_out) in enumerate(BLOCKS[:upto + 1]):
        p = f"_blocks.{i}"
        y = x
        if expand != 1:
            y = torch.clamp(_conv_bn(state, y, f"{p}._expand_conv.weight", f"{p}._bn0"), 0, 6)
        y = torch.clamp(_conv_bn(state, y, f"{p}._depthwise_conv.weight", f"{p}._bn1", stride=stride,
                                 groups=y.shape[1]), 0, 6)
        y = _conv_bn(state, y, f"{p}._project_conv.weight", f"{p}._bn2")
        x = x + y if stride == 1 and c_in == c_out else y
    return x


def _pixels(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 256, (n, 3, h // 8, w // 8), generator=g).float()
    return (F.interpolate(coarse, size=(h, w), mode="bilinear") + 10 * torch.randn(n, 3, h, w, generator=g)
            ).clamp(0, 255)


def _vpr_input(pixels):
    return pixels - torch.tensor(VGG_MEAN_RGB).view(1, 3, 1, 1)


def test_folding_equals_conv_then_eval_batch_norm(package_state):
    g = torch.Generator().manual_seed(0)
    for conv_key, bn, groups in (("_blocks.9._expand_conv.weight", "_blocks.9._bn0", 1),
                                 ("_blocks.9._depthwise_conv.weight", "_blocks.9._bn1", 672)):
        w = package_state[conv_key]
        conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], w.shape[-1], padding=w.shape[-1] // 2,
                         groups=groups, bias=False)
        conv.weight.data.copy_(w)
        norm = nn.BatchNorm2d(w.shape[0], eps=1e-3)
        norm.load_state_dict({k: package_state[f"{bn}.{k}"] for k in norm.state_dict()})
        unfolded = nn.Sequential(conv, norm).eval()
        fw, fb = fold_batch_norm(w, {k: package_state[f"{bn}.{k}"] for k in
                                     ("weight", "bias", "running_mean", "running_var")})
        x = torch.randn(2, w.shape[1] * groups, 9, 11, generator=g)
        with torch.no_grad():
            want = unfolded(x)
        got = F.conv2d(x, fw, fb, padding=w.shape[-1] // 2, groups=groups)
        assert (got - want).abs().max() <= 1e-5 and want.abs().max() > 0.1


def test_stem_output_is_the_packaged_conv_and_batch_norm(model, package_state):
    pixels = _pixels(2, 64, 80)
    seen = {}
    hook = model.base_model.base[0].register_forward_hook(lambda m, i, o: seen.update(stem=o))
    try:
        with torch.no_grad():
            model.feature_map(_vpr_input(pixels))   # vpr's input: the backbone rescales it to [-1, 1]
    finally:
        hook.remove()
    got = seen["stem"]
    w = package_state["_conv_stem.weight"]
    scale = package_state["_bn0.weight"] / torch.sqrt(package_state["_bn0.running_var"] + 1e-3)
    x = F.pad(pixels / 127.5 - 1.0, (0, 1, 0, 1))   # TF SAME for a 3×3 stride-2 conv on even sizes
    want = F.conv2d(x, w * scale.view(-1, 1, 1, 1),
                    package_state["_bn0.bias"] - package_state["_bn0.running_mean"] * scale, stride=2)
    want = want.clamp(0, 6)
    assert got.shape == (2, 32, 32, 40) and (got - want).abs().max() <= 1e-5


@pytest.mark.parametrize("size", [(48, 64), (33, 50)])
def test_trunk_equals_the_restated_network_on_the_packaged_weights(model, package_state, size):
    pixels = _pixels(2, *size, seed=1)
    with torch.no_grad():
        got = model.feature_map(_vpr_input(pixels))
    want = reference_trunk(package_state, pixels, upto=10)
    assert got.shape == want.shape == (2, 112, math.ceil(size[0] / 16), math.ceil(size[1] / 16))
    scale = want.abs().max().item()
    assert scale > 1 and (got.double() - want).abs().max().item() <= 1e-5 * scale


def test_no_batch_norm_left_and_train_mode_equals_eval_mode(model):
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    x = _vpr_input(_pixels(3, 64, 80, seed=2))
    model.train()
    try:
        with torch.no_grad():
            train_out = model(x)
    finally:
        model.eval()
    with torch.no_grad():
        eval_out = model(x)
    assert torch.equal(train_out, eval_out)


def test_trainable_from_names_the_first_trainable_block():
    m = build_model(ModelConfig(backbone="efficientnet_lite0", num_clusters=2))
    assert m.config.trainable_from == "block5"   # the backbone's default
    trainable = {n.split(".")[2] for n, p in m.named_parameters()
                 if p.requires_grad and n.startswith("base_model")}
    assert trainable == {str(i + 1) for i in range(5, 11)}   # .base = [stem, block0..block10]
    m = build_model(ModelConfig(backbone="efficientnet_lite0", num_clusters=2, trainable_from="full"))
    assert all(p.requires_grad for p in m.parameters())
    with pytest.raises(VprError, match="block5"):
        ModelConfig(backbone="efficientnet_lite0", trainable_from="conv5")


def test_checkpoint_keeps_trained_weights_not_the_packaged_ones(tmp_path, model):
    trained = build_model(ModelConfig(backbone="efficientnet_lite0", num_clusters=4, image_size=(64, 80)))
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "effnet model.pth"
    save_model(path, trained)
    loaded = load_model(path)
    assert loaded.config == trained.config
    for (k, a), (_, b) in zip(trained.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x = _vpr_input(_pixels(2, 64, 80, seed=3))
    with torch.no_grad():
        assert torch.equal(loaded(x), trained.eval()(x))
        assert not torch.equal(loaded(x), model(x))


@pytest.mark.slow
def test_cluster_train_init_only_and_extract_with_the_imagenet_trunk(tiny_data, tmp_path, package_state):
    size = ["--image-size", "64", "80"]
    centers = tmp_path / "centers.h5"
    run_vpr("cluster", "--index", tiny_data["train"], "--out", centers, "--backbone", "efficientnet_lite0",
            *size, "--num-clusters", "4", "--images", "20", "--per-image", "10", "--iterations", "10",
            "--workers", "0")
    with h5py.File(centers) as f:
        centroids = f["centroids"][()]
    assert centroids.shape == (4, 112)
    out = tmp_path / "run"
    run_vpr("train", "--train-index", tiny_data["train"], "--val-index", tiny_data["val"],
            "--centers", centers, "--out", out, "--init-only", "--backbone", "efficientnet_lite0",
            "--trainable-from", "block8", "--num-clusters", "4", *size)
    initial = load_model(out / "initial.pth")
    assert initial.config.backbone == "efficientnet_lite0" and initial.config.trainable_from == "block8"
    assert np.allclose(initial.net_vlad.centroids.detach().numpy(), centroids)
    # the starting trunk is the packaged ImageNet network
    stem = initial.base_model.base[0].conv.weight
    scale = package_state["_bn0.weight"] / torch.sqrt(package_state["_bn0.running_var"] + 1e-3)
    assert (stem - package_state["_conv_stem.weight"] * scale.view(-1, 1, 1, 1)).abs().max() <= 1e-6
    features = tmp_path / "val features.h5"
    run_vpr("extract", "--checkpoint", out / "initial.pth", "--index", tiny_data["val"], "--out", features,
            "--workers", "0")
    with h5py.File(features) as f:
        db, query = f["db"][()], f["query"][()]
    assert db.shape[1] == query.shape[1] == 4 * 112
    assert np.allclose(np.linalg.norm(db, axis=1), 1, atol=1e-4)
