"""Calibration (ECE, Brier, reliability bins), temperature scaling, and saving a temperature with a model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from busi_lib.errors import BusiDataError
from busi_lib.evaluation.calibration import (
    apply_temperature,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    to_logits,
)


def _bernoulli(n: int, seed: int, t_model: float = 1.0):
    """Labels drawn as Bernoulli(p): ``p`` is calibrated by construction; ``sigmoid(logit(p) / t_model)``
    with ``t_model < 1`` is an overconfident predictor of the same labels."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, n)
    y = (rng.random(n) < p).astype(int)
    return y, p, apply_temperature(p, t_model)


def _ece_by_hand(y, p, n_bins):
    """ECE from scikit-learn's reliability curve and explicit per-bin counts (a loop, no shared code)."""
    frac, mean = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    edges = np.linspace(0, 1, n_bins + 1)
    counts = []
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        # scikit-learn's rule: a probability on an inner edge belongs to the lower bin
        inside = (p > lo) & (p <= hi) if b > 0 else (p <= hi)
        counts.append(inside.sum())
    counts = np.array([c for c in counts if c])
    return float(np.sum(counts / len(y) * np.abs(frac - mean)))


def test_ece_near_zero_when_calibrated_and_large_when_overconfident():
    y, p, over = _bernoulli(4000, seed=0, t_model=1 / 3)
    assert expected_calibration_error(y, p) < 0.03  # only sampling noise
    assert expected_calibration_error(y, over) > 0.12
    assert brier_score(y, over) > brier_score(y, p)


def test_temperature_scaling_repairs_the_overconfident_predictor():
    y, _, over = _bernoulli(4000, seed=1, t_model=1 / 3)
    fit = fit_temperature(y[:2000], over[:2000])  # "validation" half
    assert 2.4 < fit["temperature"] < 3.6  # the distortion applied was T = 3
    assert fit["nll_after"] < fit["nll_before"] and "warning" not in fit
    before = expected_calibration_error(y[2000:], over[2000:])  # the other half
    after = expected_calibration_error(y[2000:], apply_temperature(over[2000:], fit["temperature"]))
    assert after < 0.04 < 0.12 < before
    # a calibrated predictor needs no temperature
    yc, pc, _ = _bernoulli(4000, seed=2)
    assert 0.85 < fit_temperature(yc, pc)["temperature"] < 1.15


def test_fit_from_logits_equals_fit_from_probabilities():
    y, _, over = _bernoulli(1000, seed=3, t_model=0.5)
    a = fit_temperature(y, over)["temperature"]
    b = fit_temperature(y, logits=to_logits(over))["temperature"]
    assert a == pytest.approx(b, rel=1e-4)
    with pytest.raises(ValueError, match="both benign and malignant"):
        fit_temperature(np.ones(5), np.full(5, 0.7))
    with pytest.raises(ValueError, match="either prob or logits"):
        fit_temperature(y)


def test_separable_validation_data_warns():
    y = np.array([0, 0, 0, 1, 1, 1])
    fit = fit_temperature(y, np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]))
    assert "warning" in fit and fit["temperature"] == pytest.approx(0.05, rel=0.02)


@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_ece_and_brier_agree_with_scikit_learn(n_bins):
    rng = np.random.default_rng(n_bins)
    p = np.round(rng.random(300), 1)  # many values exactly on bin edges (0.1, 0.2, ...)
    y = (rng.random(300) < p).astype(int)
    assert expected_calibration_error(y, p, n_bins) == pytest.approx(_ece_by_hand(y, p, n_bins), abs=1e-12)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p))
    bins = reliability_bins(y, p, n_bins)
    frac, mean = calibration_curve(y, p, n_bins=n_bins)
    assert [b["frac_malignant"] for b in bins] == pytest.approx(list(frac))
    assert [b["mean_prob"] for b in bins] == pytest.approx(list(mean))
    assert sum(b["count"] for b in bins) == 300
    for b in bins:  # the mean of a bin lies inside it
        assert b["low"] - 1e-9 <= b["mean_prob"] <= b["high"] + 1e-9
    m = calibration_metrics(y, p, n_bins)
    assert m["n_bins"] == n_bins and m["binning"] == "equal-width" and m["bins"] == bins


def test_temperature_keeps_ranking_and_decisions():
    rng = np.random.default_rng(4)
    p = rng.random(200)
    q = apply_temperature(p, 2.5)
    assert np.array_equal(np.argsort(p), np.argsort(q))
    assert np.allclose(apply_temperature(p, 1.0), p)
    t = 0.37
    assert np.array_equal(p >= t, q >= apply_temperature(t, 2.5))
    assert isinstance(apply_temperature(t, 2.0), float)
    assert apply_temperature(0.5, 4.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        apply_temperature(p, 0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="0 \\(benign\\) and 1"):
        expected_calibration_error([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="probabilities"):
        brier_score([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="no predictions"):
        expected_calibration_error([], [])


# ------------------------------------------------------------------ saving a temperature with the model
@pytest.fixture()
def model_dir(tmp_path):
    from busi_lib.models.networks import build_model
    from busi_lib.models.saving import save_model

    model = build_model("custom_cnn", pretrained=False, image_size=32)
    return save_model(model, dict(arch="custom_cnn", task="classify", image_size=32, threshold=0.4), tmp_path / "m")


def test_update_config_writes_temperature_and_weights_still_load(model_dir):
    from busi_lib.models.saving import load_model, update_config

    assert load_model(model_dir)[1]["temperature"] == 1.0  # none fitted yet
    assert "temperature" not in json.loads((model_dir / "config.json").read_text())
    weights = (model_dir / "model.safetensors").read_bytes()
    update_config(model_dir, temperature=1.8, temperature_fit={"n": 40})
    model, config = load_model(model_dir)
    assert config["temperature"] == 1.8 and config["temperature_fit"] == {"n": 40} and config["threshold"] == 0.4
    assert (model_dir / "model.safetensors").read_bytes() == weights
    assert not list(model_dir.glob(".*.tmp"))  # atomic write left no temporary file


def test_update_config_refuses_unsafe_changes(model_dir, tmp_path):
    from busi_lib.models.networks import build_model
    from busi_lib.models.saving import save_model, update_config

    before = (model_dir / "config.json").read_bytes()
    with pytest.raises(ValueError, match="describe its weights"):
        update_config(model_dir, image_size=64)
    with pytest.raises(ValueError, match="finite JSON"):
        update_config(model_dir, temperature=float("nan"))
    assert (model_dir / "config.json").read_bytes() == before
    # weights swapped for other ones: the folder is not blessed with a new config
    other = save_model(build_model("custom_cnn", pretrained=False, image_size=32), {"arch": "custom_cnn"},
                       tmp_path / "other")
    (model_dir / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(BusiDataError, match="sha256"):
        update_config(model_dir, temperature=2.0)
    assert (model_dir / "config.json").read_bytes() == before
