"""Interactive widgets for the notebooks: browse the data, move a threshold, pick a mask.

Each builder returns a :class:`LiveFigure` (a PNG in an ``ipywidgets.Image``: docs/library.md), shown with :func:`show`.
"""

from __future__ import annotations

import html
import io
import os
from collections.abc import Callable, Sequence

import IPython.display
import ipywidgets as widgets
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from busi_lib.data.table import CLASSES, LESION_CLASSES, load_pair
from busi_lib.evaluation.metrics import classification_metrics, segmentation_metrics
from busi_lib.ui.plots import MASK_COLOR, PRED_COLOR, _as_gray, draw_mask, plot_confusion, plot_roc

__all__ = ["LiveFigure", "dataset_browser", "mask_picker", "show", "static_mode", "threshold_explorer"]

#: Resolution of the rendered figures: 100 dpi keeps a 9-inch figure at 900 pixels, readable without zooming.
DPI = 100


def static_mode() -> bool:
    """True when widgets should be shown as static figures (``BUSI_STATIC_WIDGETS=1``, set by papermill/nbval runs)."""
    return os.environ.get("BUSI_STATIC_WIDGETS", "").strip().lower() in ("1", "true", "yes")


class LiveFigure(widgets.VBox):
    """Controls, a text summary and a matplotlib figure redrawn when a control moves. ``draw(fig, values)`` draws on
    a cleared figure and returns ``(summary_html, state)``: the text above the figure and the numbers behind it
    (``self.state``, for code and tests); ``png`` is the current rendering."""

    def __init__(self, controls: dict[str, widgets.Widget], draw: Callable, figsize=(9.0, 3.6)):
        self.controls = dict(controls)
        self._draw = draw
        # A bare Figure (not pyplot): the inline backend would otherwise display every redraw as a new
        # output, and pyplot would keep each figure alive until the kernel stops.
        self.figure = Figure(figsize=figsize, dpi=DPI, layout="constrained")
        self.text = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.state: dict = {}
        self.png = b""
        super().__init__([widgets.HBox(list(self.controls.values())), self.text, self.image])
        for w in self.controls.values():
            w.observe(self._on_change, names="value")
        self.refresh()

    @property
    def values(self) -> dict:
        """The current value of every control."""
        return {name: w.value for name, w in self.controls.items()}

    @property
    def summary(self) -> str:
        """The HTML text currently shown above the figure."""
        return self.text.value

    def _on_change(self, _change=None) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Redraw the figure and the summary from the controls' current values."""
        self.figure.clear()
        summary, state = self._draw(self.figure, self.values)
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=DPI)
        self.png = buf.getvalue()
        self.state = state
        self.text.value = summary
        self.image.value = self.png
        # Shown at its own pixel size (the box would otherwise stretch it to the cell's width and blur it).
        self.image.layout.width = f"{round(self.figure.get_size_inches()[0] * DPI)}px"


def show(widget: LiveFigure) -> None:
    """Display a widget: live in a notebook front end, as its static figure when ``BUSI_STATIC_WIDGETS=1``; returns
    None so that a cell ending in ``show(...)`` does not display the widget twice."""
    if static_mode():
        IPython.display.display(IPython.display.HTML(widget.summary))
        IPython.display.display(IPython.display.Image(data=widget.png, format="png"))
    else:
        IPython.display.display(widget)


def _image_axis(ax, image, title: str) -> None:
    """A gray-scale scan on an axis, with a title and its size on the axis labels (no ticks)."""
    img = _as_gray(image)
    ax.imshow(img, cmap="gray", vmin=0, vmax=1 if img.dtype.kind == "f" else 255)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"width {img.shape[1]} px", fontsize=8)
    ax.set_ylabel(f"height {img.shape[0]} px", fontsize=8)


def _legend_line(color, text: str) -> str:
    rgb = ",".join(str(int(255 * c)) for c in color)
    return f'<span style="color: rgb({rgb}); font-weight: bold">&#9644;</span> {html.escape(text)}'


