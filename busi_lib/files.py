"""Writing files and folders whole or not at all, and a file's SHA-256.

Every output goes to a temporary sibling first and is renamed into place, so an interrupted run leaves no half file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from busi_lib.errors import BusiDataError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# The process umask, read once at import (reading it means setting it, which is not thread-safe).
_UMASK = os.umask(0)
os.umask(_UMASK)


def _usual_mode(tmp) -> None:
    # mkstemp creates files readable by their owner only (0600); an output file should
    # get the permissions a plain open() would give it (0666 minus the umask).
    os.chmod(tmp, 0o666 & ~_UMASK)


def write_json(path: str | Path, obj: object) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN allowed, numpy values converted)."""

    def default(o):
        if hasattr(o, "item"):
            return o.item()
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    return atomic_write_bytes(path, json.dumps(obj, indent=2, default=default).encode())


def temp_path_for(path: str | Path) -> Path:
    """A temporary sibling of ``path`` (same folder, so ``os.replace`` is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    _usual_mode(tmp)
    return Path(tmp)


def check_new_folder(out: str | Path) -> Path:
    """``out`` if it can become a new output folder (absent or empty), else a one-line error naming it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BusiDataError(out, "is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise BusiDataError(out, "output folder exists and is not empty; not overwriting it "
                                 "(remove it or choose another folder)")
    return out


@contextmanager
def new_folder(out: str | Path) -> Iterator[Path]:
    """Build the new folder ``out`` (absent or empty) whole or not at all: the block writes into a hidden sibling,
    renamed to ``out`` if the block succeeds, removed if it fails."""
    out = check_new_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp's folders are the owner's only; an output folder is not
    try:
        yield tmp
        if out.exists():  # an empty folder (checked): replaced, nothing is lost
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MB chunks (a saved model's weights, a downloaded archive)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
