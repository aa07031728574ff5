"""hubconf.py through ``torch.hub.load(<this checkout>, ..., source="local")``: model files fetched from a
local HTTP server with their SHA-256 checked, and descriptors equal to `vpr describe`'s.

The model is a small-backbone `vpr init-model` model of tiny pictures, its PCA fitted here; commands run
in-process (``vpr.cli.main``). Nothing is downloaded from outside this machine.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vpr.cli import main
from vpr.errors import VprError
from vpr.extract import extract_features
from vpr.models import load_model
from vpr.pca import fit_pca, save_pca

REPO = Path(__file__).resolve().parents[1]
SIZE = (32, 48)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(folder served, base URL, image files): a model.pth of `vpr init-model` and its pca.h5."""
    root = tmp_path_factory.mktemp("hub")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):   # noise of a few scales so that the descriptors differ
        base = rng.integers(0, 255, (6, 8, 3)).astype(np.uint8)
        img = Image.fromarray(base).resize((60 + 4 * i, 40 + 2 * i), Image.Resampling.BILINEAR)
        img.save(photos / f"p{i}.png")
    files = sorted(photos.glob("*.png"))
    site = root / "site"
    site.mkdir()
    assert main(["init-model", "--backbone", "small", "--images", str(photos), "--out",
                 str(site / "model.pth"), "--num-clusters", "4", "--image-size", *map(str, SIZE),
                 "--per-image", "6", "--iterations", "5", "--workers", "0"]) == 0
    desc = extract_features(load_model(site / "model.pth"), files, SIZE, workers=0, desc=None)
    save_pca(site / "pca.h5", fit_pca(desc, 4, checkpoint_sha256=sha256(site / "model.pth")))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site, f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()


def hub(entry: str, **kwargs):
    return torch.hub.load(str(REPO), entry, source="local", **kwargs)


def test_hub_model_descriptors_equal_vpr_describe(served, tmp_path):
    site, url, files = served
    described = tmp_path / "described.npy"
    assert main(["describe", "--checkpoint", str(site / "model.pth"), "--pca", str(site / "pca.h5"),
                 "--out", str(described), *map(str, files)]) == 0
    cache = tmp_path / "cache"
    model = hub("model", url=f"{url}/model.pth", sha256=sha256(site / "model.pth"), pca_url=f"{url}/pca.h5",
                pca_sha256=sha256(site / "pca.h5"), cache_dir=cache)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert sorted(p.name for p in cache.iterdir()) == ["model.pth", "pca.h5"]
    with torch.no_grad():
        from_paths = model(torch.stack([model.transform(f) for f in files])).numpy()
        with Image.open(files[0]) as img:   # a PIL image works too (no EXIF tag here: the same pixels)
            from_pil = model(model.transform(img)[None]).numpy()
    expected = np.load(described)
    assert from_paths.shape == expected.shape == (len(files), 4)
    assert np.abs(from_paths - expected).max() <= 1e-6
    assert np.abs(from_pil[0] - expected[0]).max() <= 1e-6


def test_wrong_sha256_leaves_nothing_and_a_changed_cache_file_is_refused(served, tmp_path):
    site, url, _ = served
    cache = tmp_path / "cache"
    with pytest.raises(VprError, match="checksum mismatch"):
        hub("model", url=f"{url}/model.pth", sha256="0" * 64, cache_dir=cache)
    assert not cache.exists() or not any(cache.iterdir())
    good = sha256(site / "model.pth")
    hub("model", url=f"{url}/model.pth", sha256=good, cache_dir=cache)
    (cache / "model.pth").write_bytes(b"changed")
    with pytest.raises(VprError, match=r"model\.pth: SHA-256 [0-9a-f]{64} differs from the expected"):
        hub("model", url=f"{url}/model.pth", sha256=good, cache_dir=cache)


def test_released_entry_reads_released_yaml(served, tmp_path):
    """'sfrs' without a url takes config/released.yaml's file name; here the cache already holds a file of
    that name (the small model), so nothing is fetched and the SHA-256 given is checked."""
    site, _, _ = served
    from vpr.hub import released
    from vpr.yamlfile import load_yaml

    entry = load_yaml(REPO / "config" / "released.yaml")["external"]["sfrs"]
    assert released("sfrs") == entry
    cache = tmp_path / "cache"
    cache.mkdir()
    name = entry["url"].rsplit("/", 1)[1]
    (cache / name).write_bytes((site / "model.pth").read_bytes())
    model = hub("sfrs", cache_dir=cache, sha256=sha256(site / "model.pth"))
    assert model.config.backbone == "small" and model.output_dim == 4 * 128
    with pytest.raises(VprError, match="differs from the expected"):
        hub("sfrs", cache_dir=cache, sha256="f" * 64)


@pytest.mark.slow
def test_off_the_shelf_efficientnet_lite0_from_images(served):
    """The 'efficientnet_lite0' entry clusters NetVLAD centers on a folder of photos, as `vpr init-model`."""
    _, _, files = served
    model = hub("efficientnet_lite0", images=files[0].parent, num_clusters=4, image_size=(64, 80),
                per_image=5, iterations=5)
    assert model.config.backbone == "efficientnet_lite0" and model.config.image_size == (64, 80)
    with torch.no_grad():
        d = model(torch.stack([model.transform(f) for f in files[:2]]))
    assert d.shape == (2, 4 * 112) and torch.allclose(d.norm(dim=1), torch.ones(2), atol=1e-5)
    with pytest.raises(VprError, match="give images .* or a checkpoint/url, not both"):
        hub("efficientnet_lite0", images=files[0].parent, checkpoint=files[0])


def test_off_the_shelf_entry_without_images_or_file_is_one_error():
    with pytest.raises(VprError, match="the off-the-shelf efficientnet_lite0 model needs images"):
        hub("efficientnet_lite0")
