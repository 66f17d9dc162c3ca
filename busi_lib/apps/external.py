"""External validation (``busi evaluate``): score a saved model on scans from a site it has never seen.

Scores at the threshold saved with the model, never one chosen on this data; README's "At a new hospital" explains it.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.data.load import DataLoader
from numpy.typing import ArrayLike

from busi_lib.data.cache import cached_table, has_cached_table
from busi_lib.data.images import read_image, read_mask
from busi_lib.data.loaders import make_dataset
from busi_lib.data.sites import COLUMN_ALIASES, read_labels_csv, site_name
from busi_lib.data.splits import load_split
from busi_lib.data.table import check_data_folder, select_labels
from busi_lib.errors import BusiDataError
from busi_lib.evaluation.calibration import (
    DEFAULT_BINS,
    apply_temperature,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
)
from busi_lib.evaluation.ensemble import adapt_batchnorm, batchnorm_layers, load_models
from busi_lib.evaluation.inference import predict_loader
from busi_lib.evaluation.metrics import (
    CI_KEYS,
    best_threshold,
    bootstrap_many,
    classification_metrics,
    classification_round,
    pixel_scores,
    scores_from_counts,
    segmentation_counts,
    segmentation_metrics,
)
from busi_lib.files import atomic_write_bytes, new_folder, write_json
from busi_lib.models.saving import config_normalization, load_model, update_config, use_operating_point
from busi_lib.progress import progress as show_progress
from busi_lib.ui.report import Evaluation, write_report

__all__ = [
    "COLUMN_ALIASES",
    "calibration_split",
    "ExternalData",
    "compare",
    "evaluate_model",
    "fit_model_temperature",
    "load_external",
    "patient_table",
    "predict_table",
    "read_labels_csv",
    "score_external",
    "site_threshold",
]

PATIENT_RULE = "a patient's probability is the highest of their images'; malignant if any image is"


@dataclass
class ExternalData:
    """A folder read for evaluation: one row per scored image, and what was left out. ``table``: ``image_id``,
    ``label``, ``target`` (1 malignant), ``path``, ``mask_paths`` (``|``-joined, ``""`` when none), ``has_mask``,
    ``patient_id`` (``None`` when unknown)."""

    table: pd.DataFrame
    layout: str  # "busi" or "csv"
    root: Path
    labels: Path | None = None
    excluded: dict = field(default_factory=dict)  # reason -> count (normal scans...)
    skipped: list = field(default_factory=list)  # [{"file", "reason"}] unreadable files
    notes: list = field(default_factory=list)

    @property
    def has_patients(self) -> bool:
        return self.table["patient_id"].notna().all() and len(self.table) > 0


# ----------------------------------------------------------------------------- reading
def _decode_check(table: pd.DataFrame, progress: bool) -> tuple[pd.DataFrame, list[dict]]:
    """Decode every image and mask once; rows whose files are unreadable are dropped and reported."""
    keep, skipped = [], []
    for i, row in show_progress(list(table.iterrows()), progress, "checking files"):
        try:
            img = read_image(row["path"])
            if row["mask_paths"]:
                read_mask(row["mask_paths"].split("|"), shape=img.shape)
            keep.append(i)
        except BusiDataError as e:
            skipped.append(dict(file=str(e.path or row["path"]), reason=e.reason))
    return table.loc[keep].reset_index(drop=True), skipped


def load_external(
    data: str | Path, labels: str | Path | None = None, *, columns: dict | None = None, progress: bool = True
) -> ExternalData:
    """Read the BUSI layout, or any folder with a labels CSV; unreadable files go to ``.skipped``, normal scans
    to ``.excluded``."""
    root = check_data_folder(data)
    if labels is not None:
        table, excluded = read_labels_csv(root, labels, columns)
        table, skipped = _decode_check(table, progress)
        layout = "csv"
    else:
        # Cached, so that scoring BUSI's own test part again decodes nothing; any other folder is scanned once,
        # masks optional (an external folder may have none).
        if has_cached_table(root):
            df = cached_table(root)
        else:
            df = cached_table(root, require_masks=False, skip_bad=True, duplicates=False)
        excluded = {"normal": int((df["label"] == "normal").sum())}
        table = select_labels(df, "binary")
        table["has_mask"] = table["n_masks"] > 0
        table["patient_id"] = None
        table = table[["image_id", "label", "target", "path", "mask_paths", "has_mask", "patient_id"]]
        skipped = [dict(file=f, reason=r) for f, r in df.attrs["rejected"]]
        layout = "busi"
    excluded = {k: v for k, v in excluded.items() if v}
    out = ExternalData(table.reset_index(drop=True), layout, root, Path(labels) if labels else None, excluded, skipped)
    if excluded.get("normal"):
        out.notes.append(
            f"{excluded['normal']} normal scan(s) left out: the models are trained on benign and malignant "
            "lesion scans only (the binary task)"
        )
    if skipped:
        out.notes.append(f"{len(skipped)} unreadable file(s) skipped (listed under 'skipped')")
    if len(out.table) == 0:
        raise BusiDataError(root, "no readable benign or malignant scan to evaluate")
    return out


def restrict_to_split(ext: ExternalData, split_csv: str | Path, part: str) -> ExternalData:
    """Keep the images of one part of a saved split; a split naming images not in the folder is an error."""
    split = load_split(split_csv)
    known = set(ext.table["image_id"])
    for s in ext.skipped:  # a skipped file is known under its BUSI id and its path relative to the folder
        f = Path(s["file"])
        known |= {f.stem, str(f.relative_to(ext.root)) if f.is_relative_to(ext.root) else f.name}
    unknown = sorted(set(split["image_id"]) - known)
    if unknown:
        raise BusiDataError(split_csv, f"{len(unknown)} image(s) of the split are not in {ext.root}, e.g. "
                                       f"'{unknown[0]}': is this the split of another data set?")
    ids = set(split.loc[split["split"].astype(str) == str(part), "image_id"])
    if not ids:
        parts = sorted(split["split"].astype(str).unique())
        raise BusiDataError(split_csv, f"the split has no '{part}' part (parts: {parts})")
    table = ext.table[ext.table["image_id"].isin(ids)].reset_index(drop=True)
    notes = [*ext.notes, f"only the '{part}' part of the split {split_csv} ({len(table)} images)"]
    return ExternalData(table, ext.layout, ext.root, ext.labels, ext.excluded, ext.skipped, notes)


# ----------------------------------------------------------------------------- predicting
def predict_table(model: torch.nn.Module, config: dict, table: pd.DataFrame, *, batch_size: int = 32,
                  tta: bool = False, progress: bool = True, cache_dir: str | Path | None = None,
                  adapt_bn: bool = False, return_adaptation: bool = False) -> tuple:
    """``(pred, images)``: :func:`~busi_lib.evaluation.inference.predict_loader`'s dict and the uint8 scans at the
    model's input size; ``adapt_bn``: AdaBN on these scans first (no labels); ``return_adaptation`` adds its summary."""
    ds = make_dataset(table, config["image_size"], config["task"], cache_dir=cache_dir,
                      norm=config_normalization(config))

    adapted = None
    if adapt_bn:
        adapted = adapt_batchnorm(model, config, list(ds.images), batch_size=batch_size)  # the scans, no label
    dl = DataLoader(ds, bs=batch_size, shuffle=False)
    with torch.no_grad():
        pred = predict_loader(model, show_progress(dl, progress, "predicting"), config["task"], tta=tta)
    return (pred, ds.images, adapted) if return_adaptation else (pred, ds.images)


