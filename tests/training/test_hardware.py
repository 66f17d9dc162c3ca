"""The GPU decisions (precision, workers, pinned memory, cuDNN) and bfloat16 training against float32 on a CPU."""

from __future__ import annotations

import pytest
import torch
from fastai.callback.core import Callback
from fastai.torch_core import set_seed

from busi_lib.config import TrainConfig
from busi_lib.profiles import settings_for
from busi_lib.training import hardware
from busi_lib.training.hardware import configure_backends, default_num_workers, loader_options, resolve_precision
from busi_lib.training.learners import build_learner, predict_loader, prepare_data


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend a CUDA GPU with bfloat16 is here (the decision functions only ask these two questions)."""

    def set_gpu(bf16: bool = True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")

    return set_gpu


def test_precision_is_resolved_per_machine(fake_cuda):
    assert resolve_precision("mixed") == "fp32"  # this CPU: no mixed precision unless asked for by name
    assert resolve_precision("bf16") == "bf16" and resolve_precision("fp32") == "fp32"
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU.*bf16"):
        resolve_precision("fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("half")
    fake_cuda(bf16=True)
    assert resolve_precision("mixed") == "bf16" and resolve_precision("fp16") == "fp16"
    fake_cuda(bf16=False)
    assert resolve_precision("mixed") == "fp16"
    with pytest.raises(ValueError, match="Tesla T4.*does not support bfloat16"):
        resolve_precision("bf16")


def test_profiles_precision_defaults():
    """cpu and smoke stay float32 (their figures in RESULTS.md); the gpu profile asks for mixed precision."""
    for profile in ("smoke", "cpu"):
        for arch in ("multitask", "resnet50", "transformer"):
            assert settings_for(profile, arch)["precision"] == "fp32"
    assert settings_for("gpu", "multitask")["precision"] == "mixed"
    assert settings_for("gpu", "multitask", precision="fp32")["precision"] == "fp32"
    assert settings_for("gpu", "unet")["channels_last"] and not settings_for("gpu", "transformer")["channels_last"]
    assert TrainConfig().precision == "fp32"


def test_loader_and_backend_decisions(fake_cuda, monkeypatch):
    assert loader_options() == dict(num_workers=0, pin_memory=False)  # CPU: as before
    assert loader_options(3) == dict(num_workers=3, pin_memory=False)
    benchmark = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        assert configure_backends() == dict(cudnn_benchmark=False)  # untouched without CUDA
        fake_cuda()
        monkeypatch.setattr(hardware.os, "cpu_count", lambda: 16)
        monkeypatch.setattr(hardware.sys, "platform", "linux")
        assert loader_options() == dict(num_workers=4, pin_memory=True)
        assert loader_options(0) == dict(num_workers=0, pin_memory=True)
        monkeypatch.setattr(hardware.os, "cpu_count", lambda: 2)  # Colab: 2 cores
        assert default_num_workers() == 1
        monkeypatch.setattr(hardware.sys, "platform", "darwin")  # workers hang in Jupyter there
        assert default_num_workers() == 0
        assert configure_backends() == dict(cudnn_benchmark=True)
    finally:
        torch.backends.cudnn.benchmark = benchmark


def test_workers_give_the_same_batches(synthetic_dir, tmp_path):
    """A GPU run loads with worker processes: every batch, augmentation included, is the one of a 0-worker run."""
    batches = {}
    for workers in (0, 2):
        cfg = TrainConfig(arch="multitask", data=str(synthetic_dir), out=str(tmp_path / f"w{workers}"),
                          image_size=32, batch_size=8, num_workers=workers, seed=5)
        _, _, dls = prepare_data(cfg)
        assert dls.train.fake_l.num_workers == workers
        dls.train.dataset.set_epoch(1)  # what AugmentEpoch does before epoch 1 of a fit
        batches[workers] = [b for b in dls.train]
    assert len(batches[0]) == len(batches[2]) >= 2
    for a, b in zip(batches[0], batches[2]):
        for ta, tb in zip(a, b):
            assert torch.equal(ta, tb)


class TrainLosses(Callback):
    """The loss of every training batch, and the dtype of the first convolution's output in training."""

    def before_fit(self):
        self.losses, self.dtypes = [], set()
        conv = next(m for m in self.learn.model.modules() if isinstance(m, torch.nn.Conv2d))
        self.hook = conv.register_forward_hook(lambda m, i, o: self.dtypes.add(o.dtype) if m.training else None)

    def after_loss(self):
        if self.training:
            self.losses.append(float(self.loss.detach()))

    def after_fit(self):
        self.hook.remove()


def _fit(synthetic_dir, out, precision):
    cfg = TrainConfig(arch="custom_cnn", data=str(synthetic_dir), out=str(out), image_size=32, batch_size=8,
                      epochs=1, lr=1e-3, seed=3, progress=False, precision=precision)
    set_seed(cfg.seed, reproducible=True)
    _, _, dls = prepare_data(cfg)
    learn = build_learner(dls, cfg)
    losses = TrainLosses()
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, cfg.lr, cbs=[losses])
    return losses, learn.recorder.values[-1], predict_loader(learn.model, dls.valid, "classify")


def test_bf16_training_matches_fp32(synthetic_dir, tmp_path):
    """Same seed, same weights, same batches: bfloat16 autocast trains like float32, within its precision.

    bfloat16 keeps 8 significant bits (relative rounding 2**-8, about 0.4 %) and autocast runs the
    convolutions and the linear layer in it, accumulating in float32. Measured on this project's CPU
    (custom CNN, 32 px, batches of 8, two Adam steps): first-step loss 0.7191 vs 0.7159 (0.4 %), second
    0.9006 vs 0.8876 (1.4 %, the first update already differs), validation loss 0.6946 vs 0.6947. The
    tolerances below are 2-4x those figures: loose enough for another CPU's kernels, tight enough to
    catch a broken cast (a wrong dtype, an unscaled or skipped step changes these losses by far more).
    Threshold metrics (accuracy, sensitivity) on 5 validation scans are not compared: their
    probabilities sit near 0.5 after two steps, where a change of 0.001 flips a label; the
    probabilities themselves are compared.
    """
    fp32, rec32, pred32 = _fit(synthetic_dir, tmp_path / "fp32", "fp32")
    bf16, rec16, pred16 = _fit(synthetic_dir, tmp_path / "bf16", "bf16")
    assert fp32.dtypes == {torch.float32} and bf16.dtypes == {torch.bfloat16}  # autocast really ran
    assert len(fp32.losses) == len(bf16.losses) >= 2
    assert fp32.losses != bf16.losses  # not silently float32 (fastai's own callback would be, on a CPU)
    assert bf16.losses[0] == pytest.approx(fp32.losses[0], rel=0.015)  # same weights: rounding only
    assert bf16.losses == pytest.approx(fp32.losses, rel=0.05)
    assert rec16[0] == pytest.approx(rec32[0], rel=0.05)  # epoch train loss
    assert rec16[1] == pytest.approx(rec32[1], rel=0.01)  # validation loss
    assert abs(pred16["prob"] - pred32["prob"]).max() < 0.02 and (pred16["y"] == pred32["y"]).all()


def test_fp16_on_a_cpu_is_a_clear_error(synthetic_dir, tmp_path, capsys):
    from busi_lib.apps.cli import main

    code = main(["train", "--arch", "custom_cnn", "--data", str(synthetic_dir), "--out", str(tmp_path / "run"),
                 "--image-size", "32", "--epochs", "1", "--quiet", "--precision", "fp16"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("busi: error: precision fp16 needs a CUDA GPU") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run" / "metrics.json").exists()
