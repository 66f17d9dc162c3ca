"""Several hospitals as sites: reading them, splitting within them, training and benching on them."""

import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from busi_lib.data.dataset import load_dataset
from busi_lib.data.sites import LABELS_CSV, load_sites
from busi_lib.data.splits import groups_straddling, kfold_split
from busi_lib.data.synthetic import HOSPITAL_B, MANIFEST_NAME, make_synthetic_busi
from busi_lib.errors import BusiDataError


def csv_site(parent, name="hospital_b", seed=5, n=12):
    """A labels-CSV site as `busi data external` writes one: scans, masks and labels.csv with patient ids."""
    root = make_synthetic_busi(parent / name, n_per_class=n, seed=seed, shift=HOSPITAL_B, n_views=4)
    m = pd.read_csv(root / MANIFEST_NAME)
    m[["image", "label", "mask", "patient_id"]].to_csv(root / LABELS_CSV, index=False)
    return root


@pytest.fixture(scope="module")
def site_b(tmp_path_factory):
    return csv_site(tmp_path_factory.mktemp("sites"))


def test_two_sites_make_one_table_with_patient_groups(synthetic_dir, site_b):
    busi, b = load_dataset(synthetic_dir), load_dataset(site_b)
    df = load_sites([synthetic_dir, site_b])
    assert len(df) == len(busi) + len(b) and df["image_id"].is_unique
    assert list(dict.fromkeys(df["site"])) == [synthetic_dir.name, site_b.name]
    assert df.loc[df["site"] == site_b.name, "image_id"].str.startswith(f"{site_b.name}/").all()
    # a patient's scans share one group, and no group spans two sites
    b_rows = df[df["site"] == site_b.name]
    assert (b_rows.groupby("patient_id")["dup_group"].nunique() == 1).all()
    assert (df.groupby("dup_group")["site"].nunique() == 1).all()


def test_folds_keep_patients_whole_and_each_site_in_every_fold(synthetic_dir, site_b):
    df = load_sites([synthetic_dir, site_b])
    folds = kfold_split(df, 3, seed=1)
    m = df.merge(folds[["image_id", "split"]], on="image_id")
    assert (m[m["patient_id"].notna()].groupby("patient_id")["split"].nunique() == 1).all()
    assert (m.groupby("split")["site"].nunique() == 2).all()
    assert groups_straddling(df, folds) == []


def test_bad_sites_are_named(synthetic_dir, site_b, tmp_path):
    no_labels = tmp_path / "empty_site"
    no_labels.mkdir()
    (no_labels / "scan.png").write_bytes(b"")
    with pytest.raises(BusiDataError, match="empty_site: not a site: neither BUSI's class folders .* nor a labels.csv"):
        load_sites([synthetic_dir, no_labels])
    twin = csv_site(tmp_path, name="hospital_c", seed=6, n=6)  # the same patient ids as hospital_b's
    with pytest.raises(BusiDataError, match=r"hospital_c/labels.csv: patient '.*' is also at site 'hospital_b'"):
        load_sites([site_b, twin])
    with pytest.raises(BusiDataError, match="a second site named"):
        load_sites([site_b, site_b])
    no_mask = tmp_path / "no_mask"
    shutil.copytree(site_b, no_mask)
    lab = pd.read_csv(no_mask / LABELS_CSV)
    lab.loc[0, "mask"] = ""
    lab.to_csv(no_mask / LABELS_CSV, index=False)
    with pytest.raises(BusiDataError, match="no_mask/labels.csv: .* has no mask"):
        load_sites([synthetic_dir, no_mask])


