"""Precision option: auto resolution, float32 NetVLAD head under autocast, bf16 vs fp32 descriptors, CLI."""

from __future__ import annotations

import logging
import math

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from vpr.cli import main
from vpr.cluster import local_descriptors
from vpr.data.index import SplitRecords, build_index
from vpr.errors import VprError
from vpr.extract import extract_features
from vpr.models import ModelConfig, NetVLAD, build_model, save_model
from vpr.numeric_precision import (
    Precision,
    _resolve,
    channels_last,
    choose_precision,
    cpu_flags,
    resolve_precision,
)
from vpr.train.config import TrainConfig, make_config

SIZE = (64, 96)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ----------------------------------------------------------------------------------- auto resolution
@pytest.mark.parametrize("flags, name, reason", [
    ({"fpu", "avx512f", "amx_tile", "amx_bf16", "avx512_bf16"}, "bf16", "auto: CPU has AMX-BF16"),
    ({"fpu", "avx512f", "avx512_bf16"}, "bf16", "auto: CPU has AVX512-BF16"),
    ({"fpu", "avx2", "avx512f"}, "fp32", "auto: CPU has neither AMX-BF16 nor AVX512-BF16"),
    (None, "fp32", "auto: CPU flags unknown (no /proc/cpuinfo)"),
])
def test_auto_on_cpu_follows_the_bf16_flags(flags, name, reason):
    p = choose_precision("auto", "cpu", flags=flags)
    assert (p.name, p.device_type, p.reason) == (name, "cpu", reason)
    assert str(p) == f"{name} ({reason})"


def test_auto_on_cuda_and_other_devices():
    assert choose_precision("auto", "cuda", cuda_bf16=True).name == "bf16"
    assert choose_precision("auto", "cuda", cuda_bf16=False).name == "fp32"
    assert choose_precision("auto", "mps").name == "fp32"


def test_explicit_choices_pass_through_and_bad_ones_are_refused():
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        p = choose_precision(name, "cpu", flags=set())
        assert (p.name, p.dtype, p.reduced, p.reason) == (name, dtype, name != "fp32", "requested")
    assert choose_precision("fp16", "cuda").dtype == torch.float16
    with pytest.raises(VprError, match="fp16: float16 autocast is for CUDA devices only"):
        choose_precision("fp16", "cpu", flags={"avx512_bf16"})
    with pytest.raises(VprError, match="--precision half: not one of auto, fp32, tf32, bf16, fp16"):
        choose_precision("half", "cpu")


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse avx512_bf16 amx_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx512_bf16", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") is None


def test_resolution_is_logged_once(caplog):
    _resolve.cache_clear()
    with caplog.at_level(logging.INFO, logger="vpr.numeric_precision"):
        a = resolve_precision("fp32", "cpu")
        b = resolve_precision("fp32", torch.device("cpu"))
    assert a is b and a == Precision("fp32", "cpu")
    assert [r.getMessage() for r in caplog.records] == ["precision: fp32 (requested)"]
    assert resolve_precision(a, "cpu") is a
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vpr.numeric_precision"):
        resolve_precision("fp32", "cpu", "the training forward")
    assert caplog.records[0].getMessage() == "precision: fp32 (requested) for the training forward"


def test_autocast_context_follows_the_precision():
    x = torch.randn(2, 3)
    with Precision("bf16", "cpu").autocast():
        assert (x @ x.T).dtype == torch.bfloat16
    with Precision("fp32", "cpu").autocast():
        assert (x @ x.T).dtype == torch.float32


