"""Tests of busi_lib.evaluation.metrics: plain functions against scikit-learn and hand counts, fastai metrics
against both."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    jaccard_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from busi_lib.evaluation.metrics import (
    CLASSIFICATION_METRIC_NAMES,
    SEGMENTATION_METRIC_NAMES,
    ClassificationMetric,
    SegmentationMetric,
    best_threshold,
    bootstrap_ci,
    classification_fastai_metrics,
    classification_metrics,
    dice_from_iou,
    iou_from_dice,
    predictive_values,
    scores_from_counts,
    segmentation_counts,
    segmentation_fastai_metrics,
    segmentation_metrics,
    youden_threshold,
)


def _random_classification(seed: int, n: int = 200):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    prob = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)  # informative but imperfect
    return y, prob


# ----------------------------------------------------------------------------
# classification
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_classification_metrics_equal_sklearn(seed, threshold):
    y, prob = _random_classification(seed)
    pred = (prob >= threshold).astype(int)
    m = classification_metrics(y, prob, threshold)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred, zero_division=0))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["sensitivity"] == m["recall"]
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, prob))
    assert m["tp"] == int(((pred == 1) & (y == 1)).sum())
    assert m["fp"] == int(((pred == 1) & (y == 0)).sum())
    assert m["tn"] == int(((pred == 0) & (y == 0)).sum())
    assert m["fn"] == int(((pred == 0) & (y == 1)).sum())
    assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == m["n"] == len(y)
    assert m["specificity"] == pytest.approx(m["tn"] / (m["tn"] + m["fp"]))


def test_specificity_and_counts_by_hand():
    y = [0, 0, 0, 0, 1, 1, 1]
    prob = [0.1, 0.2, 0.4, 0.6, 0.3, 0.8, 0.9]
    m = classification_metrics(y, prob)  # calls: 0 0 0 1 | 0 1 1
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (3, 1, 1, 2)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(5 / 7)
    # 12 (benign, malignant) pairs; the malignant 0.3 ranks below benign 0.4 and 0.6
    assert m["roc_auc"] == pytest.approx(10 / 12)


def test_threshold_is_inclusive_and_moves_calls():
    y, prob = [0, 1], [0.5, 0.5]
    assert classification_metrics(y, prob, 0.5)["tp"] == 1  # prob >= threshold is malignant
    assert classification_metrics(y, prob, 0.51)["tp"] == 0


def test_roc_auc_is_nan_with_one_class_and_zero_division_is_zero():
    m = classification_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert np.isnan(m["roc_auc"])
    assert m["specificity"] == 0.0  # no benign scans
    m = classification_metrics([0, 0, 1], [0.1, 0.2, 0.3])  # nothing called malignant
    assert m["precision"] == 0.0 and m["f1"] == 0.0 and m["specificity"] == 1.0


def test_classification_rejects_logits_and_bad_labels():
    with pytest.raises(ValueError, match="sigmoid"):
        classification_metrics([0, 1], [-2.0, 3.0])
    with pytest.raises(ValueError, match="0 \\(benign\\)"):
        classification_metrics([0, 2], [0.1, 0.9])
    with pytest.raises(ValueError):
        classification_metrics([0, 1, 1], [0.1, 0.9])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_threshold_matches_brute_force(seed):
    y, prob = _random_classification(seed, n=120)

    def youden(t):
        pred = prob >= t
        return pred[y == 1].mean() - pred[y == 0].mean()  # sensitivity - (1 - specificity)

    def f1(t):
        pred = prob >= t
        tp = (pred & (y == 1)).sum()
        return 2 * tp / (pred.sum() + (y == 1).sum())

    candidates = np.unique(prob)  # every distinct threshold, tried by brute force
    t = best_threshold(y, prob, "youden")
    assert youden(t) == pytest.approx(max(youden(c) for c in candidates))
    assert classification_metrics(y, prob, t)["recall"] + classification_metrics(y, prob, t)[
        "specificity"
    ] - 1 == pytest.approx(youden(t))
    t = best_threshold(y, prob, "f1")
    assert f1(t) == pytest.approx(max(f1(c) for c in candidates))
    assert classification_metrics(y, prob, t)["f1"] == pytest.approx(f1(t))


def test_best_threshold_separable_and_errors():
    y = np.array([0, 0, 0, 1, 1])
    prob = np.array([0.1, 0.2, 0.3, 0.6, 0.9])
    t = best_threshold(y, prob)
    m = classification_metrics(y, prob, t)
    assert m["accuracy"] == 1.0 and 0.3 < t <= 0.6
    assert best_threshold(y, prob, "sensitivity_95") == 0.6  # the lowest malignant probability keeps 0.95
    with pytest.raises(ValueError, match="criterion"):
        best_threshold(y, prob, "accuracy")
    with pytest.raises(ValueError, match="both"):
        best_threshold([1, 1], [0.2, 0.4])


# ----------------------------------------------------------------------------
# segmentation
# ----------------------------------------------------------------------------
def _all(m: dict, suffix: str) -> list[float]:
    return [m[f"{k}_{suffix}"] for k in SEGMENTATION_METRIC_NAMES]


def test_empty_prediction_on_empty_truth_is_perfect():
    m = segmentation_metrics(np.zeros((3, 8, 8)), np.zeros((3, 8, 8)))
    assert _all(m, "pooled") == [1.0] * 5
    assert _all(m, "per_image") == [1.0] * 5
    assert m["n_images"] == 3 and m["n_empty_truth"] == 3


def test_full_overlap_is_one_and_no_overlap_is_zero():
    t = np.zeros((2, 8, 8), np.uint8)
    t[0, 2:5, 2:5] = 1
    t[1, 0:2, :] = 1
    m = segmentation_metrics(t, t.astype(np.float32))
    assert _all(m, "pooled") == [1.0] * 5 and _all(m, "per_image") == [1.0] * 5
    m = segmentation_metrics(t, 1 - t)
    assert _all(m, "pooled") == [0.0] * 5 and _all(m, "per_image") == [0.0] * 5
    assert m["n_empty_truth"] == 0


def test_one_sided_empty_masks_score_zero():
    lesion = np.zeros((1, 6, 6))
    lesion[0, 1:3, 1:3] = 1
    empty = np.zeros((1, 6, 6))
    assert _all(segmentation_metrics(empty, lesion), "per_image") == [0.0] * 5  # false alarm
    m = segmentation_metrics(lesion, empty)  # missed lesion: precision 0 too
    assert _all(m, "per_image") == [0.0] * 5 and m["precision_per_image"] == 0.0
    # mixed: one perfectly empty pair (1) and one missed lesion (0)
    m = segmentation_metrics(np.concatenate([empty, lesion]), np.concatenate([empty, empty]))
    assert _all(m, "per_image") == [0.5] * 5
    assert _all(m, "pooled") == [0.0] * 5  # the empty image adds no pixels to the pool
    assert m["n_empty_truth"] == 1


def test_half_overlap_pooled_differs_from_per_image():
    t = np.zeros((2, 8, 8), np.uint8)
    p = np.zeros((2, 8, 8), np.float32)
    t[0, 0:4, 0:4] = 1  # big lesion, 16 pixels, found exactly
    p[0, 0:4, 0:4] = 0.9
    t[1, 0, 0:2] = 1  # small lesion, 2 pixels, half found, plus 1 false pixel
    p[1, 0, 1:3] = 0.8
    # image 0: tp 16, fp 0, fn 0; image 1: tp 1, fp 1, fn 1; pooled: tp 17, fp 1, fn 1
    m = segmentation_metrics(t, p)
    assert m["dice_per_image"] == pytest.approx((1 + 0.5) / 2)
    assert m["dice_pooled"] == pytest.approx(34 / 36)
    assert m["iou_per_image"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["iou_pooled"] == pytest.approx(17 / 19)
    assert m["precision_per_image"] == pytest.approx(0.75)
    assert m["precision_pooled"] == pytest.approx(17 / 18)
    assert m["recall_per_image"] == pytest.approx(0.75)
    assert m["recall_pooled"] == pytest.approx(17 / 18)
    assert m["f1_pooled"] == m["dice_pooled"] and m["f1_per_image"] == m["dice_per_image"]
    assert m["dice_pooled"] != pytest.approx(m["dice_per_image"])


def _random_masks(seed: int, n: int = 20, size: int = 32):
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        r, c = rng.integers(0, size - 8, 2)
        h, w = rng.integers(2, 9, 2)
        truth[i, r : r + h, c : c + w] = 1
    truth[0] = 0  # one normal scan
    prob = (0.35 * truth + 0.65 * rng.random(truth.shape)).astype(np.float32)  # misses and false alarms
    return truth, prob


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooled_dice_iou_identity_holds_and_per_image_does_not(seed):
    truth, prob = _random_masks(seed)
    m = segmentation_metrics(truth, prob)
    assert m["dice_pooled"] == pytest.approx(dice_from_iou(m["iou_pooled"]), rel=1e-12, abs=0)
    assert m["dice_per_image"] != pytest.approx(dice_from_iou(m["iou_per_image"]), rel=1e-6)
    assert m["dice_per_image"] <= dice_from_iou(m["iou_per_image"])  # Jensen: the map is concave


def test_dice_iou_helpers():
    assert dice_from_iou(0.711) == pytest.approx(0.831, abs=5e-4)  # the reference study's pair
    assert iou_from_dice(dice_from_iou(0.42)) == pytest.approx(0.42)
    np.testing.assert_allclose(dice_from_iou(np.array([0.0, 1.0])), [0.0, 1.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_image_pixel_metrics_equal_sklearn(seed):
    truth, prob = _random_masks(seed, n=5)
    i = 3  # a non-empty image
    t, p = truth[i].ravel(), (prob[i] >= 0.5).ravel().astype(int)
    m = segmentation_metrics(truth[i : i + 1], prob[i : i + 1])
    assert m["precision_per_image"] == pytest.approx(precision_score(t, p))
    assert m["recall_per_image"] == pytest.approx(recall_score(t, p))
    assert m["f1_per_image"] == pytest.approx(f1_score(t, p))
    assert m["iou_per_image"] == pytest.approx(jaccard_score(t, p))
    # pooled = sklearn on all pixels of the data set flattened together
    t_all, p_all = truth.ravel(), (prob >= 0.5).ravel().astype(int)
    m = segmentation_metrics(truth, prob)
    assert m["dice_pooled"] == pytest.approx(f1_score(t_all, p_all))
    assert m["iou_pooled"] == pytest.approx(jaccard_score(t_all, p_all))


def test_segmentation_shapes_threshold_and_counts():
    truth, prob = _random_masks(0, n=4)
    m = segmentation_metrics(truth, prob)
    assert segmentation_metrics(truth[:, None], prob[:, None]) == m  # (N, 1, H, W)
    assert segmentation_metrics(truth, (prob >= 0.5).astype(np.uint8)) == m  # binary predictions
    assert segmentation_metrics(truth, prob, threshold=0.9) != m
    one = segmentation_metrics(truth[2], prob[2])  # a single (H, W) mask is one image
    assert one["n_images"] == 1
    tp, fp, fn = segmentation_counts(truth, prob)
    assert scores_from_counts(tp, fp, fn, pooled=True)["dice"] == m["dice_pooled"]
    assert scores_from_counts(tp, fp, fn, pooled=False)["iou"] == m["iou_per_image"]
    with pytest.raises(ValueError, match="shape"):
        segmentation_metrics(truth, prob[:, :16])


def test_segmentation_is_fast_on_busi_sized_data():
    rng = np.random.default_rng(0)
    truth = rng.random((647, 256, 256), dtype=np.float32) < 0.05
    pred = rng.random((647, 256, 256), dtype=np.float32) < 0.05
    start = time.perf_counter()
    m = segmentation_metrics(truth, pred)
    assert time.perf_counter() - start < 5.0
    assert m["n_images"] == 647


# ----------------------------------------------------------------------------
# bootstrap
# ----------------------------------------------------------------------------
def _mean(x):
    return float(np.mean(x))


def test_bootstrap_contains_estimate_and_is_reproducible():
    y, prob = _random_classification(0, n=150)
    auc = roc_auc_score  # any f(*arrays) -> float; classification_metrics(y, p)["roc_auc"] works too, slower
    low, high = bootstrap_ci(auc, y, prob, n_boot=200, seed=1)
    assert low < auc(y, prob) < high
    assert (low, high) == bootstrap_ci(auc, y, prob, n_boot=200, seed=1)
    assert (low, high) != bootstrap_ci(auc, y, prob, n_boot=200, seed=2)
    wide = bootstrap_ci(auc, y, prob, n_boot=200, seed=1, alpha=0.01)
    assert wide[0] <= low and wide[1] >= high


def test_bootstrap_on_segmentation_counts():
    truth, prob = _random_masks(1, n=30)
    tp, fp, fn = segmentation_counts(truth, prob)
    dice = segmentation_metrics(truth, prob)["dice_pooled"]
    low, high = bootstrap_ci(lambda *c: scores_from_counts(*c)["dice"], tp, fp, fn, n_boot=200)
    assert low <= dice <= high


def test_group_bootstrap_is_wider_for_correlated_duplicates():
    rng = np.random.default_rng(0)
    values = np.repeat(rng.normal(size=30), 10)  # 30 patients, each scan copied 10 times
    groups = np.repeat(np.arange(30), 10)
    item_low, item_high = bootstrap_ci(_mean, values, n_boot=500)
    group_low, group_high = bootstrap_ci(_mean, values, n_boot=500, groups=groups)
    assert group_low < _mean(values) < group_high
    assert (group_high - group_low) > 2 * (item_high - item_low)  # about sqrt(10) wider
    assert (group_low, group_high) == bootstrap_ci(_mean, values, n_boot=500, groups=groups)


def test_bootstrap_drops_nan_rounds_and_checks_lengths():
    y = np.array([0] * 19 + [1])  # many resamples hold no malignant scan: AUC NaN there
    p = np.linspace(0, 1, 20)
    low, high = bootstrap_ci(lambda a, b: classification_metrics(a, b)["roc_auc"], y, p, n_boot=60)
    assert not np.isnan(low) and not np.isnan(high)
    with pytest.raises(ValueError):
        bootstrap_ci(_mean, np.ones(3), np.ones(4))
    with pytest.raises(ValueError):
        bootstrap_ci(_mean, np.ones(3), groups=[0, 1])


# ----------------------------------------------------------------------------
# fastai metrics
# ----------------------------------------------------------------------------
def _run_metric(metric, batches):
    """Drive a metric the way fastai's Recorder does: reset, accumulate each batch, read value."""
    metric.reset()
    for pred, yb in batches:
        metric.accumulate(SimpleNamespace(pred=pred, yb=yb))
    return metric.value


