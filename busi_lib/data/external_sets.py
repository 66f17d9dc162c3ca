"""A public external test set (BUS-BRA), as published, turned into a labels-CSV folder for ``busi evaluate``.
The conversion's rules: docs/external_sets.md."""

from __future__ import annotations

import csv
import io
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from busi_lib.data.images import read_image, read_mask
from busi_lib.data.table import LESION_CLASSES
from busi_lib.errors import BusiDataError
from busi_lib.files import check_new_folder, new_folder, write_json
from busi_lib.progress import progress as show_progress

__all__ = [
    "SETS",
    "Conversion",
    "ExternalSet",
    "convert_busbra",
    "convert_external",
]

LABELS_NAME = "labels.csv"
LABELS_COLUMNS = ("image", "label", "mask", "patient")
SUMMARY_NAME = "conversion.json"


@dataclass(frozen=True)
class Archive:
    """A published archive with a stable address: what ``busi data download --dataset`` fetches and checks."""

    url: str
    sha256: str  # of the whole archive, checked before anything is unpacked
    size: int  # bytes
    folder: str  # the set's top folder inside the archive


@dataclass(frozen=True)
class ExternalSet:
    """A public set: its command name, title, citation, licence, published counts, and where to get it."""

    name: str
    title: str
    citation: str
    licence: str
    published: dict
    page: str  # the data record a person opens
    archive: Archive


SETS: dict[str, ExternalSet] = {
    "busbra": ExternalSet(
        "busbra", "BUS-BRA",
        "Gómez-Flores W, Gregorio-Calas MJ, Coelho de Albuquerque Pereira W. BUS-BRA: a breast ultrasound dataset "
        "for assessing computer-aided diagnosis systems. Medical Physics 51(4):3110-3123 (2024), "
        "doi:10.1002/mp.16812. Data: Zenodo, doi:10.5281/zenodo.8231412.",
        "CC BY 4.0 (Zenodo record 8231412); cite the paper", {"images": 1875, "patients": 1064},
        "https://zenodo.org/records/8231412",
        # Zenodo's address of version 1.0; SHA-256 and size as published by torch-em's BUS-BRA loader and others
        Archive("https://zenodo.org/records/8231412/files/BUSBRA.zip?download=1",
                "ba3e6ed19cc37c682d8d39e25435bbf8a555a12cb7e641b5f2117685c95580ff", 133_917_740, "BUSBRA"),
    ),
}


@dataclass
class Conversion:
    """What a conversion wrote: the rows of ``labels.csv``, what was skipped and why, and notes."""

    dataset: ExternalSet
    source: Path  # the set's folder that was read
    out: Path
    rows: list = field(default_factory=list)  # dicts with LABELS_COLUMNS
    skipped: list = field(default_factory=list)  # [{"file", "reason"}]
    resized_masks: list = field(default_factory=list)  # scan file names whose mask was resized
    notes: list = field(default_factory=list)
    hardlinked: int = 0  # scans hard-linked (the others copied)

    @property
    def labels(self) -> Path:
        return self.out / LABELS_NAME

    @property
    def per_class(self) -> dict[str, int]:
        return dict(sorted(Counter(r["label"] for r in self.rows).items()))

    @property
    def n_patients(self) -> int:
        return len({r["patient"] for r in self.rows})

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset.name, "title": self.dataset.title, "citation": self.dataset.citation,
            "licence": self.dataset.licence, "source": str(self.source), "out": str(self.out),
            "labels": str(self.labels), "images": len(self.rows), "per_class": self.per_class,
            "patients": self.n_patients, "resized_masks": len(self.resized_masks),
            "resized": list(self.resized_masks), "hardlinked": self.hardlinked, "skipped": list(self.skipped),
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """A few lines for the terminal: counts per class, patients, resized masks, skipped files and notes."""
        lines = [
            f"{self.dataset.title} from {self.source} -> {self.out}",
            f"images: {len(self.rows)}  " + "  ".join(f"{k}: {v}" for k, v in self.per_class.items()),
            f"patients: {self.n_patients}",
            f"masks resized to their scan's size (nearest neighbour): {len(self.resized_masks)}",
            f"skipped: {len(self.skipped)}",
            *(f"  {s['file']}: {s['reason']}" for s in self.skipped),
            *(f"note: {n}" for n in self.notes),
            f"labels: {self.labels}",
            f"cite: {self.dataset.citation} ({self.dataset.licence})",
        ]
        return "\n".join(lines)


