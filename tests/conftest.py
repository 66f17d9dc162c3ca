"""Shared fixtures: a small synthetic BUSI, a private cache folder, the real-data switch."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests never touch the user's cache: every run gets its own.
if "BUSI_CACHE_DIR" not in os.environ:  # a private cache, removed when the test run ends
    os.environ["BUSI_CACHE_DIR"] = tempfile.mkdtemp(prefix="busi-test-cache-")
    atexit.register(shutil.rmtree, os.environ["BUSI_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("MPLBACKEND", "Agg")

REAL = os.environ.get("BUSI_DATA_DIR")


def folder_checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under a folder, to prove a run changed nothing."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def checksums():
    """The :func:`folder_checksums` function, for tests that prove a folder was left alone."""
    return folder_checksums


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request) -> Path:
    """A temporary folder for one test module, deleted when its tests are done (trained models are big:
    pytest would otherwise keep every module's folders until the session ends)."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A small synthetic BUSI (12 scans per class) shared by the fast tests. Treat it as read-only."""
    from busi_lib.data.synthetic import make_synthetic_busi

    return make_synthetic_busi(tmp_path_factory.mktemp("synthetic") / "busi", n_per_class=12, seed=0)


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The real BUSI folder from $BUSI_DATA_DIR; tests using it are skipped without it."""
    if not REAL:
        pytest.skip("BUSI_DATA_DIR is not set: real-data test skipped")
    path = Path(REAL)
    if not path.is_dir():
        pytest.fail(f"BUSI_DATA_DIR={REAL} is not a folder")
    return path


@pytest.fixture(scope="session")
def real_table(real_dir):
    from busi_lib.data.dataset import load_dataset

    return load_dataset(real_dir, labels="three_class")
