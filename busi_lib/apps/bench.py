"""``busi bench``: every model under one leakage-free protocol, with confidence intervals.

The protocol: README.md ("Honest evaluation"). Each threshold is Youden's J on a group-aware 15 % of the training
folds; a fold writes ``fold_result.json`` last, so a rerun resumes; only the main process writes files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from busi_lib.config import TrainConfig
from busi_lib.data.dataset import load_dataset, resolve_data_dir
from busi_lib.data.duplicates import duplicate_groups
from busi_lib.data.sites import site_names
from busi_lib.data.splits import cv_fold_split, kfold_split, save_split
from busi_lib.data.table import dataset_fingerprint
from busi_lib.evaluation.baselines import BASELINES, baseline_predictions, shape_table
from busi_lib.evaluation.inference import predict_loader
from busi_lib.evaluation.metrics import (
    bootstrap_many,
    confidence_intervals,
    score_table,
    segmentation_counts,
)
from busi_lib.evaluation.study import STUDY_MULTITASK
from busi_lib.files import atomic_write_bytes, write_json
from busi_lib.profiles import STUDY_MODELS, resolve_arch, settings_for
from busi_lib.training.distributed import barrier, is_main_process, main_process_result, start_processes
from busi_lib.training.learners import environment, subset, train

STUDY = STUDY_MULTITASK  # the reference study's multitask model (the poster's table), from busi_lib.evaluation.study
CLS_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc")
SEG_METRICS = ("precision", "recall", "dice", "iou")


# The ablation ladder, from no network (busi_lib.evaluation.baselines) to the multitask model, on the same folds
LADDER = ("prior", "shape_oracle", "custom_cnn", "efficientnet_lite0_scratch", "efficientnet_lite0",
          "multitask_no_seg", "multitask")
# The two pairs whose difference the ladder is for: (row, the row it is compared with). A paired bootstrap
# resamples the same duplicate groups for both rows.
PAIRS = (("efficientnet_lite0", "efficientnet_lite0_scratch"), ("multitask", "multitask_no_seg"))
# Models that run every fold on the cpu profile: the ladder (the other models of the study run fold 1 only).
CPU_ALL_FOLDS = LADDER


def site_folds(df: pd.DataFrame) -> pd.DataFrame:
    """Leave one site out: a fold table whose fold ``i`` is every scan of the ``i``-th site, so that
    :func:`busi_lib.data.splits.cv_fold_split` tests on that site and trains and validates on the others."""
    sites = site_names(df)
    if len(sites) < 2:
        raise ValueError(f"leave-one-site-out needs two sites or more; the data has {sites}")
    out = df[["image_id", "label", "dup_group"]].copy()
    out["split"] = df["site"].map({s: i for i, s in enumerate(sites)}).to_numpy()
    return out.reset_index(drop=True)


def folds_for(profile: str, arch: str, k: int) -> list[int]:
    """Which folds a model runs: all of them, but on the ``cpu`` profile only the
    first fold for every model outside :data:`CPU_ALL_FOLDS` (2 CPU cores)."""
    if profile == "cpu" and arch not in CPU_ALL_FOLDS:
        return [0]
    if profile == "smoke":
        return [0, 1] if arch == "multitask" else [0]
    return list(range(k))


# ----------------------------------------------------------------- one fold
def run_fold(df: pd.DataFrame, folds: pd.DataFrame, fold: int, arch: str, profile: str, data: str | Path, out: Path,
             seed: int, progress: bool = True, **overrides: object) -> dict:
    """Train one model on one fold and keep its per-scan test predictions."""
    fold_dir = out / arch / f"fold{fold}"
    # resume: a finished fold is never redone (the main process decides, so that all processes skip the same folds)
    finished = main_process_result(_finished_fold, fold_dir / "fold_result.json")
    if finished is not None:
        return finished
    split = cv_fold_split(df, folds, fold, seed=seed)
    split_csv = fold_dir / "fold_split.csv"
    if is_main_process():
        save_split(split, split_csv)
    barrier()  # every process reads the split file next
    if arch in BASELINES:
        return main_process_result(_baseline_fold, df, split, arch, fold, out, fold_dir)
    kw = settings_for(profile, arch, **overrides)
    data = [str(d) for d in data] if isinstance(data, (list, tuple)) else str(data)
    cfg = TrainConfig(**kw, data=data, out=str(fold_dir), split=str(split_csv), seed=seed,
                      progress=progress and profile != "smoke")
    t0 = time.time()
    res = train(cfg)
    seconds = time.time() - t0
    # the main process predicts and writes; the others wait for its result (fold_result.json is then complete)
    return main_process_result(_score_fold, res, cfg, arch, fold, out, fold_dir, seconds)


_SHAPES: dict[str, pd.DataFrame] = {}  # the shape features of a table, by its fingerprint: decoded once


def _baseline_fold(df: pd.DataFrame, split: pd.DataFrame, arch: str, fold: int, out: Path, fold_dir: Path) -> dict:
    """A baseline's fold: fitted on the training part, its threshold from the validation part, the test fold
    scored; the same files as a network's fold."""
    t0 = time.time()
    key = dataset_fingerprint(df)
    if arch == "shape_oracle" and key not in _SHAPES:
        _SHAPES[key] = shape_table(df)  # every fold reads the masks' features from here
    prob, threshold = baseline_predictions(arch, df, split, _SHAPES.get(key))
    table = df.loc[split["split"].to_numpy() == "test", ["image_id", "dup_group", "label", "target"]]
    table = table.reset_index(drop=True).assign(prob=prob, prob_tta=prob, threshold=threshold)
    result = {"arch": arch, "resolved_arch": arch, "fold": fold, "task": "classify", "threshold": threshold,
              "n_images": {k: int(v) for k, v in split["split"].value_counts().items()}, "settings": {},
              "weights": "no network", "seconds": round(time.time() - t0, 1), "seconds_per_epoch": 0.0,
              "epochs_run": 0}
    return _write_fold(table, result, out, fold_dir)


