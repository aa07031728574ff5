"""`vpr extract` / `vpr describe` against a plain re-statement (PIL load, torchvision resize, mean, model),
and the image loading that `vpr cluster` shares with them."""

from __future__ import annotations

import zlib

import h5py
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode
from vprtest import without_progress

from vpr.cli import main
from vpr.data.images import DEFAULT_MAX_IMAGE_PIXELS
from vpr.data.index import SplitRecords, build_index
from vpr.extract import extract_features
from vpr.models import ModelConfig, build_model, save_model

MEAN = np.array([123.68, 116.779, 103.939], dtype=np.float32)
SIZE = (64, 96)  # the model's (H, W)

# (H, W) of the test images: database images of assorted sizes, queries of mixed orientation
DB_SHAPES = [(64, 96), (50, 70), (80, 120), (64, 96), (33, 47)]
QUERY_SHAPES = [(60, 80), (80, 60), (60, 80), (45, 45)]


def _write_image(path, h, w, seed):
    rng = np.random.default_rng(seed)
    # smooth-ish content so JPEG compression does not dominate
    base = rng.integers(0, 256, size=(h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.Resampling.NEAREST)
    img.save(path, quality=95) if path.suffix == ".jpg" else img.save(path)


@pytest.fixture(scope="module")
def model_and_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="small", image_size=SIZE)).eval()
    path = tmp_path_factory.mktemp("model") / "model.pth"
    save_model(path, model)
    return model, path


