"""Getting the BUSI dataset and public external sets, and checking that a copy holds the published pixels.
:func:`download_busi`, :func:`download_public_set`, and :func:`verify_folder` against the shipped fingerprint of
*decoded pixels* (``busi_fingerprint.json``). Details: docs/library.md."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from busi_lib.data.external_sets import SETS
from busi_lib.data.images import read_image, read_mask
from busi_lib.data.table import CLASSES, MASK_RE, check_data_folder  # the one rule for telling a mask file from a scan
from busi_lib.errors import BusiDataError
from busi_lib.files import atomic_write_bytes, check_new_folder, sha256_of
from busi_lib.progress import progress as show_progress

FINGERPRINT_VERSION = 1
REFERENCE_PATH = Path(__file__).with_name("busi_fingerprint.json")

FOLDER_NAME = "Dataset_BUSI_with_GT"
DEFAULT_URL = "https://scholar.cu.edu.eg/Dataset_BUSI.zip"
KAGGLE_DATASET = "aryashah2k/breast-ultrasound-images-dataset"
KAGGLE_PAGE = "https://www.kaggle.com/datasets/aryashah2k/breast-ultrasound-images-dataset"

# The first bytes of a zip file: a local file header, or the end record of an empty archive.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# The real archive unpacks to a few hundred MB; refusing far more protects the disk from a zip bomb.
MAX_UNPACKED_BYTES = 8 * 1024**3
_CHUNK = 1 << 16


# --------------------------------------------------------------------------- fingerprints
def _hash_array(kind: str, arr: np.ndarray) -> str:
    """sha256 (16 hex chars) of a decoded array, its kind and shape (bytes cannot tell 100x200 from 200x100)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    h = hashlib.sha256(f"{kind}:{'x'.join(map(str, arr.shape))}:".encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:16]


def _is_mask(path: Path) -> bool:
    return MASK_RE.match(path.stem) is not None


def file_hash(path: str | Path) -> str:
    """The pixel hash of one BUSI file: a scan through ``read_image``, a mask through ``read_mask``."""
    path = Path(path)
    if _is_mask(path):
        return _hash_array("mask", read_mask(path))
    return _hash_array("image", read_image(path))


def _busi_files(root: Path) -> list[str]:
    """Sorted relative paths of every ``<class>/*.png`` under ``root``; hidden files (macOS ``._*``) are ignored."""
    rels = []
    for cls in CLASSES:
        cls_dir = root / cls
        if not cls_dir.is_dir():
            continue
        for p in cls_dir.iterdir():
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() == ".png":
                rels.append(f"{cls}/{p.name}")
    return sorted(rels)


def _count(rels) -> dict[str, dict[str, int]]:
    """Images and mask files per class."""
    counts = {cls: {"images": 0, "masks": 0} for cls in CLASSES}
    for rel in rels:
        cls, name = rel.split("/", 1)
        counts[cls]["masks" if _is_mask(Path(name)) else "images"] += 1
    return counts


