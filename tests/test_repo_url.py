"""The repository's address is written in one place, pyproject.toml's ``[project.urls] Repository``;
``tools/repo_url.py --write`` writes every Colab badge and install line from it, and this test fails when
one of them points elsewhere."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("repo_url", ROOT / "tools" / "repo_url.py")
repo_url = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(repo_url)


def test_every_badge_and_install_line_matches_pyproject():
    url = repo_url.repository_url()
    assert not repo_url.stale(), f"run: python tools/repo_url.py --write (address {url})"
    path = repo_url.github_path(url)
    for p in repo_url.files():
        text = p.read_text(encoding="utf-8")
        assert "colab.research.google.com/github/" in text, f"{p.name}: no Open-in-Colab badge"
        for m in re.finditer(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/main/([^)\s\"]+)", text):
            assert m.group(1) == path
            assert (ROOT / m.group(2)).is_file(), f"{p.name}: the badge opens {m.group(2)}, which does not exist"
        if p.suffix == ".ipynb":
            assert f'%pip install -q \\"busi-lib @ git+{url}\\"' in text, f"{p.name}: no install line from {url}"
    # No address is written anywhere else by hand (README's note on the placeholder aside).
    for p in [*ROOT.glob("*.md"), *(ROOT / "notebooks").glob("*.md"), *(ROOT / "notebooks").glob("*.ipynb")]:
        assert "REPO_URL" not in p.read_text(encoding="utf-8"), p.name


def test_write_rewrites_every_badge_and_install_line(tmp_path):
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    for p in repo_url.files():
        shutil.copy(p, tmp_path / p.relative_to(ROOT))
    toml = (tmp_path / "pyproject.toml").read_text()
    old = repo_url.repository_url()
    (tmp_path / "pyproject.toml").write_text(toml.replace(f'Repository = "{old}"', 'Repository = "https://github.com/me/busi"'))
    assert len(repo_url.stale(tmp_path)) == len(repo_url.files(tmp_path))
    repo_url.write(tmp_path)
    assert repo_url.stale(tmp_path) == []
    nb = (tmp_path / "notebooks" / "01_data_exploration.ipynb").read_text()
    assert "colab.research.google.com/github/me/busi/blob/main/notebooks/01_data_exploration.ipynb" in nb
    assert 'busi-lib @ git+https://github.com/me/busi\\"' in nb and old not in nb


@pytest.mark.parametrize("bad", ["https://gitlab.com/me/busi", "github.com/me/busi", "https://github.com/me"])
def test_only_a_github_address_makes_a_colab_badge(bad):
    with pytest.raises(ValueError, match="github.com"):
        repo_url.github_path(bad)