def _write_fold(table: pd.DataFrame, result: dict, out: Path, fold_dir: Path) -> dict:
    """A finished fold's files: its per-scan test predictions, then ``fold_result.json`` (written last: its
    presence means the fold is finished) with the test scores, plain and with flip TTA."""
    csv = fold_dir / "test_predictions.csv"
    atomic_write_bytes(csv, table.to_csv(index=False).encode())
    result.update(test=score_table(table), test_tta=score_table(table, "_tta"), predictions=str(csv.relative_to(out)))
    write_json(fold_dir / "fold_result.json", result)
    return result


def paired_difference(out: Path, a: dict, b: dict, n_boot: int, seed: int) -> dict:
    """Row ``a`` minus row ``b`` on the scans both scored (accuracy, F1, ROC-AUC; flip TTA too), with a paired
    bootstrap interval: each resample draws duplicate groups once and scores both rows on them."""
    ta, tb = ([pd.read_csv(out / r["predictions"]) for r in m["fold_results"]] for m in (a, b))
    ta, tb = pd.concat(ta, ignore_index=True), pd.concat(tb, ignore_index=True)
    both = ta.merge(tb[["image_id", "prob", "prob_tta", "threshold"]], on="image_id", suffixes=("", "_b"))
    tb = both[["image_id", "dup_group", "target"]].assign(prob=both["prob_b"], prob_tta=both["prob_tta_b"],
                                                          threshold=both["threshold_b"])

    def diff(i):
        d = {}
        for suffix in ("", "_tta"):
            sa, sb = (score_table(t.iloc[i], suffix, fast=True)["classification"] for t in (both, tb))
            d.update({f"{k}{suffix}": sa[k] - sb[k] for k in ("accuracy", "f1", "roc_auc")})
        return d

    point = diff(np.arange(len(both)))
    ci = bootstrap_many(diff, np.arange(len(both)), n_boot=n_boot, seed=seed, groups=both["dup_group"].to_numpy())
    return {"n_images": int(len(both)), "difference": point, "ci95": ci}


