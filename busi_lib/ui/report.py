"""The evaluation report: ``report.md`` and its figures (:func:`write_report`), from an :class:`Evaluation`.

The figure functions return a matplotlib ``Figure``, as :mod:`busi_lib.ui.plots`'s do.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from busi_lib.evaluation.calibration import (
    DEFAULT_BINS,
    apply_temperature,
    expected_calibration_error,
    reliability_bins,
)
from busi_lib.files import atomic_write_bytes
from busi_lib.ui.plots import plot_confusion, plot_roc, show_samples

if TYPE_CHECKING:  # names for the type hints only
    from matplotlib.figure import Figure


__all__ = ["markdown_report", "plot_reliability", "plot_worst_errors", "report_figures", "save_figure",
           "worst_indices", "write_report"]


# ----------------------------------------------------------------------------- figures
@dataclass
class Evaluation:
    """What :func:`busi_lib.apps.external.evaluate_model` returns: ``metrics`` (``evaluation.json``), ``predictions``
    (``predictions.csv``), and the raw arrays ``pred`` (probabilities, masks) and ``images`` (scans at model size)."""

    metrics: dict
    predictions: pd.DataFrame
    pred: dict
    images: np.ndarray
    out: Path | None = None


def plot_reliability(curves: dict, n_bins: int = DEFAULT_BINS, title: str = "Reliability diagram") -> Figure:
    """Reliability diagram of prediction sets ``{name: (y, prob)}``: observed fraction malignant against mean predicted
    probability per equal-width bin, ECE in the legend; below, how many scans fall in each bin."""
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(4.4, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", c="gray", lw=0.8, label="perfectly calibrated")
    edges = np.linspace(0, 1, n_bins + 1)
    for name, (y, prob) in curves.items():
        bins = reliability_bins(y, prob, n_bins)
        ece = expected_calibration_error(y, prob, n_bins)
        line = ax.plot([b["mean_prob"] for b in bins], [b["frac_malignant"] for b in bins], marker="o", ms=4,
                       label=f"{name} (ECE {ece:.3f})")[0]
        hx.hist(np.asarray(prob, dtype=float), bins=edges, histtype="step", color=line.get_color(), lw=1.5)
    ax.set(title=f"{title} ({n_bins} equal-width bins)", ylabel="observed fraction malignant", xlim=(0, 1),
           ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    hx.set(xlabel="predicted probability of malignant", ylabel="scans")
    fig.tight_layout()
    return fig


def worst_indices(predictions: pd.DataFrame, n: int = 8) -> np.ndarray:
    """Rows of the worst errors: the wrong calls first (with a ``called`` column), each group by largest
    ``|truth - probability|`` (classifiers); else lowest Dice."""
    if "prob" in predictions:
        err = np.abs(predictions["target"].to_numpy() - predictions["prob"].to_numpy())
        if "called" in predictions:
            wrong = (predictions["called"] != predictions["label"]).to_numpy()
            err = err + wrong  # every wrong call ranks before every right one
        return np.argsort(-err, kind="stable")[:n]
    dice = predictions["dice"].to_numpy()
    order = np.argsort(np.where(np.isnan(dice), np.inf, dice), kind="stable")
    return order[: min(n, int(np.isfinite(dice).sum()))]


def plot_worst_errors(predictions: pd.DataFrame, pred: dict, images: np.ndarray, n: int = 8,
                      ncols: int = 4) -> Figure:
    """A grid of the worst errors: the scan (model input size), true mask (red), predicted mask (cyan)."""
    idx = worst_indices(predictions, n)
    if len(idx) == 0:
        return None
    rows = predictions.iloc[idx]
    masks = pred_masks = None
    if "mask_prob" in pred:
        has = rows["has_mask"].to_numpy(bool)[:, None, None]
        masks = np.where(has, pred["mask"][idx], 0)  # no truth mask given: draw none
        pred_masks = pred["mask_prob"][idx].astype(np.float32) >= 0.5
    titles = []
    for _, r in rows.iterrows():
        t = Path(str(r["image_id"])).stem  # the scan's own name: a folder path would not fit
        t += f"\ntrue {r['label']}"
        if "called" in r:
            t += f", called {r['called']}"
        if "dice" in r and np.isfinite(r["dice"]):
            t += f"\nDice {r['dice']:.2f}"
        titles.append(t)
    probs = rows["prob"].to_numpy() if "prob" in rows else None
    fig = show_samples(images[idx], masks=masks, pred_masks=pred_masks, probs=probs, titles=titles,
                       ncols=min(ncols, len(idx)))
    fig.suptitle("Worst errors" + (" (red: true mask, cyan: predicted mask)" if masks is not None else
                                   ": wrong calls first, most confident first"), fontsize=10)
    fig.tight_layout()
    return fig


def report_figures(evaluation: Evaluation, n_worst: int = 8) -> dict:
    """The report's figures ``{file stem: Figure}`` for an :class:`Evaluation`."""
    m, df, pred = evaluation.metrics, evaluation.predictions, evaluation.pred
    figs = {}
    if "prob" in df:
        y, p = df["target"].to_numpy(), df["prob"].to_numpy()
        c = m["classification"]
        if len(np.unique(y)) == 2:
            figs["roc"] = plot_roc(y, p, point=(1 - c["specificity"], c["sensitivity"]), label=m.get("name"))
        curves = {"model": (y, p)}
        if m["temperature"] != 1:
            curves[f"after temperature T={m['temperature']:.2f}"] = (y, apply_temperature(p, m["temperature"]))
        figs["reliability"] = plot_reliability(curves, m["calibration"]["n_bins"])
        figs["confusion"] = plot_confusion(c["tp"], c["fp"], c["tn"], c["fn"],
                                           title=f"Confusion matrix (threshold {c['threshold']:.2f})")
    worst = plot_worst_errors(df, pred, evaluation.images, n_worst)
    if worst is not None:
        figs["worst_errors"] = worst
    return figs


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save a figure as PNG atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- markdown
def _f(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"


def _ci(ci) -> str:
    return "n/a" if not ci or not all(np.isfinite(ci)) else f"{ci[0]:.3f} to {ci[1]:.3f}"


def _table(values: dict, cis: dict, keys, extra_cis: dict | None = None) -> list[str]:
    """A Markdown table: metric, value, interval (and more interval columns: ``{title: {metric: [lo, hi]}}``)."""
    extra_cis = extra_cis or {}
    rows = ["| metric | value | 95 % CI |" + "".join(f" {t} |" for t in extra_cis),
            "|---|---|---|" + "---|" * len(extra_cis)]
    for k in keys:
        if k in values:
            rows.append(f"| {k} | {_f(values[k])} | {_ci((cis or {}).get(k))} |"
                        + "".join(f" {_ci(c.get(k))} |" for c in extra_cis.values()))
    return rows


CLS_KEYS = ("roc_auc", "accuracy", "sensitivity", "specificity", "precision", "f1")
SEG_KEYS = ("dice_pooled", "iou_pooled", "precision_pooled", "recall_pooled", "dice_per_image", "iou_per_image")


def site_threshold_section(st: dict) -> list[str]:
    """The report's lines for the threshold re-tuned on a labelled calibration part of the new site."""
    unit = st["unit"]
    n_cal = st.get(f"n_calibration_{unit}s", st["n_calibration_images"])
    n_rest = st.get(f"n_scored_{unit}s", st["n_scored_images"])
    L = ["", f"### Honest: threshold re-tuned on a calibration part of this site (size {st['size']}, seed "
             f"{st['seed']})", "",
         f"{n_cal} {unit}s ({st['n_calibration_images']} images) chosen at random, stratified by label, were used "
         f"to choose the threshold ({st['rule']}); the other {n_rest} {unit}s ({st['n_scored_images']} images) "
         "are scored."]
    if "threshold" not in st:
        return L + ["", f"> {st['note']}"]
    L += ["", f"> {st['note']}", "",
          f"| metric | saved threshold {st['saved_threshold']:.3f} | re-tuned threshold {st['threshold']:.3f} "
          "| 95 % CI |", "|---|---|---|---|"]
    ci, a, b = st["classification_ci"], st["saved_threshold_classification"], st["classification"]
    L += [f"| {k} | {_f(a[k])} | {_f(b[k])} | {_ci(ci.get(k))} |" for k in CLS_KEYS[1:]]
    return L


def markdown_report(m: dict, figures: Sequence[str] = ()) -> str:
    """The text of ``report.md`` for the metrics dict of an evaluation (``evaluation.json``)."""
    figures = set(figures)
    L = [f"# External evaluation: {m.get('name', '')}", ""]
    members = m.get("members") or [m["model"]]
    model = f"`{members[0]}`" if len(members) == 1 else \
        f"ensemble of {len(members)} (" + ", ".join(f"`{x}`" for x in members) + ")"
    L += [f"- model: {model} ({m['arch']}, {m['task']}, {m['image_size']} px input)",
          f"- data: `{m['data']}` ("
          + ("BUSI folder layout" if m["layout"] == "busi" else f"labels CSV `{m['labels']}`") + ")"]
    if m.get("split"):
        L.append(f"- only the `{m['part']}` part of the split `{m['split']}`")
    n_pat = f", {m['n_patients']} patients" if m.get("n_patients") else ""
    L.append(f"- scored: {m['n_images']} images{n_pat}; test-time augmentation: {'flips' if m['tta'] else 'none'}")
    for note in m.get("notes", []):
        L.append(f"- note: {note}")
    if m.get("skipped"):
        L += ["", "Skipped files (unreadable; everything else was scored):", ""]
        L += [f"- `{s['file']}`: {s['reason']}" for s in m["skipped"]]
    b = m["bootstrap"]
    L += ["", f"Intervals: {b['confidence']:.0%} percentile bootstrap, {b['n_boot']} resamples; {b['note']}."]
    if "classification" in m:
        c = m["classification"]
        L += ["", "## Classification (malignant = positive)", "",
              f"Decision threshold **{m['threshold']:.3f}**, {m['threshold_source']}.", ""]
        extra = {"CI if images were independent": m["classification_ci_by_image"]} \
            if "classification_ci_by_image" in m else None
        L += _table(c, m["classification_ci"], CLS_KEYS, extra)
        L += ["", f"Counts: tp {c['tp']}, fp {c['fp']}, tn {c['tn']}, fn {c['fn']} (n = {c['n']})."]
        if "patient" in m:
            p = m["patient"]
            L += ["", f"### Per patient ({p['n_patients']} patients; {p['rule']})", ""]
            L += _table(p["classification"], p["classification_ci"], CLS_KEYS)
        if "optimistic" in m:
            o = m["optimistic"]
            L += ["", f"### Optimistic: best threshold on this data ({o['threshold']:.3f}, {o['rule']})", "",
                  f"> {o['note']}", "", f"| metric | saved threshold {m['threshold']:.3f} | best threshold on this "
                  f"data {o['threshold']:.3f} (optimistic) |", "|---|---|---|"]
            L += [f"| {k} | {_f(c[k])} | {_f(o['classification'][k])} |" for k in CLS_KEYS[1:]]
        if m.get("site_threshold"):
            L += site_threshold_section(m["site_threshold"])
        cal = m["calibration"]
        L += ["", f"## Calibration ({cal['n_bins']} equal-width bins)", "",
              "| | ECE | 95 % CI | Brier | 95 % CI |", "|---|---|---|---|---|",
              f"| model as trained | {_f(cal['before']['ece'])} | {_ci(cal['before']['ece_ci'])} | "
              f"{_f(cal['before']['brier'])} | {_ci(cal['before']['brier_ci'])} |"]
        if cal.get("after"):
            a = cal["after"]
            L.append(f"| after temperature T = {a['temperature']:.3f} | {_f(a['ece'])} | {_ci(a['ece_ci'])} | "
                     f"{_f(a['brier'])} | {_ci(a['brier_ci'])} |")
            L += ["", "Temperature scaling changes the probabilities only: the threshold moves with them "
                      f"({m['threshold']:.3f} becomes {a['threshold']:.3f}), so every call above is unchanged."]
        else:
            L += ["", "No temperature saved with the model (`busi calibrate` fits one on the validation part)."]
    if "segmentation" in m:
        L += ["", "## Segmentation (lesion pixels)", "", m["segmentation_note"] + ".", ""]
        L += _table(m["segmentation"], m.get("segmentation_ci"), SEG_KEYS)
    elif m.get("segmentation_note"):
        L += ["", "## Segmentation", "", m["segmentation_note"] + "."]
    captions = {"roc": "ROC curve (red dot: the saved threshold)", "reliability": "Reliability diagram",
                "confusion": "Confusion matrix", "worst_errors": "Worst errors"}
    shown = [k for k in captions if k in figures]
    if shown:
        L += ["", "## Figures", ""]
        L += [f"![{captions[k]}]({k}.png)\n" for k in shown]
    L += ["", f"Evaluated in {m.get('seconds', 0):.0f} s. Every number is in `evaluation.json`, every image in "
              "`predictions.csv`.", ""]
    return "\n".join(L)


def write_report(evaluation: Evaluation, out: str | Path, n_worst: int = 8) -> Path:
    """Write the figures and ``report.md`` into ``out``; returns the report's path."""
    out = Path(out)
    figs = report_figures(evaluation, n_worst)
    for name, fig in figs.items():
        save_figure(fig, out / f"{name}.png")
    return atomic_write_bytes(out / "report.md", markdown_report(evaluation.metrics, figs).encode())