# ----------------------------------------------------------------------------- scoring
def _classification_round(threshold: float, temperature: float, n_bins: int):
    """One bootstrap round's numbers: threshold metrics, ROC AUC, Brier and ECE (before/after temperature)."""

    def fn(y, p):
        out = classification_round(y, p, threshold)
        out["brier"], out["ece"] = float(np.mean((p - y) ** 2)), expected_calibration_error(y, p, n_bins)
        if temperature != 1:
            q = apply_temperature(p, temperature)
            out["brier_calibrated"] = float(np.mean((q - y) ** 2))
            out["ece_calibrated"] = expected_calibration_error(y, q, n_bins)
        return out

    return fn


def patient_table(table: pd.DataFrame, prob: ArrayLike) -> pd.DataFrame:
    """One row per patient: ``patient_id``, ``target`` (1 if any image is malignant), ``prob`` (the highest)."""
    d = pd.DataFrame({"patient_id": table["patient_id"].to_numpy(), "target": table["target"].to_numpy(),
                      "prob": np.asarray(prob, dtype=np.float64)})
    g = d.groupby("patient_id", sort=True)
    return pd.DataFrame({"target": g["target"].max(), "prob": g["prob"].max(), "n_images": g.size()}).reset_index()


def score_external(
    table: pd.DataFrame,
    pred: dict,
    threshold: float,
    *,
    temperature: float = 1.0,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    n_bins: int = DEFAULT_BINS,
) -> dict:
    """Every number of ``evaluation.json``; ``threshold`` must come from elsewhere (the model's validation data)."""
    patients = table["patient_id"].notna().all()
    groups = table["patient_id"].to_numpy() if patients else None
    unit = "patient" if patients else "image"
    res: dict = dict(
        n_images=int(len(table)),
        n_patients=int(table["patient_id"].nunique()) if patients else None,
        threshold=float(threshold),
        threshold_source="saved with the model (chosen on its validation data, not on this data)",
        temperature=float(temperature),
        bootstrap=dict(n_boot=int(n_boot), seed=int(seed), confidence=1 - alpha, method="percentile",
                       unit=unit, note="whole patients are resampled (a patient's images come and go together)"
                       if patients else "no patient ids: images are resampled (too narrow if patients have several)"),
    )
    if "prob" in pred:
        y, p = pred["y"].round().astype(np.int64), pred["prob"].astype(np.float64)
        if not np.array_equal(y, table["target"].to_numpy()):
            raise ValueError("predictions and table disagree on the labels (row order changed?)")
        fn = _classification_round(threshold, temperature, n_bins)
        ci = bootstrap_many(fn, y, p, n_boot=n_boot, seed=seed, groups=groups, alpha=alpha)
        res["classification"] = classification_metrics(y, p, threshold)
        res["classification_ci"] = {k: ci[k] for k in CI_KEYS}
        before = calibration_metrics(y, p, n_bins)
        before.update(ece_ci=ci["ece"], brier_ci=ci["brier"])
        res["calibration"] = dict(n_bins=int(n_bins), binning="equal-width", before=before, after=None)
        if temperature != 1:
            # the threshold moves with the probabilities, so every call (and every metric above) is unchanged
            after = calibration_metrics(y, apply_temperature(p, temperature), n_bins)
            after.update(temperature=float(temperature), ece_ci=ci["ece_calibrated"], brier_ci=ci["brier_calibrated"],
                         threshold=apply_temperature(threshold, temperature))
            res["calibration"]["after"] = after
        if len(np.unique(y)) == 2:
            t_best = best_threshold(y, p)
            res["optimistic"] = dict(
                threshold=t_best, rule="Youden's J on this very data",
                classification=classification_metrics(y, p, t_best),
                note="OPTIMISTIC: the threshold was chosen on the data it is scored on; it shows how much a "
                     "threshold re-tuned at the new site could recover, not the model's expected performance",
            )
        if patients:
            pt = patient_table(table, p)
            yp, pp = pt["target"].to_numpy(), pt["prob"].to_numpy()
            res["patient"] = dict(
                rule=PATIENT_RULE, n_patients=int(len(pt)),
                classification=classification_metrics(yp, pp, threshold),
                classification_ci=bootstrap_many(_classification_round(threshold, 1.0, n_bins), yp, pp,
                                                  n_boot=n_boot, seed=seed, alpha=alpha),
            )
            res["classification_ci_by_image"] = {
                k: v for k, v in bootstrap_many(fn, y, p, n_boot=n_boot, seed=seed, alpha=alpha).items()
                if k in CI_KEYS
            }
    if "mask_prob" in pred:
        has = table["has_mask"].to_numpy(bool)
        if has.any():
            masks, mprob = pred["mask"][has], pred["mask_prob"][has].astype(np.float32)
            res["segmentation"] = segmentation_metrics(masks, mprob, 0.5)
            tp, fp, fn_ = segmentation_counts(masks, mprob, 0.5)

            def seg_round(tp, fp, fn):
                pooled, per = scores_from_counts(tp, fp, fn, True), scores_from_counts(tp, fp, fn, False)
                return {**{f"{k}_pooled": v for k, v in pooled.items()},
                        **{f"{k}_per_image": v for k, v in per.items()}}

            res["segmentation_ci"] = bootstrap_many(seg_round, tp, fp, fn_, n_boot=n_boot, seed=seed,
                                                     groups=groups[has] if patients else None, alpha=alpha)
            res["segmentation_note"] = (
                f"{int(has.sum())} of {len(table)} images have a mask; masks compared at the model's input size; "
                "pooled = pixels of all images summed, per_image = mean of per-image values")
        else:
            res["segmentation_note"] = "no masks given: segmentation not scored"
    return res


