"""Metrics for classification and segmentation, as plain functions and as fastai metrics.

One implementation serves two purposes:

* **After training**, the plain functions take numpy arrays (true labels and
  predicted probabilities, or true and predicted masks) and return a dict of
  numbers: :func:`classification_metrics`, :func:`segmentation_metrics`,
  :func:`best_threshold`, :func:`bootstrap_ci`.
* **During training**, :class:`ClassificationMetric` and :class:`SegmentationMetric`
  are ``fastai.learner.Metric`` subclasses that accumulate a whole validation
  epoch and then call the same plain functions, so the numbers in the training
  table and the numbers in the final report cannot disagree.

Classification (benign = 0, malignant = 1 = *positive*)
-------------------------------------------------------
A probability ``p`` becomes the prediction "malignant" when ``p >= threshold``.
Counting the four outcomes gives the confusion matrix: ``tp`` (malignant called
malignant), ``fn`` (malignant missed), ``tn`` (benign called benign), ``fp``
(benign called malignant). Every threshold metric is a ratio of these counts;
ROC AUC is threshold-free and measures how well the probabilities *rank*
malignant above benign.

Segmentation (pixels; lesion = 1 = positive)
--------------------------------------------
The same four counts exist for the pixels of a mask, and Dice is exactly the
pixel F1 score. There are two ways to reduce them over a data set:

* **pooled** (*micro*, keys ``*_pooled``): add ``TP``, ``FP``, ``FN`` over all
  pixels of all images, then compute the ratio once. Big lesions weigh more.
* **per image** (*macro*, keys ``*_per_image``): compute the metric for every
  image, then take the mean. Every image weighs the same, so a small lesion
  that is missed pulls the mean down as much as a big one.

Which reduction does the reference study use? Its table reports Dice 0.831 and
IoU 0.711. For *one* set of counts, ``Dice = 2 TP / (2 TP + FP + FN)`` and
``IoU = TP / (TP + FP + FN)`` are tied by ``Dice = 2 IoU / (1 + IoU)``, and
``2 * 0.711 / 1.711 = 0.831``. The identity holds exactly for pooled (micro)
values, because they come from one set of summed counts, but **not** for means
of per-image values (the mean of a non-linear function is not the function of
the mean; ``2 x / (1 + x)`` is concave, so by Jensen's inequality the mean
per-image Dice is at most ``2 m / (1 + m)`` for the mean per-image IoU ``m``).
So the study's numbers are compared with our *pooled* values. The per-image
means are reported too: they describe how the model does on a typical image.

Empty-mask convention (per image)
---------------------------------
A mask can be empty (e.g. a normal scan, or a model that predicts no lesion),
and then some ratios are 0/0. The convention used here:

* truth empty and prediction empty: ``dice = iou = precision = recall = f1 = 1``
  (perfect agreement: nothing to find, nothing found);
* truth empty, prediction not empty: all 0 (every predicted pixel is a false
  positive);
* prediction empty, truth not empty: all 0, precision included (the lesion was
  missed; "no prediction" earns no precision credit).

``n_empty_truth`` in :func:`segmentation_metrics` tells how many images fall in
the first two cases. The pooled values use the same rule on the summed counts.

Bootstrap confidence intervals
------------------------------
A test set of a few hundred scans gives noisy metrics. :func:`bootstrap_ci`
resamples the test set with replacement and reports the spread of the metric.
When several items belong together (duplicate scans of one patient, images of
the same lesion), pass ``groups`` so whole groups are resampled; otherwise the
interval is too narrow because correlated copies are counted as independent
evidence.
"""

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


