"""Tests for vpr.models: NetVLAD maths, region descriptors, PCA head, freezing and checkpoint files.

Every numeric check compares against a statement written out here (hand-worked numbers, plain loops,
numpy, or a forward pass spelled out with torch.nn.functional on the raw tensors of a state dict).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from vpr.errors import VprError
from vpr.models import (
    REGION_NAMES,
    EmbedNet,
    ModelConfig,
    NetVLAD,
    build_model,
    load_model,
    load_trunk,
    save_model,
)
from vpr.pca import PCAParams

# VGG16 "D" configuration: output channels of each conv, "M" = 2×2 max-pool; the trunk drops the last
# ReLU and pool, so the module indices of the 13 convolutions are these:
VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
VGG_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def small_model(num_clusters: int = 4, seed: int = 0) -> EmbedNet:
    torch.manual_seed(seed)
    model = build_model(ModelConfig(backbone="small", num_clusters=num_clusters, trainable_from="full",
                                    image_size=(64, 96)))
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# NetVLAD layer


def _map_2x2() -> torch.Tensor:
    # locations (row, col): (0,0)=(3,4)  (0,1)=(2,0)  (1,0)=(0,-5)  (1,1)=(-1,-1); layout (B, D, H, W)
    return torch.tensor([[[[3.0, 2.0], [0.0, -1.0]],
                          [[4.0, 0.0], [-5.0, -1.0]]]])


def test_netvlad_hand_worked_uniform_assignment():
    layer = NetVLAD(num_clusters=2, dim=2)
    with torch.no_grad():
        layer.conv.weight.zero_()  # all logits 0 → a_k = 1/2 at every location
        layer.centroids.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    v = layer(_map_2x2())
    # normalised locations: (0.6, 0.8), (1, 0), (0, -1), (-s, -s) with s = 1/√2; Σ = (1.6 - s, -0.2 - s)
    # V(k) = ½ Σ x̂_i − ½·4·c_k
    s = 1 / math.sqrt(2)
    expected = torch.tensor([[[-1.2 - s / 2, -0.1 - s / 2],
                              [0.8 - s / 2, -2.1 - s / 2]]])
    assert v.shape == (1, 2, 2)
    torch.testing.assert_close(v, expected, rtol=0, atol=1e-6)


def _netvlad_loops(x: list[list[float]], w: list[list[float]], c: list[list[float]]) -> list[list[float]]:
    """NetVLAD on a list of local descriptors, written with plain loops."""
    k_count, d_count = len(w), len(w[0])
    v = [[0.0] * d_count for _ in range(k_count)]
    for xi in x:
        norm = math.sqrt(sum(t * t for t in xi))
        xh = [t / norm for t in xi]
        logits = [sum(w[k][d] * xh[d] for d in range(d_count)) for k in range(k_count)]
        m = max(logits)
        e = [math.exp(z - m) for z in logits]
        a = [t / sum(e) for t in e]
        for k in range(k_count):
            for d in range(d_count):
                v[k][d] += a[k] * (xh[d] - c[k][d])
    return v


def _normalise_loops(v: list[list[float]]) -> list[float]:
    """Intra-normalise each row, flatten cluster-major (index k·D + d), L2-normalise."""
    flat = []
    for row in v:
        n = math.sqrt(sum(t * t for t in row))
        flat += [t / n for t in row]
    n = math.sqrt(sum(t * t for t in flat))
    return [t / n for t in flat]


def test_netvlad_general_weights_against_loops():
    w = [[2.0, -1.0], [0.5, 1.0]]
    c = [[0.3, -0.2], [-0.5, 0.9]]
    layer = NetVLAD(num_clusters=2, dim=2)
    with torch.no_grad():
        layer.conv.weight.copy_(torch.tensor(w).reshape(2, 2, 1, 1))
        layer.centroids.copy_(torch.tensor(c))
    x = _map_2x2()
    locations = [[x[0, 0, r, col].item(), x[0, 1, r, col].item()] for r in range(2) for col in range(2)]
    expected = _netvlad_loops(locations, w, c)
    torch.testing.assert_close(layer(x)[0], torch.tensor(expected), rtol=0, atol=1e-6)


def test_embednet_forward_against_loops():
    model = small_model(num_clusters=2)
    img = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        fmap = model.feature_map(img)  # (1, 128, 2, 2)
        out = model(img)
    assert fmap.shape == (1, 128, 2, 2)
    w = model.net_vlad.conv.weight.reshape(2, 128).tolist()
    c = model.net_vlad.centroids.tolist()
    locations = [fmap[0, :, r, col].tolist() for r in range(2) for col in range(2)]
    expected = _normalise_loops(_netvlad_loops(locations, w, c))
    assert out.shape == (1, 2 * 128) and model.output_dim == 256
    torch.testing.assert_close(out[0], torch.tensor(expected), rtol=0, atol=1e-5)


def test_netvlad_gradcheck():
    torch.manual_seed(1)
    layer = NetVLAD(num_clusters=3, dim=4).double()
    x = torch.randn(2, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 1, 1, dtype=torch.float64, requires_grad=True)
    c = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)

    def forward(x, w, c):
        return functional_call(layer, {"conv.weight": w, "centroids": c}, (x,))

    regions_module = _Regions(layer)

    def regions(x, w, c):
        return functional_call(regions_module, {"layer.conv.weight": w, "layer.centroids": c}, (x,))

    assert torch.autograd.gradcheck(forward, (x, w, c))
    assert torch.autograd.gradcheck(regions, (x, w, c))


class _Regions(torch.nn.Module):
    def __init__(self, layer: NetVLAD) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer.regions(x)


def test_netvlad_rejects_wrong_channels():
    with pytest.raises(VprError, match="expects a"):
        NetVLAD(num_clusters=2, dim=8)(torch.randn(1, 4, 2, 2))


# ---------------------------------------------------------------------------------------------------------
# region descriptors


def test_regions_equal_netvlad_on_crops():
    model = small_model(num_clusters=4)
    img = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        fmap = model.feature_map(img)
        regions = model.regions(img)
        whole = model(img)
    h, w = fmap.shape[-2:]
    assert (h, w) == (4, 6)
    hh, hw = h // 2, w // 2
    crops = {
        "global": fmap,
        "top": fmap[:, :, :hh, :], "bottom": fmap[:, :, hh:, :],
        "left": fmap[:, :, :, :hw], "right": fmap[:, :, :, hw:],
        "TL": fmap[:, :, :hh, :hw], "TR": fmap[:, :, :hh, hw:],
        "BL": fmap[:, :, hh:, :hw], "BR": fmap[:, :, hh:, hw:],
    }
    assert regions.shape == (2, 9, 4 * 128)
    assert list(REGION_NAMES) == list(crops)
    for r, name in enumerate(REGION_NAMES):
        with torch.no_grad():
            v = model.net_vlad(crops[name])  # (B, K, D)
        expected = F.normalize(F.normalize(v, dim=2).reshape(2, -1), dim=1)
        torch.testing.assert_close(regions[:, r], expected, rtol=0, atol=2e-6, msg=name)
    torch.testing.assert_close(regions[:, 0], whole, rtol=0, atol=2e-6)


def test_regions_need_even_map():
    model = small_model()
    with pytest.raises(VprError, match="even"):
        model.regions(torch.randn(1, 3, 48, 96))  # 3×6 map


# ---------------------------------------------------------------------------------------------------------
# initialisation and PCA


def test_alpha_init_against_numpy():
    rng = np.random.default_rng(3)
    k, d = 5, 8
    centroids = (3 * rng.standard_normal((k, d))).astype(np.float32)
    desc = rng.standard_normal((300, d)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)

    c_hat = centroids.astype(np.float64) / np.linalg.norm(centroids.astype(np.float64), axis=1, keepdims=True)
    sims = np.sort(desc.astype(np.float64) @ c_hat.T, axis=1)
    alpha_np = -np.log(0.01) / np.mean(sims[:, -1] - sims[:, -2])

    layer = NetVLAD(num_clusters=k, dim=d)
    alpha = layer.init_params(centroids, desc)
    assert alpha == pytest.approx(alpha_np, rel=1e-9)
    np.testing.assert_allclose(layer.conv.weight.detach().numpy().reshape(k, d), alpha_np * c_hat, rtol=1e-5)
    np.testing.assert_array_equal(layer.centroids.detach().numpy(), centroids)

    model = small_model(num_clusters=3)
    cen = rng.standard_normal((3, 128)).astype(np.float32)
    assert model.init_netvlad(cen, rng.standard_normal((50, 128)).astype(np.float32)) > 0
    with pytest.raises(VprError, match=r"centroids have shape \(5, 128\)"):
        model.init_netvlad(rng.standard_normal((5, 128)), rng.standard_normal((50, 128)))
    with pytest.raises(VprError, match="descriptors have shape"):
        model.init_netvlad(cen, rng.standard_normal((50, 64)))


def pca_params(U, lams, mu) -> PCAParams:
    """PCAParams from numpy arrays (float32, as load_pca gives them)."""
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
    U = np.asarray(U, dtype=np.float64)
    return PCAParams(U=t(U), lams=t(lams), mu=t(mu), Utmu=t(U.T @ np.asarray(mu).reshape(-1)))


@pytest.mark.parametrize("whiten", [True, False])
def test_pca_head_against_numpy(whiten):
    model = small_model(num_clusters=2)
    img = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        x = model(img).double().numpy()  # (3, 256) descriptors before PCA
    rng = np.random.default_rng(4)
    n, k = 256, 10
    U, _ = np.linalg.qr(rng.standard_normal((n, k)))
    lams = np.sort(rng.uniform(0.01, 2.0, k))[::-1]
    mu = 0.05 * rng.standard_normal(n)
    # the parameters as a PCA file stores them (float32); the expectations below use the same values
    U, lams, mu = (a.astype(np.float32).astype(np.float64) for a in (U, lams, mu))
    params = pca_params(U, lams, mu.reshape(n, 1))

    model.attach_pca(params, whiten=whiten)
    assert model.output_dim == k and model.config.pca_dim == k
    with torch.no_grad():
        y = model(img).double().numpy()
    scale = lams ** -0.5 if whiten else np.ones(k)
    expected = (np.diag(scale) @ U.T @ (x - mu).T).T
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(y, expected, atol=2e-5)
    # the reference's convention for the stored layer: weight U_wᵀ, bias −U_wᵀμ
    Uw = U * scale[None, :]
    np.testing.assert_allclose(model.pca_layer.weight.double().numpy().reshape(k, n), Uw.T, atol=1e-6)
    np.testing.assert_allclose(model.pca_layer.bias.double().numpy(), -Uw.T @ mu, atol=1e-5)

    model.attach_pca(params, whiten=whiten, dim=4)  # keep the first 4 components
    with torch.no_grad():
        y4 = model(img).double().numpy()
    e4 = (np.diag(scale[:4]) @ U[:, :4].T @ (x - mu).T).T
    np.testing.assert_allclose(y4, e4 / np.linalg.norm(e4, axis=1, keepdims=True), atol=2e-5)


def test_pca_shape_errors():
    model = small_model(num_clusters=2)
    with pytest.raises(VprError, match="256 dimensions"):
        model.attach_pca(pca_params(np.zeros((100, 4)), np.ones(4), np.zeros(100)))
    with pytest.raises(VprError, match="positive"):
        model.attach_pca(pca_params(np.zeros((256, 2)), np.array([1.0, 0.0]), np.zeros(256)))
    with pytest.raises(VprError, match=r"PCA dimension 3 is out of range 1..2"):
        model.attach_pca(pca_params(np.zeros((256, 2)), np.ones(2), np.zeros(256)), dim=3)
    assert model.pca_layer is None


# ---------------------------------------------------------------------------------------------------------
# backbones and freezing


def test_vgg16_trunk_structure_and_stride():
    model = build_model(ModelConfig(num_clusters=2))
    base = model.base_model.base
    assert len(base) == 29 and model.base_model.dim == 512
    convs = [i for i, m in enumerate(base) if isinstance(m, torch.nn.Conv2d)]
    assert convs == VGG_CONV_INDICES
    assert isinstance(base[28], torch.nn.Conv2d) and base[28].out_channels == 512
    # 480×640 shape arithmetic on the meta device (no compute)
    meta = build_model(ModelConfig(num_clusters=2)).base_model.to("meta")
    assert meta(torch.empty(1, 3, 480, 640, device="meta")).shape == (1, 512, 30, 40)
    with torch.no_grad():
        fmap = model.feature_map(torch.randn(1, 3, 64, 96))
    assert fmap.shape == (1, 512, 4, 6)
    assert (fmap < 0).any()  # conv5_3 before its ReLU


def test_small_backbone_shape_and_mode_independence():
    model = small_model()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    img = torch.randn(2, 3, 120, 160)
    with torch.no_grad():
        assert model.feature_map(img).shape == (2, 128, 8, 10)
        out_eval = model(img)
        out_train = model.train()(img)
    torch.testing.assert_close(out_train, out_eval, rtol=0, atol=0)


@pytest.mark.parametrize("layers, first_trainable", [("conv5", 24), ("conv4", 17), ("conv3", 10),
                                                     ("conv2", 5), ("full", 0)])
def test_vgg16_trainable_from(layers, first_trainable):
    model = build_model(ModelConfig(num_clusters=2, trainable_from=layers))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {f"base_model.base.{i}.{t}" for i in VGG_CONV_INDICES if i >= first_trainable
                for t in ("weight", "bias")} | {"net_vlad.conv.weight", "net_vlad.centroids"}
    assert trainable == expected
    if layers == "conv5":
        assert {n.split(".")[2] for n in trainable if n.startswith("base_model")} == {"24", "26", "28"}


def test_small_trainable_from_and_config_errors():
    model = build_model(ModelConfig(backbone="small", num_clusters=2, trainable_from="conv5"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("base_model")}
    assert trainable == {"base_model.base.8.weight", "base_model.base.8.bias"}
    with pytest.raises(VprError, match="trainable_from 'conv9'"):
        ModelConfig(trainable_from="conv9")
    with pytest.raises(VprError, match="unknown backbone 'resnet'"):
        ModelConfig(backbone="resnet")
    with pytest.raises(VprError, match="unknown key"):
        ModelConfig.from_dict({"backbone": "small", "colour": "red"})
    cfg = ModelConfig(backbone="small", num_clusters=8, image_size=(120, 160), pca_dim=16)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------------------------------------------------
# checkpoints


def test_save_load_round_trip(tmp_path):
    model = small_model(num_clusters=3, seed=5)
    rng = np.random.default_rng(0)
    model.init_netvlad(rng.standard_normal((3, 128)), rng.standard_normal((40, 128)))
    U, _ = np.linalg.qr(rng.standard_normal((384, 6)))
    model.attach_pca(pca_params(U, np.linspace(2, 1, 6), np.zeros(384)))
    path = tmp_path / "m.pth"
    save_model(path, model, epoch=2, recalls={"1": 0.5})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth"]

    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "vpr-model" and raw["version"] == 1 and raw["epoch"] == 2
    assert raw["model_config"] == {"backbone": "small", "num_clusters": 3, "trainable_from": "full",
                                   "image_size": [64, 96], "pca_dim": 6}
    loaded = load_model(path)
    assert loaded.config == model.config and not loaded.training
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    img = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(img), model(img), rtol=0, atol=0)


def test_save_failure_leaves_nothing(tmp_path):
    model = small_model(num_clusters=2)
    with pytest.raises(ValueError, match="reserved"):
        save_model(tmp_path / "a.pth", model, state_dict={})
    with pytest.raises(Exception):  # noqa: B017 — a lambda cannot be pickled
        save_model(tmp_path / "b.pth", model, bad=lambda: 0)
    assert list(tmp_path.iterdir()) == []


def _reference_vgg_state(num_clusters: int, seed: int) -> dict[str, torch.Tensor]:
    """Random VGG16 + NetVLAD tensors with the reference's key names (without the module. prefix)."""
    g = torch.Generator().manual_seed(seed)
    state, c_in, i = {}, 3, 0
    for v in VGG_CFG:
        if v == "M":
            i += 1
            continue
        std = math.sqrt(2 / (9 * c_in))
        state[f"base_model.base.{i}.weight"] = torch.randn(v, c_in, 3, 3, generator=g) * std
        state[f"base_model.base.{i}.bias"] = 0.1 * torch.randn(v, generator=g)
        c_in, i = v, i + 2  # conv + ReLU
    state["net_vlad.conv.weight"] = 5 * torch.randn(num_clusters, 512, 1, 1, generator=g) / math.sqrt(512)
    state["net_vlad.centroids"] = torch.randn(num_clusters, 512, generator=g) / math.sqrt(512)
    return state


