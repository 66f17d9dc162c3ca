"""Using a trained model on new scans: :func:`predict_folder` (``busi predict``), :func:`predict_files`,
:func:`predict_arrays`. The outputs, preprocessing, safety rules and exit status: docs/predict.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from busi_lib.apps.cam import grad_cam
from busi_lib.data.images import IMAGE_SUFFIXES, read_image
from busi_lib.data.table import LESION_CLASSES
from busi_lib.errors import BusiDataError
from busi_lib.evaluation.calibration import apply_temperature
from busi_lib.evaluation.ensemble import adapt_batchnorm, load_models
from busi_lib.evaluation.inference import predict_batch, preprocess, task_of_config
from busi_lib.files import atomic_write_bytes
from busi_lib.models.saving import config_normalization, use_operating_point

MASK_THRESHOLD = 0.5
COLUMNS = ["file", "width", "height", "probability", "label", "threshold", "lesion_area_px", "lesion_fraction",
           "mask_png", "overlay_png", "cam_png", "error"]


@dataclass
class Prediction:
    """What a model says about one scan. Fields its task does not give are None."""

    height: int
    width: int
    probability: float | None = None  # P(malignant), after the model's temperature if it has one
    label: str | None = None  # "benign" or "malignant"
    threshold: float | None = None  # the threshold the label was decided with (same scale as `probability`)
    mask: np.ndarray | None = field(default=None, repr=False)  # uint8 (height, width) in {0, 1}
    cam: np.ndarray | None = field(default=None, repr=False)  # float32 (height, width) in [0, 1]

    @property
    def lesion_area(self) -> int | None:
        return None if self.mask is None else int(self.mask.sum())

    @property
    def lesion_fraction(self) -> float | None:
        return None if self.mask is None else self.lesion_area / self.mask.size


# ------------------------------------------------------------------ the model
def decision_threshold(config: dict, threshold: float | None = None) -> tuple[float, float]:
    """``(temperature, threshold on the reported probability scale)``: a given ``threshold`` is on that scale; the
    saved one, chosen on raw probabilities, is mapped with the model's temperature; not in [0, 1]: ``ValueError``."""
    temperature = float(config.get("temperature", 1.0))
    if threshold is None:
        threshold = apply_temperature(float(config.get("threshold", 0.5)), temperature)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return temperature, float(threshold)


def predict_arrays(
    model: torch.nn.Module,
    config: dict,
    images: Iterable[np.ndarray],
    *,
    threshold: float | None = None,
    batch_size: int = 16,
    cam: bool = False,
) -> list[Prediction]:
    """Predict scans given as arrays: (H, W), (H, W, 3) or (H, W, 4), uint8 or 16-bit, any size. ``model, config`` as
    :func:`busi_lib.models.saving.load_model` returns them; ``threshold`` default: the model's
    (:func:`decision_threshold`); ``cam``: also the Grad-CAM map of each classification."""
    task = task_of_config(config)
    size = int(config["image_size"])
    temperature, thr = decision_threshold(config, threshold)
    if cam and task == "segment":
        raise ValueError("a segmentation-only model has no classification to explain: drop cam")
    if cam and len(config.get("members", [])) > 1:
        raise ValueError("Grad-CAM explains one network: give a single --model for --cam")
    device = next(model.parameters()).device
    model.eval()
    images = list(images)
    results = []
    for start in range(0, len(images), max(1, batch_size)):
        chunk = images[start : start + max(1, batch_size)]
        x = preprocess(chunk, size, config_normalization(config)).to(device)
        with torch.no_grad():
            prob, mask_prob = predict_batch(model, x, task)
        probs = None if prob is None else apply_temperature(prob.double().cpu().numpy(), temperature)
        mask_probs = None if mask_prob is None else mask_prob.float().cpu().numpy()
        labels = None if probs is None else (probs >= thr).astype(int)
        maps = grad_cam(model, config, x, labels) if cam else None
        for i, im in enumerate(chunk):
            h, w = np.asarray(im).shape[:2]
            p = Prediction(height=h, width=w)
            if probs is not None:
                p.probability, p.label, p.threshold = float(probs[i]), LESION_CLASSES[labels[i]], thr
            if mask_probs is not None:
                # resize the probability, not the binary mask, so the outline is smooth at any scan size
                full = cv2.resize(mask_probs[i], (w, h), interpolation=cv2.INTER_LINEAR)
                p.mask = (full >= MASK_THRESHOLD).astype(np.uint8)
            if maps is not None:
                p.cam = np.clip(cv2.resize(maps[i], (w, h), interpolation=cv2.INTER_LINEAR), 0, 1)
            results.append(p)
    return results