# ----------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------
def _labels_and_probs(y_true, prob) -> tuple[np.ndarray, np.ndarray]:
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
    """Binary classification metrics, malignant (1) being the positive class.

    Parameters
    ----------
    y_true : array of 0/1, shape (n,)
        True labels (0 benign, 1 malignant).
    prob : array of floats in [0, 1], shape (n,)
        Predicted probability of malignant (the sigmoid of the model's logit).
    threshold : a scan is called malignant when ``prob >= threshold``.

    Returns
    -------
    dict with

    * ``accuracy``    (tp + tn) / n: the fraction of correct calls. Misleading
      when the classes are unbalanced (calling everything benign scores high).
    * ``precision``   tp / (tp + fp): of the scans called malignant, how many are
      (positive predictive value). 0 when nothing is called malignant.
    * ``recall`` = ``sensitivity``   tp / (tp + fn): of the malignant scans, how
      many were found. A missed cancer costs most, so watch this one.
    * ``specificity`` tn / (tn + fp): of the benign scans, how many were called
      benign (recall of the benign class). 0 when there are no benign scans.
    * ``f1``          2 precision recall / (precision + recall): one number that
      is high only when both are high.
    * ``roc_auc``     area under the ROC curve: the probability that a random
      malignant scan gets a higher ``prob`` than a random benign scan. 0.5 is
      chance, 1 is a perfect ranking; it does not depend on ``threshold``.
      NaN when ``y_true`` holds only one class.
    * ``tp``, ``fp``, ``tn``, ``fn``, ``n``: the counts; ``threshold``.
    """
    y, p = _labels_and_probs(y_true, prob)
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
    """The :data:`CI_KEYS` of :func:`classification_metrics`, computed with numpy: the bootstrap's fast path.

    Why a second computation? A bootstrap recomputes the metrics thousands of
    times, and ``classification_metrics`` makes seven validated scikit-learn
    calls (about 15 ms on a small CPU): 1000 resamples of three kinds would take
    a minute. This function takes well under a millisecond and follows the same
    conventions (0 when a ratio is 0/0, ROC AUC NaN with one class, ties counted
    half); the point estimates still come from ``classification_metrics``, and
    tests check that both agree on random resamples. ``busi evaluate``, the bench
    and notebook 06's intervals all use it.
    """
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
    """The probability threshold that is best on ``(y_true, prob)``.

    Use it on the **validation** set only, then apply the chosen threshold to
    the test set: picking it on the test set would tune the model to the very
    data that is supposed to measure it, and the test numbers would be too good.

    criterion
        ``"youden"``: maximise Youden's J = sensitivity + specificity - 1
        = TPR - FPR, the point of the ROC curve farthest above the diagonal.
        ``"f1"``: maximise the F1 score of the malignant class.
        ``"sensitivity_95"`` (any two digits): the screening point, :func:`sensitivity_threshold` at 0.95.

    Returns a threshold ``t`` such that ``prob >= t`` gives the optimal calls.
    """
    y, p = _labels_and_probs(y_true, prob)
    if len(np.unique(y)) < 2:
        raise ValueError("best_threshold needs both benign and malignant examples")
    if criterion.startswith("sensitivity_") and criterion[12:].isdigit():
        return sensitivity_threshold(y, p, int(criterion[12:]) / 100)
    if criterion == "youden":
        fpr, tpr, thr = roc_curve(y, p)
        finite = np.isfinite(thr)  # the first ROC point uses threshold +inf (nothing positive)
        j = (tpr - fpr)[finite]
        return float(thr[finite][int(np.argmax(j))])
    if criterion == "f1":
        prec, rec, thr = precision_recall_curve(y, p)
        prec, rec = prec[:-1], rec[:-1]  # the last point has no threshold
        denom = prec + rec
        f1 = np.divide(2 * prec * rec, denom, out=np.zeros_like(denom), where=denom > 0)
        return float(thr[int(np.argmax(f1))])
    raise ValueError(f"criterion must be 'youden', 'f1' or 'sensitivity_NN', not {criterion!r}")


def sensitivity_threshold(y_true: ArrayLike, prob: ArrayLike, target: float = 0.9) -> float:
    """The highest threshold whose sensitivity on ``(y_true, prob)`` is at least ``target``.

    A screening test is set for the cancers it must not miss: this is the
    operating point that keeps sensitivity at ``target`` and, among those, gives
    the best specificity. Like :func:`best_threshold`, choose it on validation
    data only. With ``k`` malignant scans, it lets through at most
    ``floor((1 - target) * k)`` of them: the ``ceil(target * k)``-th highest
    malignant probability.
    """
    y, p = _labels_and_probs(y_true, prob)
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    pos = np.sort(p[y == 1])[::-1]
    if len(pos) == 0:
        raise ValueError("sensitivity_threshold needs malignant examples")
    return float(pos[int(np.ceil(target * len(pos) - 1e-9)) - 1])


