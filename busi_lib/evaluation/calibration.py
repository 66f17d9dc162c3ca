"""Is a predicted probability of 0.8 right 80 % of the time? Calibration, and temperature scaling.
Reliability diagram, ECE and Brier score of the malignant probability; ``p_T = sigmoid(logit(p) / T)`` with ``T``
fitted on validation data, ranking and calls unchanged. Background: docs/library.md."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from busi_lib.evaluation.metrics import labels_and_probs

__all__ = [
    "DEFAULT_BINS",
    "apply_temperature",
    "brier_score",
    "calibration_metrics",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_bins",
    "to_logits",
]

#: Number of equal-width probability bins of the reliability diagram and the ECE.
DEFAULT_BINS = 10

# Probabilities are clipped to [EPS, 1 - EPS] before logits: float32 sigmoid rounds logits above ~17 to 1.0.
EPS = 1e-6

# The temperature range: beyond it the model is (almost) constant or a hard 0/1 classifier, the fit meaningless.
T_BOUNDS = (0.05, 20.0)


def _check(y, prob) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~busi_lib.evaluation.metrics.labels_and_probs`, refusing also no predictions and NaN."""
    y, p = labels_and_probs(y, prob)
    if y.size == 0:
        raise ValueError("no predictions to assess")
    if np.isnan(p).any():
        raise ValueError("prob must be probabilities in [0, 1], not NaN")
    return y, p


def to_logits(prob: ArrayLike) -> np.ndarray:
    """``log(p / (1 - p))`` of probabilities clipped to ``[1e-6, 1 - 1e-6]``."""
    return logit(np.clip(np.asarray(prob, dtype=np.float64), EPS, 1 - EPS))


def apply_temperature(prob: ArrayLike, temperature: float) -> np.ndarray:
    """Rescale probabilities (or a threshold) by a temperature: ``sigmoid(logit(p) / T)``; a float for a scalar."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    p = np.asarray(prob, dtype=np.float64)
    out = p.copy() if temperature == 1 else expit(to_logits(p) / temperature)
    return float(out) if out.ndim == 0 else out


def _bin_sums(y: np.ndarray, p: np.ndarray, n_bins: int):
    """Per equal-width bin: count, sum of probabilities, sum of labels (scikit-learn's bin rule)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p)  # as sklearn.calibration.calibration_curve bins (uniform strategy)
    return (np.bincount(ids, minlength=n_bins), np.bincount(ids, weights=p, minlength=n_bins),
            np.bincount(ids, weights=y, minlength=n_bins), edges)


def reliability_bins(y: ArrayLike, prob: ArrayLike, n_bins: int = DEFAULT_BINS) -> list[dict]:
    """The points of a reliability diagram, one dict per *non-empty* equal-width bin: ``low``, ``high``, ``count``,
    ``mean_prob``, ``frac_malignant`` (as :func:`sklearn.calibration.calibration_curve`, counts by its bin rule)."""
    y, p = _check(y, prob)
    counts, _, _, edges = _bin_sums(y, p, n_bins)
    frac, mean = calibration_curve(y, p, n_bins=n_bins, strategy="uniform", pos_label=1)
    nonempty = np.flatnonzero(counts)
    return [
        dict(low=float(edges[b]), high=float(edges[b + 1]), count=int(counts[b]), mean_prob=float(m),
             frac_malignant=float(f))
        for b, m, f in zip(nonempty, mean, frac)
    ]


def expected_calibration_error(y: ArrayLike, prob: ArrayLike, n_bins: int = DEFAULT_BINS) -> float:
    """ECE with ``n_bins`` equal-width bins: ``sum_b (n_b / n) |fraction malignant_b - mean probability_b|``.

    Computed from bin sums with numpy (the same number), because a bootstrap calls it thousands of times.
    """
    y, p = _check(y, prob)
    _, sum_p, sum_y, _ = _bin_sums(y, p, n_bins)
    return float(np.abs(sum_y - sum_p).sum() / y.size)


def brier_score(y: ArrayLike, prob: ArrayLike) -> float:
    """Mean squared error of the malignant probability (:func:`sklearn.metrics.brier_score_loss`)."""
    y, p = _check(y, prob)
    return float(brier_score_loss(y, p, pos_label=1))


def calibration_metrics(y: ArrayLike, prob: ArrayLike, n_bins: int = DEFAULT_BINS) -> dict:
    """``ece``, ``brier``, ``n_bins`` and the reliability ``bins`` of one set of predictions."""
    return dict(
        ece=expected_calibration_error(y, prob, n_bins),
        brier=brier_score(y, prob),
        n_bins=int(n_bins),
        binning="equal-width",
        bins=reliability_bins(y, prob, n_bins),
    )


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits / T)``; ``logaddexp`` keeps it finite for large logits."""
    z = logits / temperature
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(y: ArrayLike, prob: ArrayLike | None = None, *, logits: ArrayLike | None = None) -> dict:
    """Fit the temperature ``T`` that minimises the negative log-likelihood of ``sigmoid(logit / T)``.

    Give *validation* predictions (``prob`` or ``logits``); fitting on the test set flatters it. Returns
    ``temperature``, ``nll_before``, ``nll_after``, ``n``, and a ``warning`` when ``T`` ends at the edge of its range
    (separable or too few predictions: the fit means nothing).
    """
    if (prob is None) == (logits is None):
        raise ValueError("give either prob or logits")
    z = np.asarray(logits, dtype=np.float64).reshape(-1) if logits is not None else to_logits(_check(y, prob)[1])
    y = np.asarray(y).reshape(-1).astype(np.float64)
    if z.shape != y.shape:
        raise ValueError(f"y has {y.size} values but there are {z.size} predictions")
    if len(np.unique(y)) < 2:
        raise ValueError("fitting a temperature needs both benign and malignant examples")
    lo, hi = np.log(T_BOUNDS)
    res = minimize_scalar(lambda log_t: _nll(z, y, float(np.exp(log_t))), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-6})
    t = float(np.exp(res.x))
    out = dict(temperature=t, nll_before=_nll(z, y, 1.0), nll_after=_nll(z, y, t), n=int(y.size))
    if not T_BOUNDS[0] * 1.01 < t < T_BOUNDS[1] / 1.01:
        out["warning"] = (f"the temperature reached the end of the search range {T_BOUNDS}: the validation "
                          "predictions are perfectly separated or too few; do not trust this temperature")
    return out