def _digest(files: dict[str, str]) -> str:
    """One hash over all (path, hash) pairs, in sorted order so it does not depend on listing order."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\t{files[rel]}\n".encode())
    return h.hexdigest()


def _make_fingerprint(files: dict[str, str]) -> dict[str, Any]:
    return {"version": FINGERPRINT_VERSION, "files": files, "digest": _digest(files), "counts": _count(files)}


def pixel_fingerprint(root: str | Path) -> dict[str, Any]:
    """The pixel fingerprint of a BUSI-layout folder: ``{"version", "files": {rel: hash}, "digest", "counts"}``. An
    unreadable file raises :class:`BusiDataError` (:func:`verify_folder` reports instead)."""
    root = Path(root)
    check_data_folder(root)
    return _make_fingerprint({rel: file_hash(root / rel) for rel in _busi_files(root)})


def write_reference(root: str | Path, path: str | Path) -> dict[str, Any]:
    """Fingerprint ``root``, save it as compact JSON at ``path`` (atomically) and return it."""
    fp = pixel_fingerprint(root)
    atomic_write_bytes(path, (json.dumps(fp, separators=(",", ":"), sort_keys=True) + "\n").encode())
    return fp


def load_reference(reference: str | Path | dict | None = None) -> dict[str, Any]:
    """A fingerprint given as a dict, a JSON file, or ``None`` for the one shipped with the library."""
    if isinstance(reference, dict):
        fp = reference
        where: Path | None = None
    else:
        where = Path(reference) if reference is not None else REFERENCE_PATH
        try:
            fp = json.loads(where.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BusiDataError(where, "reference fingerprint file not found") from None
        except (OSError, json.JSONDecodeError) as e:
            raise BusiDataError(where, f"reference fingerprint is not readable JSON ({e})") from None
    if not isinstance(fp, dict) or fp.get("version") != FINGERPRINT_VERSION or not isinstance(fp.get("files"), dict):
        raise BusiDataError(where, f"not a version {FINGERPRINT_VERSION} BUSI pixel fingerprint")
    return fp


# --------------------------------------------------------------------------- verification
@dataclass
class VerifyResult:
    """How a folder compares with a reference fingerprint (relative paths); ``ok`` when nothing differs."""

    root: Path
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    n_checked: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed or self.unreadable)

    def problems(self, limit: int = 5) -> list[str]:
        """One line per kind of difference, naming at most ``limit`` files each."""

        def some(items) -> str:
            items = list(items)
            more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        lines = []
        if self.missing:
            lines.append(f"{len(self.missing)} missing: {some(self.missing)}")
        if self.extra:
            lines.append(f"{len(self.extra)} extra (not in the reference): {some(self.extra)}")
        if self.changed:
            lines.append(f"{len(self.changed)} with different pixels: {some(self.changed)}")
        if self.unreadable:
            lines.append(f"{len(self.unreadable)} unreadable: {some(f'{k} ({v})' for k, v in self.unreadable.items())}")
        return lines

    def summary(self, limit: int = 5) -> str:
        """A short human-readable report (what a CLI prints)."""
        counts = ", ".join(f"{c} {n['images']}" for c, n in self.counts.items())
        head = f"{self.root}: {self.n_checked} files checked (images: {counts})"
        if self.ok:
            return f"{head}\nOK: every file matches the reference pixels."
        return "\n".join([head, "MISMATCH:", *("  " + line for line in self.problems(limit))])

    def __str__(self) -> str:
        return self.summary()


def _safe_hash(path: Path) -> tuple[str | None, str | None]:
    """(hash, None), or (None, reason) for a file that cannot be decoded: verify reports, never raises."""
    try:
        return file_hash(path), None
    except BusiDataError as e:
        return None, e.reason


def verify_folder(root: str | Path, reference: str | Path | dict | None = None) -> VerifyResult:
    """Compare a BUSI folder's pixels with ``reference`` (default: the shipped fingerprint). Differences are reported,
    not raised; only a missing folder or a bad reference raises :class:`BusiDataError`."""
    root = Path(root)
    check_data_folder(root)
    ref = load_reference(reference)["files"]
    rels = _busi_files(root)
    result = VerifyResult(root=root, counts=_count(rels), n_checked=len(rels))
    result.missing = sorted(set(ref) - set(rels))
    for rel in rels:
        if rel not in ref:
            result.extra.append(rel)
            continue
        h, reason = _safe_hash(root / rel)
        if reason is not None:
            result.unreadable[rel] = reason
        elif h != ref[rel]:
            result.changed.append(rel)
    return result


# --------------------------------------------------------------------------- download
def _by_hand(what: str, reason: str, steps: list[str]) -> str:
    """An automatic download failed: what happened, then the numbered steps to do it by hand."""
    return f"could not download {what} automatically: {reason}\nGet it by hand:\n" + "\n".join(
        f"  {k}. {step}" for k, step in enumerate(steps, 1)
    )


def _manual_steps(target: Path, reason: str) -> str:
    """The error text when BUSI's automatic download fails."""
    return _by_hand("the BUSI dataset", reason, [
        f"download the archive from the Kaggle page {KAGGLE_PAGE}\n     (free account needed) or from {DEFAULT_URL}",
        f"unpack it so that {target} holds the folders benign/, malignant/ and normal/",
        f"point the library at it: export BUSI_DATA_DIR='{target}'",
        "check it: python -c \"from busi_lib.data.download import verify_folder; "
        f"print(verify_folder('{target}'))\"",
    ])