# ----------------------------------------------------------------------------- float32 NetVLAD head
def _netvlad_reference(x: np.ndarray, w: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Plain float64 NetVLAD of one (D, h, w) map: L2 per location, softmax_k(w_k·x), Σ a (x − c)."""
    d = x.shape[0]
    xs = x.reshape(d, -1).T.astype(np.float64)                     # (n, D)
    xs = xs / np.linalg.norm(xs, axis=1, keepdims=True)
    logits = xs @ w.T                                              # (n, K)
    logits -= logits.max(axis=1, keepdims=True)
    a = np.exp(logits)
    a /= a.sum(axis=1, keepdims=True)
    v = np.zeros((w.shape[0], d))
    for k in range(w.shape[0]):
        for i in range(xs.shape[0]):
            v[k] += a[i, k] * (xs[i] - c[k])
    return v


def test_netvlad_runs_in_float32_under_autocast_with_large_alpha():
    torch.manual_seed(0)
    k, d, alpha = 8, 16, 500.0
    layer = NetVLAD(k, d)
    c = torch.randn(k, d)
    c_hat = c / c.norm(dim=1, keepdim=True)
    with torch.no_grad():
        layer.conv.weight.copy_((alpha * c_hat).reshape(k, d, 1, 1))
        layer.centroids.copy_(c)
    x = (torch.randn(2, d, 4, 6) * 30).to(torch.bfloat16)   # what a bf16 backbone hands over
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        regions = layer.regions(x)
    assert out.dtype == torch.float32 and regions.dtype == torch.float32
    assert torch.isfinite(out).all() and torch.isfinite(regions).all()
    for b in range(2):
        expected = _netvlad_reference(x[b].float().numpy(), alpha * c_hat.numpy(), c.numpy())
        np.testing.assert_allclose(out[b].numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(regions[:, 0].numpy(), out.numpy(), rtol=1e-4, atol=1e-4)


def test_embednet_head_is_float32_under_autocast_and_the_backbone_is_not():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="small", num_clusters=4, image_size=SIZE)).eval()
    seen = {}
    model.base_model.register_forward_hook(lambda m, i, o: seen.update(dtype=o.dtype))
    x = torch.randn(2, 3, *SIZE) * 50
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, regions = model(x), model.regions(x)
    assert seen["dtype"] == torch.bfloat16
    assert out.dtype == torch.float32 and regions.dtype == torch.float32
    np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, atol=1e-6)


def test_channels_last_context_restores_the_layout_and_keeps_the_parameters():
    model = build_model(ModelConfig(backbone="small", num_clusters=4, image_size=SIZE))
    conv = model.base_model.base[0].weight
    ident = id(conv)
    with channels_last(model):
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert id(model.base_model.base[0].weight) == ident and conv.is_contiguous()


# ------------------------------------------------------------------------- bf16 vs fp32 descriptors
def _write_scene(path, seed, noise_seed=None):
    """A blocky random scene; with noise_seed, the same scene with mild pixel noise (a 'query')."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(SIZE[0] // 8, SIZE[1] // 8, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(base).resize(SIZE[::-1], Image.Resampling.NEAREST), dtype=np.int16)
    if noise_seed is not None:
        img = img + np.random.default_rng(noise_seed).integers(-20, 21, size=img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    db = [root / f"db{i}.png" for i in range(8)]
    queries = [root / f"q{i}.png" for i in range(4)]
    for i, p in enumerate(db):
        _write_scene(p, i)
    for i, p in enumerate(queries):
        _write_scene(p, 2 * i, noise_seed=100 + i)   # query i shows database scene 2i
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="small", num_clusters=8, image_size=SIZE)).eval()
    desc = local_descriptors(model, [str(p) for p in db], list(range(len(db))), SIZE, 20, 0, 4, 0,
                             torch.device("cpu"), progress=False)
    rng = np.random.default_rng(0)
    alpha = model.init_netvlad(desc[rng.choice(len(desc), 8, replace=False)], desc)
    assert alpha > 50   # the regime where a bf16 softmax would hurt
    return model, db, queries


def test_bf16_descriptors_are_close_to_fp32_and_rank_the_same(scenes):
    model, db, queries = scenes
    files = db + queries
    d32 = extract_features(model, files, SIZE, batch_size=4, workers=0, device="cpu", precision="fp32")
    d16 = extract_features(model, files, SIZE, batch_size=4, workers=0, device="cpu", precision="bf16")
    assert d16.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(d16, axis=1), 1.0, atol=1e-5)
    cos = (d32 * d16).sum(1)
    assert cos.min() > 0.999
    assert np.abs(d32 - d16).max() > 1e-6   # the bf16 path did run in reduced precision
    # Unit vectors moved by at most δ each: q'·x' − q·x = q·b + a·x + a·b, so every squared distance
    # 2 − 2q·x moves by at most ε = 2(2δ + δ²); two database images whose fp32 distances differ by more
    # than 2ε cannot swap places.
    delta = np.linalg.norm(d32 - d16, axis=1).max()
    eps = 2 * (2 * delta + delta ** 2)
    checked = 0
    for q in range(len(queries)):
        dist32 = ((d32[:len(db)] - d32[len(db) + q]) ** 2).sum(1)
        dist16 = ((d16[:len(db)] - d16[len(db) + q]) ** 2).sum(1)
        assert np.argmin(dist32) == np.argmin(dist16) == 2 * q   # easy case: the right scene comes first
        for i in range(len(db)):
            for j in range(len(db)):
                if dist32[j] - dist32[i] > 2 * eps:
                    assert dist16[i] < dist16[j]
                    checked += 1
    assert checked >= len(queries) * (len(db) - 1)   # at least every pair with the right scene