@dataclass
class _Scan:
    """One scan to convert: its files, patient, and label when a CSV gives one (else from the mask)."""

    image: Path
    mask: Path
    patient: str
    label: str | None
    where: str  # e.g. "bus_data.csv row 3 (line 4)", for messages


class _Bad:
    """The one place that decides whether a bad row raises (default) or is skipped and reported."""

    def __init__(self, skip_bad: bool, skipped: list):
        self.skip_bad, self.skipped = skip_bad, skipped

    def __call__(self, path, reason: str) -> None:
        if not self.skip_bad:
            raise BusiDataError(path, reason)
        self.skipped.append(dict(file=str(path), reason=reason))


# ----------------------------------------------------------------------------- entry points
def convert_external(name: str, source: str | Path, out: str | Path, *, skip_bad: bool = False,
                     hardlink: bool = False, progress: bool = False) -> Conversion:
    """Convert the public set ``name`` (a key of :data:`SETS`) unpacked in ``source`` into ``out``."""
    converters = {"busbra": convert_busbra}
    if name not in converters:
        raise BusiDataError(None, f"unknown external set '{name}' (known: {', '.join(converters)})")
    return converters[name](source, out, skip_bad=skip_bad, hardlink=hardlink, progress=progress)


def convert_busbra(source: str | Path, out: str | Path, *, skip_bad: bool = False, hardlink: bool = False,
                   progress: bool = False) -> Conversion:
    """BUS-BRA (``BUSBRA/`` or the folder holding it) into a labels-CSV folder (rules: docs/external_sets.md)."""
    source = _check_source(source)
    root = _busbra_root(source)
    out = _check_out(out, source)
    skipped: list[dict] = []
    scans = _read_busbra(root, _Bad(skip_bad, skipped), skipped)
    conv = Conversion(SETS["busbra"], root, out, skipped=skipped)
    return _write(conv, scans, _busbra_mask, skip_bad=skip_bad, hardlink=hardlink, progress=progress)


# ----------------------------------------------------------------------------- folders
def _check_source(source) -> Path:
    source = Path(source).expanduser()
    if not source.exists():
        raise BusiDataError(source, "source folder does not exist")
    if not source.is_dir():
        raise BusiDataError(source, "source path is not a folder")
    return source


def _check_out(out, source: Path) -> Path:
    """Refuse an output folder inside the source, an existing file, or an existing non-empty folder."""
    out = Path(out).expanduser()
    target, src = out.resolve(), source.resolve()
    if target == src or src in target.parents:
        raise BusiDataError(out, f"the output folder is inside the source folder {source}, which is never written: "
                                 "choose another --out")
    if out.is_symlink():
        raise BusiDataError(out, "--out is a symbolic link: give a plain folder")
    return check_new_folder(out)


def _top_level(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith("."))
    return ", ".join(names[:10]) + (" ..." if len(names) > 10 else "") if names else "nothing"


def _busbra_root(source: Path) -> Path:
    for root in (source, source / "BUSBRA"):
        if (root / "bus_data.csv").is_file():
            for sub in ("Images", "Masks"):
                if not (root / sub).is_dir():
                    raise BusiDataError(root / sub, "folder not found: BUS-BRA keeps its scans in Images/ and its "
                                                    "masks in Masks/ beside bus_data.csv")
            return root
    raise BusiDataError(source, "not a BUS-BRA folder: expected bus_data.csv, Images/ and Masks/ here or in BUSBRA/ "
                                f"inside it; found: {_top_level(source)}")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