# ----------------------------------------------------------------------------- the threshold at a new site
def calibration_split(table: pd.DataFrame, size: float, seed: int = 0) -> np.ndarray:
    """A boolean array: the rows of the labelled *calibration part* of a new site, drawn by patient (else image),
    seeded and stratified; ``size`` below 1 is a fraction of the units, else a count."""
    patients = table["patient_id"].notna().all()
    units = table["patient_id"].astype(str).to_numpy() if patients else np.arange(len(table)).astype(str)
    target = pd.Series(table["target"].to_numpy()).groupby(units).max()
    n_units = len(target)
    if not size > 0:
        raise ValueError(f"calibration size must be > 0 (a fraction below 1 or a count), got {size!r}")
    if size >= 1 and int(size) != size:
        raise ValueError(f"a calibration size of 1 or more is a number of units, got {size!r}")
    want = size * n_units if size < 1 else float(size)
    if not 1 <= round(want) < n_units:
        unit = "patients" if patients else "images"
        raise BusiDataError(None, f"calibration size {size!r} leaves no calibration or no scored part: this set has "
                            f"{n_units} {unit}")
    rng = np.random.default_rng(seed)
    total = int(np.floor(want + 0.5))
    ids_of = {c: np.sort(target.index[target.to_numpy() == c].to_numpy()) for c in (0, 1)}
    k_of = {0: int(np.floor(total * len(ids_of[0]) / n_units + 0.5))}
    k_of[1] = total - k_of[0]  # the parts add up to the size asked for
    chosen: list[str] = []
    for c, ids in ids_of.items():
        if len(ids) == 0:
            continue
        k = k_of[c]
        if len(ids) >= 2:
            k = min(max(k, 1), len(ids) - 1)  # at least one of each class on each side
        chosen += list(rng.permutation(ids)[:k])
    return np.isin(units, chosen)


