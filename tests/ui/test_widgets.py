"""busi_lib.ui.widgets: each widget is driven by setting its controls and reading what it shows (no browser)."""

import numpy as np
import pytest

from busi_lib.data.cache import cached_arrays
from busi_lib.data.dataset import load_dataset
from busi_lib.evaluation.metrics import classification_metrics, segmentation_metrics
from busi_lib.ui.widgets import LiveFigure, dataset_browser, mask_picker, show, threshold_explorer


@pytest.fixture(scope="module")
def table(synthetic_dir):
    return load_dataset(synthetic_dir, labels="three_class")


@pytest.fixture()
def predictions():
    """Held-out-like predictions: malignant scans get higher probabilities on average, with overlap."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    prob = np.clip(0.35 * y + 0.65 * rng.random(80), 0, 1)
    return y, prob


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


# ----------------------------------------------------------------------------
# threshold_explorer
# ----------------------------------------------------------------------------
def test_threshold_slider_updates_counts_metrics_and_roc_point(predictions):
    y, prob = predictions
    w = threshold_explorer(y, prob, threshold=0.5)
    assert isinstance(w, LiveFigure)
    seen = []
    for t in (0.2, 0.5, 0.8):
        w.controls["threshold"].value = t
        want = classification_metrics(y, prob, t)
        for key in ("tp", "fp", "tn", "fn", "sensitivity", "specificity", "precision", "accuracy"):
            assert w.state[key] == pytest.approx(want[key]), key
        # What the student reads: the summary line and the annotated confusion matrix.
        assert f"sensitivity <b>{want['sensitivity']:.3f}</b>" in w.summary
        assert f"specificity <b>{want['specificity']:.3f}</b>" in w.summary
        ax_cm, ax_roc = w.figure.axes
        assert sorted(map(int, _texts(ax_cm))) == sorted([want["tn"], want["fp"], want["fn"], want["tp"]])
        point = [ln for ln in ax_roc.lines if ln.get_label() == "threshold"][0]
        assert point.get_xdata()[0] == pytest.approx(1 - want["specificity"])
        assert point.get_ydata()[0] == pytest.approx(want["sensitivity"])
        assert ax_roc.get_xlabel() and ax_roc.get_ylabel() and ax_roc.get_title()
        seen.append((w.state["tp"], w.state["fp"], w.png))
    # Moving the slider really changed what is shown: fewer positives and a different picture at a higher threshold.
    assert seen[0][0] + seen[0][1] > seen[2][0] + seen[2][1]
    assert len({s[2] for s in seen}) == 3
    assert w.image.value == w.png and w.png.startswith(b"\x89PNG")


def test_threshold_explorer_rejects_logits_and_one_class_is_shown():
    with pytest.raises(ValueError, match="probabilities"):
        threshold_explorer([0, 1], [-2.0, 3.0])
    w = threshold_explorer([1, 1, 1], [0.2, 0.6, 0.9], threshold=0.5)  # no benign scan: no ROC curve, no crash
    assert w.state["tp"] == 2 and w.state["fn"] == 1
    assert "both classes" in _texts(w.figure.axes[1])[0]


# ----------------------------------------------------------------------------
# dataset_browser
# ----------------------------------------------------------------------------
def test_dataset_browser_shows_a_scan_with_its_duplicate_group(table):
    w = dataset_browser(table)
    dup = table[table["group_size"] > 1].iloc[0]
    label = dup["label"]
    w.controls["label"].value = label
    position = int(np.flatnonzero(table[table["label"] == label]["image_id"] == dup["image_id"])[0])
    w.controls["index"].value = position + 1  # the slider counts scans from 1
    members = table[(table["dup_group"] == dup["dup_group"]) & (table["image_id"] != dup["image_id"])]
    assert w.state["image_id"] == dup["image_id"]
    assert w.state["duplicates"] == list(members["image_id"])
    assert w.state["conflict"] == (members["label"].nunique() > 1 or (members["label"] != label).any())
    assert w.state["n_panels"] == 1 + len(members) == len(w.figure.axes)
    assert [ax.get_title() for ax in w.figure.axes][0].startswith(dup["image_id"])
    assert all(ax.get_title() and ax.get_xlabel() and ax.get_ylabel() for ax in w.figure.axes)
    assert f"{len(members) + 1} scans" in w.summary


def test_dataset_browser_class_dropdown_and_outline_toggle(table):
    w = dataset_browser(table)
    w.controls["index"].value = 5
    n_malignant = int((table["label"] == "malignant").sum())
    w.controls["label"].value = "malignant"
    assert w.controls["index"].value == 1 and w.controls["index"].max == n_malignant
    assert (
        w.state["label"] == "malignant"
        and w.state["image_id"] == table[table["label"] == "malignant"].iloc[0]["image_id"]
    )
    with_outline = (w.png, len(w.figure.axes[0].collections))
    w.controls["outline"].value = False
    assert len(w.figure.axes[0].collections) < with_outline[1]  # the contour is gone
    assert w.png != with_outline[0] and "lesion outline" not in w.summary


# ----------------------------------------------------------------------------
# mask_picker
# ----------------------------------------------------------------------------
def test_mask_picker_shows_the_dice_of_the_picked_scan(table):
    rows = table[table["label"] != "normal"].head(6)
    images, masks = cached_arrays(rows, 32)
    # A "prediction": the true mask shifted by a few pixels and blurred into probabilities.
    rng = np.random.default_rng(0)
    probs = np.clip(np.roll(masks, 3, axis=2) * 0.8 + rng.random(masks.shape) * 0.3, 0, 1).astype(np.float16)
    y = rows["target"].to_numpy()
    w = mask_picker(images, masks, probs[:, None], y=y, prob=np.linspace(0.1, 0.9, len(rows)))
    dices = []
    for i in (0, 3):
        for t in (0.3, 0.7):
            w.controls["index"].value, w.controls["threshold"].value = i + 1, t
            want = segmentation_metrics(masks[i : i + 1], probs[i : i + 1].astype(np.float32), t)
            assert w.state["dice"] == pytest.approx(want["dice_per_image"])
            assert w.state["pred_pixels"] == int((probs[i].astype(np.float32) >= t).sum())
            assert w.state["label"] == ("benign", "malignant")[y[i]]
            assert f"Dice <b>{want['dice_per_image']:.3f}</b>" in w.summary
            assert f"p(malignant) = <b>{np.linspace(0.1, 0.9, len(rows))[i]:.2f}</b>" in w.summary
            dices.append(w.state["dice"])
    assert len(set(dices)) > 1
    assert all(ax.get_title() for ax in w.figure.axes[:3])


def test_mask_picker_checks_shapes():
    with pytest.raises(ValueError, match="differ in length"):
        mask_picker(np.zeros((3, 8, 8), np.uint8), np.zeros((2, 8, 8)), np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="shape"):
        mask_picker(np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8)), np.zeros((2, 8, 8)))


# ----------------------------------------------------------------------------
# show
# ----------------------------------------------------------------------------
def test_show_is_live_or_static(monkeypatch, predictions):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    w = threshold_explorer(*predictions)
    monkeypatch.delenv("BUSI_STATIC_WIDGETS", raising=False)
    assert show(w) is None and shown == [w]  # None: a cell ending in show() shows it once
    shown.clear()
    monkeypatch.setenv("BUSI_STATIC_WIDGETS", "1")
    show(w)
    assert [type(o).__name__ for o in shown] == ["HTML", "Image"]
    assert shown[0].data == w.summary and shown[1].data == w.png
