"""A BUSI folder, ready to train on: :func:`load_dataset` (scan, cache, duplicate groups, a label set) and
:func:`resolve_data_dir` (the folder given, ``$BUSI_DATA_DIR``, or a synthetic BUSI).
Above ``table``, ``cache`` and ``synthetic``, so those three stay free of each other's imports."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from busi_lib.data.cache import cache_root, cached_table
from busi_lib.data.sites import is_csv_site, load_sites, site_name
from busi_lib.data.synthetic import make_synthetic_busi
from busi_lib.data.table import select_labels
from busi_lib.errors import BusiDataError


def load_dataset(
    root: str | Path | list,
    labels: str = "binary",
    *,
    duplicates: bool = True,
    skip_bad: bool = False,
    cache_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Scan a BUSI folder, find near-duplicate groups, and keep the rows of the label set ``labels``. ``root`` may also
    be a labels-CSV folder or a list of folders (sites); every table has a ``site`` column. The whole folder's table is
    cached, and duplicate groups span all classes (a normal copy of a benign scan is known)."""
    if isinstance(root, (list, tuple)) and len(root) == 1:
        root = root[0]
    if isinstance(root, (list, tuple)) or is_csv_site(root):  # several sites, or a labels-CSV folder
        return load_sites([root] if isinstance(root, (str, Path)) else root, labels, cache_dir=cache_dir)
    df = select_labels(cached_table(root, skip_bad=skip_bad, duplicates=duplicates, cache_dir=cache_dir), labels)
    df["site"] = site_name(root)
    return df


def resolve_data_dir(
    data: str | Path | None = None, *, n_per_class: int = 40, seed: int = 0, cache_dir: str | Path | None = None
) -> tuple[Path, bool]:
    """``(folder, is_real)``: ``data``, else ``$BUSI_DATA_DIR``, else a synthetic BUSI made once in the cache folder; a
    given folder that does not exist raises :class:`BusiDataError` (no silent switch to synthetic data)."""
    if data is None or str(data) == "":
        data = os.environ.get("BUSI_DATA_DIR") or None
    if data is not None:
        path = Path(data).expanduser()
        if not path.is_dir():
            raise BusiDataError(path, "data folder does not exist (unset it to use the synthetic set)")
        return path, not (path / "synthetic_manifest.csv").exists()
    path = cache_root(cache_dir) / f"synthetic-busi-n{n_per_class}-seed{seed}"
    if not (path / "synthetic_manifest.csv").exists():
        make_synthetic_busi(path, n_per_class=n_per_class, seed=seed, overwrite=True)
    return path, False
