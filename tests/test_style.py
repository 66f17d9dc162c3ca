"""ruff keeps the style: the test suite fails on a lint error."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    if shutil.which("ruff") is None and subprocess.run([sys.executable, "-m", "ruff", "--version"]).returncode:
        pytest.fail("ruff is not installed: pip install -e '.[dev]'")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "busi_lib", "tests", "tools"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_public_function_has_type_hints_and_a_docstring():
    """Every public module-level function of busi_lib says what it takes, what it returns and what it does."""
    import ast

    missing = []
    for path in sorted((ROOT / "busi_lib").rglob("*.py")):
        for f in ast.parse(path.read_text()).body:
            if not isinstance(f, ast.FunctionDef) or f.name.startswith("_"):
                continue
            a = f.args
            unhinted = [x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs] if x.annotation is None]
            unhinted += [f"*{x.arg}" for x in (a.vararg, a.kwarg) if x is not None and x.annotation is None]
            gaps = [*(["docstring"] if not ast.get_docstring(f) else []), *(["return"] if f.returns is None else []),
                    *unhinted]
            if gaps:
                missing.append(f"{path.relative_to(ROOT)}:{f.lineno} {f.name}: {', '.join(gaps)}")
    assert not missing, "public functions without type hints or a docstring:\n" + "\n".join(missing)