def _logit(p: np.ndarray) -> torch.Tensor:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return torch.from_numpy(np.log(p / (1 - p))).float()


def test_classification_metric_accumulates_like_plain_function():
    y, prob = _random_classification(3, n=50)
    plain = classification_metrics(y, prob)
    splits = [slice(0, 16), slice(16, 32), slice(32, 50)]  # uneven batches
    logits, targets = _logit(prob), torch.from_numpy(y).float()
    for name in CLASSIFICATION_METRIC_NAMES:
        # (B,) logits, then (B, 1) logits: both are a classification model
        batches = [(logits[s], (targets[s],)) for s in splits]
        assert _run_metric(ClassificationMetric(name), batches) == pytest.approx(plain[name], abs=1e-6)
        batches = [(logits[s][:, None], (targets[s],)) for s in splits]
        assert _run_metric(ClassificationMetric(name), batches) == pytest.approx(plain[name], abs=1e-6)
    # per-batch averaging would give a different AUC: accumulating matters
    per_batch = np.mean([roc_auc_score(y[s], prob[s]) for s in splits])
    assert per_batch != pytest.approx(plain["roc_auc"])


def test_segmentation_metric_accumulates_like_plain_function():
    truth, prob = _random_masks(2, n=12)
    plain = segmentation_metrics(truth, prob)
    logits, targets = _logit(prob)[:, None], torch.from_numpy(truth).float()
    splits = [slice(0, 5), slice(5, 9), slice(9, 12)]
    for name in SEGMENTATION_METRIC_NAMES:
        for pooled, key in ((True, f"{name}_pooled"), (False, f"{name}_per_image")):
            metric = SegmentationMetric(name, pooled=pooled)
            assert metric.name == key
            with_channel = [(logits[s], (targets[s, None],)) for s in splits]  # y_mask (B, 1, H, W)
            assert _run_metric(metric, with_channel) == pytest.approx(plain[key], abs=1e-12)
            no_channel = [(logits[s], (targets[s],)) for s in splits]  # y_mask (B, H, W)
            assert _run_metric(metric, no_channel) == pytest.approx(plain[key], abs=1e-12)