def site_threshold(table: pd.DataFrame, pred: dict, saved_threshold: float, size: float, *, seed: int = 0,
                   n_boot: int = 1000, alpha: float = 0.05, n_bins: int = DEFAULT_BINS,
                   criterion: str = "youden") -> dict:
    """The honest re-tuned threshold: chosen (``criterion``) on a :func:`calibration_split` of the new site, scored
    on the other scans, with the saved threshold's scores on the same scans for comparison."""
    cal = calibration_split(table, size, seed)
    y, p = pred["y"].round().astype(np.int64), pred["prob"].astype(np.float64)
    patients = table["patient_id"].notna().all()
    res = dict(size=size, seed=int(seed), unit="patient" if patients else "image",
               n_calibration_images=int(cal.sum()), n_scored_images=int((~cal).sum()), rule=f"{criterion} "
               "on the calibration part", saved_threshold=float(saved_threshold))
    if patients:
        res["n_calibration_patients"] = int(table.loc[cal, "patient_id"].nunique())
        res["n_scored_patients"] = int(table.loc[~cal, "patient_id"].nunique())
    if len(np.unique(y[cal])) < 2:
        res["note"] = "the calibration part holds one class only: no threshold can be chosen on it"
        return res
    t = best_threshold(y[cal], p[cal], criterion)
    rest_y, rest_p = y[~cal], p[~cal]
    groups = table.loc[~cal, "patient_id"].to_numpy() if patients else None
    ci = bootstrap_many(_classification_round(t, 1.0, n_bins), rest_y, rest_p, n_boot=n_boot, seed=seed,
                        groups=groups, alpha=alpha)
    res.update(
        threshold=float(t), classification=classification_metrics(rest_y, rest_p, t),
        classification_ci={k: ci[k] for k in CI_KEYS},
        saved_threshold_classification=classification_metrics(rest_y, rest_p, saved_threshold),
        note="HONEST: the threshold was chosen on the labelled calibration part only and scored on the other scans; "
             "a smaller or unlucky calibration part gives a noisier threshold (try another seed)",
    )
    return res


