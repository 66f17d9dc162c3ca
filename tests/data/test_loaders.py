"""fastai DataLoaders for the three shapes; masks stay binary through the whole pipeline."""

import numpy as np
import pytest
import torch

from busi_lib.data.dataset import load_dataset
from busi_lib.data.loaders import check_image_size, make_dataloaders
from busi_lib.data.splits import train_valid_test_split
from busi_lib.data.transforms import build_transforms


@pytest.fixture(scope="module")
def table(synthetic_dir):
    return load_dataset(synthetic_dir)


@pytest.mark.parametrize("kind, n", [("classify", 2), ("segment", 2), ("multitask", 3)])
def test_batch_shapes(table, kind, n):
    dls = make_dataloaders(table, train_valid_test_split(table, seed=0), kind, image_size=64, batch_size=4)
    b = dls.one_batch()
    assert len(b) == n and dls.n_inp == 1
    assert b[0].shape == (4, 3, 64, 64) and b[0].dtype == torch.float32
    if kind != "segment":
        assert b[1].shape == (4,) and set(b[1].tolist()) <= {0.0, 1.0}
    if kind != "classify":
        assert b[-1].shape == (4, 1, 64, 64)
        assert set(torch.unique(b[-1]).tolist()) <= {0.0, 1.0}
    t = dls.tables["train"]["target"]
    assert dls.pos_weight == pytest.approx((t == 0).sum() / t.sum())


def test_augmentation_moves_mask_with_image():
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64), np.uint8)
    img[10:30, 5:25] = 255  # a bright square where the lesion is
    mask = (img > 0).astype(np.uint8)
    tfm = build_transforms("strong", seed=0)
    img = np.clip(img.astype(int) + rng.integers(0, 5, img.shape), 0, 255).astype(np.uint8)
    for _ in range(20):
        out = tfm(image=img, mask=mask)
        m = out["mask"].numpy()
        assert set(np.unique(m)) <= {0, 1}
        x = out["image"][0].numpy()
        if m.sum() > 20 and (m == 0).sum() > 20:
            assert x[m == 1].mean() > x[m == 0].mean() + 1.0  # the lesion pixels still hold the square


def test_image_size_checked():
    assert check_image_size(96) == 96
    for bad in (100, 16, 0):
        with pytest.raises(ValueError, match="multiple of 32"):
            check_image_size(bad)
