"""Sites: the data folders of one or more hospitals (BUSI's layout or a ``labels.csv``), as one table to train on.
The labels CSV and how sites are grouped for splits: docs/library.md."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from busi_lib.data.cache import cached_table
from busi_lib.data.duplicates import add_duplicate_groups
from busi_lib.data.table import LESION_CLASSES, check_data_folder, select_labels
from busi_lib.errors import BusiDataError

LABELS_CSV = "labels.csv"

COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("image", "image_path", "path", "file", "filename"),
    "label": ("label", "class", "diagnosis", "target", "malignant"),
    "mask": ("mask", "mask_path", "mask_paths"),
    "patient": ("patient_id", "patient", "subject", "case"),
}
REQUIRED = ("image", "label")
LABEL_VALUES = {"benign": 0, "0": 0, "0.0": 0, "malignant": 1, "1": 1, "1.0": 1}


def _find_columns(path: Path, header: list[str], columns: dict | None) -> dict[str, str | None]:
    """Map each role (image, label, mask, patient) to a column of the CSV."""
    unknown = sorted(set(columns or {}) - set(COLUMN_ALIASES))
    if unknown:
        raise BusiDataError(path, f"unknown column role(s) {unknown}; the roles are {list(COLUMN_ALIASES)}")
    lower = {c.strip().lower(): c for c in header}
    found: dict[str, str | None] = {}
    for role, aliases in COLUMN_ALIASES.items():
        if columns and role in columns:
            name = columns[role]
            if name not in header:
                raise BusiDataError(path, f"missing column '{name}' (given for the {role}); columns: {header}")
            found[role] = name
            continue
        found[role] = next((lower[a] for a in aliases if a in lower), None)
        if found[role] is None and role in REQUIRED:
            raise BusiDataError(
                path, f"missing column for the {role}: expected one of {list(aliases)}; the columns are {header}"
            )
    return found


def read_labels_csv(root: str | Path, csv_path: str | Path, columns: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Read and check a labels CSV for the images under ``root``: ``(table, excluded counts)``. Every row is checked
    (files exist, known label, no image twice, no empty patient id) without decoding; the first bad row raises
    :class:`BusiDataError` naming the CSV and ``row i (line i + 1)``."""
    root, csv_path = Path(root), Path(csv_path)
    if not csv_path.is_file():
        raise BusiDataError(csv_path, "labels CSV not found")
    try:
        raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as e:  # pandas raises many types for a malformed CSV
        raise BusiDataError(csv_path, f"not a readable CSV ({e})") from None
    cols = _find_columns(csv_path, list(raw.columns), columns)
    if raw.empty:
        raise BusiDataError(csv_path, "labels CSV has no rows")
    rows, seen, excluded = [], {}, {}
    for i, r in enumerate(raw.to_dict(orient="records"), start=1):
        where = f"row {i} (line {i + 1})"
        rel = r[cols["image"]].strip()
        if not rel:
            raise BusiDataError(csv_path, f"{where}: empty image path")
        label_text = r[cols["label"]].strip().lower()
        if label_text == "normal":
            excluded["normal"] = excluded.get("normal", 0) + 1
            continue
        if label_text not in LABEL_VALUES:
            raise BusiDataError(
                csv_path, f"{where}: unknown label '{r[cols['label']]}' for '{rel}' (expected benign/malignant or 0/1)"
            )
        img = root / rel
        if not img.is_file():
            raise BusiDataError(csv_path, f"{where}: image '{rel}' not found in {root}")
        if rel in seen:
            raise BusiDataError(csv_path, f"{where}: image '{rel}' is listed twice (also row {seen[rel]})")
        seen[rel] = i
        masks = []
        if cols["mask"]:
            for m in (q.strip() for q in r[cols["mask"]].split("|")):
                if m and not (root / m).is_file():
                    raise BusiDataError(csv_path, f"{where}: mask '{m}' not found in {root}")
                if m:
                    masks.append(str(root / m))
        patient = None
        if cols["patient"]:
            patient = r[cols["patient"]].strip()
            if not patient:
                raise BusiDataError(csv_path, f"{where}: empty patient id for '{rel}'")
        target = LABEL_VALUES[label_text]
        rows.append(dict(image_id=rel, label=LESION_CLASSES[target], target=target, path=str(img),
                         mask_paths="|".join(masks), has_mask=bool(masks), patient_id=patient, row=i))
    if not rows:
        raise BusiDataError(csv_path, "no benign or malignant image listed")
    return pd.DataFrame(rows), excluded


