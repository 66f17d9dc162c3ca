"""The ladder's baselines without a network: the shape features and the two rules."""

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from busi_lib.evaluation.baselines import baseline_predictions, shape_features


def _disc(h=200, w=200, axes=(40, 40)):
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (w // 2, h // 2), axes, 0, 0, 360, 1, -1)
    return m


def test_a_disc_is_round_solid_and_smooth():
    f = shape_features(_disc())
    assert f["circularity"] == pytest.approx(1.0, abs=0.12)
    assert f["solidity"] == pytest.approx(1.0, abs=0.03)
    assert f["roughness"] == pytest.approx(1.0, abs=0.08)  # a pixel outline is a staircase: a little longer
    assert f["taller_than_wide"] == pytest.approx(1.0, abs=0.03)
    assert f["log_area"] == pytest.approx(np.log(np.pi * 40 * 40 / 200**2), abs=0.05)


def test_a_tall_ellipse_is_taller_than_wide_and_a_star_is_rough():
    assert shape_features(_disc(axes=(20, 40)))["taller_than_wide"] == pytest.approx(2.0, abs=0.1)
    star = np.zeros((200, 200), np.uint8)
    angles = np.linspace(0, 2 * np.pi, 17)[:-1]
    radii = np.where(np.arange(16) % 2 == 0, 80, 30)
    pts = np.stack([100 + radii * np.cos(angles), 100 + radii * np.sin(angles)], 1).astype(np.int32)
    cv2.fillPoly(star, [pts], 1)
    f = shape_features(star)
    assert f["solidity"] < 0.7 and f["roughness"] > 1.3 and f["circularity"] < 0.5


def test_an_empty_mask_is_refused():
    with pytest.raises(ValueError, match="empty mask"):
        shape_features(np.zeros((10, 10), np.uint8))


def test_the_prior_calls_every_scan_benign_and_the_oracle_learns_from_shape():
    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"target": y})
    split = pd.DataFrame({"split": np.array(["train", "valid", "test"])[np.arange(n) % 3]})
    prob, t = baseline_predictions("prior", df, split)
    assert (prob < t).all() and len(set(prob)) == 1
    # a feature that carries the label (malignant lesions taller than wide) and four that carry nothing
    feats = pd.DataFrame(rng.normal(size=(n, 5)), columns=["log_area", "circularity", "solidity",
                                                            "taller_than_wide", "roughness"])
    feats["taller_than_wide"] += 3 * y
    prob, t = baseline_predictions("shape_oracle", df, split, feats)
    assert roc_auc_score(y[split["split"] == "test"], prob) > 0.95 and 0 < t < 1
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_predictions("coin", df, split)