def _finished_fold(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _score_fold(res, cfg, arch: str, fold: int, out: Path, fold_dir: Path, seconds: float) -> dict:
    """The per-scan test predictions of a trained fold, written with its ``fold_result.json``."""
    threshold = float(res.metrics["threshold"])
    test = res.dls.tables["test"]
    table = test[[c for c in ("image_id", "dup_group", "label", "target", "site") if c in test]].reset_index(drop=True)
    for suffix, tta in (("", False), ("_tta", True)):
        pred = predict_loader(res.learn.model, res.dls[2], cfg.task, tta=tta)
        if "prob" in pred:
            table["prob" + suffix] = pred["prob"]
        if "mask_prob" in pred and cfg.w_seg > 0:  # with its mask loss off, the decoder learnt nothing to score
            tp, fp, fn = segmentation_counts(pred["mask"], pred["mask_prob"].astype(np.float32))
            table["tp" + suffix], table["fp" + suffix], table["fn" + suffix] = tp, fp, fn
    table["threshold"] = threshold
    result = {
        "arch": arch,
        "resolved_arch": cfg.arch,
        "fold": fold,
        "task": cfg.task,
        "threshold": threshold,
        "n_images": res.metrics["n_images"],
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("extra",)},
        "weights": res.metrics["weights"],
        "seconds": round(seconds, 1),
        "seconds_per_epoch": res.metrics["seconds_per_epoch"],
        "epochs_run": len(res.learn.recorder.values),
    }
    return _write_fold(table, result, out, fold_dir)


def fold_summary(fold_results: list[dict], key: str = "test") -> dict:
    """Mean and standard deviation over folds of every metric."""
    out: dict = {}
    for section in ("classification", "segmentation"):
        vals: dict[str, list] = {}
        for r in fold_results:
            for name, v in r[key].get(section, {}).items():
                if isinstance(v, float):
                    vals.setdefault(name, []).append(v)
        if vals:
            out[section] = {
                n: {"mean": float(np.nanmean(v)), "sd": float(np.nanstd(v, ddof=1)) if len(v) > 1 else None}
                for n, v in vals.items()
            }
    return out


def summarise_model(out: Path, fold_results: list[dict], n_boot: int, seed: int) -> dict:
    """Pooled out-of-fold scores with intervals, plus mean/sd over folds, for one model."""
    tables = [pd.read_csv(out / r["predictions"]) for r in fold_results]
    pooled = pd.concat(tables, ignore_index=True)
    summary = {"folds": [r["fold"] for r in fold_results], "n_test_images": int(len(pooled))}
    for suffix, name in (("", "main"), ("_tta", "tta")):
        summary[name] = {
            "pooled": score_table(pooled, suffix),
            "ci95": confidence_intervals(pooled, suffix, n_boot=n_boot, seed=seed),
            "over_folds": fold_summary(fold_results, "test" + suffix),
        }
    if "site" in pooled and pooled["site"].nunique() > 1:  # several sites: each one's pooled scores too
        summary["by_site"] = {site: {"n_test_images": int(len(t)), "pooled": score_table(t),
                                     "ci95": confidence_intervals(t, n_boot=n_boot, seed=seed)}
                              for site, t in pooled.groupby("site", sort=False)}
    summary["seconds"] = round(sum(r["seconds"] for r in fold_results), 1)
    summary["seconds_per_epoch"] = float(np.mean([r["seconds_per_epoch"] for r in fold_results]))
    summary["settings"] = fold_results[0]["settings"]
    summary["weights"] = fold_results[0]["weights"]
    summary["resolved_arch"] = fold_results[0]["resolved_arch"]
    summary["task"] = fold_results[0]["task"]
    return summary