def _reference_forward(state: dict[str, torch.Tensor], img: torch.Tensor) -> torch.Tensor:
    """VGG16 trunk (cut at conv5_3 before ReLU) + NetVLAD + normalisation, spelled out on raw tensors."""
    x, i = img, 0
    for n, v in enumerate(VGG_CFG):
        if v == "M":
            x = F.max_pool2d(x, 2, 2)
            i += 1
            continue
        x = F.conv2d(x, state[f"base_model.base.{i}.weight"], state[f"base_model.base.{i}.bias"], padding=1)
        if n < len(VGG_CFG) - 1:
            x = F.relu(x)
        i += 2
    b, d = x.shape[:2]
    xs = x.reshape(b, d, -1)
    xs = xs / xs.norm(dim=1, keepdim=True)
    w = state["net_vlad.conv.weight"].reshape(-1, d)
    c = state["net_vlad.centroids"]
    a = torch.softmax(torch.einsum("kd,bdn->bkn", w, xs), dim=1)
    v = torch.einsum("bkn,bdn->bkd", a, xs) - a.sum(2)[:, :, None] * c[None]
    v = v / v.norm(dim=2, keepdim=True)
    v = v.reshape(b, -1)
    return v / v.norm(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def reference_state() -> dict[str, torch.Tensor]:
    return _reference_vgg_state(num_clusters=3, seed=7)


def test_load_reference_checkpoint(tmp_path, reference_state):
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference_state.items()}, "epoch": 3,
                "best_recall5": np.float64(0.9)}, path)  # the reference stores numpy metrics
    model = load_model(path)
    assert model.config == ModelConfig(backbone="vgg16", num_clusters=3, pca_dim=None)
    img = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        out = model(img)
        expected = _reference_forward(reference_state, img)
    assert out.shape == (2, 3 * 512)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("wrapped", [False, True])