# ---------------------------------------------------------------- Data set browser
def dataset_browser(df: pd.DataFrame, max_panels: int = 4) -> LiveFigure:
    """Browse the scans of each class (``df``: :func:`~busi_lib.data.dataset.load_dataset`'s table), with the lesion
    outline and up to ``max_panels - 1`` near-duplicates beside it, labelled: a group with two labels stands out."""
    if len(df) == 0:
        raise ValueError("dataset_browser needs a non-empty table")
    classes = [c for c in CLASSES if c in set(df["label"])]
    classes += sorted(set(df["label"]) - set(classes))
    by_class = {c: df[df["label"] == c].reset_index(drop=True) for c in classes}

    label = widgets.Dropdown(options=classes, value=classes[0], description="class")
    # Scans are numbered from 1 on screen, as the student counts them.
    index = widgets.IntSlider(
        value=1, min=1, max=len(by_class[classes[0]]), description="scan", continuous_update=False
    )
    outline = widgets.Checkbox(value=True, description="outline lesion")

    def on_class(change):
        # Back to the first scan before the new maximum, so the slider never points past the end of the class.
        index.value = 1
        index.max = len(by_class[change["new"]])

    label.observe(on_class, names="value")

    def draw(fig, v):
        table = by_class[v["label"]]
        row = table.iloc[min(v["index"], len(table)) - 1]
        if "dup_group" in df and int(row.get("group_size", 1)) > 1:
            group = df[(df["dup_group"] == row["dup_group"]) & (df["image_id"] != row["image_id"])]
        else:
            group = df.iloc[:0]
        shown = group.head(max_panels - 1)
        # Each scan 3.6 inches wide at its own aspect ratio, plus room for the titles: readable, no empty band.
        aspect = float(row["height"]) / max(1.0, float(row["width"]))
        fig.set_size_inches(max(5.0, 3.6 * (1 + len(shown))), 3.6 * aspect + 1.1)
        axes = fig.subplots(1, 1 + len(shown), squeeze=False)[0]
        for ax, (_, r), first in zip(axes, [(None, row), *shown.iterrows()], [True] + [False] * len(shown)):
            image, mask = load_pair(r)
            name = str(r["image_id"]) if r["label"] in str(r["image_id"]) else f"{r['image_id']} ({r['label']})"
            title = name if first else f"duplicate: {name}"
            _image_axis(ax, image, title)
            if v["outline"]:
                draw_mask(ax, mask)
        fig.suptitle(f"{v['label']} scan {v['index']} of {len(table)}", fontsize=11)
        labels = sorted({row["label"], *group["label"]})
        conflict = len(labels) > 1
        lines = [
            f"<b>{html.escape(str(row['image_id']))}</b>: {html.escape(str(row['label']))}, "
            f"{int(row['width'])} x {int(row['height'])} px, "
            f"{int(row.get('n_masks', 0))} mask file(s), lesion {100 * float(row.get('lesion_fraction', 0)):.1f}% "
            "of the scan",
        ]
        if len(group):
            more = f" ({len(group) - len(shown)} not drawn)" if len(group) > len(shown) else ""
            lines.append(
                f"near-duplicate group {int(row['dup_group'])}: {len(group) + 1} scans{more}; labels: "
                + ", ".join(labels)
                + (" &mdash; <b>the copies disagree on the diagnosis</b>" if conflict else "")
            )
        else:
            lines.append("no near-duplicate of this scan in the table")
        if v["outline"]:
            lines.append(_legend_line(MASK_COLOR, "lesion outline from the mask file(s)"))
        state = dict(
            image_id=str(row["image_id"]),
            label=str(row["label"]),
            duplicates=[str(i) for i in group["image_id"]],
            duplicate_labels=[str(x) for x in group["label"]],
            conflict=conflict,
            n_panels=len(axes),
        )
        return "<br>".join(lines), state

    return LiveFigure({"label": label, "index": index, "outline": outline}, draw, figsize=(5.0, 4.0))


# ---------------------------------------------------------------- Threshold explorer
def threshold_explorer(y: ArrayLike, prob: ArrayLike, threshold: float = 0.5,
                       classes: Sequence[str] = LESION_CLASSES) -> LiveFigure:
    """Move the decision threshold over held-out predictions (malignant when ``prob >= threshold``): the summary shows
    the rates, the figure the confusion matrix and the ROC operating point. ``widget.state`` is
    :func:`~busi_lib.evaluation.metrics.classification_metrics`'s dict."""
    y = np.asarray(y).reshape(-1)
    prob = np.asarray(prob, dtype=np.float64).reshape(-1)
    classification_metrics(y, prob, threshold)  # validates shapes, labels and probabilities up front
    has_both = len(np.unique(y)) == 2
    slider = widgets.FloatSlider(
        value=float(threshold),
        min=0.0,
        max=1.0,
        step=0.01,
        description="threshold",
        readout_format=".2f",
        continuous_update=False,
        layout=widgets.Layout(width="420px"),
    )

    def draw(fig, v):
        m = classification_metrics(y, prob, v["threshold"])
        ax_cm, ax_roc = fig.subplots(1, 2, width_ratios=[1, 1.15])
        plot_confusion(
            m["tp"],
            m["fp"],
            m["tn"],
            m["fn"],
            ax=ax_cm,
            classes=tuple(classes),
            title=f"Confusion matrix at threshold {m['threshold']:.2f}",
        )
        if has_both:
            plot_roc(y, prob, ax=ax_roc, point=(1 - m["specificity"], m["sensitivity"]))
        else:
            ax_roc.text(0.5, 0.5, "ROC curve needs both classes", ha="center", va="center")
            ax_roc.set(
                title="ROC curve",
                xlabel="1 - specificity (false positive rate)",
                ylabel="sensitivity (true positive rate)",
            )
        summary = (
            f"threshold <b>{m['threshold']:.2f}</b>: a scan is called {classes[1]} when p({classes[1]}) "
            f"&ge; {m['threshold']:.2f}<br>"
            f"sensitivity <b>{m['sensitivity']:.3f}</b> ({m['tp']} of {m['tp'] + m['fn']} {classes[1]} found), "
            f"specificity <b>{m['specificity']:.3f}</b> ({m['tn']} of {m['tn'] + m['fp']} {classes[0]} cleared), "
            f"precision {m['precision']:.3f}, accuracy {m['accuracy']:.3f}, F1 {m['f1']:.3f}, "
            f"ROC AUC {m['roc_auc']:.3f} (does not depend on the threshold)"
        )
        return summary, m

    return LiveFigure({"threshold": slider}, draw, figsize=(8.5, 3.6))