# ---------------------------------------------------------------- the bench
def run_bench(
    data: str | Path,
    out: str | Path,
    models: Sequence[str] = STUDY_MODELS,
    profile: str = "cpu",
    k: int = 5,
    seed: int = 42,
    n_boot: int = 1000,
    folds: list[int] | None = None,
    log: Callable[[str], None] = print,
    protocol: str = "cv5",
    progress: bool = True,
    **overrides: object,
) -> dict:
    """Run the protocol for ``models`` and write ``results.json`` and ``RESULTS.md`` into ``out``. ``data``: a folder,
    or several sites (folds then stratified by site too, and scored per site); ``protocol``: ``"cv5"`` (``k`` folds)
    or ``"loso"`` (leave one site out); ``train_sites`` (an override): train on these, test on every site's folds."""
    start_processes()  # with several processes: join them now, so that the barriers below wait for each other
    if not is_main_process():
        log = _silent
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = subset(load_dataset(data), settings_for(profile, models[0], **overrides)["max_images"], seed)
    if protocol == "loso":
        fold_table = site_folds(df)
        k = len(site_names(df))
    elif protocol == "cv5":
        fold_table = kfold_split(df, k, seed)
    else:
        raise ValueError(f"protocol must be 'cv5' or 'loso', not {protocol!r}")
    if is_main_process():
        save_split(fold_table, out / "folds.csv")
    conflicts = duplicate_groups(df)
    conflicts = conflicts[conflicts["conflict"]]
    fold_of = dict(zip(fold_table["image_id"], fold_table["split"]))
    t_start = time.time()
    per_model: dict = {}
    for arch in models:
        wanted = folds if folds is not None else list(range(k)) if protocol == "loso" else folds_for(profile, arch, k)
        results = []
        for f in wanted:
            log(f"[bench] {arch} ({resolve_arch(arch, profile)}): fold {f + 1} of {k} "
                f"({len(results) + 1}/{len(wanted)} for this model), {time.time() - t_start:.0f} s so far")
            r = run_fold(df, fold_table, f, arch, profile, data, out, seed, progress, **overrides)
            log(f"[bench] {arch} fold {f + 1}: {_one_line(r['test'])}  ({r['seconds']:.0f} s)")
            results.append(r)
        per_model[arch] = {"fold_results": results,
                           **main_process_result(summarise_model, out, results, n_boot, seed)}
    pairs = {f"{a} - {b}": main_process_result(paired_difference, out, per_model[a], per_model[b], n_boot, seed)
             for a, b in PAIRS if a in per_model and b in per_model}
    results = {
        "protocol": {
            "name": (f"leave one site out ({', '.join(site_names(df))})" if protocol == "loso" else
                     f"{k}-fold cross-validation, stratified by class{' and site' if len(site_names(df)) > 1 else ''}"
                     ", grouped by near-duplicate group (by patient where a site gives patient ids)"),
            "sites": site_names(df),
            "train_sites": overrides.get("train_sites"),
            "k": k,
            "seed": seed,
            "profile": profile,
            "validation": "a group-aware 15% of the training folds; threshold = Youden's J on it",
            "bootstrap": f"{n_boot} resamples of duplicate groups over the pooled out-of-fold predictions",
            "label_conflict_groups": [
                {"members": list(g["members"]), "labels": list(g["labels"]),
                 "fold": int(fold_of[g["members"][0]])}
                for _, g in conflicts.iterrows() if g["members"][0] in fold_of
            ],
        },
        "data": {"folder": "|".join(map(str, data)) if isinstance(data, (list, tuple)) else str(data),
                 "n_images": int(len(df)),
                 "per_class": {k_: int(v) for k_, v in df["label"].value_counts().items()},
                 "per_site": {k_: int(v) for k_, v in df["site"].value_counts(sort=False).items()},
                 "fingerprint": dataset_fingerprint(df),
                 "is_real": all(resolve_data_dir(d)[1] for d in (data if isinstance(data, (list, tuple)) else [data]))},
        "study": STUDY,
        "models": per_model,
        "paired_differences": pairs,
        "wall_seconds": round(time.time() - t_start, 1),
        "environment": environment(),
    }
    if is_main_process():
        write_json(out / "results.json", results)
        atomic_write_bytes(out / "RESULTS.md", results_markdown(results).encode())
    barrier()  # no process returns before the results are written
    return results


def _silent(*args, **kwargs) -> None:
    """The log of the processes other than the main one (which prints for all)."""


def _one_line(scores: dict) -> str:
    parts = []
    c = scores.get("classification")
    if c:
        parts.append(f"acc {c['accuracy']:.3f} F1 {c['f1']:.3f} AUC {c['roc_auc']:.3f}")
    s = scores.get("segmentation")
    if s:
        parts.append(f"Dice {s['dice_pooled']:.3f} IoU {s['iou_pooled']:.3f} (pooled)")
    return "; ".join(parts)


