"""Results across notebooks: one row per model, the reference study's numbers, saved models' predictions.
A lesson saves its models' test metrics in ``<out>/<notebook>/metrics.json`` (``"models": {name: flat_metrics(...)}``);
:func:`collect_models` reads them into one table. Files are the only interface between notebooks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd
import torch
from fastai.data.load import DataLoader

from busi_lib.data.cache import cached_arrays
from busi_lib.data.dataset import load_dataset
from busi_lib.data.loaders import make_dataset
from busi_lib.data.splits import apply_split, load_split
from busi_lib.evaluation.inference import predict_loader
from busi_lib.evaluation.metrics import confidence_intervals, segmentation_counts
from busi_lib.files import atomic_write_bytes
from busi_lib.models.saving import config_normalization, load_model
from busi_lib.profiles import STUDY_MODELS

if TYPE_CHECKING:  # names for the type hints only
    import torch

# The reference study's multitask UResNet (test set); wherever its numbers are shown, cite STUDY_SOURCE.
STUDY_SOURCE = ("the reference study's poster (multitask UResNet on BUSI, ImageNet weights, GPU; "
                "one unpublished split, test part)")
STUDY_MULTITASK = {
    "classification": {"accuracy": 0.908, "precision": 0.886, "recall": 0.821, "f1": 0.838},
    "segmentation": {"precision": 0.842, "recall": 0.821, "dice": 0.831, "iou": 0.711},
}

CLASSIFICATION_COLUMNS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc")
# where a column's value sits in busi_lib.evaluation.metrics.classification_metrics' dict, when the name differs
CLASSIFICATION_KEYS = {"sensitivity": "recall", "auc": "roc_auc"}
SEGMENTATION_COLUMNS = ("dice_pooled", "iou_pooled", "dice_per_image", "iou_per_image")
SUMMARY_COLUMNS = ("notebook", "model", "arch", "task", *CLASSIFICATION_COLUMNS, *SEGMENTATION_COLUMNS,
                   "threshold", "n_test", "train_seconds")


def _num(v):
    return None if v is None else float(v)


def flat_metrics(metrics: dict, part: str = "test") -> dict:
    """One flat row of a training run's ``metrics.json``: its ``part`` scores (the validation part when there is no
    test part) at the threshold chosen on validation data, with the run's settings."""
    settings = metrics.get("settings", {})
    # a run without a test part (test_frac=0) is scored on its validation part
    scores = metrics.get(part) or (metrics.get("valid", {}) if part == "test" else {})
    row = {
        "arch": settings.get("arch"),
        "task": metrics.get("task"),
        "image_size": settings.get("image_size"),
        "epochs": settings.get("epochs"),
        # where the starting weights came from ("from scratch", "ImageNet (...)"); older runs: the setting
        "weights": metrics.get("weights", "ImageNet" if settings.get("pretrained") else "from scratch"),
        "pretrained": metrics["weights"] != "from scratch" if "weights" in metrics else settings.get("pretrained"),
        "threshold": _num(metrics.get("threshold")),
        "n_test": metrics.get("n_images", {}).get(part),
        "train_seconds": metrics.get("train_seconds"),
        "run_dir": settings.get("out"),  # the model's folder (metrics.json, split.csv, model/)
    }
    cls = scores.get("classification")
    if cls:
        row.update({c: _num(cls.get(CLASSIFICATION_KEYS.get(c, c))) for c in CLASSIFICATION_COLUMNS})
    seg = scores.get("segmentation")
    if seg:
        row.update({c: _num(seg.get(c)) for c in SEGMENTATION_COLUMNS})
        row["seg_precision_pooled"] = _num(seg.get("precision_pooled"))
        row["seg_recall_pooled"] = _num(seg.get("recall_pooled"))
    tta = metrics.get(f"{part}_tta")
    if tta:
        if "classification" in tta:
            row["tta_accuracy"] = _num(tta["classification"].get("accuracy"))
            row["tta_auc"] = _num(tta["classification"].get("roc_auc"))
        if "segmentation" in tta:
            row["tta_dice_pooled"] = _num(tta["segmentation"].get("dice_pooled"))
    return row


