"""The BUSI dataset as one tidy table, one row per scan (the folder layout: docs/library.md).
Nothing here writes into the data folder."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from busi_lib.data.duplicates import phash_hex
from busi_lib.data.images import IMAGE_SUFFIXES, read_image, read_mask
from busi_lib.errors import BusiDataError

#: BUSI's three folders in ``target`` order: the one place the class names are written.
CLASSES = ("benign", "malignant", "normal")
#: The course's main question, benign (0) against malignant (1, the positive class).
LESION_CLASSES = CLASSES[:2]
#: The label sets :func:`load_dataset` keeps ("task" is a model's kind, classify / segment / multitask).
LABEL_SETS = {"binary": LESION_CLASSES, "three_class": CLASSES}

MASK_RE = re.compile(r"^(?P<stem>.+?)_mask(?:_(?P<k>\d+))?$")


@dataclass
class ScanReport:
    """What :func:`scan_folder` found besides the table: rejected files and their reasons."""

    rejected: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: Path, reason: str) -> None:
        self.rejected.append((str(path), reason))


def check_data_folder(root: str | Path) -> Path:
    """``root`` as a Path, or a clear error if it is missing or not a folder."""
    root = Path(root)
    if not root.exists():
        raise BusiDataError(root, "data folder does not exist")
    if not root.is_dir():
        raise BusiDataError(root, "data path is not a folder")
    return root


def _class_folders(root: Path) -> list[Path]:
    root = check_data_folder(root)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p for p in subdirs if p.name not in CLASSES]
    if unknown:
        raise BusiDataError(
            unknown[0], f"unknown class folder '{unknown[0].name}' (expected only {', '.join(CLASSES)})"
        )
    if not subdirs:
        raise BusiDataError(root, f"data folder is empty: no class folders ({', '.join(CLASSES)}) inside")
    return subdirs


def scan_folder(
    root: str | Path,
    *,
    require_masks: bool = True,
    skip_bad: bool = False,
    report: ScanReport | None = None,
) -> pd.DataFrame:
    """One row per scan of a BUSI-layout folder, each image decoded; ``require_masks``: a scan without a mask is an
    error; ``skip_bad``: bad files go to ``report``. Columns: ``image_id``, ``label``, ``path``, ``mask_paths``
    (``|``-separated, sorted), ``n_masks``, ``width``, ``height``, ``lesion_area`` (union mask pixels),
    ``lesion_fraction``, ``phash``."""
    root = Path(root)
    report = report if report is not None else ScanReport()
    rows = []
    for cls_dir in _class_folders(root):
        files = sorted(p for p in cls_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        masks: dict[str, list[Path]] = {}
        images: list[Path] = []
        for p in files:
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                report.add(p, "not an image file (unexpected suffix)")
                continue
            m = MASK_RE.match(p.stem)
            if m:
                masks.setdefault(m.group("stem"), []).append(p)
            else:
                images.append(p)
        stems = {p.stem for p in images}
        for stem, mps in masks.items():
            if stem not in stems:
                for mp in mps:
                    report.add(mp, "mask file without an image")
        for img_path in images:
            mask_paths = sorted(masks.get(img_path.stem, []), key=lambda q: q.name)
            try:
                if require_masks and not mask_paths:
                    raise BusiDataError(img_path, f"image has no mask file ({img_path.stem}_mask.png)")
                img = read_image(img_path)  # decodes fully: catches truncated files now
                h, w = img.shape
                area = int(read_mask(mask_paths, shape=(h, w)).sum()) if mask_paths else -1
            except BusiDataError as e:
                if not skip_bad:
                    raise
                report.add(e.path or img_path, e.reason)
                continue
            rows.append(
                dict(
                    image_id=img_path.stem,
                    label=cls_dir.name,
                    path=str(img_path),
                    mask_paths="|".join(str(q) for q in mask_paths),
                    n_masks=len(mask_paths),
                    width=w,
                    height=h,
                    lesion_area=area,
                    lesion_fraction=area / (w * h) if area >= 0 else np.nan,
                    # the perceptual hash is taken from this one decode (busi_lib.data.duplicates uses it)
                    phash=phash_hex(img),
                )
            )
    if not rows:
        raise BusiDataError(root, "no readable images found in the class folders")
    df = pd.DataFrame(rows)
    df.attrs["root"] = str(root)
    df.attrs["rejected"] = list(report.rejected)
    return df


def mask_paths_of(row: pd.Series) -> list[str]:
    """The list of mask files of one table row."""
    s = row["mask_paths"]
    return [p for p in s.split("|") if p] if isinstance(s, str) else []


def select_labels(df: pd.DataFrame, labels: str = "binary") -> pd.DataFrame:
    """Keep the rows of a label set (:data:`LABEL_SETS`) and add its integer ``target`` column."""
    if labels not in LABEL_SETS:
        raise ValueError(f"unknown label set {labels!r}; choose one of {sorted(LABEL_SETS)}")
    classes = LABEL_SETS[labels]
    out = df[df["label"].isin(classes)].copy()
    out["target"] = out["label"].map({c: i for i, c in enumerate(classes)}).astype(int)
    out.attrs.update(df.attrs)
    out.attrs["labels"] = labels
    out.attrs["classes"] = list(classes)
    return out.reset_index(drop=True)


def load_pair(row: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Decode one table row at its own size: (image uint8 (H, W), mask {0,1} (H, W))."""
    img = read_image(row["path"])
    mps = mask_paths_of(row)
    mask = read_mask(mps, shape=img.shape) if mps else np.zeros(img.shape, np.uint8)
    return img, mask


def pos_weight(targets: ArrayLike) -> float:
    """``n_negative / n_positive``: the BCEWithLogits ``pos_weight`` that balances the classes (training split only)."""
    t = np.asarray(targets)
    n_pos = int((t == 1).sum())
    if n_pos == 0:
        raise ValueError("no positive (malignant) example in the training targets")
    return float((t == 0).sum()) / n_pos


def dataset_fingerprint(df: pd.DataFrame) -> str:
    """A short hash of which scans, with which labels (and pixel hashes, if known), a table holds: saved with every
    model and result, so a number can be traced to its data."""
    cols = [c for c in ("image_id", "label", "phash") if c in df]
    rows = sorted(map(tuple, df[cols].astype(str).to_numpy()))
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]
