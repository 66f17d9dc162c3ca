"""Every learner builds and trains one short epoch; the multitask outputs and loss parts; saved models."""

import json

import numpy as np
import pytest
import torch

from busi_lib.config import TrainConfig
from busi_lib.errors import BusiDataError
from busi_lib.models.networks import CustomCNN, MultitaskUResNet, build_model
from busi_lib.models.saving import load_model, save_model
from busi_lib.models.weights import WeightsNotFoundError
from busi_lib.names import DECODER_NORMS
from busi_lib.training.learners import build_learner, predict_loader, prepare_data, train
from busi_lib.training.losses import MultitaskLoss, SegmentationLoss, soft_dice_loss

ARCHS = [
    ("custom_cnn", {}),
    ("resnet18", {}),
    ("resnet50", {}),
    ("vgg16_bn", {}),
    ("tf_efficientnet_lite0", {"pretrained": True}),
    ("vit_tiny_patch16_224", {}),
    ("swin_tiny_patch4_window7_224", {}),
    ("unet", {}),
    ("uresnet", {"encoder": "resnet18"}),
    ("fcn", {}),
    ("multitask", {"encoder": "resnet18"}),
    ("multitask", {"encoder": "tf_efficientnet_lite0", "pretrained": True}),
]


def _cfg(data, out, arch, **kw):
    base = dict(arch=arch, data=str(data), out=str(out), image_size=32, epochs=1, batch_size=8, pretrained=False,
                progress=False, seed=0, keep_checkpoints=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("arch, kw", ARCHS, ids=[f"{a}-{kw['encoder']}" if "encoder" in kw else a for a, kw in ARCHS])
@pytest.mark.slow
def test_every_learner_trains_one_epoch(synthetic_dir, tmp_path, arch, kw):
    res = train(_cfg(synthetic_dir, tmp_path, arch, **kw))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert (tmp_path / "epochs.csv").read_text().startswith("epoch,train_loss,valid_loss")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert np.isfinite(res.learn.recorder.values[-1][0])  # a real, finite loss
    if res.learn.dls.kind != "segment":
        c = m["test"]["classification"]
        assert 0 <= c["accuracy"] <= 1 and c["tp"] + c["fp"] + c["tn"] + c["fn"] == c["n"]
    if res.learn.dls.kind != "classify":
        s = m["test"]["segmentation"]
        assert 0 <= s["dice_pooled"] <= 1 and s["n_images"] == m["n_images"]["test"]


def test_multitask_outputs_and_loss_parts():
    model = MultitaskUResNet("resnet18").eval()
    x = torch.randn(3, 3, 64, 64)
    cls, mask = model(x)
    assert cls.shape == (3, 1) and mask.shape == (3, 1, 64, 64)
    loss = MultitaskLoss(w_cls=0.25, w_seg=0.75, pos_weight=2.0)
    y = torch.tensor([0.0, 1.0, 0.0])
    m = torch.zeros(3, 1, 64, 64)  # normal scans: empty masks are valid input
    total = loss((cls, mask), y, m)
    parts = loss.last_parts
    assert total.item() == pytest.approx(0.25 * parts["cls_loss"].item() + 0.75 * parts["seg_loss"].item(), rel=1e-5)
    expected_cls = torch.nn.functional.binary_cross_entropy_with_logits(cls[:, 0], y, pos_weight=torch.tensor(2.0))
    assert parts["cls_loss"].item() == pytest.approx(expected_cls.item(), rel=1e-5)


def test_segmentation_loss_values():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    perfect = (target * 2 - 1) * 20  # logits +-20
    assert SegmentationLoss(dice_weight=1.0)(perfect, target).item() < 1e-3
    assert soft_dice_loss(-perfect, target).item() > 0.9  # 1 - eps/(16 + eps)
    bce_only = SegmentationLoss(dice_weight=0)(torch.zeros(1, 1, 4, 4), target).item()
    assert bce_only == pytest.approx(np.log(2), rel=1e-5)


def test_custom_cnn_is_size_independent():
    net = CustomCNN().eval()
    assert net(torch.zeros(2, 3, 64, 64)).shape == net(torch.zeros(2, 3, 96, 128)).shape == (2, 1)


def test_save_load_gives_identical_predictions(synthetic_dir, tmp_path):
    cfg = _cfg(synthetic_dir, tmp_path, "multitask", encoder="resnet18")
    res = train(cfg)
    model, config = load_model(tmp_path / "model")
    assert config["arch"] == "multitask" and config["image_size"] == 32
    dl = res.dls.valid
    a = predict_loader(res.learn.model, dl, "multitask")
    b = predict_loader(model, dl, "multitask")
    np.testing.assert_array_equal(a["prob"], b["prob"])
    np.testing.assert_array_equal(a["mask_prob"], b["mask_prob"])


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_decoder_norm_swaps_the_decoders_batch_norm_for_a_per_scan_one(norm):
    kinds = {"instance": torch.nn.InstanceNorm2d, "group": torch.nn.GroupNorm}
    bn, other = MultitaskUResNet("resnet18"), MultitaskUResNet("resnet18", decoder_norm=norm)

    def count(module, kind):
        return sum(isinstance(m, kind) for m in module.modules())

    n_bn = count(bn.net.decoder, torch.nn.BatchNorm2d)
    assert n_bn == 10 and count(other.net.decoder, torch.nn.BatchNorm2d) == 0  # 5 blocks x 2 convolutions
    assert count(other.net.decoder, kinds[norm]) == n_bn
    assert count(other.net.encoder, torch.nn.BatchNorm2d) == count(bn.net.encoder, torch.nn.BatchNorm2d) > 0
    # In training, batch norm mixes the scans of a batch; a per-scan norm does not: scan 0's decoded map is
    # the same whatever scan shares its batch. (The encoder, in eval mode here, gives scan 0 the same features.)
    torch.manual_seed(0)
    a, b, c = torch.randn(3, 1, 3, 64, 64)
    for model, per_scan in ((bn, False), (other, True)):
        model.net.encoder.eval()
        model.net.decoder.train()
        with torch.no_grad():
            ab = model.net.decoder(model.net.encoder(torch.cat([a, b])))[0]
            ac = model.net.decoder(model.net.encoder(torch.cat([a, c])))[0]
        assert torch.allclose(ab, ac, atol=1e-5) is per_scan
    cls, mask = other.eval()(torch.randn(2, 3, 64, 64))
    assert cls.shape == (2, 1) and mask.shape == (2, 1, 64, 64)


def test_decoder_norm_is_saved_and_loads_back(synthetic_dir, tmp_path):
    res = train(_cfg(synthetic_dir, tmp_path, "uresnet", encoder="resnet18", decoder_norm="instance"))
    model, config = load_model(tmp_path / "model")
    assert config["decoder_norm"] == "instance"
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in model.modules())
    a = predict_loader(res.learn.model, res.dls.valid, "segment")
    b = predict_loader(model, res.dls.valid, "segment")
    np.testing.assert_array_equal(a["mask_prob"], b["mask_prob"])