def _make_dataset(root, fmt="csv"):
    """Images on disk plus an index file over them; returns (index path, db files, query files)."""
    db_path = [f"db/{i:03d}.{'jpg' if i % 2 else 'png'}" for i in range(len(DB_SHAPES))]
    q_path = [f"query/{i:03d}.{'png' if i % 2 else 'jpg'}" for i in range(len(QUERY_SHAPES))]
    for seed, (rel, (h, w)) in enumerate(zip(db_path + q_path, DB_SHAPES + QUERY_SHAPES, strict=True)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _write_image(root / rel, h, w, seed)
    n_db, n_q = len(db_path), len(q_path)
    records = SplitRecords(
        split="test", db_path=db_path, db_utm=np.stack([np.arange(n_db) * 100.0, np.zeros(n_db)], 1),
        db_place=np.arange(n_db), query_path=q_path,
        query_utm=np.stack([np.arange(n_q) * 100.0 + 5, np.zeros(n_q)], 1), query_place=np.arange(n_q) + 100)
    index = root / "test.h5"
    build_index(records, index, root=root, fmt=fmt, source="test.csv", source_sha256="0")
    return index, [root / p for p in db_path], [root / p for p in q_path]


def _reference(model, path, size=None, shorter_side=None):
    """One image at a time: PIL -> torchvision resize -> 0..255 minus mean -> model -> L2."""
    img = Image.open(path).convert("RGB")
    target = list(size) if size is not None else shorter_side
    img = TF.resize(img, target, interpolation=InterpolationMode.BILINEAR, antialias=True)
    arr = np.asarray(img, dtype=np.float32) - MEAN
    x = torch.from_numpy(arr.transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        d = model(x)[0].numpy().astype(np.float64)
    return d / np.linalg.norm(d)


def _no_leftovers(directory, name):
    return not any(p.name.startswith(f".{name}.") or p.name == name for p in directory.iterdir())


def test_extract_matches_plain_restatement(tmp_path, model_and_checkpoint, capsys):
    model, ckpt = model_and_checkpoint
    index, db_files, q_files = _make_dataset(tmp_path)
    out = tmp_path / "out" / "feat.h5"
    rc = main(["extract", "--precision", "fp32", "--checkpoint", str(ckpt), "--index", str(index),
               "--out", str(out),
               "--batch-size", "2", "--workers", "0", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    with h5py.File(out, "r") as f:
        db, q, attrs = f["db"][()], f["query"][()], dict(f.attrs)
    assert db.dtype == np.float32 and q.dtype == np.float32
    assert db.shape == (len(db_files), 64 * 128) and q.shape == (len(q_files), 64 * 128)
    for i, path in enumerate(db_files):
        np.testing.assert_allclose(db[i], _reference(model, path, size=SIZE), atol=1e-5)
    for i, path in enumerate(q_files):  # not tokyo247: queries use the fixed size too
        np.testing.assert_allclose(q[i], _reference(model, path, size=SIZE), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(db, axis=1), 1.0, atol=1e-5)
    assert attrs["query_resize"] == "fixed" and attrs["dim"] == 64 * 128 and attrs["pca"] == ""
    assert list(attrs["image_size"]) == list(SIZE)
    assert attrs["checkpoint"] == str(ckpt) and attrs["index"] == str(index)


def test_extract_tokyo_queries_keep_aspect_ratio_with_workers(tmp_path, model_and_checkpoint, capsys):
    model, ckpt = model_and_checkpoint
    index, db_files, q_files = _make_dataset(tmp_path, fmt="tokyo247")
    out = tmp_path / "feat.h5"
    rc = main(["extract", "--precision", "fp32", "--checkpoint", str(ckpt), "--index", str(index),
               "--out", str(out),
               "--batch-size", "3", "--workers", "1", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    with h5py.File(out, "r") as f:
        db, q, resize = f["db"][()], f["query"][()], f.attrs["query_resize"]
    assert resize == "shorter-side"
    for i, path in enumerate(db_files):
        np.testing.assert_allclose(db[i], _reference(model, path, size=SIZE), atol=1e-5)
    for i, path in enumerate(q_files):  # shorter side = max(64, 96) = 96, in index order
        np.testing.assert_allclose(q[i], _reference(model, path, shorter_side=96), atol=1e-5)
    # the same images with the fixed resize give different descriptors (the option matters)
    assert np.abs(q[1] - _reference(model, q_files[1], size=SIZE)).max() > 1e-4


def test_extract_features_library_mixed_sizes_order(tmp_path, model_and_checkpoint):
    model, _ = model_and_checkpoint
    files = []
    for i, (h, w) in enumerate([(40, 60), (60, 40), (40, 60), (60, 40), (40, 60)]):
        files.append(tmp_path / f"{i}.png")
        _write_image(files[-1], h, w, seed=50 + i)
    model.train()
    feats = extract_features(model, files, None, batch_size=2, workers=0, shorter_side=48, device="cpu")
    assert model.training  # mode restored for the training loop that reuses this function
    model.eval()
    for i, path in enumerate(files):
        np.testing.assert_allclose(feats[i], _reference(model, path, shorter_side=48), atol=1e-5)


def test_extract_with_pca_file(tmp_path, model_and_checkpoint, capsys):
    model, ckpt = model_and_checkpoint
    index, db_files, _ = _make_dataset(tmp_path)
    D, k = 64 * 128, 16
    rng = np.random.default_rng(1)
    U = np.linalg.qr(rng.standard_normal((D, k)))[0]
    lams = np.linspace(2.0, 0.1, k)
    mu = rng.standard_normal(D) * 0.01
    with h5py.File(tmp_path / "pca.h5", "w") as f:
        f["U"], f["lams"], f["mu"], f["Utmu"] = U, lams, mu, U.T @ mu
    out = tmp_path / "feat.h5"
    rc = main(["extract", "--precision", "fp32", "--checkpoint", str(ckpt), "--index", str(index),
               "--out", str(out),
               "--pca", str(tmp_path / "pca.h5"), "--workers", "0", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    with h5py.File(out, "r") as f:
        db, attrs = f["db"][()], dict(f.attrs)
    assert db.shape == (len(db_files), k) and attrs["dim"] == k and attrs["whiten"]
    for i, path in enumerate(db_files):
        x = _reference(model, path, size=SIZE)
        y = (U.T @ (x - mu)) / np.sqrt(lams)  # whitened projection, then L2
        np.testing.assert_allclose(db[i], y / np.linalg.norm(y), atol=1e-4)


@pytest.mark.parametrize("workers", [0, 1])
def test_extract_missing_or_corrupt_image_fails_cleanly(tmp_path, model_and_checkpoint, capsys, workers):
    _, ckpt = model_and_checkpoint
    index, _, q_files = _make_dataset(tmp_path)
    q_files[2].unlink()
    out = tmp_path / "feat.h5"
    args = ["extract", "--checkpoint", str(ckpt), "--index", str(index), "--out", str(out),
            "--workers", str(workers), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{q_files[2]}: image not found" in err and "Traceback" not in err
    assert _no_leftovers(tmp_path, "feat.h5")
    # a file that exists but is corrupt is only found when decoding (inside a worker when workers > 0)
    q_files[2].write_bytes(b"\xff\xd8\xff garbage")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{q_files[2]}: unreadable or corrupt image" in err and "Traceback" not in err
    assert without_progress(err).count("\n") == 1  # one clean line (after the database's progress)
    assert _no_leftovers(tmp_path, "feat.h5")


def test_describe_npy_and_h5(tmp_path, model_and_checkpoint, capsys):
    model, ckpt = model_and_checkpoint
    files = []
    for i, (h, w) in enumerate([(64, 96), (30, 50), (70, 40)]):
        files.append(tmp_path / f"img{i}.png")
        _write_image(files[-1], h, w, seed=70 + i)
    rc = main(["describe", *map(str, files), "--checkpoint", str(ckpt), "--out", str(tmp_path / "d.npy"),
               "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    desc = np.load(tmp_path / "d.npy")
    assert desc.shape == (3, 64 * 128)
    for i, path in enumerate(files):
        np.testing.assert_allclose(desc[i], _reference(model, path, size=SIZE), atol=1e-5)
        assert f"{path}\tshape (8192,)\tnorm 1.000000" in captured.out
    rc = main(["describe", str(files[1]), "--checkpoint", str(ckpt), "--out", str(tmp_path / "d.h5"),
               "--resize", "shorter-side", "--device", "cpu"])
    assert rc == 0
    with h5py.File(tmp_path / "d.h5", "r") as f:
        expected = _reference(model, files[1], shorter_side=96)
        np.testing.assert_allclose(f["descriptors"][0], expected, atol=1e-5)
        assert list(f["paths"].asstr()[()]) == [str(files[1])]
    capsys.readouterr()
    assert main(["describe", str(files[0]), "--checkpoint", str(ckpt), "--out", str(tmp_path / "d.txt")]) == 2
    assert "d.txt: unknown file type" in capsys.readouterr().err
    assert main(["describe", str(tmp_path / "none.png"), "--checkpoint", str(ckpt),
                 "--out", str(tmp_path / "e.npy")]) == 2
    assert "none.png: image not found" in capsys.readouterr().err
    assert _no_leftovers(tmp_path, "e.npy")
    assert main(["describe", str(files[0]), "--checkpoint", str(ckpt), "--device", "nonsense"]) == 2
    assert "--device nonsense: not a torch device" in capsys.readouterr().err



def _png_bomb(path, w, h):
    """A complete, valid 1-bit grey PNG of w x h black pixels, written by hand (PNG spec: signature, IHDR,
    IDAT of zlib-compressed rows each led by filter byte 0, IEND; each chunk length, type, data, CRC-32):
    12,000 x 12,000 is 144 megapixels in a file of about 20 KB."""
    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    row = bytes(1 + (w + 7) // 8)
    header = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])   # depth 1, grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(row * h, 9)) + chunk(b"IEND", b""))


def test_an_image_above_the_pixel_limit_is_refused_before_decoding(tmp_path, model_and_checkpoint, capsys):
    _, ckpt = model_and_checkpoint
    bomb = tmp_path / "bomb.png"
    _png_bomb(bomb, 12_000, 12_000)
    assert bomb.stat().st_size < 100_000 and Image.open(bomb).size == (12_000, 12_000)
    capsys.readouterr()
    assert main(["describe", str(bomb), "--checkpoint", str(ckpt), "--out", str(tmp_path / "d.npy"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "DecompressionBomb" not in err
    assert (f"{bomb}: 12000 x 12000 pixels (144.0 megapixels) is above the limit of 100,000,000 pixels"
            in err and "--max-image-pixels" in err)
    assert _no_leftovers(tmp_path, "d.npy")
    # the option moves the limit; an image of exactly the limit is accepted
    small = tmp_path / "small.png"
    _write_image(small, 30, 40, seed=3)
    assert main(["describe", str(small), "--checkpoint", str(ckpt), "--device", "cpu",
                 "--max-image-pixels", "1199"]) == 2
    assert f"{small}: 40 x 30 pixels (0.0 megapixels) is above the limit of 1,199 pixels" in \
        capsys.readouterr().err
    assert main(["describe", str(small), "--checkpoint", str(ckpt), "--device", "cpu",
                 "--max-image-pixels", "1200"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["describe", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"default: {DEFAULT_MAX_IMAGE_PIXELS} (100 megapixels)" in help_text


@pytest.mark.parametrize("workers", [0, 1])
def test_extract_refuses_an_image_above_the_pixel_limit(tmp_path, model_and_checkpoint, capsys, workers):
    """The same limit where `vpr extract` reads images (also inside a DataLoader worker)."""
    _, ckpt = model_and_checkpoint
    index, db_files, _ = _make_dataset(tmp_path)
    _write_image(db_files[1], 100, 120, seed=5)          # 12,000 pixels; the others have at most 9,600
    out = tmp_path / "feat.h5"
    args = ["extract", "--checkpoint", str(ckpt), "--index", str(index), "--out", str(out),
            "--workers", str(workers), "--device", "cpu", "--max-image-pixels", "10000"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{db_files[1]}: 120 x 100 pixels" in err and "limit of 10,000 pixels" in err
    assert err.count("\n") == 1
    assert _no_leftovers(tmp_path, "feat.h5")

@pytest.mark.parametrize("workers", [0, 1])
def test_cluster_corrupt_image_fails_cleanly(tmp_path, capsys, workers):
    """`vpr cluster` loads its sample through the same batches as `vpr extract`: one clean line."""
    index, db_files, q_files = _make_dataset(tmp_path)
    db_files[1].write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "centers.h5"
    args = ["cluster", "--index", str(index), "--out", str(out), "--backbone", "small", "--image-size", "48",
            "64", "--num-clusters", "2", "--images", "100", "--per-image", "4",
            "--workers", str(workers), "--batch-size", "2"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{db_files[1]}: unreadable or corrupt image" in err and "Traceback" not in err
    assert without_progress(err).count("\n") == 1
    assert _no_leftovers(tmp_path, "centers.h5")


def test_cluster_sample_is_seeded_and_independent_of_file_order_and_workers(tmp_path):
    from vpr.cluster import cluster

    _, db_files, q_files = _make_dataset(tmp_path)
    files = [str(p) for p in db_files + q_files]
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="small", num_clusters=2, image_size=(48, 64)))
    kw = dict(num_images=4, per_image=5, iterations=5, seed=7, batch_size=3, precision="fp32")

    def read(path):
        with h5py.File(path) as f:
            return f["centroids"][()], f["descriptors"][()]

    cluster(model, files, tmp_path / "a.h5", workers=0, **kw)
    cluster(model, files[::-1], tmp_path / "b.h5", workers=1, **kw)
    cluster(model, files, tmp_path / "c.h5", workers=0, **{**kw, "seed": 8})
    (ca, da), (cb, db), (_, dc) = read(tmp_path / "a.h5"), read(tmp_path / "b.h5"), read(tmp_path / "c.h5")
    assert da.shape == (4 * 5, 128)
    np.testing.assert_array_equal(da, db)
    np.testing.assert_array_equal(ca, cb)
    assert not np.array_equal(da, dc)   # another seed draws other images or locations


def test_a_checkpoint_of_other_content_than_its_expected_sha256_is_refused_first(model_and_checkpoint,
                                                                                  tmp_path, capsys):
    import hashlib

    checkpoint = model_and_checkpoint[1]
    right = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    out = tmp_path / "f.h5"
    args = ["extract", "--checkpoint", str(checkpoint), "--index", str(tmp_path / "no index.h5"),
            "--out", str(out)]
    wrong = right[:-1] + ("0" if right[-1] != "0" else "1")
    assert main([*args, "--checkpoint-sha256", wrong]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"vpr extract: error: {checkpoint}: SHA-256 {right} differs from the {wrong} expected "
                   "(--checkpoint-sha256): not the file it should be; replace it"]
    # the right digest (in capitals too) passes the check: the next thing refused is the missing index
    assert main([*args, "--checkpoint-sha256", right.upper()]) == 2
    err = capsys.readouterr().err
    assert "SHA-256" not in err and "no index.h5" in err
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--checkpoint-sha256", "abc"])
    assert exit_.value.code == 2 and "expected 64 hexadecimal digits, got 'abc'" in capsys.readouterr().err
    assert not out.exists()
