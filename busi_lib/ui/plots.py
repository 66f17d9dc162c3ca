"""Figures with matplotlib and seaborn: scans with masks, data overview, results. Each returns its ``Figure``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from sklearn.metrics import roc_auc_score, roc_curve

from busi_lib.data.table import CLASSES, LESION_CLASSES
from busi_lib.data.transforms import IMAGENET, Normalization, denormalize

if TYPE_CHECKING:  # names for the type hints only
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike

    from busi_lib.data.loaders import BusiDataLoaders, BusiDataset

MASK_COLOR = (1.0, 0.25, 0.1)  # red outline for the true mask ("red" in every lesson and title)
PRED_COLOR = (0.1, 0.8, 1.0)  # cyan for predictions


def _as_gray(x, norm: Normalization = IMAGENET) -> np.ndarray:
    """A displayable (H, W) array from a tensor (3, H, W) normalised with ``norm``, or a uint8 (H, W) array."""
    if hasattr(x, "detach") or (isinstance(x, np.ndarray) and x.ndim == 3):
        arr = denormalize(x, norm).numpy()
        return arr[0] if arr.ndim == 3 else arr
    return np.asarray(x)


def draw_mask(ax: Axes, mask: ArrayLike, color: tuple[float, float, float] = MASK_COLOR, fill_alpha: float = 0.15,
              linewidth: float = 1.5) -> None:
    """Outline (and lightly fill) a binary mask on an axis."""
    mask = np.asarray(mask, dtype=float).squeeze()
    if mask.max() <= 0:
        return
    ax.contour(mask, levels=[0.5], colors=[color], linewidths=linewidth)
    overlay = np.zeros((*mask.shape, 4))
    overlay[..., :3] = color
    overlay[..., 3] = fill_alpha * (mask > 0.5)
    ax.imshow(overlay)


def show_samples(
    images: Sequence,
    labels: Sequence | None = None,
    masks: Sequence | None = None,
    pred_masks: Sequence | None = None,
    probs: Sequence[float] | None = None,
    titles: Sequence | None = None,
    ncols: int = 4,
    size: float = 2.6,
    classes: Sequence[str] | None = LESION_CLASSES,
    norm: Normalization = IMAGENET,
) -> Figure:
    """A grid of scans (uint8 (H, W), or model inputs normalised with ``norm``) with the true mask outlined (and a
    predicted one, if given)."""
    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(_as_gray(images[i], norm), cmap="gray", vmin=0, vmax=1 if hasattr(images[i], "detach") else 255)
        if masks is not None:
            draw_mask(ax, masks[i])
        if pred_masks is not None:
            draw_mask(ax, pred_masks[i], color=PRED_COLOR, fill_alpha=0.0)
        parts = []
        if titles is not None:
            parts.append(str(titles[i]))
        if labels is not None:
            parts.append(classes[int(labels[i])] if classes else str(labels[i]))
        if probs is not None:
            parts.append(f"p(malignant)={float(probs[i]):.2f}")
        ax.set_title("\n".join(parts), fontsize=9)
    fig.tight_layout()
    return fig


def show_batch(dls: BusiDataLoaders, n: int = 8, split: str = "train", ncols: int = 4, **kwargs: object) -> Figure:
    """One batch of ``dls`` exactly as the network receives it (augmented, normalised), masks outlined; unlike fastai's
    ``show_batch``, it knows the multitask tuple."""
    dl = {"train": dls.train, "valid": dls.valid, "test": dls[2] if len(dls.loaders) > 2 else None}[split]
    b = dl.one_batch()
    y = b[1][:n] if dls.kind in ("classify", "multitask") else None
    m = b[-1][:n] if dls.kind in ("segment", "multitask") else None
    return show_samples(b[0][:n], labels=y, masks=m, ncols=ncols, norm=dls.norm, **kwargs)


def plot_augmentations(dataset: BusiDataset, index: int = 0, n: int = 8, norm: Normalization = IMAGENET) -> Figure:
    """One training scan and its mask as augmentation draws them in epochs 0 .. ``n - 1``: the mask moves with the scan.
    ``dataset`` must hold masks (``segment`` or ``multitask``)."""
    if dataset.kind == "classify":
        raise ValueError("a classification dataset holds no masks: build it with kind 'segment' or 'multitask'")
    saved, items = dataset.epoch, []
    for epoch in range(n):
        dataset.set_epoch(epoch)
        items.append(dataset[index])
    dataset.set_epoch(saved)
    fig = show_samples([it[0] for it in items], masks=[it[-1] for it in items],
                       titles=[f"epoch {e}" for e in range(n)], ncols=min(4, n), norm=norm)
    fig.suptitle(f"Scan {dataset.image_ids[index]} and its mask, augmented in {n} epochs: the mask moves with it",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_cam_gallery(gallery: dict, classes: Sequence[str] = LESION_CLASSES, size: float = 2.6,
                     title: str = "Grad-CAM: where the evidence for the model's call lies") -> Figure:
    """Scans with their Grad-CAM heat overlaid, titled with truth, p(malignant) and call; ``gallery`` is
    :func:`busi_lib.apps.cam.cam_gallery`'s."""
    n = len(gallery["images"])
    ncols = min(n, 6)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size + 1, nrows * size + 0.6), squeeze=False,
                             constrained_layout=True)
    heat = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(gallery["images"][i], cmap="gray", vmin=0, vmax=255)
        heat = ax.imshow(gallery["maps"][i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"true {classes[int(gallery['y'][i])]}\np(malignant)={float(gallery['prob'][i]):.2f}, "
                     f"called {classes[int(gallery['called'][i])]}", fontsize=8)
    if heat is not None:
        fig.colorbar(heat, ax=axes.ravel().tolist(), shrink=0.8, label="Grad-CAM (each scan scaled to 0..1)")
    fig.suptitle(f"{title} (threshold {gallery['threshold']:.2f})", fontsize=10)
    return fig


def plot_class_balance(df: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Bar chart of scans per class."""
    ax = ax or plt.subplots(figsize=(4, 3))[1]
    counts = df["label"].value_counts().reindex(list(CLASSES)).dropna()
    sns.barplot(x=counts.index, y=counts.values, hue=counts.index, ax=ax, palette="Set2", legend=False)
    for i, v in enumerate(counts.values):
        ax.text(i, v, str(int(v)), ha="center", va="bottom")
    ax.set(title="Scans per class", xlabel="class", ylabel="number of scans")
    return ax.figure


def plot_image_sizes(df: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Scatter of scan widths and heights, coloured by class."""
    ax = ax or plt.subplots(figsize=(4, 3))[1]
    sns.scatterplot(data=df, x="width", y="height", hue="label", s=12, ax=ax, alpha=0.7)
    ax.set(title="Scan sizes (pixels)", xlabel="width", ylabel="height")
    return ax.figure


def plot_lesion_sizes(df: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Histogram of lesion area as a fraction of the scan, per class."""
    ax = ax or plt.subplots(figsize=(4, 3))[1]
    d = df[df["lesion_area"] > 0]
    sns.histplot(data=d, x="lesion_fraction", hue="label", bins=30, ax=ax, element="step")
    ax.set(title="Lesion size", xlabel="lesion area / scan area", ylabel="number of scans")
    return ax.figure


def plot_data_overview(df: pd.DataFrame) -> Figure:
    """Class balance, scan sizes and lesion sizes side by side: the first look at a BUSI folder."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    plot_class_balance(df, ax=axes[0])
    plot_image_sizes(df, ax=axes[1])
    plot_lesion_sizes(df, ax=axes[2])
    fig.tight_layout()
    return fig


def plot_confusion(tp: int, fp: int, tn: int, fn: int, ax: Axes | None = None,
                   classes: Sequence[str] = LESION_CLASSES, title: str | None = None,
                   threshold: float | None = None) -> Figure:
    """A 2x2 confusion matrix heatmap (rows: truth, columns: prediction), titled with its rates (and ``threshold``)."""
    ax = ax or plt.subplots(figsize=(3.8, 3.3))[1]
    cm = np.array([[tn, fp], [fn, tp]])
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, xticklabels=classes, yticklabels=classes, ax=ax)
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    rates = f"sensitivity {sens:.2f}, specificity {spec:.2f}"
    at = f"threshold {threshold:.2f}: " if threshold is not None else ""
    ax.set_title(f"{title or 'Confusion matrix'}\n{at}{rates}", fontsize=9)
    ax.set(xlabel="predicted", ylabel="true")
    return ax.figure


def plot_roc(y_true: ArrayLike, prob: ArrayLike, ax: Axes | None = None, label: str | None = None,
             point: tuple[float, float] | None = None) -> Figure:
    """ROC curve with its AUC; ``point`` = (fpr, tpr) marks the operating point."""
    ax = ax or plt.subplots(figsize=(3.6, 3.4))[1]
    if len(np.unique(np.asarray(y_true))) < 2:
        # a tiny test part (smoke runs) can hold one class only: the curve is undefined, say so
        ax.plot([], [], label=f"{label + ': ' if label else ''}one class only, no ROC curve")
    else:
        fpr, tpr, _ = roc_curve(y_true, prob)
        auc = roc_auc_score(y_true, prob)
        ax.plot(fpr, tpr, label=f"{label + ' ' if label else ''}AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="gray", lw=0.8)
    if point is not None:
        ax.plot(*point, "o", c="red", label="threshold")
    ax.set(title="ROC curve", xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)")
    ax.legend(loc="lower right", fontsize=8)
    return ax.figure


# the validation metric drawn beside the losses, first match wins
CURVE_METRICS = (("roc_auc", "ROC-AUC"), ("dice_pooled", "Dice (pooled)"))


def plot_training_curves(log: pd.DataFrame, axes: Sequence[Axes] | None = None) -> Figure:
    """Losses (left) and the validation ROC-AUC and Dice that the log holds (right), per epoch; ``axes``: the two
    axes to draw on (a row of a larger figure). The loss axis is logarithmic when the losses span more than a factor
    of 10, so that a huge first validation loss (batch norm still settling) does not squash the rest."""
    metrics = [(c, name) for c, name in CURVE_METRICS if c in log.columns]
    if axes is None:
        axes = plt.subplots(1, 2 if metrics else 1, figsize=(9 if metrics else 5, 3.2), squeeze=False)[1][0]
    ax = axes[0]
    losses = [c for c in log.columns if "loss" in c]
    for col in losses:
        # the per-task parts of a multitask loss are logged on the validation part
        label = col if col in ("train_loss", "valid_loss") else f"{col} (validation)"
        ax.plot(log["epoch"], log[col], marker=".", label=label)
    values = log[losses].to_numpy(dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    log_scale = values.size and values.max() / values.min() > 10
    if log_scale:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # ticks at ..., 0.5, 1, 2, 5, ...
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # "0.5", not "5x10^-1"
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set(title="Losses" + (" (log scale)" if log_scale else ""), xlabel="epoch", ylabel="loss")
    ax.legend(fontsize=8)
    if metrics:
        right = axes[1]
        for col, name in metrics:
            right.plot(log["epoch"], log[col], marker=".", label=name)
        right.set(title="Validation metrics", xlabel="epoch", ylim=(0, 1.02))
        right.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


# ---------------------------------------------------------------- results across models
METRIC_LABELS = {
    "accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity", "precision": "precision",
    "f1": "F1", "auc": "AUC", "dice_pooled": "Dice (pooled)", "iou_pooled": "IoU (pooled)",
    "dice_per_image": "Dice (per image)", "iou_per_image": "IoU (per image)",
}


def plot_metric_bars(table: pd.DataFrame,
                     metrics: Sequence[str] = ("accuracy", "sensitivity", "specificity", "f1", "auc"),
                     ax: Axes | None = None, title: str | None = None, ci: dict | None = None) -> Figure:
    """Grouped bars: one group per metric, one bar per model (a :func:`~busi_lib.evaluation.study.collect_models`
    table). ``ci`` (``{model: {metric: (low, high)}}``) draws error bars; the title should say what they are."""
    metrics = [m for m in metrics if m in table.columns]
    long = table.melt(id_vars="model", value_vars=metrics, var_name="metric", value_name="value").dropna()
    long["metric"] = pd.Categorical(long["metric"].map(METRIC_LABELS), [METRIC_LABELS[m] for m in metrics])
    ax = ax or plt.subplots(figsize=(max(5.0, 1.3 * len(metrics) + 0.4 * len(table)), 3.6))[1]
    models = list(pd.unique(long["model"]))
    sns.barplot(data=long, x="metric", y="value", hue="model", hue_order=models, ax=ax, palette="tab10")
    if ci:
        for model, bars in zip(models, ax.containers):
            for bar in bars:
                metric = metrics[int(round(bar.get_x() + bar.get_width() / 2))]
                low, high = ci.get(model, {}).get(metric, (np.nan, np.nan))
                if np.isfinite(low) and np.isfinite(high):
                    x, v = bar.get_x() + bar.get_width() / 2, bar.get_height()
                    ax.errorbar(x, v, yerr=[[max(0.0, v - low)], [max(0.0, high - v)]], color="black",
                                capsize=2, linewidth=0.8)
    ax.set(title=title or "Test metrics per model", xlabel="metric", ylabel="value on the test part", ylim=(0, 1.05))
    ax.legend(title="model", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax.figure


def plot_mask_grid(images: Sequence, masks: Sequence, preds: dict, titles: Sequence | None = None,
                   size: float = 2.2) -> Figure:
    """Rows of scans: the true mask (red), then each model's predicted mask (cyan); ``preds`` is
    ``{model name: list of (H, W) masks}``."""
    names = list(preds)
    n, ncols = len(images), 1 + len(names)
    fig, axes = plt.subplots(n, ncols, figsize=(ncols * size, n * size), squeeze=False)
    for r in range(n):
        for c in range(ncols):
            ax = axes[r, c]
            ax.imshow(_as_gray(images[r]), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            draw_mask(ax, masks[r])
            if c == 0:
                ax.set_title("ground truth" if r == 0 else "", fontsize=9)
                ax.set_ylabel(str(titles[r]) if titles is not None else f"scan {r + 1}", fontsize=8)
            else:
                draw_mask(ax, preds[names[c - 1]][r], color=PRED_COLOR, fill_alpha=0.25)
                if r == 0:
                    ax.set_title(names[c - 1], fontsize=9)
    fig.suptitle("Lesion masks: truth (red) and prediction (cyan)", fontsize=10)
    fig.supxlabel("model", fontsize=9)
    fig.supylabel("test scan", fontsize=9)
    fig.tight_layout()
    return fig


def plot_study_comparison(comparison: pd.DataFrame, ax: Axes | None = None, source: str | None = None) -> Figure:
    """This run's multitask metrics beside the study's (a :func:`~busi_lib.evaluation.study.multitask_vs_study`
    table); ``source`` is printed under the chart as the study's citation."""
    long = comparison.assign(label=comparison["task"].str[:3] + ". " + comparison["metric"]).melt(
        id_vars="label", value_vars=["this run", "study"], var_name="source", value_name="value"
    )
    ax = ax or plt.subplots(figsize=(7, 3.4))[1]
    sns.barplot(data=long.dropna(), x="label", y="value", hue="source", ax=ax, palette=["tab:blue", "tab:gray"])
    ax.set(title="Multitask UResNet: this run vs the study", xlabel="task and metric", ylabel="value", ylim=(0, 1.05))
    ax.tick_params(axis="x", labelrotation=35)
    ax.legend(fontsize=8)
    if source:
        ax.figure.tight_layout()
        ax.figure.text(0.01, 0.005, f"study: {source}", fontsize=7, color="dimgray", va="bottom")
        ax.figure.subplots_adjust(bottom=ax.figure.subplotpars.bottom + 0.06)
    return ax.figure


def _shape_text(shape) -> str:
    return " x ".join(str(s) for s in shape)


def plot_multitask_diagram(shapes: dict, ax: Axes | None = None) -> Figure:
    """A block diagram of the multitask UResNet, every box showing its measured shape from
    :func:`~busi_lib.evaluation.study.layer_shapes`: encoder down the left, decoder up the right, skips dashed."""
    enc, dec = shapes["encoder"][1:], shapes["decoder"]  # encoder[0] is the input itself
    n = len(enc)
    ax = ax or plt.subplots(figsize=(9, 1.5 + 0.9 * n))[1]
    w, h = 2.6, 0.55

    def box(x, y, text, color):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05", fc=color, ec="black"))
        ax.text(x, y, text, ha="center", va="center", fontsize=8)

    def arrow(p, q, style="-|>", ls="-", color="black"):
        ax.add_patch(FancyArrowPatch(p, q, arrowstyle=style, mutation_scale=10, linestyle=ls, color=color))

    ys = [n - i for i in range(n)]  # stage 1 at the top
    box(0, n + 1, f"input\n{_shape_text(shapes['input'])}", "#eeeeee")
    arrow((0, n + 1 - h / 2), (0, ys[0] + h / 2))
    for i, (y, s) in enumerate(zip(ys, enc)):
        box(0, y, f"encoder stage {i + 1}\n{_shape_text(s)}", "#cfe2f3")
        if i + 1 < n:
            arrow((0, y - h / 2), (0, ys[i + 1] + h / 2))
    # decoder block k upsamples and merges the skip from stage n-1-k (the last block has no skip)
    dec_y = [ys[min(n - 2 - k, n - 1)] if n - 2 - k >= 0 else ys[0] + 1 for k in range(len(dec))]
    prev = (0 + w / 2, ys[-1])
    for k, (y, s) in enumerate(zip(dec_y, dec)):
        box(5, y, f"decoder block {k + 1}\n{_shape_text(s)}", "#d9ead3")
        arrow(prev, (5 - w / 2, y) if k == 0 else (5, y - h / 2))
        prev = (5, y + h / 2)
        skip = n - 2 - k
        if skip >= 0:
            arrow((0 + w / 2, ys[skip]), (5 - w / 2, y), ls="--", color="tab:gray")
    seg_y = dec_y[-1] + 1
    box(5, seg_y, f"segmentation head\nmask logits {_shape_text(shapes['segmentation'])}", "#fce5cd")
    arrow(prev, (5, seg_y - h / 2))
    if shapes.get("classification") is not None:
        box(0, ys[-1] - 1.2, f"classification head (pool, linear)\nclass logit {_shape_text(shapes['classification'])}",
            "#f4cccc")
        arrow((0, ys[-1] - h / 2), (0, ys[-1] - 1.2 + h / 2))
    ax.plot([], [], ls="--", color="tab:gray", label="skip connection")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(-2, 7)
    ax.set_ylim(ys[-1] - 1.8, seg_y + 0.6)
    ax.set_xticks([0, 5], ["encoder (shared)", "decoder (U-Net)"])
    ax.set_yticks([])
    ax.set(title=f"Multitask UResNet ({shapes.get('encoder_name', 'encoder')}): measured output shapes",
           xlabel="path through the network", ylabel="resolution (high at the top)")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    return ax.figure