def test_decoder_norm_is_refused_where_there_is_no_unet_decoder():
    assert DECODER_NORMS == ("batch", "instance", "group")
    for arch in ("custom_cnn", "fcn"):
        with pytest.raises(ValueError, match="decoder_norm"):
            build_model(arch, decoder_norm="instance")
    with pytest.raises(ValueError, match="unknown decoder norm"):
        build_model("multitask", encoder="resnet18", decoder_norm="layer")


def test_model_folder_errors(tmp_path):
    model = build_model("custom_cnn")
    folder = save_model(model, {"arch": "custom_cnn", "image_size": 64}, tmp_path / "m")
    load_model(folder)  # fine
    with pytest.raises(BusiDataError, match="model folder not found"):
        load_model(tmp_path / "nothing")
    # tampered: config names another architecture than the weights hold
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "arch": "resnet18"}))
    with pytest.raises(BusiDataError, match="config and weights disagree"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "format_version": 99}))
    with pytest.raises(BusiDataError, match="format version 99"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps(cfg))
    w = folder / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BusiDataError, match="sha256 differs"):
        load_model(folder)
    w.unlink()
    with pytest.raises(BusiDataError, match="model.safetensors is missing"):
        load_model(folder)


def test_missing_pretrained_weights_is_a_clear_error(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    cfg = _cfg(synthetic_dir, tmp_path / "run", "resnet50", pretrained=True)
    _, _, dls = prepare_data(cfg)
    with pytest.raises(WeightsNotFoundError) as e:
        build_learner(dls, cfg)
    msg = str(e.value)
    assert "resnet50-" in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg and "pretrained=False" in msg
    with pytest.raises(WeightsNotFoundError):
        build_model("multitask", encoder="resnet50", pretrained=True)


def test_cached_pretrained_weights_are_used(tmp_path, monkeypatch):
    """With a weights file in TORCH_HOME, the encoder starts from exactly those tensors."""
    import torchvision

    from busi_lib.models.weights import torchvision_weights_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _, path = torchvision_weights_file("resnet18")
    path.parent.mkdir(parents=True)
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), path)
    model = build_model("multitask", encoder="resnet18", pretrained=True)
    assert torch.equal(model.net.encoder.conv1.weight, ref.conv1.weight)


@pytest.mark.parametrize("encoder", ["vgg11_bn", "tf_efficientnet_lite0"])
def test_the_lesson_decoder_computes_what_smp_computes(encoder):
    """busi_lib's UNetDecoder (written out in notebook 04) against smp's own UnetDecoder: same weights, same output;
    and a model built with it starts from smp's weights, with the random numbers smp alone leaves."""
    import segmentation_models_pytorch as smp

    from busi_lib.models.networks import SegmentationNet, UNetDecoder, smp_unet

    name = "tu-" + encoder if encoder.startswith("tf_") else encoder
    torch.manual_seed(0)
    ref = smp.Unet(encoder_name=name, encoder_weights=None, in_channels=3, classes=1).eval()
    after_ref = torch.rand(1)
    torch.manual_seed(0)
    ours = smp_unet(encoder, False).eval()
    assert isinstance(ours.decoder, UNetDecoder) and torch.rand(1) == after_ref
    assert ours.state_dict().keys() == ref.state_dict().keys()  # saved models load into either
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values()))
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        features = ref.encoder(x)
        assert torch.equal(ours.decoder(features), ref.decoder(features))
        assert torch.equal(SegmentationNet(ours)(x), ref(x))  # the whole U-Net: smp's forward, unchanged
