"""Figures with matplotlib and seaborn: scans with masks, data overview, results.

Every function returns the matplotlib ``Figure`` (so a notebook can save it) and
gives each axis a title and labels.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from .transforms import denormalize

MASK_COLOR = (1.0, 0.25, 0.1)  # orange-red outline for the true mask
PRED_COLOR = (0.1, 0.8, 1.0)  # cyan for predictions


def _as_gray(x) -> np.ndarray:
    """A displayable (H, W) array from a normalised tensor (3, H, W) or a uint8 (H, W) array."""
    if hasattr(x, "detach") or (isinstance(x, np.ndarray) and x.ndim == 3):
        arr = denormalize(x).numpy()
        return arr[0] if arr.ndim == 3 else arr
    return np.asarray(x)


def draw_mask(ax, mask, color=MASK_COLOR, fill_alpha: float = 0.15, linewidth: float = 1.5):
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
    images,
    labels=None,
    masks=None,
    pred_masks=None,
    probs=None,
    titles=None,
    ncols: int = 4,
    size: float = 2.6,
    classes=("benign", "malignant"),
):
    """A grid of scans with the true mask outlined (and a predicted one, if given)."""
    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(_as_gray(images[i]), cmap="gray", vmin=0, vmax=1 if hasattr(images[i], "detach") else 255)
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


def plot_class_balance(df, ax=None):
    """Bar chart of scans per class."""
    ax = ax or plt.subplots(figsize=(4, 3))[1]
    counts = df["label"].value_counts().reindex(["benign", "malignant", "normal"]).dropna()
    sns.barplot(x=counts.index, y=counts.values, hue=counts.index, ax=ax, palette="Set2", legend=False)
    for i, v in enumerate(counts.values):
        ax.text(i, v, str(int(v)), ha="center", va="bottom")
    ax.set(title="Scans per class", xlabel="class", ylabel="number of scans")
    return ax.figure


def plot_image_sizes(df, ax=None):
    """Scatter of scan widths and heights, coloured by class."""
    ax = ax or plt.subplots(figsize=(4, 3))[1]
    sns.scatterplot(data=df, x="width", y="height", hue="label", s=12, ax=ax, alpha=0.7)
    ax.set(title="Scan sizes (pixels)", xlabel="width", ylabel="height")
    return ax.figure


def plot_lesion_sizes(df, ax=None):
    """Histogram of lesion area as a fraction of the scan, per class."""
    ax = ax or plt.subplots(figsize=(4, 3))[1]
    d = df[df["lesion_area"] > 0]
    sns.histplot(data=d, x="lesion_fraction", hue="label", bins=30, ax=ax, element="step")
    ax.set(title="Lesion size", xlabel="lesion area / scan area", ylabel="number of scans")
    return ax.figure


def plot_confusion(tp: int, fp: int, tn: int, fn: int, ax=None, classes=("benign", "malignant"), title=None):
    """A 2x2 confusion matrix heatmap (rows: truth, columns: prediction)."""
    ax = ax or plt.subplots(figsize=(3.6, 3))[1]
    cm = np.array([[tn, fp], [fn, tp]])
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, xticklabels=classes, yticklabels=classes, ax=ax)
    ax.set(title=title or "Confusion matrix", xlabel="predicted", ylabel="true")
    return ax.figure


def plot_roc(y_true, prob, ax=None, label=None, point=None):
    """ROC curve with its AUC; ``point`` = (fpr, tpr) marks the operating point."""
    from sklearn.metrics import roc_auc_score, roc_curve

    ax = ax or plt.subplots(figsize=(3.6, 3.4))[1]
    fpr, tpr, _ = roc_curve(y_true, prob)
    auc = roc_auc_score(y_true, prob)
    ax.plot(fpr, tpr, label=f"{label + ' ' if label else ''}AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="gray", lw=0.8)
    if point is not None:
        ax.plot(*point, "o", c="red", label="threshold")
    ax.set(title="ROC curve", xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)")
    ax.legend(loc="lower right", fontsize=8)
    return ax.figure


def plot_training_curves(log, ax=None):
    """Loss curves (and the per-task parts, if logged) from an epoch-log DataFrame."""
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    for col in log.columns:
        if "loss" in col:
            ax.plot(log["epoch"], log[col], marker=".", label=col)
    ax.set(title="Training curves", xlabel="epoch", ylabel="loss")
    ax.legend(fontsize=8)
    return ax.figure