# ----------------------------------------------------------------------------- BUS-BRA
BUSBRA_COLUMNS = ("ID", "Case", "Pathology")


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    """Header and rows of a CSV (UTF-8 with or without BOM, else Latin-1)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
    except csv.Error as e:
        raise BusiDataError(path, f"not a readable CSV ({e})") from None
    header = [h.strip() for h in (reader.fieldnames or [])]
    rows = [{(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in r.items()} for r in rows]
    return header, rows


def _read_busbra(root: Path, bad: _Bad, skipped: list) -> list[_Scan]:
    csv_path = root / "bus_data.csv"
    header, rows = _read_csv(csv_path)
    missing = [c for c in BUSBRA_COLUMNS if c not in header]
    if missing:
        raise BusiDataError(csv_path, f"missing column(s) {missing}; the columns are {header} "
                                      "(expected BUS-BRA's ID,Case,Histology,Pathology,...)")
    if not rows:
        raise BusiDataError(csv_path, "bus_data.csv has no rows")
    scans, seen = [], {}
    for i, r in enumerate(rows, start=1):
        where = f"bus_data.csv row {i} (line {i + 1})"
        sid, case, pathology = r["ID"], r["Case"], r["Pathology"].lower()
        if not sid.startswith("bus_") or len(sid) <= 4:
            bad(csv_path, f"{where}: ID '{sid}' is not a BUS-BRA scan name (bus_0001-l)")
            continue
        if sid in seen:
            bad(csv_path, f"{where}: ID '{sid}' is listed twice (also row {seen[sid]})")
            continue
        seen[sid] = i
        if pathology not in LESION_CLASSES:
            bad(csv_path, f"{where} ({sid}): unknown Pathology '{r['Pathology']}' (expected benign or malignant)")
            continue
        if not case:
            bad(csv_path, f"{where} ({sid}): empty Case (the patient id)")
            continue
        image = root / "Images" / f"{sid}.png"
        mask = root / "Masks" / f"mask_{sid[4:]}.png"
        if not image.is_file():
            bad(image, f"{where} ({sid}): scan file not found")
            continue
        if not mask.is_file():
            bad(mask, f"{where} ({sid}): mask file not found")
            continue
        scans.append(_Scan(image, mask, case, pathology, where))
    for p in _image_files(root / "Images"):
        if p.stem not in seen:
            skipped.append(dict(file=str(p), reason="not listed in bus_data.csv"))
    return scans


def _busbra_mask(scan: _Scan) -> tuple[np.ndarray, str]:
    return read_mask(scan.mask), scan.label


# ----------------------------------------------------------------------------- writing
def _place_scan(src: Path, dst: Path, hardlink: bool) -> bool:
    """Copy (or hard-link) a scan; True when linked."""
    if dst.exists():
        raise BusiDataError(src, f"two scans would be written to {dst.name}")
    if hardlink:
        try:
            dst.hardlink_to(src)
            return True
        except OSError:  # another file system, or links not allowed: copy instead
            pass
    shutil.copyfile(src, dst)
    return False


def _save_mask(mask01: np.ndarray, dst: Path, src: Path) -> None:
    if dst.exists():
        raise BusiDataError(src, f"two masks would be written to {dst.name}")
    Image.fromarray((mask01 > 0).astype(np.uint8) * 255).save(dst, format="PNG")


def _resize_nearest(mask01: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    return np.asarray(Image.fromarray(mask01.astype(np.uint8)).resize((w, h), Image.Resampling.NEAREST))


def _write(conv: Conversion, scans: list[_Scan], read_fn, *, skip_bad: bool, hardlink: bool,
           progress: bool) -> Conversion:
    """Convert ``scans`` into a temporary folder, then rename it to ``conv.out``."""
    bad = _Bad(skip_bad, conv.skipped)
    with new_folder(conv.out) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        linked_note = False
        for scan in show_progress(scans, progress, f"converting {conv.dataset.title}"):
            try:
                img = read_image(scan.image)  # decodes fully: a truncated scan is found here
                mask, label = read_fn(scan)
            except BusiDataError as e:
                bad(e.path or scan.image, f"{scan.where}: {e.reason}")
                continue
            if mask.shape != img.shape:
                mask = _resize_nearest(mask, img.shape)
                conv.resized_masks.append(scan.image.name)
            image_rel, mask_rel = f"images/{scan.image.name}", f"masks/{scan.mask.stem}.png"
            linked = _place_scan(scan.image, tmp / image_rel, hardlink)
            conv.hardlinked += linked
            linked_note |= hardlink and not linked
            _save_mask(mask, tmp / mask_rel, scan.mask)
            conv.rows.append(dict(image=image_rel, label=label, mask=mask_rel, patient=scan.patient))
        if not conv.rows:
            raise BusiDataError(conv.source, "no scan could be converted" + (" (see the skipped files)" if
                                                                               conv.skipped else ""))
        if linked_note:
            conv.notes.append("some scans could not be hard-linked (another file system?) and were copied")
        _check_published(conv)
        with open(tmp / LABELS_NAME, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LABELS_COLUMNS, lineterminator="\n")
            w.writeheader()
            w.writerows(conv.rows)
        write_json(tmp / SUMMARY_NAME, conv.to_dict())
    return conv


def _check_published(conv: Conversion) -> None:
    """A note when the counts differ from the publication's (a partial copy, or another version)."""
    pub = conv.dataset.published
    if (len(conv.rows), conv.n_patients) != (pub["images"], pub["patients"]):
        conv.notes.append(f"the published {conv.dataset.title} has {pub['images']} scans of {pub['patients']} "
                          f"patients; this copy gave {len(conv.rows)} of {conv.n_patients}: a partial or changed copy?")
