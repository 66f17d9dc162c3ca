"""The GPU decisions (precision, workers, pinned memory, cuDNN), checked on a CPU by pretending CUDA is here."""

from __future__ import annotations

import pytest
import torch

from busi_lib.config import TrainConfig
from busi_lib.profiles import settings_for
from busi_lib.training import hardware
from busi_lib.training.hardware import configure_backends, default_num_workers, loader_options, resolve_precision
from busi_lib.training.learners import prepare_data


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
    assert resolve_precision("fp32") == "fp32"
    for p in ("fp16", "bf16"):
        with pytest.raises(ValueError, match=f"{p} needs a CUDA GPU.*use fp32"):
            resolve_precision(p)
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


def test_16_bit_precision_on_a_cpu_is_a_clear_error(synthetic_dir, tmp_path, capsys):
    from busi_lib.apps.cli import main

    code = main(["train", "--arch", "custom_cnn", "--data", str(synthetic_dir), "--out", str(tmp_path / "run"),
                 "--image-size", "32", "--epochs", "1", "--quiet", "--precision", "fp16"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("busi: error: precision fp16 needs a CUDA GPU") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run" / "metrics.json").exists()