def test_load_reference_hub_model(tmp_path, reference_state, wrapped):
    g = torch.Generator().manual_seed(8)
    p = 6
    state = dict(reference_state)
    state["pca_layer.weight"] = torch.randn(p, 3 * 512, 1, 1, generator=g)
    state["pca_layer.bias"] = torch.randn(p, generator=g)
    path = tmp_path / "vgg16_netvlad.pth"
    torch.save({"state_dict": state} if wrapped else state, path)
    model = load_model(path)
    assert model.config.pca_dim == p and model.output_dim == p
    img = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        out = model(img)
        v = _reference_forward(reference_state, img)
    y = v @ state["pca_layer.weight"].reshape(p, -1).T + state["pca_layer.bias"]
    torch.testing.assert_close(out, y / y.norm(dim=1, keepdim=True), rtol=0, atol=1e-5)


def test_load_matconvnet_trunk(tmp_path, reference_state):
    trunk = {k[len("base_model.base."):]: v for k, v in reference_state.items() if k.startswith("base_model")}
    assert sorted(trunk) == sorted(f"{i}.{t}" for i in VGG_CONV_INDICES for t in ("weight", "bias"))
    path = tmp_path / "vd16_offtheshelf_conv5_3_max.pth"
    torch.save(trunk, path)
    model = build_model(ModelConfig(num_clusters=2))
    centroids_before = model.net_vlad.centroids.detach().clone()
    load_trunk(model, path)
    for i in VGG_CONV_INDICES:
        assert torch.equal(model.base_model.base[i].weight, trunk[f"{i}.weight"])
        assert torch.equal(model.base_model.base[i].bias, trunk[f"{i}.bias"])
    assert torch.equal(model.net_vlad.centroids, centroids_before)
    assert not model.base_model.base[0].weight.requires_grad  # freezing kept

    del trunk["28.weight"], trunk["28.bias"]
    bad = tmp_path / "partial.pth"
    torch.save(trunk, bad)
    with pytest.raises(VprError, match="all 13 convolution layers") as e:
        load_trunk(model, bad)
    assert str(bad) in str(e.value) and "28.weight" in str(e.value)


