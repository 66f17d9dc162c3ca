"""Scans and masks of every PNG mode load to one representation."""

import numpy as np
import pytest
from PIL import Image

from busi_lib.data.images import image_to_gray, mask_to_binary, read_image, read_mask
from busi_lib.errors import BusiDataError


def _save(tmp_path, name, arr, mode=None):
    p = tmp_path / name
    Image.fromarray(arr, mode=mode).save(p) if mode else Image.fromarray(arr).save(p)
    return p


@pytest.fixture
def lesion():
    m = np.zeros((20, 30), np.uint8)
    m[5:12, 8:20] = 1
    return m


@pytest.mark.parametrize("mode", ["1", "L", "RGB", "RGBA", "L01"])
def test_mask_modes_load_to_binary(tmp_path, lesion, mode):
    if mode == "1":
        p = tmp_path / "m.png"
        Image.fromarray(lesion * 255).convert("1").save(p)
    elif mode == "L":
        p = _save(tmp_path, "m.png", lesion * 255)
    elif mode == "L01":
        p = _save(tmp_path, "m.png", lesion)
    elif mode == "RGB":
        p = _save(tmp_path, "m.png", np.stack([lesion * 255] * 3, -1))
    else:
        rgba = np.stack([lesion * 255] * 3 + [np.full_like(lesion, 255)], -1)
        p = _save(tmp_path, "m.png", rgba)
    m = read_mask(p, shape=(20, 30))
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
    np.testing.assert_array_equal(m, lesion)


def test_several_masks_are_united(tmp_path, lesion):
    other = np.zeros_like(lesion)
    other[14:18, 2:6] = 1
    a, b = _save(tmp_path, "a_mask.png", lesion * 255), _save(tmp_path, "a_mask_1.png", other * 255)
    m = read_mask([a, b], shape=lesion.shape)
    assert m.sum() == lesion.sum() + other.sum()


def test_antialiased_mask_thresholded_at_half():
    arr = np.array([[0, 30, 127, 128, 255]], np.uint8)
    np.testing.assert_array_equal(mask_to_binary(arr), [[0, 0, 0, 1, 1]])


def test_empty_mask_stays_empty(tmp_path):
    p = _save(tmp_path, "m.png", np.zeros((8, 8, 3), np.uint8))
    assert read_mask(p).sum() == 0


def test_mask_of_other_size_is_an_error(tmp_path, lesion):
    p = _save(tmp_path, "m.png", lesion * 255)
    with pytest.raises(BusiDataError, match="m.png.*30x20 but its image is 31x20"):
        read_mask(p, shape=(20, 31))


def test_gray_rgb_with_equal_channels_is_that_channel():
    g = np.random.default_rng(0).integers(0, 256, (10, 12), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_gray(np.stack([g] * 3, -1)), g)


def test_colour_rgb_uses_luma_like_pil(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(rgb).convert("L")).astype(int)
    assert np.abs(image_to_gray(rgb).astype(int) - pil).max() <= 1


def test_16_bit_scan_keeps_its_high_byte(tmp_path):
    arr = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257)
    p = tmp_path / "s16.png"
    Image.fromarray(arr).save(p)
    img = read_image(p)
    assert img.dtype == np.uint8
    np.testing.assert_array_equal(img, (arr // 257).astype(np.uint8))


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty"), (b"this is text, not a PNG", "not an image"), (None, "truncated")],
)
def test_bad_files_name_file_and_reason(tmp_path, content, reason):
    p = tmp_path / "scan (1).png"
    if content is None:
        good = _save(tmp_path, "good.png", np.full((64, 64), 100, np.uint8)).read_bytes()
        content = good[: len(good) // 2]
    p.write_bytes(content)
    with pytest.raises(BusiDataError, match=reason) as e:
        read_image(p)
    assert e.value.path == p and "scan (1).png" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(BusiDataError, match="not found"):
        read_image(tmp_path / "nope.png")
