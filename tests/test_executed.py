"""The executed copies in notebooks/executed/ (made by tools/executed.py from one cpu run of the lessons).

A copy is stale when a lesson's code changed after the run: its code cells must equal the lesson's. The lesson's
"What we saw" cells quote that run; every decimal number they quote must be shown in the copy's outputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
SAW = "**What we saw"
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def text(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def code_cells(path: Path) -> list[str]:
    """The code a notebook runs, without the parameters cell papermill injects into an executed copy."""
    return [text(c) for c in cells(path)
            if c["cell_type"] == "code" and "injected-parameters" not in c["metadata"].get("tags", [])]


def shown_numbers(path: Path) -> list[str]:
    """Every decimal number in a notebook's text outputs (printed lines, tables, reprs)."""
    found = []
    for cell in cells(path):
        for out in cell.get("outputs", []):
            parts = [out.get("text", "")] + [out.get("data", {}).get(k, "") for k in ("text/plain", "text/markdown")]
            found += DECIMAL.findall("".join("".join(p) if isinstance(p, list) else p for p in parts))
    return found


def quoted_numbers(markdown: str) -> list[str]:
    """The decimal numbers a "What we saw" cell quotes, leaving out code spans (settings, not results)."""
    return DECIMAL.findall(re.sub(r"`[^`]*`", "", markdown))


def is_shown(quoted: str, shown: list[str]) -> bool:
    """``quoted`` equals a shown number rounded to the quoted number's decimals (0.926 matches 0.92612)."""
    places = len(quoted.split(".")[1])
    return any(len(s.split(".")[1]) >= places and f"{float(s):.{places}f}" == quoted for s in shown)


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_the_executed_copy_runs_the_lessons_code(lesson):
    assert code_cells(NOTEBOOKS / "executed" / lesson.name) == code_cells(lesson)


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_what_we_saw_quotes_the_executed_run(lesson):
    shown = shown_numbers(NOTEBOOKS / "executed" / lesson.name)
    saw = [text(c) for c in cells(lesson) if c["cell_type"] == "markdown" and text(c).startswith(SAW)]
    assert saw, f"{lesson.name} has no '{SAW}' cell"
    missing = [q for cell in saw for q in quoted_numbers(cell) if not is_shown(q, shown)]
    assert not missing, f"{lesson.name} quotes numbers its executed copy does not show: {missing}"


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_the_executed_copy_records_a_cpu_run_on_the_real_busi(lesson):
    copy = NOTEBOOKS / "executed" / lesson.name
    run = json.loads(copy.read_text())["metadata"]["busi_run"]
    assert (run["profile"], run["real_busi"]) == ("cpu", True)
    assert copy.stat().st_size < 4e6
    if lesson.stem.startswith("07"):
        assert run["second_hospital"], "07's copy must come from a run on a real second hospital"


def test_the_number_check_rounds_and_can_fail():
    assert is_shown("0.926", ["0.9261186264308012"]) and not is_shown("0.927", ["0.9261186264308012"])
    assert not is_shown("0.93", ["0.9"])
    assert quoted_numbers("ROC-AUC 0.926 at `lr=2e-3`, threshold `0.5`") == ["0.926"]