def test_load_errors_name_the_file(tmp_path, reference_state):
    model = small_model(num_clusters=2)
    good = tmp_path / "good.pth"
    save_model(good, model)

    missing_file = tmp_path / "nope.pth"
    with pytest.raises(VprError, match="does not exist") as e:
        load_model(missing_file)
    assert str(missing_file) in str(e.value)

    truncated = tmp_path / "truncated.pth"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.txt"
    text.write_text("this is not a checkpoint\n")
    for bad in (truncated, text):
        with pytest.raises(VprError, match="not a readable PyTorch checkpoint") as e:
            load_model(bad)
        assert str(bad) in str(e.value)
        with pytest.raises(VprError) as e:
            load_trunk(model, bad)
        assert str(bad) in str(e.value)

    wrong_shape = dict(reference_state)
    wrong_shape["base_model.base.26.weight"] = torch.zeros(512, 256, 3, 3)
    cases = {
        "shape.pth": (wrong_shape, r"base_model\.base\.26\.weight.*\(512, 256, 3, 3\).*\(512, 512, 3, 3\)"),
        "missing.pth": ({k: v for k, v in reference_state.items() if k != "net_vlad.conv.weight"},
                        r"missing key.*net_vlad\.conv\.weight"),
        "unknown.pth": ({**reference_state, "classifier.0.weight": torch.zeros(2)},
                        r"unexpected key.*classifier\.0\.weight"),
        "nocentroids.pth": ({"a": torch.zeros(1)}, "not a NetVLAD model"),
    }
    for name, (state, pattern) in cases.items():
        path = tmp_path / name
        torch.save({"state_dict": state}, path)
        with pytest.raises(VprError, match=pattern) as e:
            load_model(path)
        assert str(path) in str(e.value)

    raw = torch.load(good, weights_only=True)
    raw["model_config"]["colour"] = "red"
    bad_cfg = tmp_path / "badcfg.pth"
    torch.save(raw, bad_cfg)
    with pytest.raises(VprError, match="unknown key.*colour") as e:
        load_model(bad_cfg)
    assert str(bad_cfg) in str(e.value)