# ----------------------------------------------------------------- RESULTS.md
def _cell(summary: dict, section: str, name: str, which: str = "main") -> str:
    s = summary[which]
    v = s["pooled"].get(section, {}).get(name)
    if v is None:
        return "–"
    lo, hi = s["ci95"].get(f"{section}.{name}", (np.nan, np.nan))
    txt = f"{v:.3f} ({lo:.2f}–{hi:.2f})"
    f = s.get("over_folds", {}).get(section, {}).get(name)
    if f and f["sd"] is not None:
        txt += f"<br>{f['mean']:.3f} ± {f['sd']:.3f}"
    return txt


def _settings_line(summary: dict) -> str:
    st = summary["settings"]
    if not st:
        return "no network: " + ("always benign" if summary["resolved_arch"] == "prior" else
                                 "logistic regression on 5 shape features of the true mask (an oracle)")
    enc = f", encoder {st['encoder']}" if summary["task"] != "classify" and summary["resolved_arch"] not in (
        "unet", "fcn") else ""
    return (f"{summary['resolved_arch']}{enc}, {st['image_size']} px, {st['epochs']} epochs, bs {st['batch_size']}, "
            f"{st['optimizer']} lr {st['lr']}, {summary['weights']}")


def _label(arch: str, summary: dict) -> str:
    """The model's name and where its weights came from, e.g. ``multitask · ImageNet``."""
    w = summary.get("weights", "")
    if w == "no network":
        return f"{arch} · {w}"
    return f"{arch} · {'ImageNet' if w.startswith('ImageNet') else 'from scratch'}" if w else arch


