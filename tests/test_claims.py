"""The lessons quote the committed 5-fold results: every number they cite is ``results.json``'s.

A lesson states what the bench's ladder measured (notebooks 02, 03 and 05). Each claim below is formatted from
``results.json`` the way the lessons and RESULTS.md print it; the test fails when a lesson's text and the
committed numbers drift apart (after a new bench run, update the text).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from busi_lib.apps.bench import LADDER

ROOT = Path(__file__).resolve().parents[1]
RESULTS = json.loads((ROOT / "results.json").read_text())


def metric(model: str, name: str = "roc_auc", section: str = "classification", which: str = "main") -> str:
    """``0.912 (0.89–0.94)``: the pooled out-of-fold value and its 95 % interval."""
    s = RESULTS["models"][model][which]
    lo, hi = s["ci95"][f"{section}.{name}"]
    return f"{s['pooled'][section][name]:.3f} ({lo:.2f}–{hi:.2f})"


def paired(pair: str, name: str = "roc_auc") -> str:
    """``+0.043 (+0.010 to +0.080)``: a paired difference and its 95 % interval."""
    d = RESULTS["paired_differences"][pair]
    lo, hi = d["ci95"][name]
    return f"{d['difference'][name]:+.3f} ({lo:+.3f} to {hi:+.3f})"


CLAIMS = {
    "02_custom_cnn": [metric("prior", "accuracy"), metric("shape_oracle"), metric("shape_oracle", "accuracy"),
                      metric("custom_cnn"), metric("custom_cnn", "accuracy"), metric("multitask")],
    "03_transfer_learning": [metric("efficientnet_lite0"), metric("efficientnet_lite0_scratch"),
                             paired("efficientnet_lite0 - efficientnet_lite0_scratch"), metric("custom_cnn")],
    "05_multitask_uresnet": [metric("multitask"), metric("multitask_no_seg"),
                             paired("multitask - multitask_no_seg"),
                             metric("multitask", "dice_pooled", "segmentation")],
}


def test_results_hold_every_ladder_row_over_5_folds_and_both_pairs():
    for model in LADDER:
        assert RESULTS["models"][model]["folds"] == [0, 1, 2, 3, 4], model
    assert set(RESULTS["paired_differences"]) == {"efficientnet_lite0 - efficientnet_lite0_scratch",
                                                  "multitask - multitask_no_seg"}


@pytest.mark.parametrize("stem", sorted(CLAIMS))
def test_the_lesson_quotes_the_committed_numbers(stem):
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    missing = [claim for claim in CLAIMS[stem] if claim not in text]
    assert not missing, f"{stem} does not quote results.json's {missing}"
