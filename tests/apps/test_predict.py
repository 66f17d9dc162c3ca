"""Using a trained model: busi_lib.apps.predict, busi_lib.apps.cam and ``busi predict``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from busi_lib.apps.cli import main
from busi_lib.apps.predict import (
    Prediction,
    caption_of,
    measure_speed,
    overlay_image,
    predict_arrays,
    predict_files,
    predict_folder,
    preprocess,
)
from busi_lib.data.dataset import load_dataset
from busi_lib.data.images import image_to_gray, read_image
from busi_lib.data.loaders import make_dataset
from busi_lib.data.transforms import IMAGENET
from busi_lib.errors import BusiDataError
from busi_lib.evaluation.calibration import apply_temperature
from busi_lib.models.networks import build_model, input_normalization
from busi_lib.models.saving import config_normalization, load_model, save_model
from busi_lib.names import task_of
from busi_lib.training.learners import predict_loader


def tiny_model(folder: Path, arch: str = "multitask", size: int = 64, threshold: float = 0.5,
               encoder: str = "resnet18", **config) -> Path:
    """An untrained small model saved like ``busi train`` saves one (weights seeded, so tests are repeatable).

    A ResNet model says ``normalization: "imagenet"``, as folders saved before the statistics were stored do."""
    torch.manual_seed(0)
    model = build_model(arch, encoder=encoder, pretrained=False, image_size=size)
    mean, std = input_normalization(arch, encoder)
    norm = "imagenet" if (mean, std) == IMAGENET else {"mean": list(mean), "std": list(std)}
    cfg = dict(arch=arch, task=task_of(arch), encoder=encoder, image_size=size, threshold=threshold,
               normalization=norm, classes=["benign", "malignant"], seed=0, **config)
    return save_model(model, cfg, folder)


@pytest.fixture(scope="module")
def models(module_tmp) -> dict:
    root = module_tmp / "models"
    models = {arch: load_model(tiny_model(root / arch, arch)) for arch in ("multitask", "custom_cnn", "uresnet")}
    models["multitask_lite0"] = load_model(tiny_model(root / "lite0", "multitask", encoder="tf_efficientnet_lite0"))
    return models


@pytest.fixture(scope="module")
def scans(synthetic_dir) -> list[Path]:
    return sorted((synthetic_dir / "benign").glob("benign (?).png"))[:3] + sorted(
        (synthetic_dir / "malignant").glob("malignant (?).png"))[:3]


@pytest.mark.parametrize("name", ["multitask", "multitask_lite0"])
def test_same_numbers_as_the_evaluation_path(models, synthetic_dir, name):
    """predict_arrays on the files == predict_loader on the cached training arrays (busi evaluate's path),
    each normalised with the statistics saved with the model (ImageNet's; EfficientNet-Lite's 0.5 and 0.5)."""
    model, config = models[name]
    df = load_dataset(synthetic_dir).head(6)
    norm = config_normalization(config)
    assert (norm == IMAGENET) == (name == "multitask")
    ds = make_dataset(df, 64, "multitask", norm=norm)
    from fastai.data.load import DataLoader

    ref = predict_loader(model, DataLoader(ds, bs=6), "multitask")
    got = predict_arrays(model, config, [read_image(p) for p in df["path"]])
    np.testing.assert_allclose([p.probability for p in got], ref["prob"], rtol=1e-5, atol=1e-6)
    # at the training size the mask is the 0.5 cut of the mask probability, pixel for pixel
    same_size = predict_arrays(model, config, list(ds.images))
    expected = ref["mask_prob"].astype(np.float32) >= 0.5
    agree = np.mean([np.mean(p.mask == e) for p, e in zip(same_size, expected)])
    assert agree > 0.999  # float16 storage of predict_loader's probabilities may flip a pixel at exactly 0.5


@pytest.mark.parametrize(
    "shape, dtype",
    [((37, 53), np.uint8), ((300, 200, 3), np.uint8), ((64, 80, 4), np.uint8), ((50, 70), np.uint16),
     ((1, 1), np.uint8)],
)
def test_any_size_and_type_gives_a_mask_of_the_scan_size(models, shape, dtype):
    model, config = models["multitask"]
    rng = np.random.default_rng(0)
    img = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    (p,) = predict_arrays(model, config, [img])
    assert p.mask.shape == shape[:2] and p.mask.dtype == np.uint8 and set(np.unique(p.mask)) <= {0, 1}
    assert (p.height, p.width) == shape[:2]
    assert 0 <= p.probability <= 1 and p.label in ("benign", "malignant")
    assert p.lesion_area == p.mask.sum() and p.lesion_fraction == pytest.approx(p.mask.mean())


def test_sixteen_bit_and_rgb_scans_read_like_their_eight_bit_gray_version(models):
    model, config = models["multitask"]
    gray = np.random.default_rng(1).integers(0, 256, (90, 120), dtype=np.uint8)
    variants = [gray, gray.astype(np.uint16) * 257, np.dstack([gray] * 3), np.dstack([gray] * 3 + [gray * 0 + 255])]
    # the reading is exact; the four predictions share one batch, whose rows CPU kernels may round differently
    assert all(np.array_equal(image_to_gray(v), gray) for v in variants)
    preds = predict_arrays(model, config, variants)
    assert all(p.probability == pytest.approx(preds[0].probability, abs=1e-5) for p in preds)
    assert all((p.mask != preds[0].mask).mean() <= 1e-3 for p in preds)


def test_mask_is_resized_as_a_probability(models):
    """A scan twice the training size: the mask is the bilinear upsampling of the probability, then cut at 0.5."""
    model, config = models["uresnet"]
    small = np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8)
    big = cv2.resize(small, (128, 128), interpolation=cv2.INTER_NEAREST)  # area-resizes back to `small` exactly
    x = preprocess([small], 64)
    with torch.no_grad():
        prob = torch.sigmoid(model(x))[0, 0].numpy()
    (p,) = predict_arrays(model, config, [big])
    expected = cv2.resize(prob, (128, 128), interpolation=cv2.INTER_LINEAR) >= 0.5
    assert np.array_equal(p.mask, expected.astype(np.uint8))
    assert p.probability is None and p.label is None  # a segmentation-only model


def test_threshold_and_temperature(tmp_path):
    model, config = load_model(tiny_model(tmp_path / "m", threshold=0.3))
    imgs = list(np.random.default_rng(3).integers(0, 256, (8, 64, 64), dtype=np.uint8))
    preds = predict_arrays(model, config, imgs)
    assert all(p.threshold == 0.3 and (p.label == "malignant") == (p.probability >= 0.3) for p in preds)
    assert all(p.label == "malignant" for p in predict_arrays(model, config, imgs, threshold=0.0))
    # a temperature changes the probabilities, not the labels: the threshold is mapped the same way
    hot = dict(config, temperature=2.5)
    warm = predict_arrays(model, hot, imgs)
    raw = np.array([p.probability for p in preds])
    np.testing.assert_allclose([p.probability for p in warm], apply_temperature(raw, 2.5), rtol=1e-9)
    assert [p.label for p in warm] == [p.label for p in preds]
    assert warm[0].threshold == pytest.approx(apply_temperature(0.3, 2.5))


def test_cam_equals_the_class_activation_map_of_a_pooled_linear_head(models):
    """For a head that is global average pooling + linear (the custom CNN, the multitask model), Grad-CAM is
    ReLU(sum_c w_c A_c) of the last encoder stage (Zhou et al.'s CAM), signed for the label."""
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (96, 160), dtype=np.uint8)  # not square: catches a transposed map
    for arch in ("custom_cnn", "multitask"):
        model, config = models[arch]
        x = preprocess([img], 64)
        with torch.no_grad():
            if arch == "custom_cnn":
                a, w = model.features(x)[0], model.head[-1].weight[0]
            else:
                a, w = model.net.encoder(x)[-1][0], model.net.classification_head[3].weight[0]
        for thr, sign in ((0.0, 1), (1.0, -1)):  # forced malignant, then benign
            (p,) = predict_arrays(model, config, [img], threshold=thr, cam=True)
            assert p.label == ("malignant" if sign == 1 else "benign")
            expected = torch.relu(sign * torch.einsum("c,chw->hw", w.detach(), a)).numpy()
            assert expected.std() > 0
            expected = cv2.resize(cv2.resize(expected, (64, 64)), (160, 96))
            assert p.cam.shape == (96, 160) and p.cam.min() >= 0 and p.cam.max() <= 1
            assert np.corrcoef(p.cam.ravel(), expected.ravel())[0, 1] > 0.99, arch


def test_hand_written_grad_cam_equals_pytorch_grad_cam(models):
    """The lesson's two-hook Grad-CAM against the maintained package, on the same layer and signed logit."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    from busi_lib.apps.cam import ClassLogit, cam_target_layer, grad_cam

    imgs = list(np.random.default_rng(5).integers(0, 256, (4, 80, 80), dtype=np.uint8))
    labels = [1, 0, 1, 0]
    for arch in ("custom_cnn", "multitask"):
        model, config = models[arch]
        x = preprocess(imgs, 64)
        ours = grad_cam(model, config, x, labels)
        net = ClassLogit(model) if arch == "multitask" else model
        with GradCAM(model=net, target_layers=[cam_target_layer(model, config)]) as cam:
            theirs = cam(input_tensor=x, targets=[BinaryClassifierOutputTarget(lab) for lab in labels])
        assert ours.shape == theirs.shape == (4, 64, 64)
        assert theirs.std() > 0 and np.abs(ours - theirs).max() < 1e-5, arch


def test_predict_files_writes_masks_overlays_cams_and_the_table(models, scans, tmp_path, checksums):
    model, config = models["multitask"]
    before = checksums(scans[0].parent.parent)
    rep = predict_files(model, config, [scans[0].parent, scans[-1]], tmp_path / "out", cam=True, batch_size=4)
    assert checksums(scans[0].parent.parent) == before
    t = pd.read_csv(rep.csv)
    n_benign = len([p for p in scans[0].parent.glob("*.png") if "_mask" not in p.name])
    assert len(t) == n_benign + 1 and t["error"].isna().all()
    assert not t["file"].str.contains("_mask").any()  # BUSI's masks are not scans
    for _, row in t.iterrows():
        h, w = read_image(row["file"]).shape
        assert (row["height"], row["width"]) == (h, w)
        mask = np.asarray(Image.open(tmp_path / "out" / row["mask_png"]))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        assert (mask == 255).sum() == row["lesion_area_px"] and row["lesion_fraction"] == pytest.approx(
            row["lesion_area_px"] / (h * w))
        for col in ("overlay_png", "cam_png"):
            pic = np.asarray(Image.open(tmp_path / "out" / row[col]))
            assert pic.shape == (h, w, 3)
        assert (row["label"] == "malignant") == (row["probability"] >= row["threshold"])
    assert "benign (1)_mask.png" in set(t["mask_png"])  # named after the scan, in --out only
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left


def test_overlay_draws_the_outline_and_the_caption():
    gray = np.full((200, 300), 90, np.uint8)
    mask = np.zeros((200, 300), np.uint8)
    cv2.circle(mask, (180, 120), 40, 1, -1)
    p = Prediction(height=200, width=300, probability=0.8, label="malignant", threshold=0.4, mask=mask)
    over = overlay_image(gray, p).astype(int)
    assert over.shape == (200, 300, 3)
    colored = np.abs(over - over[..., :1]).max(axis=2) > 50
    k = np.ones((3, 3), np.uint8)
    edge = mask.astype(bool) ^ cv2.erode(mask, k).astype(bool)
    assert cv2.dilate(colored.astype(np.uint8), k).astype(bool)[edge].all()  # the outline follows the border ...
    outline = colored.copy()
    outline[:40] = False  # not the caption
    assert outline.any() and cv2.dilate(edge.astype(np.uint8), k).astype(bool)[outline].all()
    inside = cv2.erode(mask, np.ones((9, 9), np.uint8)).astype(bool)
    assert (over[inside] == 90).all()  # ... and the lesion itself stays visible
    assert caption_of(p) == "malignant  p=0.80 (threshold 0.40)  |  lesion 8.4%"
    assert (over[:10, :50] != 90).any()  # the caption box


def _write(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.mark.parametrize("arch, has_mask, has_class", [("multitask", True, True), ("custom_cnn", False, True),
                                                       ("uresnet", True, False)])
def test_every_model_kind(models, scans, tmp_path, arch, has_mask, has_class):
    model, config = models[arch]
    rep = predict_files(model, config, scans[:2], tmp_path / "out", cam=True)
    t = pd.read_csv(rep.csv)
    assert t["mask_png"].notna().all() == has_mask and t["lesion_area_px"].notna().all() == has_mask
    assert t["probability"].notna().all() == has_class and t["cam_png"].notna().all() == has_class
    assert t["overlay_png"].notna().all() and t["mask_png"].isna().all() != has_mask
    assert t["probability"].isna().all() != has_class and t["label"].isna().all() != has_class


def test_outputs_never_go_among_the_inputs(models, tmp_path, checksums):
    model, config = models["custom_cnn"]
    data = tmp_path / "data"
    scan = _write(data / "benign" / "benign (1).png", np.zeros((40, 40), np.uint8))
    before = checksums(data)
    for inputs, out in (([data], data), ([data], data / "benign" / "preds"), ([scan], scan.parent)):
        with pytest.raises(BusiDataError, match="choose another --out"):
            predict_files(model, config, inputs, out)
    assert checksums(data) == before
    # a scan given as a file may have its outputs in a subfolder of its own folder
    rep = predict_files(model, config, [scan], data / "benign_predictions")
    assert len(rep.done) == 1 and (data / "benign" / "benign (1).png").read_bytes() == scan.read_bytes()


def test_same_name_in_two_folders_gets_two_outputs(models, tmp_path):
    model, config = models["multitask"]
    a = _write(tmp_path / "a" / "scan.png", np.zeros((30, 30), np.uint8))
    b = _write(tmp_path / "b" / "scan.png", np.full((50, 40), 200, np.uint8))
    rep = predict_files(model, config, [a, b], tmp_path / "out")
    assert list(rep.table["mask_png"]) == ["scan_mask.png", "scan-2_mask.png"]
    assert np.asarray(Image.open(tmp_path / "out" / "scan-2_mask.png")).shape == (50, 40)


def test_an_interrupted_run_leaves_whole_files(models, scans, tmp_path, monkeypatch):
    import busi_lib.apps.predict as predict

    model, config = models["multitask"]
    real, calls = predict.png_bytes, []

    def failing(arr):
        calls.append(1)
        if len(calls) == 5:  # in the second batch
            raise KeyboardInterrupt
        return real(arr)

    monkeypatch.setattr(predict, "png_bytes", failing)
    with pytest.raises(KeyboardInterrupt):
        predict_files(model, config, scans, tmp_path / "out", batch_size=2)
    out = tmp_path / "out"
    assert not list(out.glob(".*"))  # no temporary file left behind
    t = pd.read_csv(out / "predictions.csv")
    assert len(t) == 2  # the table of the finished batch
    for png in out.glob("*.png"):
        Image.open(png).load()  # every picture there is complete


@pytest.mark.slow
def test_cli_predict_and_benchmark(scans, tmp_path, capsys):
    model_dir = tiny_model(tmp_path / "model")
    assert main(["predict", "--model", str(model_dir), str(scans[0]), str(scans[1]), "--out", str(tmp_path / "o"),
                 "--threshold", "0", "--cam"]) == 0
    t = pd.read_csv(tmp_path / "o" / "predictions.csv")
    assert list(t["label"]) == ["malignant", "malignant"] and t["cam_png"].notna().all()
    assert "2 scans predicted" in capsys.readouterr().out
    assert main(["predict", "--model", str(model_dir), str(scans[0]), "--out", str(tmp_path / "q"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("1 scans predicted, 0 unreadable")  # the summary alone
    assert main(["predict", "--model", str(model_dir), "--benchmark", "--batch-size", "4"]) == 0
    assert "images/s in batches of 4" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["predict", "--model", str(model_dir), str(scans[0]), "--out", str(tmp_path / "o2"), "--threshold", "2"])
    assert e.value.code == 2 and "between 0 and 1" in capsys.readouterr().err


def test_measure_speed(models):
    model, config = models["multitask"]
    s = measure_speed(model, config, batch_size=4, n_images=8)
    assert s["image_size"] == 64 and s["images_per_s_batch"] > 0 and s["images_per_s_single"] > 0
    assert s["threads"] == torch.get_num_threads()


@pytest.mark.real_data
def test_real_scans_with_a_model_trained_by_busi_train(real_dir, tmp_path):
    from busi_lib.config import TrainConfig
    from busi_lib.training.learners import train

    cfg = TrainConfig(arch="multitask", encoder="resnet18", pretrained=False, data=str(real_dir),
                      out=str(tmp_path / "run"), image_size=32, epochs=1, batch_size=8, max_images=40,
                      progress=False, seed=0, keep_checkpoints=False)
    train(cfg)
    picks = [real_dir / "benign" / "benign (1).png", real_dir / "malignant" / "malignant (1).png",
             real_dir / "normal" / "normal (1).png"]
    before = {p: p.read_bytes() for p in picks}
    rep = predict_folder(tmp_path / "run" / "model", picks, tmp_path / "pred", cam=True)
    assert all(p.read_bytes() == before[p] for p in picks)
    t = pd.read_csv(rep.csv)
    assert list(t["file"]) == [str(p) for p in picks] and t["error"].isna().all()
    threshold = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["threshold"]
    assert np.allclose(t["threshold"], threshold)
    for _, row in t.iterrows():
        with Image.open(row["file"]) as im:
            w, h = im.size
        mask = np.asarray(Image.open(tmp_path / "pred" / row["mask_png"]))
        assert mask.shape == (h, w) and (mask == 255).sum() == row["lesion_area_px"]
        assert np.asarray(Image.open(tmp_path / "pred" / row["cam_png"])).shape == (h, w, 3)
