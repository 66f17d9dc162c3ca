"""Models that travel: fold ensembles, BatchNorm adaptation, aspect crops, scanner augmentation, site thresholds.

Small untrained models (seeded, 32 px) saved like ``busi train`` saves them,
scored on a small synthetic "second hospital" with patients scanned twice.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from busi_lib.apps.cli import main
from busi_lib.apps.external import calibration_split, evaluate_model, load_external, site_threshold
from busi_lib.apps.predict import predict_arrays, preprocess
from busi_lib.data.images import read_image
from busi_lib.data.synthetic import HOSPITAL_B, MANIFEST_NAME, make_synthetic_busi
from busi_lib.data.transforms import LesionAspectCrop, build_transforms, lesion_crop_box
from busi_lib.errors import BusiDataError
from busi_lib.evaluation.ensemble import Ensemble, adapt_batchnorm, batchnorm_layers, load_models, resolve_model_folders
from busi_lib.evaluation.metrics import best_threshold, classification_metrics
from busi_lib.models.networks import build_model, input_normalization
from busi_lib.models.saving import load_model, save_model
from busi_lib.names import task_of

SIZE = 32


def saved_model(folder: Path, seed: int, arch: str = "multitask", size: int = SIZE, threshold: float = 0.5,
                **config) -> Path:
    """A seeded untrained model saved as ``busi train`` saves one (``model/`` inside a run folder ``folder``)."""
    torch.manual_seed(seed)
    model = build_model(arch, encoder="resnet18", pretrained=False, image_size=size)
    mean, std = input_normalization(arch, "resnet18")
    cfg = dict(arch=arch, task=task_of(arch), encoder="resnet18", image_size=size, threshold=threshold,
               normalization={"mean": list(mean), "std": list(std)}, classes=["benign", "malignant"], seed=seed)
    cfg.update(config)
    save_model(model, cfg, folder / "model")
    return folder


@pytest.fixture(scope="module")
def runs(module_tmp) -> Path:
    """Two 'fold' run folders (different weights and thresholds) under one bench-like folder."""
    root = module_tmp / "bench" / "multitask"
    saved_model(root / "fold0", seed=0, threshold=0.3)
    saved_model(root / "fold1", seed=1, threshold=0.5)
    return root


@pytest.fixture(scope="module")
def site(module_tmp) -> Path:
    """A second hospital: 8 scans per class, 3 of them second views (patients with two images)."""
    return make_synthetic_busi(module_tmp / "site", n_per_class=8, seed=7, shift=HOSPITAL_B, n_views=3)


@pytest.fixture(scope="module")
def scans(site) -> list[np.ndarray]:
    return [read_image(p) for p in sorted(site.glob("*/*).png"))]


# ----------------------------------------------------------------------------- where the models are
def test_model_run_and_bench_folders_resolve(runs):
    m0, m1 = (runs / "fold0" / "model").resolve(), (runs / "fold1" / "model").resolve()
    assert resolve_model_folders(runs / "fold0" / "model") == [m0]
    assert resolve_model_folders(runs / "fold0") == [m0]  # a run / bench fold folder holding model/
    assert resolve_model_folders(runs) == [m0, m1]  # a folder of fold runs: every fold
    assert resolve_model_folders([runs / "fold0", runs / "fold0" / "model"]) == [m0]  # the same model once
    empty = runs.parent / "empty"
    empty.mkdir(exist_ok=True)
    with pytest.raises(BusiDataError, match="incomplete model folder"):
        resolve_model_folders(empty)
    with pytest.raises(BusiDataError, match="not found"):
        resolve_model_folders(runs / "nowhere")


# ----------------------------------------------------------------------------- ensembles
def test_same_model_twice_equals_the_single_model(runs, scans):
    single, cfg1 = load_models([runs / "fold0"])
    double, cfg2 = load_models([runs / "fold0" / "model", runs / "fold0" / "model" / ".." / "model" / "."])
    assert not isinstance(double, Ensemble) and cfg2["members"] == cfg1["members"]  # resolved to one folder
    twice = Ensemble([load_model(runs / "fold0" / "model")[0], load_model(runs / "fold0" / "model")[0]]).eval()
    a = predict_arrays(single, cfg1, scans[:6])
    b = predict_arrays(twice, cfg1, scans[:6])
    np.testing.assert_allclose([p.probability for p in a], [p.probability for p in b], rtol=0, atol=1e-6)
    for p, q in zip(a, b):
        assert (p.mask == q.mask).mean() > 0.999 and p.label == q.label


def test_two_models_average_their_probabilities_and_masks(runs, scans):
    ens, cfg = load_models([runs / "fold0", runs / "fold1"])
    assert isinstance(ens, Ensemble) and len(cfg["members"]) == 2
    assert cfg["threshold"] == pytest.approx((0.3 + 0.5) / 2) and cfg["member_thresholds"] == [0.3, 0.5]
    (m0, _), (m1, _) = load_model(runs / "fold0" / "model"), load_model(runs / "fold1" / "model")
    x = preprocess(scans[:5], SIZE, ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    with torch.no_grad():
        (l0, k0), (l1, k1), (le, ke) = m0(x), m1(x), ens(x)
    np.testing.assert_allclose(torch.sigmoid(le), (torch.sigmoid(l0) + torch.sigmoid(l1)) / 2, atol=1e-6)
    np.testing.assert_allclose(torch.sigmoid(ke), (torch.sigmoid(k0) + torch.sigmoid(k1)) / 2, atol=1e-6)
    # the probability of the mean, not of the mean logit: they differ for these two models
    assert not np.allclose(torch.sigmoid(le), torch.sigmoid((l0 + l1) / 2), atol=1e-4)


def test_members_must_agree(module_tmp, runs):
    other = saved_model(module_tmp / "other_size", seed=2, size=64)
    with pytest.raises(BusiDataError, match="image_size") as e:
        load_models([runs / "fold0", other])
    assert "other_size" in str(e.value)
    classifier = saved_model(module_tmp / "classifier", seed=2, arch="custom_cnn")
    with pytest.raises(BusiDataError, match="task"):
        load_models([runs / "fold0", classifier])
    three = saved_model(module_tmp / "three", seed=3, classes=["benign", "malignant", "normal"])
    with pytest.raises(BusiDataError, match="classes"):
        load_models([runs / "fold0", three])


@pytest.mark.slow
def test_evaluate_and_predict_with_an_ensemble(runs, site, tmp_path, checksums, capsys):
    before = checksums(runs)
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", str(runs / "fold0"), str(runs / "fold1"), "--data", str(site), "--labels",
                 str(site / MANIFEST_NAME), "--out", str(out), "--n-boot", "50", "--quiet"]) == 0
    m = json.loads((out / "evaluation.json").read_text())
    assert len(m["members"]) == 2 and m["threshold"] == pytest.approx(0.4)
    assert "mean of the 2 members' saved thresholds" in m["threshold_source"]
    assert "ensemble of 2" in (out / "report.md").read_text()
    # the evaluation's probabilities are the mean of the members' evaluations
    single = [evaluate_model(runs / f, site, labels=site / MANIFEST_NAME, n_boot=10, progress=False)
              for f in ("fold0", "fold1")]
    pred = pd.read_csv(out / "predictions.csv")
    np.testing.assert_allclose(pred["prob"], (single[0].predictions["prob"] + single[1].predictions["prob"]) / 2,
                               atol=1e-6)
    capsys.readouterr()
    assert main(["predict", "--model", str(runs / "fold0"), "--model", str(runs / "fold1"), str(site / "benign"),
                 "--out", str(tmp_path / "pr")]) == 0
    t = pd.read_csv(tmp_path / "pr" / "predictions.csv")
    assert np.allclose(t["threshold"], 0.4) and t["mask_png"].notna().all()
    assert main(["predict", "--model", str(runs / "fold0"), "--model", str(runs / "fold1"), str(site / "benign"),
                 "--out", str(tmp_path / "pr2"), "--cam"]) == 2
    assert "single --model" in capsys.readouterr().err
    assert checksums(runs) == before


# ----------------------------------------------------------------------------- AdaBN
def test_adapt_bn_reestimates_the_statistics_from_images_only(runs, scans, checksums):
    before = checksums(runs)
    model, cfg = load_models([runs / "fold0"])
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    first = batchnorm_layers(model)[0]
    seen = []
    hook = first.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    info = adapt_batchnorm(model, cfg, scans, batch_size=len(scans))  # one batch: the plain mean and variance
    hook.remove()
    assert info["n_images"] == len(scans) and info["n_layers"] == len(batchnorm_layers(model))
    assert not model.training and all(not m.training for m in model.modules())
    feats = seen[0]  # the input of the first BatchNorm layer does not depend on any BatchNorm statistic
    torch.testing.assert_close(first.running_mean, feats.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first.running_var, feats.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)
    assert first.momentum == 0.1  # restored
    state = model.state_dict()
    changed = [k for k in state if not torch.equal(state[k], saved[k])]
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert checksums(runs) == before  # the folder on disk is untouched


def test_adapt_bn_reads_no_label(runs, site, tmp_path):
    """Flipping every label of the CSV changes nothing in the adapted model's probabilities."""
    manifest = pd.read_csv(site / MANIFEST_NAME)
    flipped = manifest.assign(label=manifest["label"].map({"benign": "malignant", "malignant": "benign"})
                              .fillna(manifest["label"]))
    flipped.to_csv(tmp_path / "flipped.csv", index=False)
    a = evaluate_model(runs / "fold0", site, labels=site / MANIFEST_NAME, adapt_bn=True, n_boot=10, progress=False)
    b = evaluate_model(runs / "fold0", site, labels=tmp_path / "flipped.csv", adapt_bn=True, n_boot=10,
                       progress=False)
    plain = evaluate_model(runs / "fold0", site, labels=site / MANIFEST_NAME, n_boot=10, progress=False)
    np.testing.assert_array_equal(a.pred["prob"], b.pred["prob"])
    np.testing.assert_array_equal(a.pred["mask_prob"], b.pred["mask_prob"])
    assert not np.allclose(a.pred["prob"], plain.pred["prob"])  # the adaptation did change the model's output
    assert a.metrics["adapt_bn"]["n_images"] == len(a.predictions)
    assert any("BatchNorm statistics re-estimated" in n for n in a.metrics["notes"])


