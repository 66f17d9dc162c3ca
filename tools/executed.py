"""Commit a run of the lessons: copy the executed notebooks of ``busi notebooks`` into ``notebooks/executed/``.

    busi notebooks --profile cpu --out runs/course   # the run (README's main command)
    python tools/executed.py runs/course             # its executed copies, ready to commit
                                                     # (--commit C when the run used another commit)

Each copy keeps the run's cells and outputs, with figures re-encoded at a modest size and no widget state, takes
its markdown from the lesson as it is now (so a "What we saw" cell written after the run reads as in the lesson),
and records the run in its metadata (``busi_run``): the commit, the profile, the data and its fingerprint, the
machine and the seconds the notebook took. ``tests/test_executed.py`` fails when a lesson's code cells differ
from its executed copy's, and when a "What we saw" cell quotes a number the copy's outputs do not show.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import nbformat
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "notebooks"
EXECUTED = LESSONS / "executed"
MAX_SIDE = 900  # pixels: a figure's longest side in the committed copy


def small_png(data: str) -> str:
    """A base64 PNG shrunk to at most ``MAX_SIDE`` pixels a side, as 8-bit RGB."""
    img = Image.open(io.BytesIO(base64.b64decode(data)))
    img.thumbnail((MAX_SIDE, MAX_SIDE))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def run_times(run: Path) -> dict[str, float]:
    """The notebooks' seconds from the run's ``summary.md`` (its "Notebook run times" table)."""
    text = (run / "summary.md").read_text() if (run / "summary.md").is_file() else ""
    return {m[1]: float(m[2]) for m in re.finditer(r"^\| (\d\d_\w+) \| ([\d.]+) \|$", text, re.M)}


def fingerprints(folder: Path) -> list[str]:
    """The data fingerprints the models a notebook saved were trained on (each model's ``metrics.json``)."""
    found = {json.loads(p.read_text()).get("data_fingerprint") for p in folder.rglob("metrics.json")}
    return sorted(f for f in found if f)


def executed_copy(run_nb: Path, lesson: Path, record: dict) -> nbformat.NotebookNode:
    """The run's notebook with the lesson's current markdown, small figures, no widget state, and ``record``."""
    nb = nbformat.read(run_nb, as_version=4)
    markdown = {c.id: c.source for c in nbformat.read(lesson, as_version=4).cells if c.cell_type == "markdown"}
    nb.cells = [c for c in nb.cells if c.cell_type != "markdown" or c.id in markdown]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = markdown[cell.id]
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data:
                data["image/png"] = small_png(data["image/png"])
            data.pop("application/vnd.jupyter.widget-view+json", None)
    nb.metadata.pop("widgets", None)
    nb.metadata["busi_run"] = record
    return nb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the --out folder of `busi notebooks`")
    ap.add_argument("--machine", default=f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
                    help="how to name the machine the run used")
    ap.add_argument("--commit", help="the commit the run used (default: the checkout's HEAD)")
    args = ap.parse_args(argv)
    times = run_times(args.run)
    commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                           text=True).stdout.strip()
    EXECUTED.mkdir(exist_ok=True)
    for lesson in sorted(LESSONS.glob("[0-9][0-9]_*.ipynb")):
        run_nb = args.run / lesson.name
        if not run_nb.is_file():
            print(f"not in the run: {lesson.name}")
            continue
        folder = args.run / lesson.stem
        info = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
        record = dict(commit=commit, profile=info.get("profile"), data=Path(str(info.get("data"))).name,
                      real_busi=info.get("is_real"), data_fingerprints=fingerprints(folder),
                      machine=args.machine, seconds=times.get(lesson.stem))
        metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
        if metrics.get("external_data"):  # 07: the second hospital it was tested on
            record["second_hospital"] = Path(metrics["external_data"]).name
        nbformat.write(executed_copy(run_nb, lesson, record), EXECUTED / lesson.name)
        print(f"{lesson.name}: {(EXECUTED / lesson.name).stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
