"""Seeded, stratified, duplicate-group-aware splits, saved as CSV.
A split is a table ``image_id, label, dup_group, split`` (``train``/``valid``/``test``, or a fold number); all copies of
a scan land on one side (docs/library.md)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from busi_lib.errors import BusiDataError

SPLIT_COLUMNS = ["image_id", "label", "dup_group", "split"]


def _groups(df: pd.DataFrame) -> np.ndarray:
    if "dup_group" in df:
        return df["dup_group"].to_numpy()
    return np.arange(len(df))  # no duplicate information: every scan its own group


def _kfold_indices(df: pd.DataFrame, k: int, seed: int):
    # StratifiedGroupKFold wants one label per group: a label-conflict group takes its most frequent target.
    y = df["target"].to_numpy() if "target" in df else pd.factorize(df["label"])[0]
    if "site" in df and df["site"].nunique() > 1:  # several sites: each keeps its share of each class per fold
        y = pd.factorize(df["site"].astype(str) + "|" + pd.Series(y, index=df.index).astype(str))[0]
    groups = _groups(df)
    y_group = pd.Series(y).groupby(groups).agg(lambda s: s.value_counts().idxmax())
    y_strat = y_group.loc[groups].to_numpy()
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a small site's class with fewer members than folds: sklearn still keeps
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)  # groups whole and balances
        try:
            return list(cv.split(np.zeros(len(df)), y_strat, groups))
        except ValueError as e:  # scikit-learn's own words, with what was being split
            raise ValueError(f"{len(df)} scans cannot be split into {k} parts, groups whole: {e}") from None


def kfold_split(df: pd.DataFrame, k: int = 5, seed: int = 42) -> pd.DataFrame:
    """Assign every scan to one of ``k`` folds (``split`` column = fold number 0..k-1)."""
    fold = np.empty(len(df), int)
    for i, (_, test_idx) in enumerate(_kfold_indices(df, k, seed)):
        fold[test_idx] = i
    out = df[[c for c in SPLIT_COLUMNS[:-1] if c in df]].copy()
    out["split"] = fold
    return out.reset_index(drop=True)


def train_valid_test_split(
    df: pd.DataFrame, valid_frac: float = 0.15, test_frac: float = 0.15, seed: int = 42
) -> pd.DataFrame:
    """A three-way split: first the test part, then the validation part of the rest. Fractions are approximate, as
    groups are kept whole."""
    if not (0 < test_frac < 1 and 0 <= valid_frac < 1 and valid_frac + test_frac < 1):
        raise ValueError("valid_frac and test_frac must be in (0, 1) and sum to less than 1")
    split = np.array(["train"] * len(df), dtype=object)
    k_test = max(2, round(1 / test_frac))
    rest, test = _kfold_indices(df, k_test, seed)[0]
    split[test] = "test"
    if valid_frac > 0:
        rest_df = df.iloc[rest]
        k_valid = max(2, round((1 - test_frac) / valid_frac))
        _, valid = _kfold_indices(rest_df, k_valid, seed + 1)[0]
        split[rest[valid]] = "valid"
    out = df[[c for c in SPLIT_COLUMNS[:-1] if c in df]].copy()
    out["split"] = split
    return out.reset_index(drop=True)


def save_split(split: pd.DataFrame, path: str | Path) -> Path:
    """Write a split table to CSV (creates the parent folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    split[[c for c in SPLIT_COLUMNS if c in split]].to_csv(path, index=False)
    return path


def load_split(path: str | Path, df: pd.DataFrame | None = None) -> pd.DataFrame:
    """Read a split CSV; with ``df``, check it names exactly the scans of ``df``."""
    path = Path(path)
    if not path.is_file():
        raise BusiDataError(path, "split file not found")
    try:
        split = pd.read_csv(path)
    except Exception as e:  # pandas raises many types for a malformed CSV
        raise BusiDataError(path, f"not a readable CSV ({str(e).strip()})") from None
    missing = {"image_id", "split"} - set(split.columns)
    if missing:
        raise BusiDataError(path, f"split CSV lacks column(s) {sorted(missing)}")
    if split["image_id"].duplicated().any():
        dup = split.loc[split["image_id"].duplicated(), "image_id"].iloc[0]
        raise BusiDataError(path, f"image '{dup}' appears twice")
    if df is not None:
        unknown = sorted(set(split["image_id"]) - set(df["image_id"]))
        if unknown:
            raise BusiDataError(path, f"{len(unknown)} image(s) not in the dataset, e.g. '{unknown[0]}'")
        absent = sorted(set(df["image_id"]) - set(split["image_id"]))
        if absent:
            raise BusiDataError(path, f"{len(absent)} image(s) of the dataset have no split, e.g. '{absent[0]}'")
    return split


def apply_split(df: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the ``split`` column of a split table, matched on ``image_id``."""
    out = df.drop(columns=["split"], errors="ignore").merge(split[["image_id", "split"]], on="image_id", how="left")
    out.attrs.update(df.attrs)
    return out


def groups_straddling(df: pd.DataFrame, split: pd.DataFrame) -> list[int]:
    """Duplicate groups found on more than one side of a split (should be empty)."""
    m = apply_split(df, split)
    sides = m.groupby("dup_group")["split"].nunique()
    return sorted(int(g) for g in sides[sides > 1].index)


def split_report(df: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """Counts per side and class, with the malignant fraction: a table to print."""
    m = apply_split(df, split)
    t = pd.crosstab(m["split"], m["label"])
    if "malignant" in t:
        t["malignant_fraction"] = (t["malignant"] / t.sum(axis=1)).round(3)
    return t


def cv_fold_split(
    df: pd.DataFrame, folds: pd.DataFrame, test_fold: int, valid_frac: float = 0.15, seed: int = 42
) -> pd.DataFrame:
    """Train / valid / test for one fold of cross-validation: ``test_fold`` is the test part, and the validation part
    (for the threshold and other early decisions) a group-aware, stratified ``valid_frac`` of the *other* folds."""
    m = apply_split(df, folds)
    rest = np.flatnonzero(m["split"].astype(int).to_numpy() != test_fold)
    split = np.where(m["split"].astype(int) == test_fold, "test", "train").astype(object)
    k_valid = max(2, round(1 / valid_frac))
    _, valid = _kfold_indices(df.iloc[rest], k_valid, seed + test_fold)[0]
    split[rest[valid]] = "valid"
    out = df[[c for c in SPLIT_COLUMNS[:-1] if c in df]].copy()
    out["split"] = split
    return out.reset_index(drop=True)
