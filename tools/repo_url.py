"""Write the repository's address, from ``pyproject.toml``, into every Colab badge and install line.

The address lives in one place, ``[project.urls] Repository``. Everything that
names it is written from there:

* the "Open in Colab" badges in README.md, notebooks/README.md and each notebook's first cell
  (``https://colab.research.google.com/github/<owner>/<repo>/blob/main/notebooks/<name>.ipynb``);
* the install line of each notebook's Colab setup cell (``%pip install -q "busi-lib @ git+<address>"``).

Usage, from the repository root::

    python tools/repo_url.py --write   # after changing the address in pyproject.toml
    python tools/repo_url.py --check   # exit status 1 and a list when something is out of date

``tests/test_repo_url.py`` runs the check.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BRANCH = "main"
BADGE_RE = re.compile(r"https://colab\.research\.google\.com/github/[^/\s()\"]+/[^/\s()\"]+/blob/([^/\s()\"]+)/")
INSTALL_RE = re.compile(r"busi-lib @ git\+[^\s\"'\\]+")


def repository_url(root: Path = ROOT) -> str:
    """``[project.urls] Repository`` of pyproject.toml, without a trailing slash or ``.git``."""
    with open(root / "pyproject.toml", "rb") as f:
        url = tomllib.load(f)["project"]["urls"]["Repository"]
    return re.sub(r"(\.git)?/*$", "", url)


def github_path(url: str) -> str:
    """``owner/repo`` of a GitHub address (Colab opens notebooks from GitHub only)."""
    m = re.fullmatch(r"https://github\.com/([^/\s]+/[^/\s]+)", url)
    if not m:
        raise ValueError(f"not a https://github.com/<owner>/<repo> address: {url!r}")
    return m.group(1)


def files(root: Path = ROOT) -> list[Path]:
    """Every file that may hold a badge or an install line."""
    return [root / "README.md", root / "notebooks" / "README.md", *sorted((root / "notebooks").glob("[0-9]*.ipynb"))]


def rewrite(text: str, url: str) -> str:
    """``text`` with every badge and install line pointing at ``url``."""
    text = BADGE_RE.sub(f"https://colab.research.google.com/github/{github_path(url)}/blob/{BRANCH}/", text)
    return INSTALL_RE.sub(f"busi-lib @ git+{url}", text)


def stale(root: Path = ROOT) -> list[Path]:
    """The files whose badges or install lines do not match pyproject.toml's address."""
    url = repository_url(root)
    return [p for p in files(root) if rewrite(p.read_text(encoding="utf-8"), url) != p.read_text(encoding="utf-8")]


def write(root: Path = ROOT) -> list[Path]:
    """Rewrite the stale files; return them."""
    url = repository_url(root)
    changed = stale(root)
    for p in changed:
        p.write_text(rewrite(p.read_text(encoding="utf-8"), url), encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite badges and install lines from pyproject.toml")
    group.add_argument("--check", action="store_true", help="list files that are out of date (exit status 1)")
    args = parser.parse_args(argv)
    url = repository_url()
    if args.write:
        changed = write()
        print(f"{url}: rewrote {len(changed)} file(s)" + "".join(f"\n  {p.relative_to(ROOT)}" for p in changed))
        return 0
    out_of_date = stale()
    for p in out_of_date:
        print(f"{p.relative_to(ROOT)}: badges or install line do not point at {url}")
    return 1 if out_of_date else 0


if __name__ == "__main__":
    sys.exit(main())
