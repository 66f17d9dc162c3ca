"""Decode once, train many times: the dataset table and resized arrays, cached in ``$BUSI_CACHE_DIR``.
An entry's name hashes the files' paths, sizes and mtimes: any change to the files makes a new entry."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from filelock import FileLock

from busi_lib.data.duplicates import PHASH_THRESHOLD, add_duplicate_groups
from busi_lib.data.table import load_pair, scan_folder
from busi_lib.files import atomic_write_bytes, temp_path_for

CACHE_VERSION = 2


def cache_root(path: str | Path | None = None) -> Path:
    """The cache folder: ``path``, else ``$BUSI_CACHE_DIR``, else ``~/.cache/busi_lib``."""
    p = Path(path or os.environ.get("BUSI_CACHE_DIR") or Path.home() / ".cache" / "busi_lib")
    p.mkdir(parents=True, exist_ok=True)
    return p


def folder_key(root: str | Path, *extra: object) -> str:
    """A hash of every file's relative path, size and mtime under ``root`` (plus ``extra``)."""
    root = Path(root).resolve()
    h = hashlib.sha256(f"v{CACHE_VERSION}|{root}|{extra}".encode())
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _table_path(root: str | Path, skip_bad: bool, duplicates: bool, require_masks: bool,
                cache_dir: str | Path | None) -> Path:
    key = folder_key(root, "table", skip_bad, duplicates, require_masks, PHASH_THRESHOLD)
    return cache_root(cache_dir) / f"table-{key}.json"


def has_cached_table(root: str | Path, *, cache_dir: str | Path | None = None) -> bool:
    """Whether :func:`cached_table` with its defaults (the table training reads) is in the cache for ``root``
    as it is now, so that reading it decodes nothing."""
    return _table_path(root, False, True, True, cache_dir).exists()


def cached_table(
    root: str | Path,
    *,
    skip_bad: bool = False,
    duplicates: bool = True,
    require_masks: bool = True,
    cache_dir: str | Path | None = None,
) -> pd.DataFrame:
    """:func:`~busi_lib.data.table.scan_folder` plus duplicate groups, cached; ``df.attrs["rejected"]`` keeps what
    ``skip_bad`` left out."""
    path = _table_path(root, skip_bad, duplicates, require_masks, cache_dir)
    # One process scans, the others wait for its table (two notebooks or test workers started together would
    # otherwise decode the same folder side by side): a lock file beside the entry.
    with FileLock(f"{path}.lock"):
        if path.exists():
            blob = json.loads(path.read_text())
            df = pd.DataFrame(blob["rows"])
            df.attrs.update(blob["attrs"])
            return df
        df = scan_folder(root, skip_bad=skip_bad, require_masks=require_masks)
        if duplicates:
            df = add_duplicate_groups(df)
        blob = {"rows": df.to_dict(orient="records"), "attrs": df.attrs}
        atomic_write_bytes(path, json.dumps(blob, default=str).encode())
        return df


def resize_pair(img: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a scan (area interpolation) and its mask (nearest neighbour, stays binary) to size x size."""
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return img, mask


def cached_arrays(df: pd.DataFrame, size: int, cache_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images, masks)`` of every row of ``df``: uint8 ``(N, size, size)`` in row order, masks in {0, 1}."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{size}".encode())
    for p, mp in zip(df["path"], df["mask_paths"]):
        for q in [p, *[m for m in str(mp).split("|") if m]]:
            st = Path(q).stat()
            h.update(f"{Path(q).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    path = cache_root(cache_dir) / f"arrays-{size}-{h.hexdigest()[:20]}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["images"], z["masks"]
    images = np.empty((len(df), size, size), np.uint8)
    masks = np.empty((len(df), size, size), np.uint8)
    for i, (_, row) in enumerate(df.iterrows()):
        images[i], masks[i] = resize_pair(*load_pair(row), size)
    tmp = temp_path_for(path)
    with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, images=images, masks=masks)
    os.replace(tmp, path)
    return images, masks