# ---------------------------------------------------------------- the pictures
def _caption(rgb: np.ndarray, text: str) -> None:
    """Write ``text`` in the top-left corner, white on a dark box, scaled to the picture."""
    h, w = rgb.shape[:2]
    scale = max(0.3, min(w, 2 * h) / 700)
    thick = max(1, round(scale * 1.5))
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    pad = max(2, th // 3)
    cv2.rectangle(rgb, (0, 0), (tw + 2 * pad, th + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(rgb, text, (pad, th + pad), font, scale, (255, 255, 255), thick, cv2.LINE_AA)


def caption_of(p: Prediction) -> str:
    """The one-line caption of a prediction's overlay: label, probability, threshold (and lesion area)."""
    parts = []
    if p.label is not None:
        parts.append(f"{p.label}  p={p.probability:.2f} (threshold {p.threshold:.2f})")
    if p.mask is not None:
        parts.append(f"lesion {100 * p.lesion_fraction:.1f}%")
    return "  |  ".join(parts)


def overlay_image(gray: np.ndarray, p: Prediction) -> np.ndarray:
    """The scan (RGB uint8) with the predicted mask's outline and the caption."""
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    if p.mask is not None and p.mask.any():
        contours, _ = cv2.findContours(p.mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        color = (255, 60, 60) if p.label == "malignant" else (60, 255, 60)
        cv2.drawContours(rgb, contours, -1, color, max(1, round(min(gray.shape) / 150)))
    _caption(rgb, caption_of(p))
    return rgb


def cam_image(gray: np.ndarray, p: Prediction) -> np.ndarray:
    """The Grad-CAM map as a JET heatmap over the scan (RGB uint8), half and half, with a caption."""
    heat = cv2.cvtColor(cv2.applyColorMap(np.uint8(np.rint(255 * p.cam)), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    # pytorch_grad_cam's show_cam_on_image blends in float32 (24 bytes a pixel, 1.5 GB more at 8000 x 8000);
    # this uint8 blend gives the same picture.
    rgb = cv2.addWeighted(cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), 0.5, heat, 0.5, 0)
    _caption(rgb, f"Grad-CAM: evidence for {p.label}  p={p.probability:.2f}")
    return rgb


def png_bytes(arr: np.ndarray) -> bytes:
    """PNG of a gray (H, W) or RGB (H, W, 3) uint8 array."""
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


# ------------------------------------------------------------- files and folders
def find_images(inputs: Iterable[str | Path]) -> list[Path]:
    """The scans named by ``inputs`` (files, and folders walked recursively), skipping masks and hidden files."""
    found: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_file():
            found.append(item)  # a file named explicitly is predicted whatever its name
        elif item.is_dir():
            scans = sorted(
                p for p in item.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and "_mask" not in p.name.lower()
                and not any(part.startswith(".") for part in p.relative_to(item).parts)
            )
            if not scans:
                raise BusiDataError(
                    item, f"no scans found (looked for {' '.join(IMAGE_SUFFIXES)} files; *_mask* files are skipped)"
                )
            found.extend(scans)
        else:
            raise BusiDataError(item, "not found")
    if not found:
        raise BusiDataError(None, "no input scans given")
    return list(dict.fromkeys(found))  # a file given twice is predicted once


def check_output_folder(out: str | Path, inputs: Iterable[str | Path]) -> Path:
    """Refuse an output folder that would put outputs among the inputs."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BusiDataError(out, "--out is a file, not a folder")
    target = out.resolve()
    for item in map(Path, inputs):
        if item.is_dir():
            folder = item.resolve()
            if target == folder or folder in target.parents:
                raise BusiDataError(out, f"the output folder is inside the input folder {item}: choose another --out")
        elif item.is_file() and target == item.resolve().parent:
            raise BusiDataError(out, f"the output folder holds the input {item.name}: choose another --out")
    return out


def _names(paths: Sequence[Path]) -> list[str]:
    """Output name stems: the scan's name without suffix, made unique with -2, -3, ..."""
    used, names = set(), []
    for p in paths:
        name, n = p.stem, 1
        while name.lower() in used:
            n += 1
            name = f"{p.stem}-{n}"
        used.add(name.lower())
        names.append(name)
    return names


@dataclass
class PredictReport:
    """The outcome of :func:`predict_files`: the table written to ``predictions.csv`` and where it is."""

    table: pd.DataFrame
    csv: Path
    adaptation: dict | None = None  # what --adapt-bn did (None without it)
    operating_point: str = ""  # which threshold was used, and on which site's scans it was chosen

    @property
    def failed(self) -> pd.DataFrame:
        return self.table[self.table["error"].notna()]

    @property
    def done(self) -> pd.DataFrame:
        return self.table[self.table["error"].isna()]


def predict_files(
    model: torch.nn.Module,
    config: dict,
    inputs: Iterable[str | Path],
    out: str | Path,
    *,
    threshold: float | None = None,
    batch_size: int = 16,
    cam: bool = False,
) -> PredictReport:
    """Predict scan files and folders into ``out``: masks, overlays, CAMs and ``predictions.csv``. Unreadable files
    do not stop the run: each gets a row with its ``error``."""
    inputs = [Path(i) for i in inputs]
    paths = find_images(inputs)
    out = check_output_folder(out, inputs)
    task = task_of_config(config)
    cam = cam and task != "segment"
    if cam and len(config.get("members", [])) > 1:
        raise BusiDataError(None, "Grad-CAM explains one network: give a single --model for --cam")
    out.mkdir(parents=True, exist_ok=True)
    protected = {p.resolve() for p in paths}
    rows: list[dict] = []
    csv = out / "predictions.csv"
    names = _names(paths)
    step = max(1, batch_size)
    for start in range(0, len(paths), step):
        batch = list(zip(paths[start : start + step], names[start : start + step]))
        done, scans = {}, []
        for path, name in batch:
            try:
                scans.append((path, name, read_image(path)))
            except BusiDataError as e:
                done[path] = dict(file=str(path), error=e.reason)
        preds = predict_arrays(model, config, [s[2] for s in scans], threshold=threshold, batch_size=step, cam=cam)
        for (path, name, gray), p in zip(scans, preds):
            files = {}
            if p.mask is not None:
                files["mask_png"] = (f"{name}_mask.png", np.uint8(p.mask) * 255)
            files["overlay_png"] = (f"{name}_overlay.png", overlay_image(gray, p))
            if p.cam is not None:
                files["cam_png"] = (f"{name}_cam.png", cam_image(gray, p))
            for fname, arr in files.values():
                target = out / fname
                if target.resolve() in protected:  # never reached with a checked --out; kept as the last guard
                    raise BusiDataError(target, "would overwrite an input scan")
                atomic_write_bytes(target, png_bytes(arr))
            done[path] = dict(
                file=str(path), width=p.width, height=p.height, probability=p.probability, label=p.label,
                threshold=p.threshold, lesion_area_px=p.lesion_area, lesion_fraction=p.lesion_fraction,
                **{k: v[0] for k, v in files.items()},
            )
        rows += [done[path] for path, _ in batch]  # in input order
        table = pd.DataFrame(rows, columns=COLUMNS)
        atomic_write_bytes(csv, table.to_csv(index=False).encode())
    return PredictReport(table, csv)


def best_device() -> str:
    """The GPU when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def predict_folder(model_dir: str | Path | Sequence[str | Path], inputs: Iterable[str | Path], out: str | Path, *,
                   adapt_bn: bool | None = None, operating_point: str | None = None, **kwargs: Any) -> PredictReport:
    """``busi predict``: load a saved model or ensemble (on the GPU if there is one) and run :func:`predict_files`.
    ``adapt_bn``: first re-estimate BatchNorm statistics on the readable inputs, in memory only (``None``: as the
    saved model says); ``operating_point``: a saved one (``"youden"``, ``"sensitivity_95"``), not the model's."""
    model, config = load_models(model_dir if isinstance(model_dir, (list, tuple)) else [model_dir],
                                device=best_device())
    config = use_operating_point(config, operating_point)
    if adapt_bn is None:  # as the threshold was chosen: a site's re-tuned threshold on BatchNorm-adapted scans
        adapt_bn = bool(config.get("adapt_bn", False))
    adaptation = None
    if adapt_bn:
        inputs = [Path(i) for i in inputs]
        size = int(config["image_size"])
        scans = []
        for path in find_images(inputs):
            try:  # kept at the model's size only: a folder of big scans does not fill the memory
                scans.append(cv2.resize(read_image(path), (size, size), interpolation=cv2.INTER_AREA))
            except BusiDataError:
                continue  # reported by predict_files
        adaptation = adapt_batchnorm(model, config, scans, batch_size=kwargs.get("batch_size", 16))
    rep = predict_files(model, config, inputs, out, **kwargs)
    rep.adaptation = adaptation
    rep.operating_point = operating_point_text(config, kwargs.get("threshold"))
    if adaptation:
        rep.operating_point += f"; BatchNorm statistics re-estimated on these {adaptation['n_images']} scans"
    return rep


def operating_point_text(config: dict, threshold: float | None = None) -> str:
    """One plain sentence: the threshold used, which operating point it is, and on which site it was chosen."""
    if threshold is not None:
        return f"threshold {threshold:.3f}, given on the command line"
    _, thr = decision_threshold(config)
    cal = config.get("calibrated_on") or {}
    sites = ", ".join(cal.get("sites") or []) or "its training data"
    point = config.get("operating_point") or "youden"
    how = ("re-tuned on a labelled part of" if point == "site"
           else f"the {point} operating point, chosen on validation scans of")
    return (f"threshold {thr:.3f}: {how} {sites}. It holds at that site only; at another site re-tune it first "
            "(busi evaluate --calibration-size N --save-model DIR)")


# --------------------------------------------------------------------- speed
def measure_speed(model: torch.nn.Module, config: dict, batch_size: int = 16, n_images: int = 64,
                  seed: int = 0) -> dict:
    """Images per second of :func:`predict_arrays` on scans of the model's image size, in batches and one by one:
    the whole prediction without file I/O (``tools/speed.py`` times the network alone)."""
    size = int(config["image_size"])
    images = list(np.random.default_rng(seed).integers(0, 256, (n_images, size, size), dtype=np.uint8))
    predict_arrays(model, config, images[:batch_size], batch_size=batch_size)  # warm-up
    t0 = time.perf_counter()
    predict_arrays(model, config, images, batch_size=batch_size)
    batch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for im in images:
        predict_arrays(model, config, [im], batch_size=1)
    single_s = time.perf_counter() - t0
    return dict(
        arch=config["arch"], encoder=config.get("encoder"), image_size=size, batch_size=batch_size, n_images=n_images,
        images_per_s_batch=round(n_images / batch_s, 1), images_per_s_single=round(n_images / single_s, 1),
        threads=torch.get_num_threads(), device=str(next(model.parameters()).device),
    )
