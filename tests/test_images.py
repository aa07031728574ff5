"""Image loading, the MatConvNet input convention, resizing and size-bucketed batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from vpr.data.images import (
    VGG_MEAN_RGB,
    ImageListDataset,
    SizeBucketBatchSampler,
    check_images_exist,
    image_batches,
    image_size,
    load_rgb,
    resize_fixed,
    resize_shorter_side,
    shorter_side_size,
    to_tensor,
)
from vpr.errors import VprError


def _random_image(h: int, w: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


def test_vgg_mean_is_the_matconvnet_mean():
    # docs/method.md §1.5; the reference writes the mean on the 0..1 scale:
    # (0.48501960784313836, 0.4579568627450961, 0.4076039215686255)
    assert VGG_MEAN_RGB == pytest.approx((0.48501960784313836 * 255, 0.4579568627450961 * 255,
                                          0.4076039215686255 * 255), abs=1e-9)


def test_to_tensor_hand_numbers_on_2x2_image():
    # rows: (255,0,10) (1,2,3) / (124,117,104) (0,255,128)
    pixels = np.array([[[255, 0, 10], [1, 2, 3]], [[124, 117, 104], [0, 255, 128]]], dtype=np.uint8)
    t = to_tensor(Image.fromarray(pixels))
    assert t.dtype == torch.float32 and tuple(t.shape) == (3, 2, 2)
    expected_r = [[255 - 123.68, 1 - 123.68], [124 - 123.68, 0 - 123.68]]
    expected_g = [[0 - 116.779, 2 - 116.779], [117 - 116.779, 255 - 116.779]]
    expected_b = [[10 - 103.939, 3 - 103.939], [104 - 103.939, 128 - 103.939]]
    np.testing.assert_allclose(t[0].numpy(), expected_r, atol=1e-4)
    np.testing.assert_allclose(t[1].numpy(), expected_g, atol=1e-4)
    np.testing.assert_allclose(t[2].numpy(), expected_b, atol=1e-4)


def test_load_rgb_converts_grey_and_rgba(tmp_path):
    Image.fromarray(np.full((3, 4), 200, dtype=np.uint8), mode="L").save(tmp_path / "g.png")
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 50
    rgba[..., 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    g = load_rgb(tmp_path / "g.png")
    assert g.mode == "RGB" and g.size == (4, 3)
    assert (np.asarray(g) == 200).all()
    a = load_rgb(tmp_path / "a.png")
    assert a.mode == "RGB" and (np.asarray(a)[..., 0] == 50).all() and (np.asarray(a)[..., 1:] == 0).all()


def test_load_rgb_errors_name_the_file(tmp_path):
    with pytest.raises(VprError, match=r"nope\.png: image not found"):
        load_rgb(tmp_path / "nope.png")
    (tmp_path / "garbage.jpg").write_bytes(b"this is not an image at all")
    with pytest.raises(VprError, match=r"garbage\.jpg: unreadable or corrupt image"):
        load_rgb(tmp_path / "garbage.jpg")
    _random_image(64, 64).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])  # header fine, pixels truncated
    assert image_size(tmp_path / "cut.jpg") == (64, 64)
    with pytest.raises(VprError, match=r"cut\.jpg: unreadable or corrupt image"):
        load_rgb(tmp_path / "cut.jpg")


def test_check_images_exist_names_first_missing(tmp_path):
    _random_image(4, 4).save(tmp_path / "a.png")
    check_images_exist([tmp_path / "a.png"])
    with pytest.raises(VprError, match=r"b\.png: image not found \(2 of 3 image\(s\) missing\)"):
        check_images_exist([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"])


@pytest.mark.parametrize("hw, s, expected", [
    ((480, 640), 640, (640, 853)),     # 640 * 640 / 480 = 853.33 -> 853
    ((640, 480), 640, (853, 640)),
    ((3024, 4032), 640, (640, 853)),
    ((300, 300), 640, (640, 640)),
    ((1000, 1500), 96, (96, 144)),
    ((7, 10), 5, (5, 7)),              # 50 / 7 = 7.14 -> 7
])
def test_shorter_side_sizes_by_hand(hw, s, expected):
    assert shorter_side_size(hw, s) == expected


@pytest.mark.parametrize("h, w", [(30, 40), (41, 29), (25, 25)])
def test_resize_shorter_side_matches_torchvision_int_resize(h, w):
    img = _random_image(h, w, seed=h)
    ours = resize_shorter_side(img, 64)
    ref = TF.resize(img, 64, interpolation=InterpolationMode.BILINEAR, antialias=True)
    assert ours.size == ref.size
    assert min(ours.size) == 64
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))


def test_resize_fixed_is_bilinear_antialiased():
    img = _random_image(50, 70, seed=3)
    ours = resize_fixed(img, (24, 32))
    assert ours.size == (32, 24)  # PIL sizes are (W, H)
    ref = TF.resize(img, [24, 32], interpolation=InterpolationMode.BILINEAR, antialias=True)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
    # antialiasing: shrinking a 1-pixel checkerboard by 4 averages it to mid grey, no aliasing
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    small = np.asarray(resize_fixed(Image.fromarray(board).convert("RGB"), (16, 16))).astype(float)
    assert np.abs(small[2:-2, 2:-2] - 127.5).max() < 3


def test_size_buckets_keep_order_and_group_sizes():
    A, B, C = (10, 20), (20, 10), (5, 5)
    sizes = [A, B, A, A, B, C, A]
    sampler = SizeBucketBatchSampler(sizes, batch_size=2)
    assert list(sampler) == [[0, 2], [3, 6], [1, 4], [5]]
    assert len(sampler) == 4
    assert list(SizeBucketBatchSampler(sizes, batch_size=10)) == [[0, 2, 3, 6], [1, 4], [5]]
    assert list(SizeBucketBatchSampler([A] * 5, batch_size=2)) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError):
        SizeBucketBatchSampler(sizes, batch_size=0)


def test_dataset_shorter_side_batches_by_size(tmp_path):
    shapes = [(30, 40), (40, 30), (30, 40), (60, 80), (40, 30)]  # (H, W)
    files = []
    for i, (h, w) in enumerate(shapes):
        files.append(tmp_path / f"{i}.png")
        _random_image(h, w, seed=i).save(files[-1])
    ds = ImageListDataset(files, shorter_side=60)
    sizes = [ds.output_size(i) for i in range(len(ds))]
    assert sizes == [(60, 80), (80, 60), (60, 80), (60, 80), (80, 60)]
    loader = image_batches(files, None, batch_size=4, workers=0, device=torch.device("cpu"), shorter_side=60)
    batches = [(x.shape, idx.tolist()) for x, idx in loader]
    assert batches == [((3, 3, 60, 80), [0, 2, 3]), ((2, 3, 80, 60), [1, 4])]
    # item i is (the image resized and normalised, i)
    t, i = ds[3]
    assert i == 3
    expected = np.asarray(TF.resize(Image.open(files[3]), 60), dtype=np.float32) - np.array(VGG_MEAN_RGB)
    np.testing.assert_allclose(t.numpy(), expected.transpose(2, 0, 1), atol=1e-4)


def test_dataset_fixed_and_native_sizes(tmp_path):
    _random_image(30, 40).save(tmp_path / "a.png")
    assert tuple(ImageListDataset([tmp_path / "a.png"], size=(16, 24))[0][0].shape) == (3, 16, 24)
    assert tuple(ImageListDataset([tmp_path / "a.png"])[0][0].shape) == (3, 30, 40)
    with pytest.raises(ValueError):
        ImageListDataset([tmp_path / "a.png"], size=(16, 24), shorter_side=10)


# ---- every image mode to 8-bit RGB with its content ---------------------------------------------------

def _grey_ramp() -> np.ndarray:
    """8-bit levels 0..255 along a 4x256 image (every level once per row)."""
    return np.tile(np.arange(256, dtype=np.uint8), (4, 1))


def _rgb(path) -> np.ndarray:
    img = load_rgb(path)
    assert img.mode == "RGB"
    return np.asarray(img).astype(np.int64)


def _assert_grey(got: np.ndarray, expected_levels: np.ndarray, tol: int = 0) -> None:
    for c in range(3):
        np.testing.assert_allclose(got[..., c], expected_levels, atol=tol, rtol=0)


@pytest.mark.parametrize("fmt, mode", [("png", "I;16"), ("tiff", "I;16"), ("tiff", "I;16B"),
                                       ("png", "I;16B")])
def test_16_bit_grey_keeps_its_levels(tmp_path, fmt, mode):
    # The case: an 8-bit image saved with 16-bit samples (v*257) was read as all white.
    g8 = _grey_ramp()
    path = tmp_path / f"g16.{fmt}"
    Image.fromarray((g8.astype(np.uint16) * 257).astype(">u2" if mode == "I;16B" else "<u2")).save(path)
    with Image.open(path) as opened:
        assert opened.mode.startswith("I;16")
    _assert_grey(_rgb(path), g8)
    # the network input equals the 8-bit image's, so the descriptor is the same
    Image.fromarray(g8).save(tmp_path / "g8.png")
    np.testing.assert_array_equal(to_tensor(load_rgb(path)), to_tensor(load_rgb(tmp_path / "g8.png")))


def test_16_bit_values_between_levels_go_to_the_nearest_level(tmp_path):
    x = np.array([[0, 128, 129, 385, 386, 65278, 65535, 30000]], dtype=np.uint16)
    Image.fromarray(x).save(tmp_path / "x.png")
    # nearest level k minimises |x - 257 k|: 128/257 < 0.5 -> 0, 129 -> 1, 385 -> 1 (1.498), 386 -> 2,
    # 65278 = 254*257 -> 254, 30000/257 = 116.73 -> 117
    _assert_grey(_rgb(tmp_path / "x.png"), np.array([[0, 0, 1, 1, 2, 254, 255, 117]]))


def test_32_bit_integer_is_read_as_16_bit_samples(tmp_path):
    # mode I: a 32-bit TIFF and a 16-bit PGM (which Pillow opens as I); out-of-range values are clipped
    g8 = _grey_ramp()
    wide = g8.astype(np.int32) * 257
    wide[0, :3] = [-7, 70000, 2**31 - 1]
    Image.fromarray(wide).save(tmp_path / "i32.tiff")
    expected = g8.astype(np.int64)
    expected[0, :3] = [0, 255, 255]
    with Image.open(tmp_path / "i32.tiff") as opened:
        assert opened.mode == "I"
    _assert_grey(_rgb(tmp_path / "i32.tiff"), expected)
    # a PGM with maxval 1000: Pillow stretches its samples to 0..65535, so 500 is mid-grey (127.5 -> 128)
    pgm = tmp_path / "g.pgm"
    pgm.write_bytes(b"P5 3 1 1000\n" + np.array([0, 500, 1000], ">u2").tobytes())
    with Image.open(pgm) as opened:
        assert opened.mode == "I"
    _assert_grey(_rgb(pgm), np.array([[0, 128, 255]]), tol=1)


def test_float_images(tmp_path):
    g8 = _grey_ramp()
    Image.fromarray(g8.astype(np.float32) / 255).save(tmp_path / "unit.tiff")  # unit scale -> x255
    with Image.open(tmp_path / "unit.tiff") as opened:
        assert opened.mode == "F"
    _assert_grey(_rgb(tmp_path / "unit.tiff"), g8)
    levels = np.array([[-3.0, 0.4, 17.6, 254.5, 300.0, np.nan]], dtype=np.float32)  # levels, clipped
    Image.fromarray(levels).save(tmp_path / "levels.tiff")
    _assert_grey(_rgb(tmp_path / "levels.tiff"), np.array([[0, 0, 18, 254, 255, 0]]), tol=0)


def test_bilevel_grey_and_grey_alpha(tmp_path):
    bits = (np.indices((4, 6)).sum(axis=0) % 2).astype(bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    with Image.open(tmp_path / "b.png") as opened:
        assert opened.mode == "1"
    _assert_grey(_rgb(tmp_path / "b.png"), np.where(bits, 255, 0))
    g8 = _grey_ramp()
    Image.fromarray(g8).save(tmp_path / "l.png")
    _assert_grey(_rgb(tmp_path / "l.png"), g8)
    la = np.stack([g8, np.full_like(g8, 7)], axis=-1)  # nearly transparent: the grey is still the content
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    _assert_grey(_rgb(tmp_path / "la.png"), g8)
    Image.fromarray(g8).save(tmp_path / "l.jpg", quality=95)
    _assert_grey(_rgb(tmp_path / "l.jpg"), g8, tol=3)  # lossy


def test_palette_with_and_without_transparency(tmp_path):
    palette = [(10, 20, 30), (200, 100, 0), (0, 255, 128), (90, 90, 90)]
    idx = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=np.uint8)
    expected = np.array([[palette[i] for i in row] for row in idx])
    img = Image.fromarray(idx, mode="P")
    img.putpalette([v for rgb in palette for v in rgb])
    img.save(tmp_path / "p.png")
    img.save(tmp_path / "pt.png", transparency=1)  # palette entry 1 transparent (tRNS)
    img.convert("PA").save(tmp_path / "pa.tiff")
    for name in ("p.png", "pt.png"):
        with Image.open(tmp_path / name) as opened:
            assert opened.mode == "P"
        np.testing.assert_array_equal(_rgb(tmp_path / name), expected)
    with Image.open(tmp_path / "pa.tiff") as opened:
        assert opened.mode == "PA"
    np.testing.assert_array_equal(_rgb(tmp_path / "pa.tiff"), expected)


def test_colour_modes(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [20, 200, 90]]], dtype=np.uint8)
    rgba = np.concatenate([rgb, np.array([[[255], [0], [128], [1]]], dtype=np.uint8)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(_rgb(tmp_path / "a.png"), rgb)  # alpha dropped, colours kept
    # CMYK with K = 0: R = 255 - C, G = 255 - M, B = 255 - Y
    cmy = np.array([[[0, 255, 255, 0], [255, 0, 255, 0], [255, 255, 0, 0], [235, 55, 165, 0]]], np.uint8)
    Image.fromarray(cmy, mode="CMYK").save(tmp_path / "c.tiff")
    with Image.open(tmp_path / "c.tiff") as opened:
        assert opened.mode == "CMYK"
    np.testing.assert_array_equal(_rgb(tmp_path / "c.tiff"), rgb)
    # YCbCr (JFIF): R = Y + 1.402 Cr, G = Y - 0.344136 Cb - 0.714136 Cr, B = Y + 1.772 Cb (Cb, Cr minus 128)
    ycc = np.array([[[76, 85, 255], [150, 44, 21], [29, 255, 107], [126, 106, 64]]], dtype=np.float64)
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128, ycc[..., 2] - 128
    by_formula = np.clip(np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1),
                         0, 255)
    Image.fromarray(ycc.astype(np.uint8), mode="YCbCr").save(tmp_path / "y.tiff")
    with Image.open(tmp_path / "y.tiff") as opened:
        assert opened.mode == "YCbCr"
    np.testing.assert_allclose(_rgb(tmp_path / "y.tiff"), by_formula, atol=2)


def test_lab_follows_the_cie_formulas(tmp_path):
    # A CIELAB TIFF stores L* 255/100 and signed 8-bit a*, b*. Neutral grey (a* = b* = 0): relative
    # luminance Y = ((L*+16)/116)^3 (L* > 8), then the sRGB transfer 255 (1.055 Y^(1/2.4) - 0.055).
    l_bytes = np.array([40, 90, 137, 200, 250, 136], dtype=np.uint8)
    lab = np.stack([l_bytes, np.zeros(6, np.uint8), np.zeros(6, np.uint8)], -1)[None]
    lab[0, -1, 1:] = [80, 67]  # sRGB red is L* 53.24, a* 80.09, b* 67.20
    Image.fromarray(lab, mode="LAB").save(tmp_path / "lab.tiff")
    with Image.open(tmp_path / "lab.tiff") as opened:
        assert opened.mode == "LAB"
    got = _rgb(tmp_path / "lab.tiff")
    lum = ((l_bytes[:-1].astype(np.float64) * 100 / 255 + 16) / 116) ** 3
    srgb = 255 * (1.055 * lum ** (1 / 2.4) - 0.055)
    _assert_grey(got[:, :-1], srgb[None], tol=2)
    np.testing.assert_allclose(got[0, -1], [255, 0, 0], atol=12)


def test_in_memory_modes_without_a_file_format():
    # premultiplied alpha is undone: (100, 50, 20) at alpha 128 is stored as about half of it
    from vpr.data.images import to_rgb8

    rgba = Image.fromarray(np.array([[[100, 50, 20, 128]]], np.uint8), mode="RGBA")
    np.testing.assert_allclose(np.asarray(to_rgb8(rgba.convert("RGBa"))), [[[100, 50, 20]]], atol=2)
    la = Image.fromarray(np.array([[[100, 128]]], np.uint8), mode="LA")
    np.testing.assert_allclose(np.asarray(to_rgb8(la.convert("La"))), [[[100, 100, 100]]], atol=2)
    hsv = Image.fromarray(np.array([[[0, 255, 255], [85, 255, 255]]], np.uint8), mode="HSV")
    np.testing.assert_allclose(np.asarray(to_rgb8(hsv)), [[[255, 0, 0], [0, 255, 0]]], atol=1)


def test_directory_in_place_of_an_image(tmp_path):
    (tmp_path / "d.jpg").mkdir()
    Image.fromarray(_grey_ramp()).save(tmp_path / "ok.png")
    with pytest.raises(VprError, match=r"d\.jpg: is a directory, not an image \(1 of 2"):
        check_images_exist([tmp_path / "ok.png", tmp_path / "d.jpg"])
    with pytest.raises(VprError, match=r"d\.jpg: is a directory, not an image"):
        load_rgb(tmp_path / "d.jpg")
    with pytest.raises(VprError, match=r"d\.jpg: is a directory, not an image"):
        image_size(tmp_path / "d.jpg")
