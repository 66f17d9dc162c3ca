"""``busi train`` and ``busi bench`` run unchanged under ``accelerate launch`` with several processes.

README's test command runs the ``busi train`` launch; the ``busi bench`` one is marked ``extended``
(``pytest -m extended``, which ``.ci/run`` runs too).

Two CPU processes (gloo) train a tiny model together, as several GPUs or
machines would (DDP). The test checks that both processes ran, that each file
was written once (by the main process), that the checkpoint holds the plain
model's weights, and that the numbers are those of the *whole* validation set:
the metrics in ``metrics.json`` and in the epoch log (gathered from both
processes while training) equal a single-process evaluation of the saved model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import busi_lib
from busi_lib.data.dataset import load_dataset
from busi_lib.data.loaders import make_dataloaders
from busi_lib.data.splits import load_split, save_split, train_valid_test_split
from busi_lib.data.synthetic import make_synthetic_busi
from busi_lib.evaluation.metrics import classification_metrics, segmentation_metrics
from busi_lib.models.saving import load_model
from busi_lib.training.learners import predict_loader, score_predictions

pytestmark = pytest.mark.slow

# `accelerate launch` starts one process per --num_processes through torchrun (its --multi_gpu launcher); with no
# GPU visible, busi_lib joins them with gloo on the CPU. (`--cpu` alone starts a single process unless MPI is set up.)
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]


def _launch(args: list[str]) -> str:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(busi_lib.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([*LAUNCH, "-m", "busi_lib", *args], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r.stdout


@torch.no_grad()
def _mask_probs(model, dl) -> np.ndarray:
    # predict_loader keeps mask probabilities in float16 to save memory; the epoch metrics use float32
    return torch.cat([torch.sigmoid(model(b[0])[1])[:, 0] for b in dl]).numpy()


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def data(module_tmp) -> Path:
    return make_synthetic_busi(module_tmp / "busi", n_per_class=20, seed=1)


@pytest.fixture(scope="module")
def run(data, module_tmp):
    root = module_tmp / "ddp_run"
    root.mkdir()
    # a large validation part (11 scans: one process gets 6, the other 5 and a copy fastai pads with, which the
    # gathered metrics must leave out), so that the whole part and one process's shard score differently
    split_csv = save_split(train_valid_test_split(load_dataset(data), 0.3, 0.15, seed=2), root / "split_in.csv")
    out = root / "run"
    stdout = _launch(["train", "--arch", "multitask", "--encoder", "resnet18", "--no-pretrained", "--data", str(data),
                      "--split", str(split_csv), "--out", str(out), "--image-size", "32", "--epochs", "1",
                      "--batch-size", "4", "--seed", "5", "--quiet"])
    return out, stdout


def test_both_processes_train_and_files_are_written_once(run):
    out, stdout = run
    assert "process 1 of 2" in stdout and "process 2 of 2" in stdout
    assert _files(out) == {
        "split.csv", "epochs.csv", "metrics.json", "checkpoints/best.pth",
        "model/config.json", "model/metrics.json", "model/model.safetensors",
    }  # one of each: no second log, no leftover temporary file
    log = pd.read_csv(out / "epochs.csv")
    assert list(log["epoch"]) == [0]
    best = torch.load(out / "checkpoints" / "best.pth", weights_only=True)
    saved = load_file(str(out / "model" / "model.safetensors"))
    assert best.keys() == saved.keys()  # the plain model's names, not DistributedDataParallel's "module."
    assert all(torch.equal(best[k], saved[k]) for k in saved)  # the saved model is the best epoch's


def test_metrics_are_those_of_the_whole_validation_set(run, data):
    out, _ = run
    m = json.loads((out / "metrics.json").read_text())
    model, config = load_model(out / "model")
    df = load_dataset(data)
    split = load_split(out / "split.csv", df)
    assert m["n_images"]["valid"] == (split["split"] == "valid").sum() >= 10
    dls = make_dataloaders(df, split, "multitask", 32, 4, "none", seed=5)
    parts = {"valid": predict_loader(model, dls.valid, "multitask"), "test": predict_loader(model, dls[2], "multitask")}
    assert len(parts["valid"]["y"]) == m["n_images"]["valid"]
    for part, pred in parts.items():
        single = score_predictions(pred, m["threshold"])
        for kind in ("classification", "segmentation"):
            for key, value in single[kind].items():
                assert m[part][kind][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (part, kind, key)
    # The epoch log's metrics were computed while training, from the predictions both processes gathered:
    # they too are the whole validation set's (at threshold 0.5; masks scored from float32 probabilities there).
    log = pd.read_csv(out / "epochs.csv").iloc[-1]
    v = parts["valid"]
    at_half = classification_metrics(v["y"], v["prob"], 0.5)
    for key in ("accuracy", "f1", "roc_auc"):
        assert log[key] == pytest.approx(at_half[key], abs=1e-9), key
    seg = segmentation_metrics(v["mask"], _mask_probs(model, dls.valid), 0.5)
    for key in ("dice_pooled", "iou_pooled"):
        assert log[key] == pytest.approx(seg[key], rel=1e-6), key
    # ... and not one process's shard (the main process's: the first half), which scores differently here
    half = (len(v["y"]) + 1) // 2
    shard = classification_metrics(v["y"][:half], v["prob"][:half], 0.5)
    assert not all(np.isclose(shard[k], log[k]) for k in ("accuracy", "f1", "roc_auc")), "data too small to tell"


@pytest.mark.extended  # a second 2-process launch (35 s here): `.ci/run` runs it with -m extended
def test_bench_writes_each_fold_once(data, tmp_path):
    out = tmp_path / "bench"
    stdout = _launch(["bench", "--models", "custom_cnn", "--profile", "smoke", "--folds", "1", "--n-boot", "20",
                      "--data", str(data), "--out", str(out)])
    assert "process 1 of 2" in stdout and "process 2 of 2" in stdout
    assert stdout.count("[bench] custom_cnn fold 1:") == 1  # the main process reports; the other is silent
    fold = out / "custom_cnn" / "fold0"
    assert {f for f in _files(out) if not f.startswith("custom_cnn/")} == {"folds.csv", "results.json", "RESULTS.md"}
    assert {"fold_result.json", "fold_split.csv", "test_predictions.csv", "metrics.json"} <= _files(fold)
    assert not [f for f in _files(out) if f.endswith(".tmp")]
    result = json.loads((fold / "fold_result.json").read_text())
    preds = pd.read_csv(fold / "test_predictions.csv")
    fold_split = pd.read_csv(fold / "fold_split.csv")
    assert len(preds) == (fold_split["split"] == "test").sum() == result["n_images"]["test"]  # the whole test fold
    results = json.loads((out / "results.json").read_text())
    assert results["models"]["custom_cnn"]["fold_results"] == [result]
