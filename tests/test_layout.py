"""The package's layout: folders that import only downward, no import circles, a light top level, tests mirroring it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import busi_lib

PKG = Path(busi_lib.__file__).resolve().parent
TESTS = Path(__file__).resolve().parent
# bottom to top: a module imports from its own folder, the folders below it and the top-level modules
FOLDERS = ("data", "models", "evaluation", "training", "ui", "apps")
ENTRY_POINTS = ("busi_lib.__main__", "busi_lib.colab")  # top-level modules that start the apps


def modules() -> dict[str, Path]:
    """``busi_lib.x.y`` -> its file, for every module of the package."""
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def top_level_imports(path: Path) -> set[str]:
    """The busi_lib modules a module imports when it is itself imported (not those imported inside functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("busi_lib"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("busi_lib"))
    return names


def level(module: str) -> int:
    """0 for a top-level module (names, config, profiles, ...), then 1, 2, ... for the folders, bottom to top."""
    parts = module.split(".")
    return FOLDERS.index(parts[1]) + 1 if len(parts) > 1 and parts[1] in FOLDERS else 0


def test_folders_import_only_downward():
    mods = modules()
    assert sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").exists()) == sorted(FOLDERS)
    upward = [f"{m} -> {i}" for m, p in mods.items() if m not in ENTRY_POINTS
              for i in top_level_imports(p) if i in mods and level(i) > level(m)]
    assert not upward, "imports of a folder above:\n" + "\n".join(upward)


def test_no_import_circles_between_modules():
    mods = modules()
    graph = {m: {i for i in top_level_imports(p) if i in mods and i != m} for m, p in mods.items()}
    # a package's __init__ imports nothing of its own folder here, so folder -> module edges are not circles
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError("import circle: " + " -> ".join([*path, m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in graph[m]:
            visit(n, [*path, m])
        state[m] = 2

    for m in graph:
        visit(m, [])


def test_imports_inside_functions_are_optional_packages_only():
    """Modules import at the top. Inside a function only the CLI imports (so that `busi --help` does not load
    torch), and elsewhere only an optional package (Colab's, kaggle), marked ``# optional``."""
    found = []
    for name, path in modules().items():
        if name == "busi_lib.apps.cli":
            continue
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        here = "".join(lines[inner.lineno - 1:inner.end_lineno])
                        if "# optional" not in here or "busi_lib" in here:
                            found.append(f"{path.relative_to(PKG.parent)}:{inner.lineno}: {here.strip()}")
    assert not found, "imports inside functions that are not of optional packages:\n" + "\n".join(found)


def test_import_stays_light():
    code = "import sys, busi_lib; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", "import busi_lib must not import torch"

def test_tests_mirror_the_package_folders():
    """tests/<folder>/ for each package folder; only tests of the whole project sit directly in tests/."""
    test_folders = sorted(p.name for p in TESTS.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert test_folders == sorted(FOLDERS)
    for folder in FOLDERS:
        assert list((TESTS / folder).glob("test_*.py")), f"tests/{folder}/ has no tests"
    whole_project = {"test_style", "test_layout", "test_lessons", "test_colab", "test_repo_url", "test_claims",
                     "test_profiles", "test_tools", "test_progress", "test_executed"}
    assert {p.stem for p in TESTS.glob("test_*.py")} <= whole_project


def test_one_exception_family():
    """Every error a user can cause is a BusiError, and still the built-in kind callers already catch."""
    from busi_lib import errors
    from busi_lib.apps.runner import NotebookFailed
    from busi_lib.models.weights import WeightsNotFoundError

    assert NotebookFailed is errors.NotebookFailed and WeightsNotFoundError is errors.WeightsNotFoundError
    for cls, builtin in [(errors.BusiDataError, ValueError), (WeightsNotFoundError, FileNotFoundError),
                         (NotebookFailed, RuntimeError)]:
        assert issubclass(cls, errors.BusiError) and issubclass(cls, builtin), cls
    e = errors.BusiDataError("scans/benign (1).png", "not an image")
    assert str(e) == "scans/benign (1).png: not an image" and e.reason == "not an image"
    classes = [c for m in modules() for c in _exception_classes(modules()[m])]
    assert set(classes) <= {"BusiError", "BusiDataError", "WeightsNotFoundError", "NotebookFailed"}, classes


def _exception_classes(path: Path) -> list[str]:
    """Names of the classes a module defines that derive from an Exception-like base."""
    out = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
            if any(b.endswith(("Error", "Exception", "Failed")) for b in bases):
                out.append(node.name)
    return out
