"""Image loading, the MatConvNet input convention, resizing and size-bucketed batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode

from vpr.data.images import (
    VGG_MEAN_RGB,
    ImageListDataset,
    SizeBucketBatchSampler,
    check_images_exist,
    collate_same_size,
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
    # METHOD.md §1.5: mean (0.48501960784313836, 0.4579568627450961, 0.4076039215686255) on the 0..1 scale
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
    loader = DataLoader(ds, batch_sampler=SizeBucketBatchSampler(sizes, batch_size=4),
                        collate_fn=collate_same_size)
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
