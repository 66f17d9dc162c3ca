"""The lessons write out the code they teach, and the package holds that very code.

A notebook cell whose first line is ``# lesson code: busi_lib.<module>`` defines
functions or classes that ``busi_lib.<module>`` also defines. Each definition in
the cell must be, character for character, the source of the package's object
(``inspect.getsource``), so a lesson never shows code that the library does not
run. This is how rasbt/LLMs-from-scratch keeps its chapters and its package in step.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
MARKER = "# lesson code: "
# what each lesson must write out, at least
REQUIRED = {
    "02_custom_cnn": {"busi_lib.models.networks.CustomCNN", "busi_lib.training.learners.make_learner"},
    "03_transfer_learning": {"busi_lib.training.learners.transfer_learner", "busi_lib.training.learners.stages"},
    "04_unet_segmentation": {"busi_lib.models.networks.DecoderBlock", "busi_lib.models.networks.UNetDecoder",
                             "busi_lib.training.losses.soft_dice_loss", "busi_lib.training.losses.SegmentationLoss",
                             "busi_lib.evaluation.metrics.segmentation_counts",
                             "busi_lib.evaluation.metrics.scores_from_counts"},
    "05_multitask_uresnet": {"busi_lib.models.networks.MultitaskUResNet", "busi_lib.training.losses.MultitaskLoss"},
}


def lesson_cells(path: Path) -> list[tuple[int, str, str]]:
    """(cell index, module name, cell source) of every lesson-code cell of a notebook."""
    nb = json.loads(path.read_text())
    out = []
    for i, c in enumerate(nb["cells"]):
        src = "".join(c["source"])
        if c["cell_type"] == "code" and src.startswith(MARKER):
            out.append((i, src.splitlines()[0][len(MARKER):].strip(), src))
    return out


def definitions(src: str) -> dict[str, str]:
    """Top-level functions and classes of a cell, with their exact source text."""
    tree = ast.parse(src)
    return {node.name: ast.get_source_segment(src, node, padded=False)
            for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
CELLS = [(nb, *cell) for nb in ALL for cell in lesson_cells(nb)]


def drifted(module: str, src: str) -> list[str]:
    """The names a lesson cell defines whose text is not the package's source (or that the package lacks)."""
    mod = importlib.import_module(module)
    return [name for name, text in definitions(src).items()
            if not hasattr(mod, name) or text != inspect.getsource(getattr(mod, name)).rstrip("\n")]


@pytest.mark.parametrize("nb, index, module, src", CELLS, ids=[f"{nb.stem}-cell{i}" for nb, i, _, _ in CELLS])
def test_lesson_code_is_the_package_code(nb, index, module, src):
    assert definitions(src), f"{nb.name} cell {index} is marked as lesson code but defines nothing"
    assert drifted(module, src) == [], f"{nb.name} cell {index} differs from {module}"


@pytest.mark.parametrize("stem, names", sorted(REQUIRED.items()))
def test_each_lesson_writes_out_what_it_teaches(stem, names):
    shown = {f"{module}.{name}" for _, module, src in lesson_cells(NOTEBOOKS / f"{stem}.ipynb")
             for name in definitions(src)}
    assert names <= shown, f"{stem} does not write out {sorted(names - shown)}"


def test_a_changed_line_is_caught():
    """The check fails when a lesson's copy drifts from the package (so it is not a test that cannot fail)."""
    from busi_lib.models import networks as models

    cell = MARKER + "busi_lib.models.networks\n" + inspect.getsource(models.CustomCNN)
    assert drifted("busi_lib.models.networks", cell) == []
    assert drifted("busi_lib.models.networks", cell.replace("dropout: float = 0.3", "dropout: float = 0.5")) == [
        "CustomCNN"]


@pytest.mark.parametrize("nb", ALL, ids=[p.stem for p in ALL])
def test_every_lesson_ends_with_questions_experiments_and_answers(nb):
    cells = json.loads(nb.read_text())["cells"]
    texts = ["".join(c["source"]) for c in cells]
    text = next((t for t in texts if t.startswith("## Questions and experiments")), None)
    assert text is not None, f"{nb.name} has no 'Questions and experiments' section"
    assert texts.index(text) >= len(cells) - 2  # at the end (before the cell that saves the metrics, if any)
    questions = text.split("**Questions**")[1].split("**Experiments**")[0]
    experiments = text.split("**Experiments**")[1]
    n_q = sum(1 for line in questions.splitlines() if line[:1].isdigit())
    n_e = sum(1 for line in experiments.splitlines() if line[:1].isdigit())
    assert 6 <= n_q <= 10 and 2 <= n_e <= 3, (n_q, n_e)
    assert experiments.count("*What to expect:*") + experiments.count("*Measured outcome*") == n_e
    answers = (NOTEBOOKS / "answers" / f"{nb.stem}.md").read_text()
    n_answers = sum(1 for line in answers.split("## Experiments")[0].splitlines() if line[:1].isdigit())
    assert n_answers == n_q, f"{nb.stem}: {n_q} questions, {n_answers} answers"


@pytest.mark.parametrize("nb", ALL, ids=[p.stem for p in ALL])
def test_the_header_shows_the_run_times_that_start_prints(nb):
    """Each notebook's header states the run times that ``start`` prints (busi_lib.ui.notebook.EXPECTED_TIME), so
    re-measuring means changing the dictionary and the headers together, and this test says where they differ."""
    from busi_lib.ui.notebook import EXPECTED_TIME

    header = "".join(json.loads(nb.read_text())["cells"][0]["source"])
    line = next((x for x in header.splitlines() if x.startswith("**Run time**")), None)
    assert line is not None, f"{nb.name}: no '**Run time**' line in the first cell"
    times = EXPECTED_TIME[nb.stem]
    for profile in ("smoke", "cpu"):
        assert f"{profile} {times[profile]}" in line, f"{nb.name}: header says {line!r}, EXPECTED_TIME {times}"


def test_the_lesson_decoder_is_the_one_the_models_run():
    """Notebook 04's UNetDecoder is not a copy on the side: every U-shaped model of the package runs it."""
    from busi_lib.models.networks import MultitaskUResNet, UNetDecoder, build_model

    assert isinstance(build_model("unet").net.decoder, UNetDecoder)
    assert isinstance(build_model("uresnet", encoder="resnet18").net.decoder, UNetDecoder)
    assert isinstance(MultitaskUResNet("resnet18").net.decoder, UNetDecoder)