def operating_points_at_site(table: pd.DataFrame, pred: dict, config: dict, *, n_boot: int = 1000,
                             seed: int = 0) -> dict:
    """Sensitivity and specificity (with patient- or image-resampled intervals) at each operating point saved
    with the model (``config["operating_points"]``; the saved threshold alone for older models)."""
    points = config.get("operating_points") or {config.get("operating_point") or "saved": config["threshold"]}
    patients = table["patient_id"].notna().all()
    groups = table["patient_id"].to_numpy() if patients else None
    y, p = pred["y"].round().astype(np.int64), pred["prob"].astype(np.float64)
    out = {}
    for name, t in points.items():
        ci = bootstrap_many(lambda yy, pp, t=t: classification_round(yy, pp, t), y, p, n_boot=n_boot, seed=seed,
                            groups=groups)
        m = classification_metrics(y, p, t)
        out[name] = dict(threshold=float(t), used=bool(np.isclose(t, config["threshold"])),
                         **{k: m[k] for k in ("sensitivity", "specificity", "precision", "accuracy")},
                         ci95={k: ci[k] for k in ("sensitivity", "specificity")})
    return out


#: AdaBN needs a batch of the site's scans: below this many, it is not switched on by default.
MIN_ADAPT_SCANS = 32


def adapt_by_default(model: torch.nn.Module, config: dict, root: Path, n_scans: int) -> bool:
    """Whether ``busi evaluate`` applies AdaBN unasked: at a site the model was not calibrated on (:func:`site_note`),
    with at least :data:`MIN_ADAPT_SCANS` scans and BatchNorm layers (RESULTS.md: it helps at a second hospital)."""
    return (site_note(config, root) is not None and n_scans >= MIN_ADAPT_SCANS
            and bool(batchnorm_layers(model)))


def site_note(config: dict, root: Path) -> str | None:
    """A plain warning when the model's threshold was chosen on other sites than the folder ``root``."""
    sites = (config.get("calibrated_on") or {}).get("sites")
    if not sites or site_name(root) in sites:
        return None
    return (f"NOT CALIBRATED FOR THIS SITE: the threshold was chosen on validation scans of {', '.join(sites)}, "
            f"not of {site_name(root)}; sensitivity and specificity here can differ a lot. Re-tune it on a "
            "labelled part of this site: busi evaluate ... --calibration-size N --save-model DIR")


def save_site_model(members: list, site: dict, root: Path, dest: str | Path, adapt_bn: bool = False) -> Path:
    """A copy of the model (or ensemble) in the new folder ``dest``, with the threshold re-tuned at this site."""
    if site.get("threshold") is None:
        raise BusiDataError(root, f"no threshold could be re-tuned on this site: {site.get('note')}")
    with new_folder(dest) as tmp:
        for i, m in enumerate(members):
            folder = tmp if len(members) == 1 else tmp / f"member{i}" / "model"
            shutil.copytree(m, folder, dirs_exist_ok=True)
            update_config(folder, threshold=float(site["threshold"]), operating_point="site", adapt_bn=bool(adapt_bn),
                          calibrated_on=dict(sites=[site_name(root)], part="calibration",
                                             rule=site["rule"], size=site["size"], seed=site["seed"],
                                             n_images=site["n_calibration_images"]))
    return Path(dest)