def _model_order(name: str) -> int:
    return STUDY_MODELS.index(name) if name in STUDY_MODELS else len(STUDY_MODELS)


def collect_models(root: str | Path) -> pd.DataFrame:
    """Every model of every notebook under ``root`` (``<root>/<notebook>/metrics.json`` with ``"models"``)."""
    rows = []
    for path in sorted(Path(root).glob("*/metrics.json")):
        blob = json.loads(path.read_text())
        for name, row in (blob.get("models") or {}).items():
            rows.append({"notebook": path.parent.name, "model": name, **row})
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    df = df.sort_values(["notebook", "model"], key=lambda s: s.map(_model_order) if s.name == "model" else s)
    first = [c for c in SUMMARY_COLUMNS if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]].reset_index(drop=True)


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub Markdown table. Hand-written: pandas' ``to_markdown`` needs the extra ``tabulate`` package."""
    def cell(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_summary(table: pd.DataFrame, folder: str | Path) -> tuple[Path, Path]:
    """``summary.csv`` and ``summary.md`` of a :func:`collect_models` table, written atomically."""
    folder = Path(folder)
    csv, md = folder / "summary.csv", folder / "summary.md"
    atomic_write_bytes(csv, table.to_csv(index=False).encode())
    cols = [c for c in SUMMARY_COLUMNS if c in table.columns]
    atomic_write_bytes(md, ("# Every model's test metrics\n\n" + markdown_table(table[cols])).encode())
    return csv, md


def multitask_vs_study(row: dict) -> pd.DataFrame:
    """The multitask model's test metrics beside the reference study's (pooled segmentation values)."""
    ours = {
        ("classification", "accuracy"): row.get("accuracy"),
        ("classification", "precision"): row.get("precision"),
        ("classification", "recall"): row.get("sensitivity"),
        ("classification", "f1"): row.get("f1"),
        ("segmentation", "precision"): row.get("seg_precision_pooled"),
        ("segmentation", "recall"): row.get("seg_recall_pooled"),
        ("segmentation", "dice"): row.get("dice_pooled"),
        ("segmentation", "iou"): row.get("iou_pooled"),
    }
    rows = [
        {"task": t, "metric": m, "this run": ours[(t, m)], "study": STUDY_MULTITASK[t][m]}
        for (t, m) in ours
    ]
    df = pd.DataFrame(rows)
    df["difference"] = df["this run"] - df["study"]
    return df


# ---------------------------------------------------------------- predictions of a saved model
def predict_part(model_folder: str | Path, data: str | Path, part: str = "test",
                 cache_dir: str | Path | None = None) -> dict:
    """A saved model's predictions on one part of its own split (``<run>/split.csv``): :func:`predict_loader`'s
    dict plus ``table`` (the scans' rows), ``images`` (uint8, as the model saw them) and ``config``."""
    folder = Path(model_folder)
    run_dir = folder.parent if folder.name == "model" else folder
    model, config = load_model(run_dir / "model")
    df = load_dataset(data, cache_dir=cache_dir)
    split = load_split(run_dir / "split.csv")
    part_df = apply_split(df[df["image_id"].isin(split["image_id"])], split)
    part_df = part_df[part_df["split"] == part].reset_index(drop=True)
    ds = make_dataset(part_df, config["image_size"], config["task"], cache_dir=cache_dir,
                      norm=config_normalization(config))
    pred = predict_loader(model, DataLoader(ds, bs=16, shuffle=False), config["task"])
    images, _ = cached_arrays(part_df, config["image_size"], cache_dir=cache_dir)
    return {**pred, "table": part_df, "images": images, "config": config}


def test_intervals(model_folder: str | Path, data: str | Path, n_boot: int = 1000, seed: int = 0,
                   cache_dir: str | Path | None = None) -> dict[str, tuple[float, float]]:
    """95 % bootstrap intervals of a saved model's test metrics, keyed like :func:`flat_metrics`'s columns, resampling
    duplicate groups whole, at the threshold of the model's metrics (Youden's on validation)."""
    p = predict_part(model_folder, data, cache_dir=cache_dir)
    t = p["table"][["image_id", "target", "dup_group"]].copy()
    if "prob" in p:
        points = p["config"].get("operating_points") or {}  # the metrics' threshold: Youden's, where saved
        t["prob"], t["threshold"] = p["prob"], float(points.get("youden", p["config"].get("threshold", 0.5)))
    if "mask_prob" in p:
        t["tp"], t["fp"], t["fn"] = segmentation_counts(p["mask"], p["mask_prob"].astype(np.float32))
    names = {v: k for k, v in CLASSIFICATION_KEYS.items()}
    out = {}
    for key, (low, high) in confidence_intervals(t, n_boot=n_boot, seed=seed).items():
        section, name = key.split(".", 1)
        out[names.get(name, name) if section == "classification" else name] = (low, high)
    return out


def _resize(a: np.ndarray, size: int) -> np.ndarray:

    a = np.asarray(a, dtype=np.float32)
    return a if a.shape[-1] == size else cv2.resize(a, (size, size), interpolation=cv2.INTER_LINEAR)


def mask_predictions(model_folders: dict, data: str | Path, n: int = 4, size: int | None = None,
                     cache_dir: str | Path | None = None) -> dict:
    """Scans, true masks and every model's predicted masks on the same ``n`` test scans (lesion scans first).
    ``model_folders`` is ``{name: run folder}``; maps are resized to ``size`` (default: the first model's). Returns
    ``image_ids``, ``labels``, ``images``, ``masks`` and ``preds`` (``{name: masks}``)."""
    preds = {name: predict_part(f, data, cache_dir=cache_dir) for name, f in model_folders.items()}
    first = next(iter(preds.values()))
    size = size or first["images"].shape[-1]
    ids = [i for i in first["table"]["image_id"] if all(i in set(p["table"]["image_id"]) for p in preds.values())]
    rows = first["table"].set_index("image_id")
    # scans with a lesion first (a grid of empty masks shows nothing), classes taking turns
    by_label: dict = {}
    for i in sorted(ids, key=lambda i: rows.loc[i, "lesion_area"] <= 0):
        by_label.setdefault(rows.loc[i, "label"], []).append(i)
    queues = list(by_label.values())
    chosen = [q[k] for k in range(max(map(len, queues), default=0)) for q in queues if k < len(q)][:n]
    out = {"image_ids": chosen, "images": [], "masks": [], "preds": {name: [] for name in preds}}
    for i in chosen:
        k = int(np.flatnonzero(first["table"]["image_id"].to_numpy() == i)[0])
        out["images"].append(_resize(first["images"][k], size))
        out["masks"].append(_resize(first["mask"][k], size) >= 0.5)
        for name, p in preds.items():
            j = int(np.flatnonzero(p["table"]["image_id"].to_numpy() == i)[0])
            out["preds"][name].append(_resize(p["mask_prob"][j], size) >= 0.5)
    out["labels"] = [rows.loc[i, "label"] for i in chosen]
    return out


# ---------------------------------------------------------------- the multitask model's structure
def layer_shapes(model: torch.nn.Module, image_size: int = 64) -> dict:
    """Output shapes (C, H, W) of the multitask UResNet's parts on one dummy scan: ``input``, ``encoder`` (per stage,
    input resolution first), ``decoder`` (per block), the heads' ``classification`` and ``segmentation``, and
    ``encoder_name``."""
    net = model.net if hasattr(model, "net") else model
    seen: dict = {}

    def keep(name):
        def hook(_module, _inp, out):
            seen[name] = [tuple(o.shape[1:]) for o in out] if isinstance(out, (list, tuple)) else tuple(out.shape[1:])

        return hook

    handles = [net.encoder.register_forward_hook(keep("encoder"))]
    handles += [b.register_forward_hook(keep(f"decoder{i}")) for i, b in enumerate(net.decoder.blocks)]
    handles.append(net.segmentation_head.register_forward_hook(keep("segmentation")))
    if getattr(net, "classification_head", None) is not None:
        handles.append(net.classification_head.register_forward_hook(keep("classification")))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {
        "input": (3, image_size, image_size),
        "encoder": seen["encoder"],
        "decoder": [seen[f"decoder{i}"] for i in range(len(net.decoder.blocks))],
        "segmentation": seen["segmentation"],
        "classification": seen.get("classification"),
        "encoder_name": type(net.encoder).__name__,
    }