def site_name(root: str | Path) -> str:
    """A site's name: its folder's name (the ``site`` column, ``calibrated_on``, ``--train-sites``)."""
    return Path(root).resolve().name


def is_csv_site(root: str | Path) -> bool:
    """Whether ``root`` is a labels-CSV folder (``labels.csv`` inside) rather than BUSI's layout."""
    return (Path(root) / LABELS_CSV).is_file()


def _csv_site_table(root: Path, require_masks: bool) -> pd.DataFrame:
    table, _ = read_labels_csv(root, root / LABELS_CSV)
    if require_masks and not table["has_mask"].all():
        first = table.loc[~table["has_mask"], "image_id"].iloc[0]
        raise BusiDataError(root / LABELS_CSV, f"'{first}' has no mask: training on a site needs every lesion mask")
    out = table.drop(columns=["has_mask", "row"])
    out["n_masks"] = [len([m for m in s.split("|") if m]) for s in out["mask_paths"]]
    if out["patient_id"].notna().all():  # a patient's scans stay together: the patient is the group
        out["dup_group"] = pd.factorize(out["patient_id"])[0]
        out["group_size"] = out.groupby("dup_group")["dup_group"].transform("size")
    else:  # no patient ids: near-duplicate groups from the scans' perceptual hashes, as for BUSI
        out = add_duplicate_groups(out)
    out.attrs["root"] = str(root)
    out.attrs["rejected"] = []
    return out


def load_site(root: str | Path, labels: str = "binary", *, require_masks: bool = True,
              cache_dir: str | Path | None = None) -> pd.DataFrame:
    """One site's table (BUSI layout or labels-CSV folder), the rows of ``labels``, with its ``site`` name."""
    root = check_data_folder(root)
    if is_csv_site(root):
        if labels != "binary":
            raise BusiDataError(root / LABELS_CSV, f"a labels-CSV site has benign and malignant scans only, not "
                                                   f"the {labels!r} label set")
        df = _csv_site_table(root, require_masks)
        df["target"] = df["label"].map({c: i for i, c in enumerate(LESION_CLASSES)}).astype(int)
    else:
        if not any((root / c).is_dir() for c in LESION_CLASSES):
            raise BusiDataError(root, f"not a site: neither BUSI's class folders ({', '.join(LESION_CLASSES)}) nor "
                                      f"a {LABELS_CSV}")
        df = select_labels(cached_table(root, cache_dir=cache_dir), labels)
    df["site"] = site_name(root)
    return df


def load_sites(roots: Sequence[str | Path], labels: str = "binary", *,
               cache_dir: str | Path | None = None) -> pd.DataFrame:
    """Several sites as one table: ``image_id`` becomes ``<site>/<image_id>``, groups are numbered apart. Two folders
    with one name, or a patient id at two sites, raise :class:`BusiDataError` naming the folder or CSV."""
    roots = [Path(r) for r in roots]
    tables, seen_patients = [], {}
    for root in roots:
        df = load_site(root, labels, cache_dir=cache_dir)
        site = df["site"].iloc[0]
        if any(t["site"].iloc[0] == site for t in tables):
            raise BusiDataError(root, f"a second site named '{site}': give each site's folder its own name")
        for pid in df["patient_id"].dropna().unique() if "patient_id" in df else ():
            if pid in seen_patients:
                raise BusiDataError(root / LABELS_CSV, f"patient '{pid}' is also at site '{seen_patients[pid]}': "
                                    "a patient's scans must all be at one site")
            seen_patients[pid] = site
        if tables:
            df["dup_group"] = df["dup_group"] + max(int(t["dup_group"].max()) for t in tables) + 1
        tables.append(df)
    if len(tables) == 1:
        return tables[0]
    out = pd.concat(tables, ignore_index=True)
    out["image_id"] = out["site"] + "/" + out["image_id"]
    out.attrs.update(root="|".join(map(str, roots)), rejected=[r for t in tables for r in t.attrs.get("rejected", [])],
                     labels=labels, classes=tables[0].attrs.get("classes", list(LESION_CLASSES)))
    return out


def site_names(df: pd.DataFrame) -> list[str]:
    """The sites of a table, in order of appearance (one, ``[]`` when the table has no ``site`` column)."""
    return list(dict.fromkeys(df["site"])) if "site" in df else []


__all__ = ["COLUMN_ALIASES", "LABELS_CSV", "is_csv_site", "load_site", "load_sites", "read_labels_csv", "site_names"]
