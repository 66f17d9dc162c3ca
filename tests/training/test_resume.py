"""Interrupted training continues where it stopped and ends where an uninterrupted run ends.

A run is stopped like Ctrl-C stops it (a ``KeyboardInterrupt`` in the middle of
an epoch, leaving its partial state on disk), resumed with ``resume=True``, and
compared with an uninterrupted run of the same seed: on a CPU the final weights,
the metrics and the epoch log are identical, not merely close.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from fastai.callback.core import Callback
from safetensors.torch import load_file

import busi_lib.training.learners as learners
from busi_lib.apps.cli import main
from busi_lib.config import TrainConfig
from busi_lib.errors import BusiDataError
from busi_lib.training.learners import train


class InterruptAt(Callback):
    """Raise ``KeyboardInterrupt`` in the middle of the ``n``-th training batch of the run (counted from 1)."""

    order = 100

    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def after_loss(self):
        if self.training:
            self.seen += 1
            if self.seen == self.n:
                raise KeyboardInterrupt


def _config(data, out, **kw) -> TrainConfig:
    # lr 1e-2 makes the validation loss jump: the best epoch (the model kept) comes before the interruption,
    # so the resumed run must also remember which epoch was best.
    base = dict(arch="multitask", encoder="resnet18", pretrained=False, data=str(data), out=str(out), image_size=32,
                epochs=3, batch_size=8, lr=1e-2, augment="default", progress=False, seed=7)
    return TrainConfig(**{**base, **kw})


def _weights(run) -> dict:
    return load_file(str(run / "model" / "model.safetensors"))


def _scores(run) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    return {k: m[k] for k in ("threshold", "valid", "test", "valid_at_0.5", "test_at_0.5") if k in m}


def _log(run) -> pd.DataFrame:
    return pd.read_csv(run / "epochs.csv").drop(columns="time")


def _assert_same_run(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    assert _scores(a) == _scores(b)
    pd.testing.assert_frame_equal(_log(a), _log(b))


@pytest.fixture(scope="module")
def uninterrupted(synthetic_dir, module_tmp):
    out = module_tmp / "full"
    train(_config(synthetic_dir, out))
    return out


@pytest.mark.slow
def test_same_seed_same_split_and_metrics(synthetic_dir, uninterrupted, tmp_path):
    again = tmp_path / "again"
    train(_config(synthetic_dir, again))
    assert (again / "split.csv").read_text() == (uninterrupted / "split.csv").read_text()
    _assert_same_run(uninterrupted, again)
    other = tmp_path / "other_seed"
    train(_config(synthetic_dir, other, seed=8, epochs=1))
    assert (other / "split.csv").read_text() != (again / "split.csv").read_text()  # the seed does matter


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_result(synthetic_dir, uninterrupted, tmp_path):
    out = tmp_path / "run"
    cfg = _config(synthetic_dir, out)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, cbs=[InterruptAt(5)])  # 2 batches per epoch: stops inside the third epoch
    ckpt = torch.load(out / "checkpoints" / "resume.pt", weights_only=True)
    assert (ckpt["stage"], ckpt["epoch"]) == (0, 1)  # epochs 0 and 1 finished
    assert not (out / "metrics.json").exists() and not (out / "model").exists()
    res = train(replace(cfg, resume=True))
    assert res.metrics["settings"]["resume"] is True
    assert _log(out)["valid_loss"].idxmin() < 2  # the kept model is from before the interruption
    _assert_same_run(uninterrupted, out)


def test_resume_of_a_finished_run_changes_nothing(synthetic_dir, uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    train(_config(synthetic_dir, out, resume=True))
    _assert_same_run(uninterrupted, out)


@pytest.mark.slow
def test_resume_in_the_second_fine_tune_stage(synthetic_dir, tmp_path, monkeypatch):
    # Pretrained weights cannot be downloaded here: fine-tune a from-scratch ResNet-18 instead.
    monkeypatch.setattr(learners, "fine_tunes", lambda cfg: True)
    cfg = dict(arch="resnet18", epochs=2, augment="default")
    full, out = tmp_path / "full", tmp_path / "run"
    train(_config(synthetic_dir, full, **cfg))
    with pytest.raises(KeyboardInterrupt):
        train(_config(synthetic_dir, out, **cfg), cbs=[InterruptAt(6)])  # frozen epoch, unfrozen epoch 0, then stop
    ckpt = torch.load(out / "checkpoints" / "resume.pt", weights_only=True)
    assert (ckpt["stage"], ckpt["epoch"]) == (1, 0)
    train(_config(synthetic_dir, out, resume=True, **cfg))
    _assert_same_run(full, out)


def test_resume_refuses_other_settings_and_bad_checkpoints(synthetic_dir, uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    with pytest.raises(BusiDataError, match=r"resume\.pt.*epochs=4 here, 3 in the checkpoint"):
        train(_config(synthetic_dir, out, resume=True, epochs=4))
    (out / "checkpoints" / "resume.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BusiDataError, match=r"resume\.pt: unreadable checkpoint"):
        train(_config(synthetic_dir, out, resume=True))


def test_no_checkpoint_starts_from_the_first_epoch(synthetic_dir, tmp_path, capsys):
    train(_config(synthetic_dir, tmp_path / "new", resume=True, epochs=1))
    assert "no checkpoint" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "new" / "epochs.csv")) == 1


def test_cli_resume_flag(synthetic_dir, tmp_path):
    args = ["train", "--arch", "custom_cnn", "--data", str(synthetic_dir), "--out", str(tmp_path / "cli"),
            "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--quiet", "--seed", "1"]
    assert main(args) == 0
    before = np.array(json.loads((tmp_path / "cli" / "metrics.json").read_text())["threshold"])
    assert main([*args, "--resume"]) == 0
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["settings"]["resume"] is True
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["threshold"] == before


def test_augmentation_is_a_function_of_seed_epoch_and_index(synthetic_dir):
    from busi_lib.data.dataset import load_dataset
    from busi_lib.data.loaders import make_dataset

    df = load_dataset(synthetic_dir).head(6)
    ds = make_dataset(df, 32, "multitask", augment="strong", seed=3)
    ds.set_epoch(2)
    first = [ds[i][0] for i in range(6)]
    ds.set_epoch(5)
    ds[4], ds[0]  # other draws in between change nothing
    ds.set_epoch(2)
    assert all(torch.equal(ds[i][0], first[i]) for i in reversed(range(6)))
    ds.set_epoch(3)
    assert not all(torch.equal(ds[i][0], first[i]) for i in range(6))  # another epoch, other augmentations


def test_transforms_draw_independently():
    """One shared generator: the flip and the brightness change are not decided by the same random number."""
    from busi_lib.data.transforms import build_transforms, seed_transforms

    tfm = build_transforms("default")
    tfm.save_applied_params = True
    img = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    both = {}
    for key in range(200):
        seed_transforms(tfm, 1, 0, key)
        applied = {name for name, _ in tfm(image=img, mask=(img > 128).astype(np.uint8))["applied_transforms"]}
        flip, bright = "HorizontalFlip" in applied, "RandomBrightnessContrast" in applied
        both[flip, bright] = both.get((flip, bright), 0) + 1
    assert len(both) == 4 and min(both.values()) > 20  # all four combinations, each about a quarter of the time