def test_cluster_descriptors_under_bf16_are_float32_unit_vectors(scenes):
    model, db, _ = scenes
    desc = local_descriptors(model, [str(p) for p in db[:2]], [0, 1], SIZE, 10, 0, 2, 0,
                             torch.device("cpu"), progress=False, precision="bf16")
    assert desc.dtype == np.float32 and desc.shape == (20, 128)
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------------ vpr extract
@pytest.fixture(scope="module")
def extract_setup(tmp_path_factory, scenes):
    model, db, queries = scenes
    root = tmp_path_factory.mktemp("extract")
    ckpt = root / "model.pth"
    save_model(ckpt, model)
    n_db, n_q = len(db), len(queries)
    records = SplitRecords(
        split="test", db_path=[p.name for p in db],
        db_utm=np.stack([np.arange(n_db) * 100.0, np.zeros(n_db)], 1), db_place=np.arange(n_db),
        query_path=[p.name for p in queries],
        query_utm=np.stack([np.arange(n_q) * 200.0 + 5, np.zeros(n_q)], 1), query_place=np.arange(n_q) + 100)
    index = root / "test.h5"
    build_index(records, index, root=db[0].parent, fmt="csv", source="test.csv", source_sha256="0")
    return ckpt, index, root


def _extract(ckpt, index, out, *extra):
    return main(["extract", "--checkpoint", str(ckpt), "--index", str(index), "--out", str(out),
                 "--workers", "0", "--device", "cpu", *extra])


def test_extract_precision_flag(extract_setup, caplog, capsys):
    ckpt, index, root = extract_setup
    feats = {}
    for p in ("fp32", "bf16"):
        _resolve.cache_clear()
        with caplog.at_level(logging.INFO, logger="vpr.numeric_precision"):
            assert _extract(ckpt, index, root / f"{p}.h5", "--precision", p) == 0, capsys.readouterr().err
        assert f"precision: {p} (requested)" in caplog.text
        with h5py.File(root / f"{p}.h5", "r") as f:
            feats[p] = np.concatenate([f["db"][()], f["query"][()]])
            assert f.attrs["precision"] == p and f["db"].dtype == np.float32
    assert (feats["fp32"] * feats["bf16"]).sum(1).min() > 0.999
    assert not np.array_equal(feats["fp32"], feats["bf16"])
    # auto resolves to one of the two and says why
    _resolve.cache_clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vpr.numeric_precision"):
        assert _extract(ckpt, index, root / "auto.h5") == 0
    with h5py.File(root / "auto.h5", "r") as f:
        chosen = f.attrs["precision"]
    assert chosen in ("fp32", "bf16") and f"precision: {chosen} (auto: CPU " in caplog.text


def test_extract_fp16_on_cpu_is_refused_cleanly(extract_setup, capsys):
    ckpt, index, root = extract_setup
    out = root / "fp16.h5"
    assert _extract(ckpt, index, out, "--precision", "fp16") == 2
    err = capsys.readouterr().err
    assert "--precision fp16: float16 autocast is for CUDA devices only" in err and "Traceback" not in err
    assert not any(p.name.startswith(".fp16.h5") or p.name == "fp16.h5" for p in root.iterdir())
    with pytest.raises(SystemExit):
        _extract(ckpt, index, out, "--precision", "half")
    assert "invalid choice: 'half'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ training config
def test_train_config_precision_fields(tmp_path):
    assert (TrainConfig().precision, TrainConfig().extract_precision) == ("fp32", "auto")
    assert make_config(None, {"precision": "bf16"}).precision == "bf16"
    assert make_config(None, {"extract_precision": "fp16"}).extract_precision == "fp16"   # CUDA extraction
    # both change the weights (the forward; the mined tuples), so a resumed run may not change them
    assert TrainConfig(precision="auto").fingerprint() != TrainConfig().fingerprint()
    assert TrainConfig(extract_precision="fp32").fingerprint() != TrainConfig().fingerprint()
    with pytest.raises(VprError, match="precision: fp16 training needs gradient scaling"):
        make_config(None, {"precision": "fp16"})
    (tmp_path / "c.yaml").write_text("precision: double\n")
    with pytest.raises(VprError, match="precision: 'double' is not one of auto, fp32, tf32, bf16"):
        make_config(tmp_path / "c.yaml")


# ------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@needs_cuda
def test_auto_on_this_gpu_matches_its_bf16_support():
    _resolve.cache_clear()
    p = resolve_precision("auto", "cuda")
    expected = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    assert p.name == expected and p.device_type == "cuda"


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_reduced_precision_descriptors_match_fp32(scenes, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no native bfloat16")
    model, db, queries = scenes
    files = db + queries
    ref = extract_features(model, files, SIZE, batch_size=4, workers=0, device="cpu", precision="fp32")
    got = extract_features(model, files, SIZE, batch_size=4, workers=0, device="cuda", precision=precision)
    model.cpu()
    assert got.dtype == np.float32 and (ref * got).sum(1).min() > 0.999


@pytest.mark.gpu
@needs_cuda
def test_gpu_compiled_extraction_matches(scenes):
    model, db, _ = scenes
    ref = extract_features(model, db, SIZE, batch_size=4, workers=0, device="cuda", precision="fp32")
    got = extract_features(model, db, SIZE, batch_size=4, workers=0, device="cuda", precision="fp32",
                           compile=True)
    model.cpu()
    assert math.isclose(float((ref * got).sum(1).min()), 1.0, abs_tol=1e-4)