def test_multitask_tuple_is_unpacked():
    y, prob = _random_classification(4, n=12)
    truth, mask_prob = _random_masks(4, n=12)
    cls_plain, seg_plain = classification_metrics(y, prob), segmentation_metrics(truth, mask_prob)
    pred = (_logit(prob)[:, None], _logit(mask_prob)[:, None])
    yb = (torch.from_numpy(y).float(), torch.from_numpy(truth).float()[:, None])
    batches = [((pred[0][s], pred[1][s]), (yb[0][s], yb[1][s])) for s in (slice(0, 7), slice(7, 12))]
    metrics = (classification_fastai_metrics() + segmentation_fastai_metrics())
    assert [m.name for m in metrics] == ["accuracy", "f1", "roc_auc", "dice_pooled", "iou_pooled"]
    for m in metrics:
        expected = seg_plain[m.name] if isinstance(m, SegmentationMetric) else cls_plain[m.name]
        assert _run_metric(m, batches) == pytest.approx(expected, abs=1e-6)


def test_metric_reset_names_and_wrong_kind():
    m = ClassificationMetric("f1")
    assert m.value is None and m.name == "f1"
    _run_metric(m, [(torch.tensor([5.0, -5.0]), (torch.tensor([1.0, 0.0]),))])
    assert m.value == 1.0
    assert _run_metric(m, [(torch.tensor([-5.0, 5.0]), (torch.tensor([1.0, 0.0]),))]) == 0.0  # reset forgot
    assert [x.name for x in classification_fastai_metrics()] == ["accuracy", "f1", "roc_auc"]
    assert [x.name for x in segmentation_fastai_metrics()] == ["dice_pooled", "iou_pooled"]
    assert [x.name for x in segmentation_fastai_metrics(pooled=False)] == ["dice_per_image", "iou_per_image"]
    with pytest.raises(ValueError, match="mask logits only"):
        _run_metric(ClassificationMetric(), [(torch.zeros(2, 1, 4, 4), (torch.zeros(2, 1, 4, 4),))])
    with pytest.raises(ValueError, match="class logit only"):
        _run_metric(SegmentationMetric(), [(torch.zeros(2), (torch.zeros(2),))])
    with pytest.raises(ValueError, match="one logit"):
        _run_metric(ClassificationMetric(), [(torch.zeros(2, 2), (torch.zeros(2),))])
    with pytest.raises(ValueError):
        ClassificationMetric("dice")
    with pytest.raises(ValueError):
        SegmentationMetric("roc_auc")