def test_predict_adapt_bn(runs, site, tmp_path, checksums, capsys):
    before = checksums(runs)
    assert main(["predict", "--model", str(runs / "fold0"), str(site / "malignant"), "--out", str(tmp_path / "a"),
                 "--adapt-bn"]) == 0
    assert "BatchNorm statistics re-estimated" in capsys.readouterr().out
    assert main(["predict", "--model", str(runs / "fold0"), str(site / "malignant"), "--out", str(tmp_path / "b")]) == 0
    a, b = pd.read_csv(tmp_path / "a" / "predictions.csv"), pd.read_csv(tmp_path / "b" / "predictions.csv")
    assert not np.allclose(a["probability"], b["probability"])
    assert checksums(runs) == before


def test_adapt_bn_needs_batchnorm_and_two_scans(module_tmp, scans):
    model, cfg = load_models([saved_model(module_tmp / "bn", seed=4)])
    with pytest.raises(ValueError, match="at least 2"):
        adapt_batchnorm(model, cfg, scans[:1])
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3))
    with pytest.raises(ValueError, match="no BatchNorm"):
        adapt_batchnorm(plain, cfg, scans[:4])


# ----------------------------------------------------------------------------- augmentation
def random_mask(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    h, w = rng.integers(1, size // 2, 2)
    y, x = rng.integers(0, size - h), rng.integers(0, size - w)
    cv2.ellipse(m, (int(x + w // 2), int(y + h // 2)), (int(w // 2), int(h // 2)), 0, 0, 360, 1, -1)
    if rng.random() < 0.3:
        m[rng.integers(0, size), rng.integers(0, size)] = 1  # a stray pixel far from the lesion
    return m


def test_crop_box_holds_the_whole_lesion():
    rng, r = np.random.default_rng(0), random.Random(0)
    ratios = []
    for _ in range(300):
        m = random_mask(rng)
        x0, y0, x1, y1 = lesion_crop_box(m, m.shape, r)
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        assert m[y0:y1, x0:x1].sum() == m.sum()
        ratios.append((x1 - x0) / (y1 - y0))
    assert min(ratios) < 0.8 and max(ratios) > 1.25  # the aspect ratio really changes, both ways


def test_aspect_crop_keeps_every_mask_pixel():
    rng = np.random.default_rng(1)
    tfm = A.Compose([LesionAspectCrop(p=1.0)], save_applied_params=True, seed=3)
    for _ in range(100):
        m = random_mask(rng)
        img = rng.integers(0, 256, m.shape, dtype=np.uint8)
        out = tfm(image=img, mask=m)
        x0, y0, x1, y1 = out["applied_transforms"][0][1]["box"]
        crop = m[y0:y1, x0:x1]
        assert crop.sum() == m.sum()  # nothing of the lesion was cut off
        assert set(np.unique(out["mask"])) <= {0, 1}
        # the crop is only enlarged: every lesion row and column of the crop is still there, and more pixels
        assert out["mask"].sum() >= m.sum()
        assert out["mask"].any(1).sum() >= crop.any(1).sum() and out["mask"].any(0).sum() >= crop.any(0).sum()


@pytest.mark.parametrize("augment", ["geometry", "scanner"])
def test_augmentation_variants(augment):
    m = np.zeros((64, 64), np.uint8)
    m[20:40, 10:50] = 1
    img = np.full((64, 64), 120, np.uint8)
    tfm = build_transforms(augment, seed=0, aspect_crop=True)
    names = [type(t).__name__ for t in tfm.transforms]
    assert names[0] == "LesionAspectCrop"
    scanner = {"RandomGamma", "MultiplicativeNoise", "GaussianBlur", "Downscale", "RandomBrightnessContrast"}
    assert (scanner <= set(names)) == (augment == "scanner")
    assert not (scanner & set(names)) or augment == "scanner"
    for _ in range(20):
        out = tfm(image=img, mask=m)
        assert out["image"].shape == (3, 64, 64) and set(out["mask"].unique().tolist()) <= {0, 1}
    assert "LesionAspectCrop" not in [type(t).__name__ for t in build_transforms("default").transforms]


def test_train_with_scanner_augmentation_and_aspect_crop(synthetic_dir, tmp_path):
    from busi_lib.config import TrainConfig

    assert TrainConfig().augment == "default" and TrainConfig().aspect_crop is False  # defaults unchanged
    assert main(["train", "--arch", "multitask", "--encoder", "resnet18", "--no-pretrained", "--data",
                 str(synthetic_dir), "--out", str(tmp_path / "run"), "--image-size", "32", "--epochs", "1",
                 "--batch-size", "8", "--augment", "scanner", "--aspect-crop", "--quiet"]) == 0
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------- the threshold at a new site
def test_calibration_split_is_patient_disjoint_seeded_and_stratified(site):
    table = load_external(site, site / MANIFEST_NAME, progress=False).table
    assert table["patient_id"].nunique() < len(table)  # some patients have two images
    cal = calibration_split(table, 0.3, seed=0)
    assert not set(table.loc[cal, "patient_id"]) & set(table.loc[~cal, "patient_id"])
    assert set(table.loc[cal, "target"]) == {0, 1} and set(table.loc[~cal, "target"]) == {0, 1}
    np.testing.assert_array_equal(cal, calibration_split(table, 0.3, seed=0))
    assert any(not np.array_equal(cal, calibration_split(table, 0.3, seed=s)) for s in (1, 2, 3))
    n_pat = table["patient_id"].nunique()
    assert table.loc[cal, "patient_id"].nunique() == pytest.approx(0.3 * n_pat, abs=1)
    assert table.loc[calibration_split(table, 4, seed=0), "patient_id"].nunique() == 4
    no_ids = table.assign(patient_id=None)
    assert calibration_split(no_ids, 5, seed=0).sum() == 5  # images are the unit without patient ids
    for bad in (0, 1.5, n_pat, 0.01):
        with pytest.raises(ValueError):
            calibration_split(table, bad, seed=0)


def test_site_threshold_is_chosen_on_the_calibration_part_only(site):
    table = load_external(site, site / MANIFEST_NAME, progress=False).table
    rng = np.random.default_rng(0)
    y = table["target"].to_numpy().astype(np.float64)
    pred = dict(y=y, prob=np.clip(0.5 * y + rng.normal(0.3, 0.2, len(y)), 0, 1))
    st = site_threshold(table, pred, 0.5, 0.4, seed=3, n_boot=50)
    cal = calibration_split(table, 0.4, seed=3)
    assert st["threshold"] == best_threshold(y[cal], pred["prob"][cal])
    assert st["n_calibration_images"] + st["n_scored_images"] == len(table) == cal.size
    rest = classification_metrics(y[~cal], pred["prob"][~cal], st["threshold"])
    assert st["classification"] == rest
    assert st["saved_threshold_classification"] == classification_metrics(y[~cal], pred["prob"][~cal], 0.5)
    # moving the scored scans' probabilities does not move the threshold: they took no part in choosing it
    moved = dict(y=y, prob=np.where(cal, pred["prob"], 1 - pred["prob"]))
    assert site_threshold(table, moved, 0.5, 0.4, seed=3, n_boot=50)["threshold"] == st["threshold"]


def test_evaluate_reports_the_site_threshold(runs, site, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", str(runs / "fold0"), "--data", str(site), "--labels",
                 str(site / MANIFEST_NAME), "--out", str(out), "--n-boot", "50", "--quiet",
                 "--calibration-size", "0.3", "--seed", "2"]) == 0
    text = capsys.readouterr().out
    assert "re-tuned on a calibration part" in text or "calibration part:" in text
    m = json.loads((out / "evaluation.json").read_text())
    assert m["site_threshold"]["unit"] == "patient" and m["site_threshold"]["seed"] == 2
    assert "optimistic" in m and m["threshold"] == pytest.approx(0.3)  # the other rows are kept
    assert "Honest: threshold re-tuned" in (out / "report.md").read_text()
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", str(runs / "fold0"), "--data", str(site), "--out", str(out),
              "--calibration-size", "2.5"])
    capsys.readouterr()
    # more patients than the set has: one line naming the size and the count, no traceback
    assert main(["evaluate", "--model", str(runs / "fold0"), "--data", str(site), "--labels", str(site / MANIFEST_NAME),
                 "--out", str(tmp_path / "ev2"), "--n-boot", "10", "--quiet", "--calibration-size", "5000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("busi: error: calibration size 5000 leaves no") and err.count("\n") == 1


# ----------------------------------------------------------------------------- operating points at a new site
def test_sensitivity_threshold_is_the_highest_that_keeps_the_target():
    from busi_lib.evaluation.metrics import sensitivity_threshold

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + rng.normal(0.4, 0.2, 200), 0, 1)
    for target in (0.5, 0.9, 0.98, 1.0):
        t = sensitivity_threshold(y, p, target)
        assert classification_metrics(y, p, t)["sensitivity"] >= target
        above = p[p > t]  # any higher threshold loses the target
        if above.size:
            assert classification_metrics(y, p, above.min())["sensitivity"] < target


def test_new_site_evaluate_warns_scores_each_point_and_saves_a_site_model(module_tmp, site, tmp_path, capsys,
                                                                          checksums):
    run = saved_model(module_tmp / "points", seed=3, threshold=0.4, operating_point="sensitivity_95",
                      operating_points={"youden": 0.6, "sensitivity_95": 0.4},
                      calibrated_on={"sites": ["busi"], "part": "valid"})
    before = checksums(run), checksums(site)
    out, saved = tmp_path / "ev", tmp_path / "site_model"
    assert main(["evaluate", "--model", str(run), "--data", str(site), "--labels", str(site / MANIFEST_NAME),
                 "--out", str(out), "--n-boot", "30", "--quiet", "--calibration-size", "0.4",
                 "--save-model", str(saved)]) == 0
    text = capsys.readouterr().out
    assert "NOT CALIBRATED FOR THIS SITE" in text
    m = json.loads((out / "evaluation.json").read_text())
    pred = pd.read_csv(out / "predictions.csv")
    for name, t in (("youden", 0.6), ("sensitivity_95", 0.4)):
        op = m["operating_points"][name]
        assert op["used"] == (name == "sensitivity_95")
        assert op["sensitivity"] == classification_metrics(pred["target"], pred["prob"], t)["sensitivity"]
    config = json.loads((saved / "config.json").read_text())
    assert m["adapt_bn"] is None and config["adapt_bn"] is False  # too few scans here to adapt by default
    assert config["threshold"] == pytest.approx(m["site_threshold"]["threshold"])
    assert config["operating_point"] == "site" and config["calibrated_on"]["sites"] == [site.name]
    assert (checksums(run), checksums(site)) == before  # the inputs are only read
    # busi predict at the site uses the re-tuned threshold and says where it was chosen
    assert main(["predict", "--model", str(saved), str(site / "benign"), "--out", str(tmp_path / "p")]) == 0
    said = capsys.readouterr().out
    assert f"re-tuned on a labelled part of {site.name}" in said
    assert pd.read_csv(tmp_path / "p" / "predictions.csv")["threshold"].dropna().unique().tolist() == \
        [pytest.approx(config["threshold"])]
    # a saved operating point by name; an unknown one is one line
    assert main(["predict", "--model", str(run), str(site / "benign"), "--out", str(tmp_path / "p2"),
                 "--operating-point", "youden"]) == 0
    assert "the youden operating point, chosen on validation scans of busi" in capsys.readouterr().out
    assert main(["predict", "--model", str(run), str(site / "benign"), "--out", str(tmp_path / "p3"),
                 "--operating-point", "f1"]) == 2
    err = capsys.readouterr().err
    assert "no operating point 'f1'" in err and err.count("\n") == 1
    # the site copy refuses an existing folder rather than overwrite it
    assert main(["evaluate", "--model", str(run), "--data", str(site), "--labels", str(site / MANIFEST_NAME),
                 "--out", str(tmp_path / "ev3"), "--n-boot", "10", "--quiet", "--calibration-size", "0.4",
                 "--save-model", str(saved)]) == 2
    assert "not overwriting it" in capsys.readouterr().err


def test_adabn_is_the_default_at_another_site_only(module_tmp):
    from busi_lib.apps.external import MIN_ADAPT_SCANS, adapt_by_default

    model, config = load_model(saved_model(module_tmp / "home", seed=5, calibrated_on={"sites": ["busi"]}) / "model")
    assert adapt_by_default(model, config, Path("/data/busbra"), MIN_ADAPT_SCANS)
    assert not adapt_by_default(model, config, Path("/data/busi"), 500)  # its own site: its threshold holds
    assert not adapt_by_default(model, config, Path("/data/busbra"), MIN_ADAPT_SCANS - 1)  # too few to estimate
    assert not adapt_by_default(model, {k: v for k, v in config.items() if k != "calibrated_on"}, Path("/x"), 500)
