"""Copy the package's source into the lessons' ``# lesson code: busi_lib.<module>`` cells.

The package is the reference: change a function there, then run

    python tools/sync_lessons.py          # rewrite the cells that differ
    python tools/sync_lessons.py --check  # exit 1 if any cell differs (tests/test_lessons.py checks the same)

Only the definitions a cell already shows are replaced; its other lines stay as written.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import sys
from pathlib import Path

MARKER = "# lesson code: "
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def synced(src: str) -> str:
    """The cell's source with each top-level definition replaced by the package's source of the same name."""
    module = importlib.import_module(src.splitlines()[0][len(MARKER):].strip())
    lines = src.splitlines(keepends=True)
    nodes = [n for n in ast.parse(src).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    for node in reversed(nodes):  # from the bottom up, so earlier line numbers stay valid
        start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
        package = inspect.getsource(getattr(module, node.name)).rstrip("\n")
        tail = "\n" if lines[node.end_lineno - 1].endswith("\n") else ""
        lines[start:node.end_lineno] = [package + tail]
    return "".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report differing cells, change nothing")
    args = ap.parse_args(argv)
    stale = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        changed = False
        for i, cell in enumerate(nb["cells"]):
            src = "".join(cell["source"])
            if cell["cell_type"] != "code" or not src.startswith(MARKER):
                continue
            new = synced(src)
            if new != src:
                stale.append(f"{path.name} cell {i}")
                cell["source"] = new.splitlines(keepends=True)
                changed = True
        if changed and not args.check:
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    for s in stale:
        print(("differs: " if args.check else "synced: ") + s)
    return 1 if (stale and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
