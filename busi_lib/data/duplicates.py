"""Near-duplicate scans: find them, group them, report label conflicts.

About a fifth of BUSI is the same scan stored more than once (re-saved, slightly
cropped, or once in ``benign/`` and once in ``malignant/``). A split that puts
one copy in training and the other in the test set measures memory, not
diagnosis. So every scan gets a ``dup_group`` id, and splits keep a group
together (see :mod:`busi_lib.data.splits`).

How: a 64-bit perceptual hash (``imagehash.phash``: the signs of the lowest
DCT frequencies of the scan shrunk to 32x32) of every scan; two scans whose
hashes differ in at most :data:`PHASH_THRESHOLD` bits are near-duplicates, and
groups are the connected components of that relation (union-find).

The threshold was chosen on the real BUSI (``tests/data/test_real_data.py`` checks
it): the known pairs ``benign (10)``/``benign (327)`` and
``benign (433)``/``malignant (145)`` fall well inside it, while the distance
between unrelated scans is around 32 bits (half of 64), with very few below 14.
"""

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
    """Add ``dup_group`` and ``group_size`` columns (and ``phash``, if missing) to a dataset table.

    The hashes come from ``bits`` if given, else from the table's ``phash`` column
    (:func:`busi_lib.data.table.scan_folder` fills it from its one decode of each scan),
    else the scans are read and hashed here.
    """
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