# ---------------------------------------------------------------- Mask picker
def _squeeze_stack(a, name: str) -> np.ndarray:
    """(N, H, W) from (N, H, W) or (N, 1, H, W) (numpy or torch)."""
    a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W), got {a.shape}")
    return a


def mask_picker(images: np.ndarray, masks: np.ndarray, mask_probs: np.ndarray, y: ArrayLike | None = None,
                prob: ArrayLike | None = None, classes: Sequence[str] = LESION_CLASSES) -> LiveFigure:
    """Pick a scan and compare its true lesion mask with the model's predicted one. ``images``: (N, H, W) uint8 scans
    or the loader's (N, 3, H, W) tensors; ``masks``, ``mask_probs``: (N, H, W); ``y``/``prob`` (optional) add the
    class and p(malignant). ``widget.state`` holds the scan's Dice and IoU."""
    masks = _squeeze_stack(masks, "masks")
    mask_probs = _squeeze_stack(mask_probs, "mask_probs").astype(np.float32)
    n = len(masks)
    if len(images) != n or len(mask_probs) != n:
        raise ValueError(f"images, masks and mask_probs differ in length: {len(images)}, {n}, {len(mask_probs)}")
    if n == 0:
        raise ValueError("mask_picker needs at least one scan")
    y = None if y is None else np.asarray(y).reshape(-1)
    prob = None if prob is None else np.asarray(prob, dtype=np.float64).reshape(-1)
    index = widgets.IntSlider(value=1, min=1, max=n, description="scan", continuous_update=False)  # from 1
    thr = widgets.FloatSlider(
        value=0.5,
        min=0.05,
        max=0.95,
        step=0.05,
        description="mask threshold",
        readout_format=".2f",
        continuous_update=False,
        style={"description_width": "initial"},
    )

    def draw(fig, v):
        i, t = v["index"] - 1, v["threshold"]
        true, p = masks[i], mask_probs[i]
        pred = (p >= t).astype(np.uint8)
        seg = segmentation_metrics(true[None], p[None], t)
        ax_t, ax_p, ax_m = fig.subplots(1, 3)
        _image_axis(ax_t, images[i], "true lesion mask")
        draw_mask(ax_t, true)
        _image_axis(ax_p, images[i], f"predicted mask (p >= {t:.2f})")
        draw_mask(ax_p, pred, color=PRED_COLOR, fill_alpha=0.15)
        im = ax_m.imshow(p, cmap="magma", vmin=0, vmax=1)
        ax_m.set_xticks([])
        ax_m.set_yticks([])
        ax_m.set_title("lesion probability per pixel", fontsize=10)
        ax_m.set_xlabel(f"width {p.shape[1]} px", fontsize=8)
        ax_m.set_ylabel(f"height {p.shape[0]} px", fontsize=8)
        fig.colorbar(im, ax=ax_m, shrink=0.8, label="p(lesion)")
        state = dict(
            index=int(i),
            scan=int(i) + 1,
            threshold=float(t),
            dice=float(seg["dice_per_image"]),
            iou=float(seg["iou_per_image"]),
            true_pixels=int(true.sum()),
            pred_pixels=int(pred.sum()),
        )
        head = f"scan {i + 1} of {n}"
        if y is not None:
            state["label"] = classes[int(y[i])]
            head += f", truly <b>{state['label']}</b>"
        if prob is not None:
            state["prob"] = float(prob[i])
            head += f", predicted p({classes[1]}) = <b>{prob[i]:.2f}</b>"
        fig.suptitle(f"Scan {i + 1}: Dice {state['dice']:.3f}, IoU {state['iou']:.3f}", fontsize=11)
        summary = (
            f"{head}<br>Dice <b>{state['dice']:.3f}</b>, IoU <b>{state['iou']:.3f}</b> for this scan "
            f"({state['true_pixels']} lesion pixels in the truth, {state['pred_pixels']} predicted)<br>"
            + _legend_line(MASK_COLOR, "true mask")
            + " &nbsp; "
            + _legend_line(PRED_COLOR, "predicted mask")
        )
        return summary, state

    return LiveFigure({"index": index, "threshold": thr}, draw, figsize=(10.0, 3.6))
