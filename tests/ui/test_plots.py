"""The figures the lessons added: metric bars with intervals, the Grad-CAM gallery, one scan's augmentations."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from busi_lib.data.loaders import BusiDataset  # noqa: E402
from busi_lib.data.transforms import build_transforms  # noqa: E402
from busi_lib.ui.plots import plot_augmentations, plot_cam_gallery, plot_metric_bars, show_batch  # noqa: E402


def test_error_bars_sit_on_their_own_bars():
    table = pd.DataFrame({"model": ["a", "b"], "accuracy": [0.6, 0.8], "f1": [np.nan, 0.5]})
    ci = {"b": {"f1": (0.4, 0.7), "accuracy": (0.7, 0.9)}, "a": {"accuracy": (0.5, 0.65)}}
    ax = plot_metric_bars(table, metrics=("accuracy", "f1"), ci=ci).axes[0]
    bars = {(round(b.get_x() + b.get_width() / 2, 2), round(b.get_height(), 2)) for c in ax.containers[:2] for b in c}
    caps = [seg for coll in ax.collections for seg in coll.get_segments()]  # one vertical segment per error bar
    spans = sorted((round(s[0][0], 2), round(s[0][1], 2), round(s[1][1], 2)) for s in caps)
    assert len(spans) == 3  # a has no f1 bar, so no interval is drawn for it
    for x, low, high in spans:
        (bar_x, height), = [(bx, h) for bx, h in bars if bx == x]
        assert low <= height <= high
    assert (0.4, 0.7) in {(lo, hi) for x, lo, hi in spans if x > 0.5}  # b's F1 interval, in the F1 group


def test_cam_gallery_titles_and_colour_bar():
    g = {"images": np.zeros((2, 32, 32), np.uint8), "maps": np.random.default_rng(0).random((2, 32, 32)),
         "y": np.array([0, 1]), "prob": np.array([0.2, 0.9]), "called": np.array([0, 1]), "threshold": 0.5}
    fig = plot_cam_gallery(g)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["true benign\np(malignant)=0.20, called benign",
                      "true malignant\np(malignant)=0.90, called malignant"]
    assert any(ax.get_ylabel().startswith("Grad-CAM") for ax in fig.axes)  # the colour bar


def test_augmentations_move_scan_and_mask_together():
    img = np.zeros((64, 64), np.uint8)
    img[10:30, 5:25] = 255  # a bright lesion, and its mask, off centre
    mask = (img > 0).astype(np.uint8)
    ds = BusiDataset(img[None], mask[None], [1], "segment", build_transforms("default", seed=0), ["scan"], seed=0)
    fig = plot_augmentations(ds, 0, n=4)
    assert [ax.get_title() for ax in fig.axes[:4]] == [f"epoch {e}" for e in range(4)]
    for e in range(4):
        ds.set_epoch(e)
        x, m = ds[0]
        bright = (x[0] > x[0].mean()).float()
        assert torch.sum(bright * m[0]) / m[0].sum() > 0.7  # the mask still covers the lesion
    with pytest.raises(ValueError, match="no masks"):
        plot_augmentations(BusiDataset(img[None], mask[None], [1], "classify"), 0)


def test_show_batch_draws_the_batch_the_network_gets(synthetic_dir):
    from busi_lib.data.dataset import load_dataset
    from busi_lib.data.loaders import make_dataloaders
    from busi_lib.data.splits import train_valid_test_split

    df = load_dataset(synthetic_dir)
    dls = make_dataloaders(df, train_valid_test_split(df, seed=0), "multitask", image_size=32, batch_size=4)
    labels = dls.valid.one_batch()[1].tolist()  # the validation loader is not shuffled: show_batch draws this batch
    fig = show_batch(dls, n=4, split="valid", ncols=2)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == min(4, len(labels)) > 1
    labels = labels[:len(drawn)]
    assert [("malignant" in ax.get_title()) for ax in drawn] == [y == 1.0 for y in labels]
    assert all(ax.patches or ax.collections or ax.lines for ax in drawn)  # the true masks are outlined


def test_training_curves_keep_every_loss_visible_and_draw_auc_and_dice():
    from busi_lib.ui.plots import plot_training_curves

    log = pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [1.2, 0.8, 0.5], "valid_loss": [40.0, 0.9, 0.6],
                        "roc_auc": [0.6, 0.7, 0.8], "dice_pooled": [0.2, 0.5, 0.6]})
    fig = plot_training_curves(log)
    losses, metrics = fig.axes
    assert losses.get_yscale() == "log" and losses.get_ylim()[1] >= 40  # epoch 0's 40 is on the axis
    assert [line.get_label() for line in metrics.get_lines()] == ["ROC-AUC", "Dice (pooled)"]
    flat = plot_training_curves(log.assign(valid_loss=[1.0, 0.9, 0.6]))
    assert flat.axes[0].get_yscale() == "linear"
