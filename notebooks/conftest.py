"""nbval runs every lesson notebook in the smoke profile (see ``[tool.pytest.ini_options]`` in pyproject.toml).

The notebook kernels inherit the environment of the pytest process when they
start, so these variables are set just before a notebook's first cell runs and
restored after its last one (other tests never see them):

* ``BUSI_PROFILE=smoke``: tiny images, one epoch, a small subset (the parameters cell reads it);
* ``BUSI_STATIC_WIDGETS=1``: widgets draw a still picture instead of waiting for a browser;
* ``BUSI_RUNS_DIR``: one temporary output folder shared by the notebooks of a run, so notebook 06
  finds what 02-05 saved and nothing is written into the repository;
* ``TQDM_DISABLE=1``: no progress bars in the captured output.

The output folder (trained models: hundreds of MB) is removed when the session ends.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# The tests' own cache rule (tests/conftest.py): never the user's cache.
if "BUSI_CACHE_DIR" not in os.environ:  # a private cache, removed when the test run ends
    os.environ["BUSI_CACHE_DIR"] = tempfile.mkdtemp(prefix="busi-test-cache-")
    atexit.register(shutil.rmtree, os.environ["BUSI_CACHE_DIR"], ignore_errors=True)

_RUNS_DIR = tempfile.mkdtemp(prefix="busi-nbval-runs-")
KERNEL_ENV = {
    "BUSI_PROFILE": "smoke",
    "BUSI_STATIC_WIDGETS": "1",
    "BUSI_RUNS_DIR": _RUNS_DIR,
    "TQDM_DISABLE": "1",
}
_saved: dict[str, str | None] = {}


def _is_notebook(item) -> bool:
    return item is not None and item.path.suffix == ".ipynb"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # tryfirst: before nbval's setup starts the notebook's kernel
    if _is_notebook(item) and not _saved:
        _saved.update({k: os.environ.get(k) for k in KERNEL_ENV})
        os.environ.update(KERNEL_ENV)


def pytest_runtest_teardown(item, nextitem):
    if _is_notebook(item) and not _is_notebook(nextitem) and _saved:
        for k, v in _saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _saved.clear()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_RUNS_DIR, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the markers
def pytest_collection_modifyitems(config, items):
    """The answer notebooks (notebooks/answers/*.ipynb) are opt-in, like the other minutes-long tests: they train
    several models each, so they run with ``-m extended`` (.ci/run does), not in README's test command."""
    for item in items:
        if item.path.suffix == ".ipynb" and item.path.parent.name == "answers":
            item.add_marker(pytest.mark.extended)