def results_markdown(r: dict) -> str:
    """RESULTS.md: one table per task, the study beside ours, the settings and what it can and cannot say."""
    p, env, data = r["protocol"], r["environment"], r["data"]
    models = r["models"]
    lines = [
        "# Results: every model under one leakage-free protocol",
        "",
        f"Data: {'the real BUSI' if data['is_real'] else 'a synthetic BUSI-like set'}, benign vs malignant, "
        f"{data['n_images']} scans ({', '.join(f'{k} {v}' for k, v in sorted(data['per_class'].items()))}); "
        f"fingerprint `{data['fingerprint'][:16]}`.",
        f"Protocol: {p['name']}; seed {p['seed']}; profile `{p['profile']}`. Validation: {p['validation']}. "
        f"Intervals: {p['bootstrap']}.",
        f"Machine: {env['machine']}, {env['processor']}, {env['cpu_count']} threads, "
        f"GPU: {env['cuda'] or 'none'}; torch {env['torch']}, fastai {env['fastai']}. "
        f"Training time of every fold: {sum(m['seconds'] for m in models.values()) / 60:.0f} min; wall time of "
        f"this invocation (finished folds are reused, not redone): {r['wall_seconds'] / 60:.0f} min.",
        "",
        "Each cell: the metric on the pooled out-of-fold test predictions with its 95 % bootstrap interval; "
        "below it, mean ± standard deviation over folds (where the model ran more than one fold).",
        "",
        "## Classification (malignant = positive)",
        "",
        "| model | folds | accuracy | precision | recall (sensitivity) | specificity | F1 | ROC-AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    st = r["study"]
    for arch, s in models.items():
        if "classification" in s["main"]["pooled"]:
            lines.append(f"| {_label(arch, s)} | {len(s['folds'])} | " + " | ".join(
                _cell(s, "classification", n) for n in CLS_METRICS) + " |")
    lines.append("| *study (multitask, one split)* | – | " + " | ".join(
        f"*{st['classification'][n]:.3f}*" if n in st["classification"] else "–" for n in CLS_METRICS) + " |")
    lines += ["", "With flip test-time augmentation (same thresholds):", "",
              "| model | accuracy | F1 | ROC-AUC |", "|---|---|---|---|"]
    for arch, s in models.items():
        if "classification" in s["tta"]["pooled"]:
            lines.append(f"| {arch} | " + " | ".join(
                _cell(s, "classification", n, "tta") for n in ("accuracy", "f1", "roc_auc")) + " |")
    lines += [
        "",
        "## Segmentation (pixel metrics; *pooled* sums pixels over all scans, *per image* averages scans)",
        "",
        "| model | folds | precision (pooled) | recall (pooled) | Dice (pooled) | IoU (pooled) "
        "| Dice (per image) | IoU (per image) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arch, s in models.items():
        if "segmentation" in s["main"]["pooled"]:
            cells = [_cell(s, "segmentation", f"{n}_pooled") for n in SEG_METRICS]
            cells += [_cell(s, "segmentation", f"{n}_per_image") for n in ("dice", "iou")]
            lines.append(f"| {_label(arch, s)} | {len(s['folds'])} | " + " | ".join(cells) + " |")
    lines.append("| *study (multitask, one split)* | – | " + " | ".join(
        f"*{st['segmentation'][n]:.3f}*" for n in SEG_METRICS) + " | – | – |")
    lines += ["", "With flip test-time augmentation:", "", "| model | Dice (pooled) | IoU (pooled) |", "|---|---|---|"]
    for arch, s in models.items():
        if "segmentation" in s["tta"]["pooled"]:
            lines.append(f"| {arch} | {_cell(s, 'segmentation', 'dice_pooled', 'tta')} | "
                         f"{_cell(s, 'segmentation', 'iou_pooled', 'tta')} |")
    if any("by_site" in s for s in models.values()):
        lines += ["", "## Per site (each site's pooled out-of-fold test scans)", "",
                  "| model | site | scans | sensitivity | specificity | ROC-AUC | Dice (pooled) |",
                  "|---|---|---|---|---|---|---|"]
        for arch, s in models.items():
            for site, b in s.get("by_site", {}).items():
                cells = [_cell({"main": b}, sec, n) for sec, n in (("classification", "recall"), (
                    "classification", "specificity"), ("classification", "roc_auc"), ("segmentation", "dice_pooled"))]
                lines.append(f"| {arch} | {site} | {b['n_test_images']} | " + " | ".join(cells) + " |")
    if r.get("paired_differences"):
        lines += ["", "## Paired differences (the same scans, the same bootstrap resamples of duplicate groups)", "",
                  "| pair | scans | ROC-AUC | accuracy | F1 | ROC-AUC, flip TTA |", "|---|---|---|---|---|---|"]
        for name, d in r["paired_differences"].items():
            cells = [f"{d['difference'][k]:+.3f} ({d['ci95'][k][0]:+.3f} to {d['ci95'][k][1]:+.3f})"
                     for k in ("roc_auc", "accuracy", "f1", "roc_auc_tta")]
            lines.append(f"| {name} | {d['n_images']} | " + " | ".join(cells) + " |")
    lines += ["", "## Settings and time", "", "| model | settings | time per epoch | training time (all folds) |",
              "|---|---|---|---|"]
    for arch, s in models.items():
        lines.append(f"| {arch} | {_settings_line(s)} | {s['seconds_per_epoch']:.0f} s | {s['seconds'] / 60:.1f} min |")
    conflicts = p["label_conflict_groups"]
    lines += [
        "",
        "## What this comparison can and cannot say",
        "",
        f"Our numbers come from {p['k']}-fold cross-validation in which near-duplicate scans never sit on both "
        f"sides of a split; {len(conflicts)} label-conflict groups (the same lesion filed under two classes) were "
        "kept whole in one fold, each copy scored with its own label. The study reports one number per metric "
        "from one split that is not published and may hold copies of test scans in its training data, which "
        "inflates scores; its numbers come with no interval. A difference smaller than the width of our "
        "intervals is not evidence that one model is better. Models that ran one fold are measured on about a "
        "fifth of the scans, so their intervals are wider. These models were trained on this machine's CPU "
        "(the settings above; *ImageNet* marks a model that started from ImageNet weights, *from scratch* one "
        "that started from random weights); the study used ImageNet weights for every model and a GPU, which "
        "`busi bench --profile gpu` reproduces on a machine that has them.",
        "",
    ]
    return "\n".join(lines)