class _TinyMultitask(torch.nn.Module):
    """(class_logit (B,), mask_logits (B, 1, H, W)) from a 1-channel image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.seg = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.cls = torch.nn.Linear(1, 1)

    def forward(self, x):
        mask_logits = self.seg(x)
        return self.cls(mask_logits.mean((2, 3))).squeeze(1), mask_logits


class _Triples(torch.utils.data.Dataset):
    n_inp = 1  # (x, y_cls, y_mask): one input, two targets

    def __init__(self, x, y_cls, y_mask):
        self.x, self.y_cls, self.y_mask = x, y_cls, y_mask

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y_cls[i], self.y_mask[i]


def test_metrics_inside_a_fastai_learner():
    from fastai.data.core import DataLoaders, TfmdDL
    from fastai.learner import Learner

    g = torch.Generator().manual_seed(0)
    x = torch.randn(22, 1, 12, 12, generator=g) + torch.linspace(-1, 1, 22)[:, None, None, None]
    y_mask = (x > 0.3).float()
    y_cls = (y_mask.mean((1, 2, 3)) > 0.5).float()
    assert 0 < y_cls.sum() < len(y_cls)  # both classes, so ROC AUC is defined
    ds = _Triples(x, y_cls, y_mask)
    dls = DataLoaders(TfmdDL(ds, bs=8, shuffle=False), TfmdDL(ds, bs=8, shuffle=False), device="cpu")

    def loss(pred, yc, ym):
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        return bce(pred[0], yc) + bce(pred[1], ym)

    model = _TinyMultitask()
    metrics = [*classification_fastai_metrics(), *segmentation_fastai_metrics(),
               SegmentationMetric("dice", pooled=False)]
    learn = Learner(dls, model, loss_func=loss, metrics=metrics)
    with learn.no_logging():
        record = learn.validate()  # Recorder: reset, accumulate per batch, value at the end
    values = dict(zip([m.name for m in metrics], record[1:]))

    model.eval()
    with torch.no_grad():
        cls_logit, mask_logits = model(x)
    cls_plain = classification_metrics(y_cls.numpy(), torch.sigmoid(cls_logit).numpy())
    seg_plain = segmentation_metrics(y_mask.numpy()[:, 0], torch.sigmoid(mask_logits).numpy()[:, 0])
    for name, value in values.items():
        expected = seg_plain[name] if name in seg_plain else cls_plain[name]
        assert value == pytest.approx(expected, abs=1e-6), name


def test_predictive_values_are_the_precision_and_npv_of_a_population_with_that_prevalence():
    rng = np.random.default_rng(7)
    y = (rng.random(2000) < 0.3).astype(int)
    prob = np.clip(0.35 * y + rng.random(2000) * 0.65, 0, 1)
    m = classification_metrics(y, prob, threshold=0.5)
    ppv, npv = predictive_values(m["sensitivity"], m["specificity"], prevalence=y.mean())
    assert ppv == pytest.approx(m["precision"]) and npv == pytest.approx(m["tn"] / (m["tn"] + m["fn"]))
    # at a screening prevalence of 1 % the same test calls far more benign scans malignant than it finds cancers
    assert predictive_values(m["sensitivity"], m["specificity"], 0.01)[0] < 0.1 < ppv


def test_youden_threshold_maximises_sensitivity_plus_specificity():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 300)
    prob = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1)
    t = youden_threshold(y, prob)
    j = {c: ((prob >= c) & (y == 1)).sum() / (y == 1).sum() + ((prob < c) & (y == 0)).sum() / (y == 0).sum()
         for c in np.unique(prob)}  # sensitivity + specificity at every candidate, counted by hand
    assert j[t] == pytest.approx(max(j.values())) and t == best_threshold(y, prob, "youden")
