"""The lesson notebooks, their runtime helper (busi_lib.ui.notebook) and the batch runner (busi notebooks).

nbval runs every notebook on its own (see notebooks/conftest.py); these tests check
the notebooks' structure, the helpers, and one end-to-end ``busi notebooks`` run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest

from busi_lib.apps.runner import NOTEBOOK_DIR, NotebookFailed, numbered_notebooks, parse_value, run_notebooks
from busi_lib.profiles import STUDY_MODELS, resolve_arch
from busi_lib.ui.notebook import EXPECTED_TIME, start

NOTEBOOKS = numbered_notebooks()
IDS = [p.stem for p in NOTEBOOKS]
REQUIRED_PARAMETERS = {"profile", "data_dir", "out_dir", "seed"}

# Figures each lesson must save (in <out>/<notebook>/); notebooks not listed must save at least one PNG.
FIGURES = {
    "01_data_exploration": {"data_overview", "example_scans", "augmentations"},
    "02_custom_cnn": {"training_batch", "lr_find", "training_curves", "confusion", "roc", "worst_errors"},
    "03_transfer_learning": {"metrics_bars", "roc", "confusion", "worst_errors"},
    "04_unet_segmentation": {"metrics_bars", "mask_grid", "training_curves"},
    "05_multitask_uresnet": {"model_diagram", "training_curves", "confusion", "roc", "worst_errors", "gradcam",
                             "study_comparison"},
    "06_results": {"figure2_classification", "figure2_segmentation", "figure3_masks", "roc_all"},
    "07_external_validation": {"two_hospitals", "reliability", "roc_home_away"},
}


def test_the_seven_lessons_exist():
    assert set(FIGURES) <= set(IDS), f"missing notebooks: {set(FIGURES) - set(IDS)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_one_parameters_cell_that_papermill_reads(path, caplog):
    nb = nbformat.read(path, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    assert tagged[0] == code_cells[1], "the parameters cell must be the second code cell, after the Colab setup"
    names = set(pm.inspect_notebook(str(path)))
    assert REQUIRED_PARAMETERS <= names, f"{path.name} lacks parameters {REQUIRED_PARAMETERS - names}"
    # a line papermill cannot parse is a parameter that `-p NAME VALUE` cannot set (it only logs a warning)
    unparsed = [r.getMessage() for r in caplog.records if "Unable to parse" in r.getMessage()]
    assert not unparsed, f"{path.name}: {unparsed}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_generic_kernel_and_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {i} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_starts_with_its_own_name_and_the_shared_colab_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    # First the Colab setup (before the parameters cell, which reads the BUSI_* variables it sets in Colab):
    # the install, guarded so that it runs in Colab only, then busi_lib.colab.setup().
    lines = [line for line in code[0].splitlines() if not line.startswith("#")]
    assert lines[:2] == ['if "google.colab" in str(get_ipython()):', lines[1]], "the install runs in Colab only"
    assert lines[1].startswith('    %pip install -q "busi-lib @ git+'), "the install line: %pip, keeping Colab's torch"
    assert lines[2:] == ["import busi_lib.colab", "colab = busi_lib.colab.setup(drive=True)"]
    reference = [c.source for c in nbformat.read(NOTEBOOKS[0], as_version=4).cells if c.cell_type == "code"][0]
    assert code[0] == reference, "every notebook uses the same Colab setup cell as 01"
    names = re.findall(r"""start\(\s*["']([^"']+)["']""", "\n".join(code))
    assert names == [path.stem], f"start() must be called once with the notebook's own name, got {names}"
    assert "colab.research.google.com" in nb.cells[0].source, "first cell: title with the Open-in-Colab badge"


@pytest.mark.parametrize(
    "text, value",
    [("3", 3), ("2e-3", 0.002), ("True", True), ("None", None), ("resnet50", "resnet50"),
     ("[resnet50, vgg16_bn]", ["resnet50", "vgg16_bn"]), ('{"epochs": 2}', {"epochs": 2}), ("a: b: c", "a: b: c")],
)
def test_parameter_values_are_read_like_papermill(text, value):
    assert parse_value(text) == value


def test_start_chooses_data_and_output_and_builds_configs(synthetic_dir, tmp_path, capsys):
    run = start("02_custom_cnn", profile="smoke", data_dir=str(synthetic_dir), out_dir=str(tmp_path), seed=7)
    printed = capsys.readouterr().out
    assert f"Data: a synthetic BUSI-like set at {synthetic_dir}" in printed
    assert "smoke" in printed and EXPECTED_TIME["02_custom_cnn"]["smoke"] in printed
    assert run.out == tmp_path / "02_custom_cnn" and run.out.is_dir() and not run.is_real

    cfg = run.config("transformer", epochs=3, lr=None)
    assert cfg.arch == resolve_arch("transformer", "smoke") and cfg.arch.startswith("vit_")
    assert (cfg.epochs, cfg.image_size, cfg.lr, cfg.pretrained) == (3, 32, 2e-3, False)
    assert (cfg.data, cfg.seed, cfg.progress) == (str(synthetic_dir), 7, False)
    assert Path(cfg.out) == run.out / "transformer"

    run.save_metrics({"models": {"x": {"accuracy": 0.5}}})
    other = start("06_results", profile="smoke", data_dir=str(synthetic_dir), out_dir=str(tmp_path), verbose=False)
    assert other.read_metrics("02_custom_cnn") == {"models": {"x": {"accuracy": 0.5}}}
    with pytest.raises(FileNotFoundError, match="run notebook 05_multitask_uresnet first"):
        other.read_metrics("05_multitask_uresnet")

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = run.save_figure(fig, "line")
    assert png == run.out / "line.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lesson_model_trains_once_then_reuses_the_lessons_folder(synthetic_dir, tmp_path):
    answers = start("04_answers", profile="smoke", data_dir=str(synthetic_dir), out_dir=str(tmp_path), verbose=False)
    first = answers.lesson_model("04_unet_segmentation", "unet", "unet")  # the lesson has not run: trained here
    assert first == tmp_path / "04_answers" / "unet" and (first / "model").is_dir()
    lesson = tmp_path / "04_unet_segmentation" / "unet"
    lesson.parent.mkdir()
    first.rename(lesson)  # as if the lesson had saved it
    stamp = (lesson / "metrics.json").stat().st_mtime_ns
    assert answers.lesson_model("04_unet_segmentation", "unet", "unet") == lesson
    assert (lesson / "metrics.json").stat().st_mtime_ns == stamp and not first.exists()  # nothing trained again


def test_start_refuses_a_missing_data_folder_and_an_unknown_profile(tmp_path):
    from busi_lib.errors import BusiDataError

    with pytest.raises(BusiDataError, match="does not exist"):
        start("01_data_exploration", profile="smoke", data_dir=str(tmp_path / "nope"), out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown profile"):
        start("01_data_exploration", profile="fast", out_dir=str(tmp_path))


def test_multitask_diagram_shapes_come_from_the_model():
    from busi_lib.evaluation.study import layer_shapes
    from busi_lib.models.networks import build_model
    from busi_lib.ui.plots import plot_multitask_diagram

    shapes = layer_shapes(build_model("multitask", encoder="resnet18"), image_size=64)
    sides = [s[1] for s in shapes["encoder"]]
    assert sides == [64, 32, 16, 8, 4, 2]  # each ResNet stage halves the resolution
    assert [s[1] for s in shapes["decoder"]] == [4, 8, 16, 32, 64]  # the decoder climbs back
    assert shapes["segmentation"] == (1, 64, 64) and shapes["classification"] == (1,)
    fig = plot_multitask_diagram(shapes)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "512 x 2 x 2" in texts and "1 x 64 x 64" in texts


def _write_notebook(path: Path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = [nbformat.v4.new_code_cell(s) for s in sources]
    cells[0].metadata["tags"] = ["parameters"]
    nb.cells = cells
    nbformat.write(nb, path)


def test_runner_stops_at_the_first_failing_notebook_and_names_the_cell(tmp_path, capfd):
    folder = tmp_path / "nbs"
    folder.mkdir()
    params = 'profile = "cpu"\nout_dir = None\nmarker = None'
    write = "import pathlib\npathlib.Path(out_dir, f'{marker}.txt').write_text(profile)"
    _write_notebook(folder / "01_ok.ipynb", params, write)
    _write_notebook(folder / "02_bad.ipynb", params, "x = 1", "raise ValueError('boom in the third cell')")
    _write_notebook(folder / "03_never.ipynb", params, write)
    out = tmp_path / "out"
    with pytest.raises(NotebookFailed) as err:
        run_notebooks("smoke", out=out, params={"marker": "ran"}, folder=folder, log=lambda _: None)
    msg = str(err.value)
    assert "02_bad" in msg and "boom in the third cell" in msg and "raise ValueError" in msg
    # papermill adds an 'injected-parameters' cell after the parameters: the failing cell is the 4th
    assert err.value.cell == 3
    assert (out / "ran.txt").read_text() == "smoke"  # 01 ran, with the profile passed on
    assert (out / "02_bad.ipynb").exists() and not (out / "03_never.ipynb").exists()
    assert "IPKernelApp" not in capfd.readouterr().err  # no kernel log lines (its local-TCP warning) in the output


def test_runner_refuses_a_missing_data_folder_before_starting_a_kernel(tmp_path):
    from busi_lib.errors import BusiDataError

    with pytest.raises(BusiDataError, match="does not exist"):
        run_notebooks("smoke", data=tmp_path / "nope", out=tmp_path / "out", log=lambda _: None)
    assert not list((tmp_path / "out").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.extended
def test_busi_notebooks_smoke_end_to_end(tmp_path):
    """``busi notebooks --profile smoke`` runs every lesson on the synthetic set and writes the summary."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("BUSI_DATA_DIR", "BUSI_RUNS_DIR", "BUSI_PROFILE")}
    proc = subprocess.run(
        [sys.executable, "-m", "busi_lib", "notebooks", "--profile", "smoke", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for nb in NOTEBOOKS:
        assert f"{nb.stem} done in" in proc.stdout
        executed = nbformat.read(out / nb.name, as_version=4)
        text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
        assert "Data: a synthetic BUSI-like set" in text and "Profile: smoke" in text
        folder = out / nb.stem
        assert (folder / "metrics.json").is_file(), f"{nb.stem} saved no metrics"
        pngs = {p.stem for p in folder.glob("*.png")}
        assert FIGURES.get(nb.stem, set()) <= pngs and pngs, f"{nb.stem}: figures {sorted(pngs)}"
    summary = pd.read_csv(out / "summary.csv")
    assert set(STUDY_MODELS) <= set(summary["model"]), f"summary lists {sorted(summary['model'])}"
    clf = summary[summary["task"].isin(["classify", "multitask"])]
    seg = summary[summary["task"].isin(["segment", "multitask"])]
    assert clf["accuracy"].between(0, 1).all() and seg["dice_pooled"].between(0, 1).all()
    assert (summary["n_test"] > 0).all()
    md = (out / "summary.md").read_text()
    assert all(f"| {m} |" in md for m in STUDY_MODELS) and "Notebook run times" in md


def test_notebook_folder_is_the_repository_one():
    assert NOTEBOOK_DIR == Path(__file__).resolve().parents[2] / "notebooks"


@pytest.mark.slow
@pytest.mark.extended
def test_07_uses_the_external_folder_it_is_given(tmp_path):
    """Notebook 07 scores the folder that ``external_dir`` names (as ``BUSI_EXTERNAL_DIR`` would), not its own
    synthetic hospital: here a shifted synthetic set in BUSI's layout stands in for a converted real one."""
    from busi_lib.data.synthetic import HOSPITAL_B, make_synthetic_busi

    site = make_synthetic_busi(tmp_path / "site", n_per_class=10, seed=7, shift=HOSPITAL_B)
    (site / "synthetic_manifest.csv").rename(tmp_path / "manifest.csv")  # a real site has no manifest
    out = tmp_path / "out"
    run_notebooks("smoke", out=out, only=["07"], params={"external_dir": str(site)}, log=lambda _: None)
    executed = nbformat.read(out / "07_external_validation.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert f"second hospital: {site}" in text
    assert not (out / "07_external_validation" / "hospital_b").exists(), "07 built its synthetic hospital anyway"