def kaggle_configured() -> bool:
    """True when the ``kaggle`` package is installed and Kaggle credentials are present. Only looks: importing
    ``kaggle`` tries to authenticate and fails loudly without credentials."""
    if find_spec("kaggle") is None:
        return False
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    return (config_dir / "kaggle.json").is_file()


def _download_url(url: str, dest: Path, target: Path, progress: bool, steps=_manual_steps) -> Path:
    """Stream ``url`` into ``dest`` (via ``dest.part``); failures raise :class:`BusiDataError` with
    ``steps(target, reason)``: what happened and how to do it by hand."""
    part = dest.with_name(dest.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "busi_lib (python urllib)"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            chunks = iter(lambda: response.read(_CHUNK), b"")
            done = 0
            n_chunks = -(-total // _CHUNK) if total else None  # for the bar; None: no bar without a size
            for chunk in show_progress(chunks, progress, "downloading", n_chunks):
                out.write(chunk)
                done += len(chunk)
    except urllib.error.HTTPError as e:
        raise BusiDataError(url, steps(target, f"the server answered HTTP {e.code} {e.reason}")) from None
    except urllib.error.URLError as e:
        raise BusiDataError(url, steps(target, f"network error ({e.reason})")) from None
    except (OSError, http.client.HTTPException) as e:
        raise BusiDataError(url, steps(target, f"the download broke off ({e!r})")) from None
    # A connection closed early can end the loop quietly; a short file must not pass for the archive.
    if total is not None and done != total:
        raise BusiDataError(url, steps(target, f"incomplete download ({done} of {total} bytes)"))
    os.replace(part, dest)
    return dest


def _download_kaggle(dest_dir: Path, target: Path, progress: bool) -> Path:
    """Download the Kaggle dataset's zip into ``dest_dir`` with the official client; return the zip's path."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi  # optional: the kaggle package, when installed

        api = KaggleApi()
        api.authenticate()
        api.dataset_download_files(KAGGLE_DATASET, path=str(dest_dir), unzip=False, quiet=not progress)
    except Exception as e:  # the client raises many types (HTTP, auth, IO); all mean "do it by hand"
        raise BusiDataError(KAGGLE_PAGE, _manual_steps(target, f"Kaggle download failed ({e})")) from None
    zips = sorted(dest_dir.glob("*.zip"))
    if not zips:
        raise BusiDataError(KAGGLE_PAGE, _manual_steps(target, "the Kaggle client produced no zip file"))
    return zips[0]


def _check_zip(path: Path, source: str, target: Path, steps=_manual_steps) -> None:
    """Refuse a file that is not a zip archive (a login or error page served with HTTP 200 is common)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] in _ZIP_MAGIC:
        return
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<")):
        what = "an HTML page instead of a zip archive"
    else:
        what = f"a file that is not a zip archive (first bytes {head[:8]!r})"
    raise BusiDataError(source, steps(target, f"the server sent {what}"))


def _unsafe_member(name: str) -> bool:
    """True for an archive member that would land outside the unpack folder (zip-slip)."""
    name = name.replace("\\", "/")  # archives made on Windows may use backslashes
    parts = PurePosixPath(name).parts
    is_drive = len(name) > 1 and name[1] == ":"
    return name.startswith("/") or is_drive or ".." in parts


def safe_unzip(zip_path: str | Path, dest: str | Path) -> Path:
    """Unpack ``zip_path`` into ``dest``; all members are checked first, and absolute paths, drive letters, ``..``,
    symbolic links or over :data:`MAX_UNPACKED_BYTES` refuse the whole archive (:class:`BusiDataError`)."""
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise BusiDataError(zip_path, f"not a readable zip archive ({e})") from None
    with zf:
        members = zf.infolist()
        for m in members:
            if _unsafe_member(m.filename):
                raise BusiDataError(zip_path, f"refusing archive: member {m.filename!r} would unpack outside {dest}")
            if (m.external_attr >> 16) & 0o170000 == 0o120000:
                raise BusiDataError(zip_path, f"refusing archive: member {m.filename!r} is a symbolic link")
        total = sum(m.file_size for m in members)
        if total > MAX_UNPACKED_BYTES:
            raise BusiDataError(zip_path, f"refusing archive: it would unpack to {total / 1e9:.1f} GB")
        root = dest.resolve()
        for m in members:
            # Belt and braces: the resolved path must still be inside dest.
            out = (root / m.filename.replace("\\", "/")).resolve()
            if out != root and root not in out.parents:
                raise BusiDataError(zip_path, f"refusing archive: member {m.filename!r} escapes {dest}")
            try:
                zf.extract(m, root)
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise BusiDataError(zip_path, f"corrupt archive member {m.filename!r} ({e})") from None
    return dest


def _has_classes(folder: Path) -> bool:
    return all((folder / c).is_dir() for c in CLASSES)


def find_busi_folder(unpacked: str | Path) -> Path:
    """The ``Dataset_BUSI_with_GT`` folder inside an unpacked archive (at most two levels down), else any folder holding
    the three class folders (mirrors rename it); ``__MACOSX`` is skipped."""
    unpacked = Path(unpacked)
    levels = [[unpacked]]
    for _ in range(2):
        levels.append(
            [c for d in levels[-1] for c in sorted(d.iterdir()) if c.is_dir() and c.name not in ("__MACOSX",)]
        )
    candidates = [d for level in levels for d in level]
    for d in candidates:
        if d.name == FOLDER_NAME and _has_classes(d):
            return d
    for d in candidates:
        if _has_classes(d):
            return d
    top = ", ".join(sorted(p.name for p in unpacked.iterdir())[:10]) or "nothing"
    raise BusiDataError(
        unpacked, f"no {FOLDER_NAME} folder (with benign/, malignant/, normal/) in the archive; top level: {top}"
    )


def _check_target(to_dir: Path, target: Path) -> None:
    """Refuse to overwrite data, and refuse to put data inside the library's source."""
    package = Path(__file__).resolve().parents[1]  # busi_lib/
    if to_dir.resolve() == package or package in to_dir.resolve().parents:
        raise BusiDataError(to_dir, "refusing to download data into the library's source folder; choose another")
    check_new_folder(target)


def download_busi(
    to_dir: str | Path,
    *,
    url: str = DEFAULT_URL,
    use_kaggle: bool | None = None,
    verify: bool = True,
    progress: bool = True,
    reference: str | Path | dict | None = None,
) -> Path:
    """Download BUSI to ``<to_dir>/Dataset_BUSI_with_GT`` (returned), renamed from a temporary folder in ``to_dir`` once
    complete and verified (``verify``: :class:`BusiDataError` if pixels differ from ``reference``). ``use_kaggle``:
    ``None`` uses Kaggle when :func:`kaggle_configured`, ``True`` requires it, ``False`` uses ``url``."""
    to_dir = Path(to_dir).expanduser()
    target = to_dir / FOLDER_NAME
    _check_target(to_dir, target)
    if use_kaggle is None:
        use_kaggle = kaggle_configured()
    elif use_kaggle and not kaggle_configured():
        reason = "the Kaggle API is not configured (pip install kaggle, and add ~/.kaggle/kaggle.json)"
        raise BusiDataError(None, _manual_steps(target, reason))
    to_dir.mkdir(parents=True, exist_ok=True)
    # Same file system as the target, so the final move is a rename, not a 200 MB copy.
    with tempfile.TemporaryDirectory(dir=to_dir, prefix=".busi-download-") as tmp:
        tmp = Path(tmp)
        if use_kaggle:
            source = KAGGLE_PAGE
            archive = _download_kaggle(tmp, target, progress)
        else:
            source = url
            archive = _download_url(url, tmp / "Dataset_BUSI.zip", target, progress)
        _check_zip(archive, source, target)
        found = find_busi_folder(safe_unzip(archive, tmp / "unpacked"))
        if verify:
            _verify_download(found, reference, source)
        if target.exists():  # an empty folder left by the user: replaced, nothing is lost
            target.rmdir()
        shutil.move(str(found), str(target))
    return target


def _verify_download(folder: Path, reference, source: str) -> None:
    result = verify_folder(folder, reference)
    if not result.ok:
        details = "; ".join(result.problems(limit=5))
        raise BusiDataError(
            source,
            f"the downloaded data does not match the reference fingerprint ({details}). "
            "The archive may have changed upstream or be damaged; nothing was kept. "
            "Pass verify=False to keep it anyway.",
        )


def _public_set_steps(name: str):
    """The manual steps for a public external set, in the shape :func:`_download_url` expects."""
    ds = SETS[name]

    def steps(target: Path, reason: str) -> str:
        return _by_hand(ds.title, reason, [
            f"download the archive from {ds.page}",
            f"unpack it, so that {target} is the set's own folder",
            f"convert it: busi data external {name} '{target}' --out data/{name}",
        ])

    return steps


def download_public_set(
    name: str,
    to_dir: str | Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Download a public external set (:data:`~busi_lib.data.external_sets.SETS`), unpack it as published and return
    ``<to_dir>/<the archive's folder>`` for ``busi data external NAME``. The archive's size and SHA-256 must match
    before unpacking (``url``/``sha256`` override them, e.g. for a mirror)."""
    if name not in SETS:
        raise ValueError(f"unknown set {name!r}; one of {sorted(SETS)}")
    ds, steps = SETS[name], _public_set_steps(name)
    to_dir = Path(to_dir).expanduser()
    folder, url = ds.archive.folder, url or ds.archive.url
    target = to_dir / folder
    _check_target(to_dir, target)
    to_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=to_dir, prefix=f".{name}-download-") as tmp:
        tmp = Path(tmp)
        archive = _download_url(url, tmp / f"{folder}.zip", target, progress, steps)
        _check_zip(archive, url, target, steps)
        size = archive.stat().st_size
        if sha256 is None and size != ds.archive.size:  # a given sha256 (a mirror, a test) stands for both
            raise BusiDataError(url, f"the archive has {size} bytes, not the published {ds.archive.size}: damaged, "
                                "or changed upstream; nothing was kept")
        expected, got = sha256 or ds.archive.sha256, sha256_of(archive)
        if got != expected:
            raise BusiDataError(url, f"the archive's SHA-256 is {got} ({size} bytes), not {expected}: "
                                "damaged, or changed upstream; nothing was kept")
        unpacked = safe_unzip(archive, tmp / "unpacked")
        found = unpacked / folder
        if not found.is_dir():
            top = ", ".join(sorted(p.name for p in unpacked.iterdir())[:10]) or "nothing"
            raise BusiDataError(url, f"no {folder}/ folder at the top of the archive; top level: {top}")
        if target.exists():  # an empty folder left by the user: replaced, nothing is lost
            target.rmdir()
        shutil.move(str(found), str(target))
    return target
