"""Shared fixtures: a small synthetic BUSI, a private cache folder, the real-data switch."""

from __future__ import annotations

import atexit
import functools
import hashlib
import http.server
import os
import shutil
import tempfile
import threading
from importlib.util import find_spec
from pathlib import Path

import pytest

# Tests never touch the user's cache: every run gets its own.
if "BUSI_CACHE_DIR" not in os.environ:  # a private cache, removed when the test run ends
    os.environ["BUSI_CACHE_DIR"] = tempfile.mkdtemp(prefix="busi-test-cache-")
    atexit.register(shutil.rmtree, os.environ["BUSI_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("MPLBACKEND", "Agg")
# README's command runs the suite on 2 pytest-xdist workers (-n 2): each worker, and every process it
# starts, gets one thread per core it shares, so two workers do not fight over the same cores.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    )

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


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/www`` on a free 127.0.0.1 port; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()

# README's command runs the suite on 2 pytest-xdist workers (-n 2). Work units: one test file stays on one
# worker, so its module-scoped trained models are built once; every notebook cell goes to one worker, in order,
# because a cell needs the cells above it and 06 reads what 02-05 saved in nbval's shared runs folder.
# (xdist's own `--dist loadgroup` marks do not work with pytest 9: its worker renames `item._nodeid`, which
# pytest 9 no longer reads; a scheduler is xdist's documented hook for this.)
if find_spec("xdist") is not None:  # without pytest-xdist the suite runs in one process and needs no scheduler
    from xdist.scheduler import LoadScopeScheduling

    class _FilesAndNotebooks(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "notebooks" if ".ipynb::" in nodeid else nodeid.split("::", 1)[0]

    def pytest_xdist_make_scheduler(config, log):
        config.option.loadscopereorder = False  # keep the slowest-first order of pytest_collection_modifyitems
        return _FilesAndNotebooks(config, log)


def pytest_collection_modifyitems(config, items):
    """Slowest first, so that two workers finish together (longest-processing-time-first scheduling): the
    notebooks (the longest unit: every cell in order), then the files holding a test marked ``slow``, then the
    rest, larger files first. A file's tests stay together and in their order."""
    first_index, count, slow = {}, {}, set()
    for i, item in enumerate(items):
        key = "notebooks" if item.path.suffix == ".ipynb" else item.path
        first_index.setdefault(key, i)
        count[key] = count.get(key, 0) + 1
        if item.get_closest_marker("slow"):
            slow.add(key)

    def rank(item):
        key = "notebooks" if item.path.suffix == ".ipynb" else item.path
        group = 0 if key == "notebooks" else 1 if key in slow else 2
        return group, -count[key], first_index[key]

    items.sort(key=rank)  # stable: the order inside a file (and of the notebook cells) is kept
