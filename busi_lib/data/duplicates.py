"""Near-duplicate scans: find them (perceptual hashes), group them (``dup_group``), report label conflicts.
Why splits keep each group together, and how the threshold was chosen: docs/library.md."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from busi_lib.data.images import read_image

#: Largest Hamming distance (bits out of 64) between pHashes of near-duplicates.
PHASH_THRESHOLD = 10


def phash_bits(img: np.ndarray) -> np.ndarray:
    """The 64 pHash bits of a grayscale uint8 image, as a bool array."""
    return imagehash.phash(Image.fromarray(img)).hash.flatten().astype(bool)


def phash_hex(img: np.ndarray) -> str:
    """The pHash of a grayscale uint8 image as 16 hex characters (the table's ``phash`` column)."""
    return np.packbits(phash_bits(img)).tobytes().hex()


def hash_paths(paths: Iterable[str | Path]) -> np.ndarray:
    """pHash bits (N, 64) of a list of scan files."""
    return np.stack([phash_bits(read_image(p)) for p in paths])


def hamming_matrix(bits: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances between rows of a (N, 64) bool array."""
    b = bits.astype(np.uint8)
    # distance = #bits where they differ = a.(1-b) + (1-a).b
    return (b @ (1 - b).T + (1 - b) @ b.T).astype(np.int32)


def group_ids(dist: np.ndarray, threshold: int = PHASH_THRESHOLD) -> np.ndarray:
    """Connected components of ``dist <= threshold``, numbered 0.. in order of first member."""
    _, labels = connected_components(csr_matrix(dist <= threshold), directed=False)
    # renumber so the group ids follow the row order (stable and readable)
    _, first = np.unique(labels, return_index=True)
    order = {old: new for new, old in enumerate(labels[np.sort(first)])}
    return np.array([order[x] for x in labels], dtype=int)


def add_duplicate_groups(
    df: pd.DataFrame, threshold: int = PHASH_THRESHOLD, bits: np.ndarray | None = None
) -> pd.DataFrame:
    """Add ``dup_group``, ``group_size`` and ``phash`` columns to a dataset table; the hashes come from ``bits``,
    else the ``phash`` column, else the scans are read here."""
    if bits is None:
        bits = bits_from_hex(df["phash"]) if "phash" in df else hash_paths(df["path"])
    out = df.copy()
    out["phash"] = [np.packbits(b).tobytes().hex() for b in bits]
    out["dup_group"] = group_ids(hamming_matrix(bits), threshold)
    out["group_size"] = out.groupby("dup_group")["dup_group"].transform("size")
    out.attrs.update(df.attrs)
    out.attrs["phash_threshold"] = threshold
    return out


def bits_from_hex(hexes: Iterable[str]) -> np.ndarray:
    """Inverse of the ``phash`` column: (N, 64) bool bits."""
    return np.stack([np.unpackbits(np.frombuffer(bytes.fromhex(h), np.uint8)).astype(bool) for h in hexes])


def duplicate_groups(df: pd.DataFrame) -> pd.DataFrame:
    """One row per group with more than one scan: its members, labels and whether they conflict."""
    multi = df[df["group_size"] > 1]
    rows = []
    for gid, g in multi.groupby("dup_group", sort=True):
        labels = sorted(set(g["label"]))
        rows.append(
            dict(
                dup_group=gid,
                size=len(g),
                members=list(g["image_id"]),
                labels=labels,
                conflict=len(set(labels) - {"normal"}) > 1 or (len(labels) > 1 and "normal" in labels),
            )
        )
    return pd.DataFrame(rows, columns=["dup_group", "size", "members", "labels", "conflict"])


def label_conflicts(df: pd.DataFrame) -> pd.DataFrame:
    """Groups whose members carry different labels (e.g. one copy benign, one malignant)."""
    g = duplicate_groups(df)
    return g[g["conflict"]].reset_index(drop=True)
