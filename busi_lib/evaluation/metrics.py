"""Classification and segmentation metrics, as numpy functions and as fastai metrics (docs/library.md).
Malignant (1) is positive, called when ``prob >= threshold``. Segmentation is ``*_pooled`` (counts summed) or
``*_per_image`` (mean); empty masks: both empty score 1 for every metric, exactly one empty 0 (pooled: on the sums)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from fastai.learner import Metric
from numpy.typing import ArrayLike
from scipy.stats import rankdata
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "CI_KEYS",
    "CLASSIFICATION_METRIC_NAMES",
    "SEGMENTATION_METRIC_NAMES",
    "ClassificationMetric",
    "SegmentationMetric",
    "best_threshold",
    "sensitivity_threshold",
    "bootstrap_ci",
    "bootstrap_many",
    "classification_round",
    "confidence_intervals",
    "classification_fastai_metrics",
    "classification_metrics",
    "dice_from_iou",
    "iou_from_dice",
    "score_table",
    "scores_from_counts",
    "segmentation_counts",
    "segmentation_fastai_metrics",
    "segmentation_metrics",
]

#: Names accepted by :class:`ClassificationMetric` (keys of :func:`classification_metrics`).
CLASSIFICATION_METRIC_NAMES = ("accuracy", "precision", "recall", "sensitivity", "specificity", "f1", "roc_auc")
#: Names accepted by :class:`SegmentationMetric` (the stem of the keys of :func:`segmentation_metrics`).
SEGMENTATION_METRIC_NAMES = ("precision", "recall", "f1", "iou", "dice")


# ---------------------------------------------------------------- Classification
def labels_and_probs(y_true: ArrayLike, prob: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Labels (0 benign, 1 malignant) and probabilities as flat arrays, or a clear error."""
    y = np.asarray(y_true).reshape(-1)
    p = np.asarray(prob, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but prob has {p.size}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold 0 (benign) and 1 (malignant) only")
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1):
        raise ValueError("prob must be probabilities in [0, 1]; apply a sigmoid to logits first")
    return y.astype(np.int64), p