# ----------------------------------------------------------------------------- the whole evaluation
def predictions_frame(table: pd.DataFrame, pred: dict, threshold: float, temperature: float = 1.0) -> pd.DataFrame:
    """One row per image: ids, truth, probability (and calibrated), the call, and the image's Dice if scored."""
    df = table[["image_id", "path", "patient_id", "label", "target", "has_mask"]].copy()
    if "prob" in pred:
        df["prob"] = pred["prob"].astype(np.float64)
        if temperature != 1:
            df["prob_calibrated"] = apply_temperature(df["prob"].to_numpy(), temperature)
        df["called"] = np.where(df["prob"] >= threshold, "malignant", "benign")
        df["correct"] = df["called"] == df["label"]
    if "mask_prob" in pred:
        tp, fp, fn = segmentation_counts(pred["mask"], pred["mask_prob"].astype(np.float32), 0.5)
        df["dice"] = np.where(df["has_mask"], pixel_scores(tp, fp, fn)["dice"], np.nan)
    return df


def evaluate_model(
    model_dir: str | Path | list,
    data: str | Path,
    *,
    labels: str | Path | None = None,
    columns: dict | None = None,
    split: str | Path | None = None,
    part: str = "test",
    out: str | Path | None = None,
    tta: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = DEFAULT_BINS,
    batch_size: int = 32,
    n_worst: int = 8,
    progress: bool = True,
    name: str | None = None,
    adapt_bn: bool | None = None,
    calibration_size: float | None = None,
    save_model_to: str | Path | None = None,
    operating_point: str | None = None,
) -> Evaluation:
    """Score the saved model(s) in ``model_dir`` (a list: an ensemble) on ``data``; with ``out``, write the report.
    ``calibration_size`` also re-tunes the threshold on that part of the site; ``save_model_to``: a copy using it."""
    t0 = time.time()
    model, config = load_models(model_dir if isinstance(model_dir, (list, tuple)) else [model_dir])
    config = use_operating_point(config, operating_point)
    ext = load_external(data, labels, columns=columns, progress=progress)
    if split is not None:
        ext = restrict_to_split(ext, split, part)
    auto = adapt_bn is None
    if auto:
        adapt_bn = adapt_by_default(model, config, ext.root, len(ext.table))
    pred, images, adapted = predict_table(model, config, ext.table, batch_size=batch_size, tta=tta,
                                          progress=progress, adapt_bn=adapt_bn, return_adaptation=True)
    threshold, temperature = float(config.get("threshold", 0.5)), float(config.get("temperature", 1.0))
    members = config["members"]
    notes = list(ext.notes)
    if len(members) > 1:
        notes.append(f"ensemble of {len(members)} models: probabilities averaged; threshold "
                     f"{config['threshold_rule']}")
    if config.get("ensemble_note"):
        notes.append(config["ensemble_note"])
    if adapted:
        notes.append(f"BatchNorm statistics re-estimated on the {adapted['n_images']} scored scans "
                     f"({adapted['n_layers']} layers; images only, no labels; the saved model is unchanged)"
                     + ("; the default at a site the model was not calibrated on (--no-adapt-bn: off)" if auto else ""))
    metrics = dict(
        name=name or Path(data).name,
        model=members[0] if len(members) == 1 else members, members=members,
        arch=config["arch"], task=config["task"], image_size=config["image_size"],
        data=str(data), layout=ext.layout, labels=str(labels) if labels else None,
        split=str(split) if split else None, part=part if split else None, tta=bool(tta),
        adapt_bn=adapted or None, excluded=ext.excluded, skipped=ext.skipped, notes=notes,
    )
    metrics.update(score_external(ext.table, pred, threshold, temperature=temperature, n_boot=n_boot, seed=seed,
                                  n_bins=n_bins))
    if len(members) > 1:
        metrics["threshold_source"] = (f"the mean of the {len(members)} members' saved thresholds (each chosen on "
                                       "its own validation data, not on this data)")
    if "prob" in pred:
        metrics["operating_points"] = operating_points_at_site(ext.table, pred, config, n_boot=n_boot, seed=seed)
        note = site_note(config, ext.root)
        if note:
            metrics["notes"].append(note)
    if calibration_size is not None and "prob" in pred:
        point = config.get("operating_point") or "youden"  # the model's operating point, re-tuned at this site
        metrics["site_threshold"] = site_threshold(ext.table, pred, threshold, calibration_size, seed=seed,
                                                   n_boot=n_boot, n_bins=n_bins,
                                                   criterion=point if point.startswith("sensitivity_") else "youden")
        if save_model_to is not None:
            metrics["site_model"] = str(save_site_model(members, metrics["site_threshold"], ext.root, save_model_to,
                                                        adapt_bn=bool(adapted)))
    elif save_model_to is not None:
        raise ValueError("saving a site's model needs a threshold re-tuned on it: give calibration_size too")
    metrics["seconds"] = round(time.time() - t0, 1)
    predictions = predictions_frame(ext.table, pred, threshold, temperature)
    result = Evaluation(metrics, predictions, pred, images, Path(out) if out else None)
    if out is not None:
        out = Path(out)
        write_json(out / "evaluation.json", metrics)
        atomic_write_bytes(out / "predictions.csv", predictions.to_csv(index=False).encode())
        write_report(result, out, n_worst=n_worst)
    return result