# ----------------------------------------------------------------------------
# Segmentation
# ----------------------------------------------------------------------------
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

    ``true_masks`` (N, H, W) hold {0, 1} (a truth pixel is lesion when its value
    is above 0.5, so {0, 255} or slightly blurred resized masks also work).
    ``pred_masks`` (N, H, W) hold probabilities or {0, 1} predictions; a pixel is
    predicted lesion when ``pred >= threshold``. (N, 1, H, W) works too, and a
    single (H, W) mask counts as one image.

    The counts are all a segmentation metric needs, so they are the thing to
    keep (e.g. for :func:`bootstrap_ci` over images) instead of the masks.
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

    ``pooled=True`` sums the counts over the images first (micro average);
    ``pooled=False`` scores every image and takes the mean (macro average).
    See the module docstring for the difference and the empty-mask convention.

    * precision = TP / (TP + FP): of the pixels predicted lesion, how many are.
    * recall    = TP / (TP + FN): of the lesion pixels, how many were found.
    * dice = f1 = 2 TP / (2 TP + FP + FN): overlap relative to the mean size of
      the two masks.
    * iou (Jaccard) = TP / (TP + FP + FN) = overlap / union; always <= dice.
    """
    tp, fp, fn = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (tp, fp, fn))
    if pooled:
        return {k: float(v) for k, v in pixel_scores(tp.sum(), fp.sum(), fn.sum()).items()}
    if tp.size == 0:
        return {k: float("nan") for k in SEGMENTATION_METRIC_NAMES}
    return {k: float(v.mean()) for k, v in pixel_scores(tp, fp, fn).items()}


def segmentation_metrics(true_masks: ArrayLike, pred_masks: ArrayLike, threshold: float = 0.5) -> dict:
    """Pixel metrics of binary lesion masks, pooled and per image.

    ``true_masks``: (N, H, W) {0, 1}; ``pred_masks``: (N, H, W) probabilities or
    {0, 1} predictions (lesion when ``>= threshold``).

    Returns a dict with ``precision``, ``recall``, ``f1``, ``iou`` and ``dice``,
    each twice: ``<name>_pooled`` (counts summed over every pixel of the data
    set, the micro average that the reference study's Dice/IoU correspond to)
    and ``<name>_per_image`` (mean over images of the per-image value), plus
    ``n_images`` and ``n_empty_truth`` (images whose true mask is empty).
    Empty masks follow the convention of the module docstring.

    Vectorised: 647 masks of 256 x 256 take well under a second.
    """
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


# ----------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------
def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    groups: ArrayLike | None = None,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval ``(low, high)`` of a metric.

    ``metric_fn(*arrays)`` must return one number. Each of ``n_boot`` rounds
    draws ``n`` items with replacement (the same items from every array, along
    the first axis), recomputes the metric, and the interval is the
    ``alpha/2`` and ``1 - alpha/2`` percentiles of these values (95 % for
    ``alpha=0.05``).

    ``groups`` (shape (n,), e.g. patient ids or duplicate groups): resample whole
    groups instead of items, so a group's items always come or go together. Use
    it whenever items of a group are correlated; a resample then holds as many
    groups as the data (its number of items may vary).

    Rounds where the metric is NaN (e.g. ROC AUC of a resample with one class)
    are dropped; ``(nan, nan)`` if all are. The same ``seed`` gives the same
    interval.

    Example, ROC AUC by patient and pooled Dice by image::

        bootstrap_ci(lambda y, p: classification_metrics(y, p)["roc_auc"], y, p, groups=patient)
        tp, fp, fn = segmentation_counts(true_masks, pred_masks)
        bootstrap_ci(lambda *c: scores_from_counts(*c)["dice"], tp, fp, fn)
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
    """Bootstrap intervals of *every* number ``fn`` returns (a dict), from one set of resamples.

    :func:`bootstrap_ci` gives the interval of one number; calling it once per
    metric would redo the same (slow, scikit-learn) work ten times. So ``fn``'s
    dict of every round is recorded and each key gets the same percentile
    interval bootstrap_ci computes (NaN rounds dropped). Returns ``{key: [low, high]}``.
    """
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


# ----------------------------------------------------------------------------
# fastai metrics
# ----------------------------------------------------------------------------
def _unpack(learn):
    """Split ``learn.pred``/``learn.yb`` into ``(class_logit, y_cls, mask_logits, y_mask)``; missing parts are None.

    * a tuple prediction is the multitask model: ``(class_logit, mask_logits)``
      with targets ``learn.yb = (y_cls, y_mask)``;
    * a 4-D prediction (B, 1, H, W) is a segmentation model's mask logits;
    * anything else ((B,) or (B, 1)) is a classification model's logit.
    """
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
    """A fastai metric computed by :func:`classification_metrics` over a whole epoch.

    ``name`` is one of ``accuracy``, ``precision``, ``recall``, ``sensitivity``,
    ``specificity``, ``f1``, ``roc_auc``. Every batch, the class logit is found in
    ``learn.pred`` (the logit itself, or element 0 of a multitask tuple), turned
    into a probability with a sigmoid and stored with its target; at the end of
    the epoch the metric is computed once on all of them. (Averaging ROC AUC or
    F1 over batches, as fastai does for plain functions, would give a different
    and batch-size dependent number.)
    """

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
    """A fastai metric computed by :func:`scores_from_counts` over a whole epoch.

    ``name`` is one of ``dice``, ``iou``, ``precision``, ``recall``, ``f1``. Every
    batch, the mask logits are found in ``learn.pred`` (a (B, 1, H, W) tensor, or
    element 1 of a multitask tuple), turned into lesion pixels with
    ``sigmoid(logit) >= threshold``, and only the per-image counts TP, FP, FN are
    kept (no masks are stored). The value is pooled over all pixels of the epoch
    (``pooled=True``, name ``<name>_pooled``) or the mean of the per-image values
    (``pooled=False``, name ``<name>_per_image``), exactly as
    :func:`segmentation_metrics` computes them.
    """

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
    """The segmentation metrics shown while training (default ``dice_pooled``, ``iou_pooled``).

    Monitor one of them with e.g. ``SaveModelCallback(monitor="dice_pooled")``.
    """
    return [SegmentationMetric(n, pooled, threshold) for n in names]


# ---------------------------------------------------------------- a table of per-scan predictions
def score_table(t: pd.DataFrame, suffix: str = "", fast: bool = False) -> dict:
    """Classification and segmentation metrics of a per-scan prediction table.

    Each row is called malignant at its own fold's threshold, so pooled tables
    of several folds are scored exactly as each fold was. ``fast``: the numpy twin
    :func:`busi_lib.evaluation.metrics.classification_round` (the :data:`~busi_lib.evaluation.metrics.CI_KEYS`
    only, no counts), for the bootstrap's thousands of rounds.
    """
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