def test_training_on_two_sites_scores_each_and_saves_operating_points(site_b, tmp_path):
    from busi_lib.config import TrainConfig
    from busi_lib.evaluation.metrics import best_threshold, sensitivity_threshold
    from busi_lib.models.saving import read_config
    from busi_lib.training.learners import train

    # a home site large enough that its validation part (15 %) holds both classes
    synthetic_dir = make_synthetic_busi(tmp_path / "home", n_per_class=30, seed=0)
    cfg = TrainConfig(arch="multitask", encoder="resnet18", data=[str(synthetic_dir), str(site_b)],
                      out=str(tmp_path / "run"), image_size=32, epochs=1, batch_size=8, pretrained=False,
                      progress=False, seed=1, keep_checkpoints=False, train_sites=[synthetic_dir.name])
    res = train(cfg)
    test = res.dls.tables["test"]
    assert set(test["site"]) == {synthetic_dir.name, site_b.name}  # the other site is tested...
    assert set(res.dls.tables["train"]["site"]) == {synthetic_dir.name}  # ...but never trained on
    assert set(res.metrics["test_by_site"]) == {synthetic_dir.name, site_b.name}
    from busi_lib.evaluation.inference import predict_loader

    pred = predict_loader(res.learn.model, res.dls[2], "multitask")
    at_b = (test["site"] == site_b.name).to_numpy()
    acc_b = res.metrics["test_by_site"][site_b.name]["classification"]["accuracy"]
    calls = pred["prob"][at_b] >= res.metrics["threshold"]
    assert acc_b == pytest.approx(accuracy_score(pred["y"][at_b], calls))
    valid = predict_loader(res.learn.model, res.dls.valid, "multitask")
    points = res.metrics["operating_points"]
    assert points["youden"] == pytest.approx(best_threshold(valid["y"], valid["prob"]))
    assert points["sensitivity_95"] == pytest.approx(sensitivity_threshold(valid["y"], valid["prob"], 0.95))
    config = read_config(tmp_path / "run" / "model")
    assert config["operating_points"] == pytest.approx(points)
    assert config["threshold"] == pytest.approx(points[config["operating_point"]])
    assert config["calibrated_on"]["sites"] == [synthetic_dir.name]


def test_leave_one_site_out_bench(synthetic_dir, site_b, tmp_path):
    from busi_lib.apps.bench import run_bench

    res = run_bench([synthetic_dir, site_b], tmp_path / "loso", models=["prior", "custom_cnn"], profile="smoke",
                    n_boot=50, protocol="loso", log=lambda *_: None)
    cnn = res["models"]["custom_cnn"]
    assert cnn["folds"] == [0, 1] and res["protocol"]["sites"] == [synthetic_dir.name, site_b.name]
    for fold, site in enumerate(res["protocol"]["sites"]):
        t = pd.read_csv(tmp_path / "loso" / cnn["fold_results"][fold]["predictions"])
        assert set(t["site"]) == {site}  # each fold tests exactly one site
    assert set(cnn["by_site"]) == {synthetic_dir.name, site_b.name}
    n = {s: v["n_test_images"] for s, v in cnn["by_site"].items()}
    assert n == {synthetic_dir.name: len(load_dataset(synthetic_dir)), site_b.name: len(load_dataset(site_b))}
    assert "## Per site" in (tmp_path / "loso" / "RESULTS.md").read_text()
    assert np.isfinite(cnn["by_site"][site_b.name]["pooled"]["classification"]["roc_auc"])


def test_the_command_line_takes_several_sites(synthetic_dir, site_b, tmp_path):
    from busi_lib.apps.cli import build_parser, train_config

    args = build_parser().parse_args(["train", "--profile", "cpu", "--arch", "multitask", "--data", str(synthetic_dir),
                                      str(site_b), "--train-sites", synthetic_dir.name, "--out", str(tmp_path)])
    cfg = train_config(args)
    assert cfg.data == [str(synthetic_dir), str(site_b)] and cfg.train_sites == [synthetic_dir.name]
    one = train_config(build_parser().parse_args(["train", "--arch", "multitask", "--data", str(synthetic_dir),
                                                  "--out", str(tmp_path)]))
    assert one.data == str(synthetic_dir)  # one folder stays a plain path, as before
    args = build_parser().parse_args(["bench", "--data", str(synthetic_dir), str(site_b), "--protocol", "loso",
                                      "--out", str(tmp_path)])
    assert args.protocol == "loso" and len(args.data) == 2