def fit_model_temperature(
    model_dir: str | Path,
    data: str | Path,
    split: str | Path,
    *,
    part: str = "valid",
    labels: str | Path | None = None,
    n_bins: int = DEFAULT_BINS,
    batch_size: int = 32,
    progress: bool = True,
) -> dict:
    """Fit the model's temperature on the ``valid`` part of its split, save it in ``config.json``, return the fit."""
    model, config = load_model(model_dir)
    if config["task"] == "segment":
        raise ValueError(f"a {config['task']} model gives no class probability: nothing to calibrate")
    ext = restrict_to_split(load_external(data, labels, progress=progress), split, part)
    pred, _ = predict_table(model, config, ext.table, batch_size=batch_size, progress=progress)
    y, p = pred["y"].round().astype(np.int64), pred["prob"].astype(np.float64)
    fit = fit_temperature(y, p)
    q = apply_temperature(p, fit["temperature"])
    fit.update(part=part, split=str(split), n_bins=int(n_bins),
               ece_before=expected_calibration_error(y, p, n_bins), ece_after=expected_calibration_error(y, q, n_bins),
               brier_before=brier_score(y, p), brier_after=brier_score(y, q))
    update_config(model_dir, temperature=fit["temperature"], temperature_fit=fit)
    return fit


# ----------------------------------------------------------------------------- comparing
COMPARE_ROWS = (
    ("classification", "roc_auc"), ("classification", "accuracy"), ("classification", "sensitivity"),
    ("classification", "specificity"), ("classification", "precision"), ("classification", "f1"),
    ("calibration", "ece"), ("calibration", "brier"), ("calibration", "ece_after_temperature"),
    ("patient", "roc_auc"), ("patient", "sensitivity"), ("patient", "specificity"),
    ("segmentation", "dice_pooled"), ("segmentation", "iou_pooled"), ("segmentation", "dice_per_image"),
    ("segmentation", "iou_per_image"),
)


def _lookup(m: dict, section: str, key: str) -> float:
    if section == "calibration":
        cal = m.get("calibration") or {}
        if key == "ece_after_temperature":
            return (cal.get("after") or {}).get("ece", np.nan)
        return (cal.get("before") or {}).get(key, np.nan)
    if section == "patient":
        return (m.get("patient") or {}).get("classification", {}).get(key, np.nan)
    return (m.get(section) or {}).get(key, np.nan)


def compare(results: dict[str, dict], reference: str | None = None) -> pd.DataFrame:
    """The main numbers of several evaluations (``{name: metrics}``), one column each, plus a
    ``<name> - <reference>`` change column per other one (``reference``: default the first)."""
    names = list(results)
    reference = reference or names[0]
    rows = {f"{s}: {k}" if s in ("patient", "calibration") else k: [_lookup(results[n], s, k) for n in names]
            for s, k in COMPARE_ROWS}
    df = pd.DataFrame(rows, index=names).T.astype(float)
    df = df.dropna(how="all")
    for n in names:
        if n != reference:
            df[f"{n} - {reference}"] = df[n] - df[reference]
    return df