def classification_metrics(y_true: ArrayLike, prob: ArrayLike, threshold: float = 0.5) -> dict:
    """Metrics at ``threshold``: ``accuracy``, ``precision``, ``recall`` (= ``sensitivity``), ``specificity``, ``f1``,
    ``roc_auc``, the counts ``tp``, ``fp``, ``tn``, ``fn``, ``n`` and ``threshold``. A ratio with a zero denominator is
    0; ROC AUC is threshold-free and NaN when ``y_true`` holds one class."""
    y, p = labels_and_probs(y_true, prob)
    pred = (p >= threshold).astype(np.int64)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    recall = recall_score(y, pred, zero_division=0)
    out = {
        "accuracy": float(accuracy_score(y, pred)) if y.size else float("nan"),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall),
        "sensitivity": float(recall),
        "specificity": float(recall_score(y, pred, pos_label=0, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan"),
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
        "n": int(y.size),
        "threshold": float(threshold),
    }
    return out


#: The threshold metrics given a bootstrap interval (counts are not).
CI_KEYS = ("accuracy", "precision", "recall", "sensitivity", "specificity", "f1", "roc_auc")


def classification_round(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """The :data:`CI_KEYS` of :func:`classification_metrics` in plain numpy, the bootstrap's fast path (well under
    1 ms, not ~15 ms); same conventions (0 for 0/0, AUC NaN with one class, ties counted half)."""
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    pos, pred = y == 1, p >= threshold
    n, n1 = y.size, int(np.count_nonzero(pos))
    tp, fp = int(np.count_nonzero(pred & pos)), int(np.count_nonzero(pred & ~pos))
    fn, tn = n1 - tp, n - n1 - fp

    def ratio(a, b):
        return a / b if b else 0.0

    recall = ratio(tp, tp + fn)
    if 0 < n1 < n:  # Mann-Whitney: AUC = P(score of a malignant > score of a benign), ties counting half
        auc = (rankdata(p)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * (n - n1))
    else:
        auc = float("nan")
    return dict(accuracy=(tp + tn) / n if n else float("nan"), precision=ratio(tp, tp + fp), recall=recall,
                sensitivity=recall, specificity=ratio(tn, tn + fp), f1=ratio(2 * tp, 2 * tp + fp + fn),
                roc_auc=float(auc))


def best_threshold(y_true: ArrayLike, prob: ArrayLike, criterion: str = "youden") -> float:
    """The threshold ``t`` (malignant when ``prob >= t``) best on ``(y_true, prob)`` by ``criterion``: ``"youden"``
    (max sensitivity + specificity - 1), ``"f1"``, or ``"sensitivity_NN"`` (:func:`sensitivity_threshold` at 0.NN).
    Choose it on validation data only, never on the test set."""
    y, p = labels_and_probs(y_true, prob)
    if len(np.unique(y)) < 2:
        raise ValueError("best_threshold needs both benign and malignant examples")
    if criterion.startswith("sensitivity_") and criterion[12:].isdigit():
        return sensitivity_threshold(y, p, int(criterion[12:]) / 100)
    if criterion == "youden":
        return youden_threshold(y, p)
    if criterion == "f1":
        prec, rec, thr = precision_recall_curve(y, p)
        prec, rec = prec[:-1], rec[:-1]  # the last point has no threshold
        denom = prec + rec
        f1 = np.divide(2 * prec * rec, denom, out=np.zeros_like(denom), where=denom > 0)
        return float(thr[int(np.argmax(f1))])
    raise ValueError(f"criterion must be 'youden', 'f1' or 'sensitivity_NN', not {criterion!r}")


def youden_threshold(y_true: ArrayLike, prob: ArrayLike) -> float:
    """The threshold with the largest sensitivity + specificity - 1 (Youden's J) on ``(y_true, prob)``."""
    fpr, tpr, thresholds = roc_curve(y_true, prob)  # one point for every distinct probability
    finite = np.isfinite(thresholds)  # the first point has threshold +inf: nothing called malignant
    j = tpr[finite] - fpr[finite]  # sensitivity - (1 - specificity)
    return float(thresholds[finite][np.argmax(j)])


def predictive_values(sensitivity: float, specificity: float, prevalence: float) -> tuple[float, float]:
    """(PPV, NPV) at a prevalence of malignancy: of the scans called malignant, the fraction that are; of those
    called benign, the fraction that are (Bayes' rule: they depend on how common cancer is, unlike sensitivity)."""
    true_pos, false_pos = sensitivity * prevalence, (1 - specificity) * (1 - prevalence)
    true_neg, false_neg = specificity * (1 - prevalence), (1 - sensitivity) * prevalence
    ppv = true_pos / (true_pos + false_pos) if true_pos + false_pos > 0 else float("nan")
    npv = true_neg / (true_neg + false_neg) if true_neg + false_neg > 0 else float("nan")
    return ppv, npv


def sensitivity_threshold(y_true: ArrayLike, prob: ArrayLike, target: float = 0.9) -> float:
    """The highest threshold whose sensitivity on ``(y_true, prob)`` is at least ``target`` (a screening point).

    Of ``k`` malignant scans it misses at most ``floor((1 - target) * k)``. Choose it on validation data only.
    """
    y, p = labels_and_probs(y_true, prob)
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    pos = np.sort(p[y == 1])[::-1]
    if len(pos) == 0:
        raise ValueError("sensitivity_threshold needs malignant examples")
    return float(pos[int(np.ceil(target * len(pos) - 1e-9)) - 1])


# ---------------------------------------------------------------- Segmentation
def flat_masks(masks: ArrayLike, name: str) -> np.ndarray:
    """Masks as an (N, pixels) array; one (H, W) mask is N = 1. ``name`` says which argument was wrong."""
    m = np.asarray(masks)
    if m.ndim == 2:  # one image (H, W)
        m = m[None]
    if m.ndim < 2:
        raise ValueError(f"{name} must be (N, H, W) masks (or one (H, W) mask), got shape {m.shape}")
    return m.reshape(m.shape[0], -1)


def segmentation_counts(true_masks: ArrayLike, pred_masks: ArrayLike,
                        threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image pixel counts ``(tp, fp, fn)``, each an int64 array of shape (N,).

    Truth pixels are lesion above 0.5 (so {0, 255} masks work), predictions when ``>= threshold``. Masks may be
    (N, H, W), (N, 1, H, W) or one (H, W). The counts are all a metric needs: keep them instead of the masks.
    """
    t = flat_masks(true_masks, "true_masks") > 0.5
    p = flat_masks(pred_masks, "pred_masks") >= threshold
    if t.shape != p.shape:
        raise ValueError(f"true_masks and pred_masks differ in shape: {t.shape} vs {p.shape} (after flattening)")
    tp = np.count_nonzero(t & p, axis=1).astype(np.int64)
    fp = np.count_nonzero(p, axis=1).astype(np.int64) - tp
    fn = np.count_nonzero(t, axis=1).astype(np.int64) - tp
    return tp, fp, fn


def pixel_scores(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike) -> dict[str, np.ndarray]:
    """Vectorised pixel metrics from counts, with the empty-mask convention."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    both_empty = (tp + fp + fn) == 0

    def ratio(num, den):
        r = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        return np.where(both_empty, 1.0, r)

    dice = ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": dice,  # pixel F1 and Dice are the same formula
        "iou": ratio(tp, tp + fp + fn),
        "dice": dice.copy(),
    }


def scores_from_counts(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike, pooled: bool = True) -> dict[str, float]:
    """Pixel precision, recall, f1, iou and dice from per-image counts.

    ``pooled=True`` sums the counts first (micro); ``pooled=False`` averages the per-image scores (macro). Empty
    masks follow the module docstring's rule.
    """
    tp, fp, fn = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (tp, fp, fn))
    if pooled:
        return {k: float(v) for k, v in pixel_scores(tp.sum(), fp.sum(), fn.sum()).items()}
    if tp.size == 0:
        return {k: float("nan") for k in SEGMENTATION_METRIC_NAMES}
    return {k: float(v.mean()) for k, v in pixel_scores(tp, fp, fn).items()}


def segmentation_metrics(true_masks: ArrayLike, pred_masks: ArrayLike, threshold: float = 0.5) -> dict:
    """Pixel metrics of binary lesion masks: ``<name>_pooled`` and ``<name>_per_image`` for ``precision``, ``recall``,
    ``f1``, ``iou``, ``dice``, plus ``n_images`` and ``n_empty_truth``. Inputs as for :func:`segmentation_counts`."""
    tp, fp, fn = segmentation_counts(true_masks, pred_masks, threshold)
    out: dict = {}
    pooled = scores_from_counts(tp, fp, fn, pooled=True)
    per_image = scores_from_counts(tp, fp, fn, pooled=False)
    for name in SEGMENTATION_METRIC_NAMES:
        out[f"{name}_pooled"] = pooled[name]
        out[f"{name}_per_image"] = per_image[name]
    out["n_images"] = int(tp.size)
    out["n_empty_truth"] = int(np.count_nonzero(tp + fn == 0))
    return out


def dice_from_iou(iou: ArrayLike) -> float | np.ndarray:
    """Dice from IoU for the same counts: ``dice = 2 iou / (1 + iou)`` (exact for pooled values only)."""
    iou = np.asarray(iou, dtype=np.float64)
    out = 2 * iou / (1 + iou)
    return float(out) if out.ndim == 0 else out


def iou_from_dice(dice: ArrayLike) -> float | np.ndarray:
    """IoU from Dice for the same counts: ``iou = dice / (2 - dice)``, the inverse of :func:`dice_from_iou`."""
    dice = np.asarray(dice, dtype=np.float64)
    out = dice / (2 - dice)
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------- Bootstrap
def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    groups: ArrayLike | None = None,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` of ``metric_fn(*arrays)`` (95 % for ``alpha=0.05``).

    Every round resamples the same items from each array along the first axis. ``groups`` (e.g. patient or
    duplicate group per item) resamples whole groups, so correlated copies never narrow the interval. NaN rounds
    are dropped (``(nan, nan)`` if all are); the same ``seed`` gives the same interval.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("all arrays must have the same length")
    if n == 0:
        raise ValueError("cannot bootstrap empty arrays")
    rng = np.random.default_rng(seed)
    if groups is not None:
        g = np.asarray(groups).reshape(-1)
        if len(g) != n:
            raise ValueError(f"groups has {len(g)} values for {n} items")
        _, inverse = np.unique(g, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])  # item indices of each group
    stats = np.empty(n_boot)
    for b in range(n_boot):
        if groups is None:
            idx = rng.integers(0, n, n)
        else:
            idx = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
        stats[b] = metric_fn(*(a[idx] for a in arrays))
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def bootstrap_many(fn: Callable[..., dict], *arrays: ArrayLike, n_boot: int, seed: int, groups: ArrayLike | None = None,
                   alpha: float = 0.05) -> dict[str, list[float]]:
    """Bootstrap intervals ``{key: [low, high]}`` of every number in ``fn``'s dict, from one set of resamples
    (one :func:`bootstrap_ci` per key would redo the same work)."""
    rounds: list[dict] = []

    def record(*a):
        rounds.append(fn(*a))
        return 0.0

    bootstrap_ci(record, *arrays, n_boot=n_boot, seed=seed, groups=groups, alpha=alpha)
    out = {}
    for key in rounds[0]:
        v = np.array([r[key] for r in rounds], dtype=np.float64)
        v = v[~np.isnan(v)]
        lo, hi = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)]) if v.size else (np.nan, np.nan)
        out[key] = [float(lo), float(hi)]
    return out


# ---------------------------------------------------------------- fastai metrics
def _unpack(learn):
    """Split ``learn.pred``/``learn.yb`` into ``(class_logit, y_cls, mask_logits, y_mask)``; missing parts are None.
    A tuple is the multitask ``(class_logit, mask_logits)``, a 4-D tensor mask logits, anything else a class logit."""
    pred, yb = learn.pred, tuple(learn.yb)
    if len(yb) == 1 and isinstance(yb[0], (tuple, list)):
        yb = tuple(yb[0])
    if isinstance(pred, (tuple, list)):
        if len(pred) != 2 or len(yb) != 2:
            raise ValueError("a multitask model must return (class_logit, mask_logits) with targets (y_cls, y_mask)")
        return pred[0], yb[0], pred[1], yb[1]
    if pred.ndim == 4:
        return None, None, pred, yb[0]
    return pred, yb[0], None, None


def _detach(learn, t: torch.Tensor) -> torch.Tensor:
    to_detach = getattr(learn, "to_detach", None)
    return to_detach(t) if callable(to_detach) else t.detach().cpu()


class ClassificationMetric(Metric):
    """A fastai metric computed by :func:`classification_metrics` once over a whole epoch's stored probabilities
    (fastai's batch averaging would make ROC AUC and F1 depend on the batch size)."""

    def __init__(self, name: str = "roc_auc", threshold: float = 0.5):
        if name not in CLASSIFICATION_METRIC_NAMES:
            raise ValueError(f"name must be one of {CLASSIFICATION_METRIC_NAMES}, not {name!r}")
        self._name, self.threshold = name, threshold
        self.reset()

    def reset(self):
        self.probs, self.targs = [], []

    def accumulate(self, learn):
        logit, y, _, _ = _unpack(learn)
        if logit is None:
            raise ValueError("ClassificationMetric: the model returned mask logits only (no class logit)")
        logit = logit.reshape(len(logit), -1)
        if logit.shape[1] != 1:
            raise ValueError(f"ClassificationMetric expects one logit per image, got shape {tuple(logit.shape)}")
        self.probs.append(_detach(learn, torch.sigmoid(logit.float().reshape(-1))))
        self.targs.append(_detach(learn, y.reshape(-1)))

    @property
    def value(self):
        if not self.probs:
            return None
        y = torch.cat(self.targs).numpy().round()
        p = torch.cat(self.probs).numpy()
        return classification_metrics(y, p, self.threshold)[self._name]

    @property
    def name(self):
        return self._name


class SegmentationMetric(Metric):
    """A fastai metric computed by :func:`scores_from_counts` over a whole epoch's per-image TP, FP, FN (no masks
    kept), named ``<name>_pooled`` or ``<name>_per_image`` as in :func:`segmentation_metrics`."""

    def __init__(self, name: str = "dice", pooled: bool = True, threshold: float = 0.5):
        if name not in SEGMENTATION_METRIC_NAMES:
            raise ValueError(f"name must be one of {SEGMENTATION_METRIC_NAMES}, not {name!r}")
        self._name, self.pooled, self.threshold = name, pooled, threshold
        self.reset()

    def reset(self):
        self.tp, self.fp, self.fn = [], [], []

    def accumulate(self, learn):
        _, _, logits, y = _unpack(learn)
        if logits is None:
            raise ValueError("SegmentationMetric: the model returned a class logit only (no mask logits)")
        b = len(logits)
        p = torch.sigmoid(logits.detach().float()).reshape(b, -1) >= self.threshold
        t = y.detach().reshape(b, -1) > 0.5
        if p.shape != t.shape:
            raise ValueError(f"mask logits {tuple(logits.shape)} and targets {tuple(y.shape)} do not match")
        tp = (p & t).sum(1)
        self.tp.append(_detach(learn, tp))
        self.fp.append(_detach(learn, p.sum(1) - tp))
        self.fn.append(_detach(learn, t.sum(1) - tp))

    @property
    def value(self):
        if not self.tp:
            return None
        tp, fp, fn = (torch.cat(c).numpy() for c in (self.tp, self.fp, self.fn))
        return scores_from_counts(tp, fp, fn, pooled=self.pooled)[self._name]

    @property
    def name(self):
        return f"{self._name}_{'pooled' if self.pooled else 'per_image'}"


def classification_fastai_metrics(
    names: Sequence[str] = ("accuracy", "f1", "roc_auc"), threshold: float = 0.5
) -> list[ClassificationMetric]:
    """The classification metrics shown while training: ``Learner(..., metrics=classification_fastai_metrics())``."""
    return [ClassificationMetric(n, threshold) for n in names]


def segmentation_fastai_metrics(
    names: Sequence[str] = ("dice", "iou"), pooled: bool = True, threshold: float = 0.5
) -> list[SegmentationMetric]:
    """The segmentation metrics shown while training (default ``dice_pooled``, ``iou_pooled``)."""
    return [SegmentationMetric(n, pooled, threshold) for n in names]


# ---------------------------------------------------------------- a table of per-scan predictions
def score_table(t: pd.DataFrame, suffix: str = "", fast: bool = False) -> dict:
    """Classification and segmentation metrics of a per-scan prediction table, each row called at its own fold's
    threshold; ``fast`` uses :func:`classification_round` (the :data:`CI_KEYS` only, no counts), for the bootstrap."""
    out: dict = {}
    if "prob" + suffix in t:
        y, p = t["target"].to_numpy(), t["prob" + suffix].to_numpy()
        calls = (p >= t["threshold"].to_numpy()).astype(float)
        score = classification_round if fast else classification_metrics
        m = score(y, calls, 0.5)  # counts and rates of the calls
        m["roc_auc"] = score(y, p, 0.5)["roc_auc"]  # ranking quality, threshold-free
        m.pop("threshold", None)
        out["classification"] = m
    if "tp" + suffix in t:
        c = [t[k + suffix].to_numpy() for k in ("tp", "fp", "fn")]
        seg = {f"{k}_pooled": v for k, v in scores_from_counts(*c, pooled=True).items()}
        seg.update({f"{k}_per_image": v for k, v in scores_from_counts(*c, pooled=False).items()})
        out["segmentation"] = seg
    return out


def confidence_intervals(t: pd.DataFrame, suffix: str = "", n_boot: int = 1000, seed: int = 0) -> dict:
    """95 % bootstrap intervals of every metric on pooled predictions, resampling duplicate groups."""

    def all_metrics(i):
        s = score_table(t.iloc[i], suffix, fast=True)
        return {f"{sec}.{k}": v for sec, vals in s.items() for k, v in vals.items() if isinstance(v, float)}

    return bootstrap_many(all_metrics, np.arange(len(t)), n_boot=n_boot, seed=seed, groups=t["dup_group"].to_numpy())
