"""Two baselines without a network, the bench's first rows: ``prior`` (all benign, score 0) and ``shape_oracle``
(a logistic regression on the *true* masks' :func:`shape_features`: an oracle, not a deployable model). Each is fitted
on a fold's training part, its threshold chosen on the validation part (Youden's J); see docs/library.md."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from busi_lib.data.table import load_pair
from busi_lib.evaluation.metrics import best_threshold

SHAPE_FEATURES = ("log_area", "circularity", "solidity", "taller_than_wide", "roughness")
BASELINES = ("prior", "shape_oracle")


def shape_features(mask: np.ndarray) -> dict[str, float]:
    """Five features of a lesion mask ({0,1}, any size) from its largest outline: ``log_area`` (log of its share
    of the scan), ``circularity`` (4πA / P², 1 for a disc), ``solidity`` (area / hull area), ``taller_than_wide``
    (bounding-box height / width), ``roughness`` (perimeter / hull perimeter, 1 for a smooth margin)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        raise ValueError("empty mask: a lesion scan needs an outline")
    c = max(contours, key=cv2.contourArea)
    area, perimeter = max(cv2.contourArea(c), 1.0), max(cv2.arcLength(c, True), 1.0)
    hull = cv2.convexHull(c)
    _, _, w, h = cv2.boundingRect(c)
    return {
        "log_area": float(np.log(max(int(mask.sum()), 1) / mask.size)),
        "circularity": float(4 * np.pi * area / perimeter**2),
        "solidity": float(area / max(cv2.contourArea(hull), 1.0)),
        "taller_than_wide": float(h / w),
        "roughness": float(perimeter / max(cv2.arcLength(hull, True), 1.0)),
    }


def shape_table(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`shape_features` of every row's mask, indexed like ``df``."""
    return pd.DataFrame([shape_features(load_pair(row)[1]) for _, row in df.iterrows()], index=df.index)


def baseline_predictions(name: str, df: pd.DataFrame, split: pd.DataFrame,
                         features: pd.DataFrame | None = None) -> tuple[np.ndarray, float]:
    """Malignancy probabilities of the test rows of ``split`` and the threshold chosen on its validation rows.
    ``df`` and ``split`` share their row order; ``features`` (:func:`shape_table` of ``df``) avoids decoding again."""
    part = split["split"].to_numpy()
    y = df["target"].to_numpy()
    if name == "prior":  # the majority class, benign: one score for every scan of every fold, below the threshold
        return np.zeros((part == "test").sum()), 1.0
    if name != "shape_oracle":
        raise ValueError(f"unknown baseline {name!r}: choose one of {', '.join(BASELINES)}")
    x = (features if features is not None else shape_table(df))[list(SHAPE_FEATURES)].to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))
    model.fit(x[part == "train"], y[part == "train"])
    threshold = best_threshold(y[part == "valid"], model.predict_proba(x[part == "valid"])[:, 1])
    return model.predict_proba(x[part == "test"])[:, 1], float(threshold)
