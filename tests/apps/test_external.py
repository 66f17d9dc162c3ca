"""External validation: a tiny model trained on one synthetic set, scored on a shifted "second hospital".

One multitask model (32 px, 1 epoch, from scratch) and one evaluation are made
per module and shared; the rest of the tests use cheap controlled predictions.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    jaccard_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from busi_lib.apps.cli import main
from busi_lib.apps.external import (
    compare,
    evaluate_model,
    load_external,
    read_labels_csv,
    score_external,
)
from busi_lib.data import table as table_module
from busi_lib.data.dataset import load_dataset
from busi_lib.data.images import read_image as _real_read_image
from busi_lib.data.synthetic import HOSPITAL_B, MANIFEST_NAME, make_synthetic_busi
from busi_lib.errors import BusiDataError
from busi_lib.evaluation.metrics import CI_KEYS, classification_metrics, classification_round

N_B = 10  # scans per class in the second hospital


@pytest.fixture(scope="module")
def run(synthetic_dir, module_tmp):
    """A multitask model trained briefly on the reference synthetic set."""
    from busi_lib.config import TrainConfig
    from busi_lib.training.learners import train

    out = module_tmp / "run"
    cfg = TrainConfig(arch="multitask", encoder="resnet18", data=str(synthetic_dir), out=str(out), image_size=32,
                      epochs=1, batch_size=8, pretrained=False, progress=False, seed=1, keep_checkpoints=False)
    train(cfg)
    return out


@pytest.fixture(scope="module")
def hospital_b(tmp_path_factory):
    """Another seed and the HOSPITAL_B look; 4 scans per class are second views of a patient's lesion."""
    return make_synthetic_busi(tmp_path_factory.mktemp("hb") / "b", n_per_class=N_B, seed=5, shift=HOSPITAL_B,
                               n_views=4)


@pytest.fixture(scope="module")
def evaluated(run, hospital_b, tmp_path_factory):
    """``busi evaluate`` on the second hospital with patient ids (the manifest as labels CSV)."""
    out = tmp_path_factory.mktemp("ev") / "eval"
    code = main(["evaluate", "--model", str(run / "model"), "--data", str(hospital_b), "--labels",
                 str(hospital_b / MANIFEST_NAME), "--out", str(out), "--n-boot", "200", "--quiet"])
    assert code == 0
    return out


def test_report_and_json_appear(evaluated, hospital_b):
    for name in ("evaluation.json", "predictions.csv", "report.md", "roc.png", "reliability.png", "confusion.png",
                 "worst_errors.png"):
        assert (evaluated / name).stat().st_size > 0, name
    m = json.loads((evaluated / "evaluation.json").read_text())
    report = (evaluated / "report.md").read_text()
    for png in ("roc", "reliability", "confusion", "worst_errors"):
        assert f"({png}.png)" in report
    assert "OPTIMISTIC" in report and "10 equal-width bins" in report and "saved with the model" in report
    manifest = pd.read_csv(hospital_b / MANIFEST_NAME)
    assert m["excluded"] == {"normal": N_B} and any("normal" in n for n in m["notes"])
    assert m["n_images"] == 2 * N_B and m["n_patients"] == manifest.query("label != 'normal'").patient_id.nunique()
    assert m["n_patients"] < m["n_images"]  # several images per patient
    assert m["bootstrap"]["unit"] == "patient" and m["skipped"] == []
    assert m["classification"]["threshold"] == m["threshold"]
    for k in CI_KEYS:
        lo, hi = m["classification_ci"][k]
        assert lo <= m["classification"][k] + 1e-9 and m["classification"][k] <= hi + 1e-9 or np.isnan(lo), k
    assert m["segmentation"]["n_images"] == 2 * N_B and "dice_pooled" in m["segmentation_ci"]


def test_threshold_is_the_saved_one(run, evaluated):
    saved = json.loads((run / "model" / "config.json").read_text())["threshold"]
    m = json.loads((evaluated / "evaluation.json").read_text())
    assert m["threshold"] == saved
    assert m["optimistic"]["threshold"] != saved or m["optimistic"]["classification"] == m["classification"]


def test_metrics_equal_scikit_learn(evaluated):
    m = json.loads((evaluated / "evaluation.json").read_text())
    p = pd.read_csv(evaluated / "predictions.csv")
    y, prob = p["target"].to_numpy(), p["prob"].to_numpy()
    pred = (prob >= m["threshold"]).astype(int)
    c = m["classification"]
    assert c["roc_auc"] == pytest.approx(roc_auc_score(y, prob), abs=1e-6)
    assert c["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert c["precision"] == pytest.approx(precision_score(y, pred, zero_division=0))
    assert c["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert c["specificity"] == pytest.approx(recall_score(y, pred, pos_label=0))
    assert c["f1"] == pytest.approx(f1_score(y, pred, zero_division=0))
    before = m["calibration"]["before"]
    assert before["brier"] == pytest.approx(brier_score_loss(y, prob), abs=1e-6)
    frac, mean = calibration_curve(y, prob, n_bins=10)
    counts = np.array([b["count"] for b in before["bins"]])
    assert before["ece"] == pytest.approx(np.sum(counts / len(y) * np.abs(frac - mean)), abs=1e-6)
    # per patient: highest probability, malignant if any image is
    pt = p.groupby("patient_id").agg(target=("target", "max"), prob=("prob", "max"))
    assert m["patient"]["classification"]["roc_auc"] == pytest.approx(roc_auc_score(pt["target"], pt["prob"]),
                                                                      abs=1e-6)
    assert m["patient"]["n_patients"] == len(pt)


def test_segmentation_equals_scikit_learn(run, hospital_b):
    ev = evaluate_model(run / "model", hospital_b, labels=hospital_b / MANIFEST_NAME, n_boot=20, progress=False)
    truth = ev.pred["mask"].reshape(-1)
    called = (ev.pred["mask_prob"].astype(np.float32) >= 0.5).reshape(-1)
    s = ev.metrics["segmentation"]
    assert s["dice_pooled"] == pytest.approx(f1_score(truth, called), abs=1e-9)
    assert s["iou_pooled"] == pytest.approx(jaccard_score(truth, called), abs=1e-9)
    assert ev.predictions["dice"].mean() == pytest.approx(s["dice_per_image"])
    assert ev.out is None  # nothing written without `out`


def test_fast_round_matches_classification_metrics():
    """The bootstrap's numpy round equals classification_metrics (scikit-learn) on resamples, ties and edge cases."""
    rng = np.random.default_rng(0)
    cases = []
    for n in (2, 5, 30, 200):
        for _ in range(15):
            y = rng.integers(0, 2, n)
            cases.append((y, np.round(rng.random(n), 1)))  # many ties
    cases += [(np.zeros(6, int), rng.random(6)), (np.ones(6, int), rng.random(6)),
              (np.array([0, 1, 1]), np.array([0.9, 0.1, 0.2])), (np.array([0, 1]), np.array([0.0, 0.0]))]
    for y, p in cases:
        fast = classification_round(y, p, 0.5)
        ref = classification_metrics(y, p, 0.5)
        for k in CI_KEYS:
            assert fast[k] == pytest.approx(ref[k], nan_ok=True), (k, y, p)


def _clustered(n_patients=40, per_patient=4, seed=0):
    """A table and predictions where the images of a patient are near copies (their patient effect dominates)."""
    rng = np.random.default_rng(seed)
    target = np.repeat(rng.integers(0, 2, n_patients), per_patient)
    effect = np.repeat(rng.normal(0, 1.5, n_patients), per_patient)
    logit = 0.8 * (2 * target - 1) + effect + rng.normal(0, 0.1, target.size)
    prob = 1 / (1 + np.exp(-logit))
    table = pd.DataFrame({"target": target, "patient_id": np.repeat([f"p{i}" for i in range(n_patients)], per_patient),
                          "has_mask": False})
    return table, {"y": target.astype(np.float32), "prob": prob.astype(np.float32)}


def test_patient_interval_is_wider_than_image_interval():
    table, pred = _clustered()
    m = score_external(table, pred, 0.5, n_boot=400, seed=0)

    def width(ci):
        return ci[1] - ci[0]

    naive = m["classification_ci_by_image"]
    for k in ("roc_auc", "accuracy"):
        assert width(m["classification_ci"][k]) > 1.3 * width(naive[k]), k  # resampling patients, not images
        assert width(m["patient"]["classification_ci"][k]) > 1.3 * width(naive[k]), k
    assert m["n_patients"] == 40 and m["patient"]["n_patients"] == 40
    # without patient ids the same predictions get the (too narrow) image interval
    m2 = score_external(table.assign(patient_id=None), pred, 0.5, n_boot=400, seed=0)
    assert m2["bootstrap"]["unit"] == "image" and "patient" not in m2
    assert m2["classification_ci"]["roc_auc"] == naive["roc_auc"]


# ------------------------------------------------------------------ the labels CSV
def _write_csv(folder, rows, header="image,label"):
    path = folder / "labels.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_labels_csv_errors_name_the_row(hospital_b, tmp_path):
    ok = ["benign/benign (1).png,benign", "malignant/malignant (1).png,1"]
    with pytest.raises(BusiDataError, match=r"row 3 \(line 4\): image 'benign/nope.png' not found"):
        read_labels_csv(hospital_b, _write_csv(tmp_path, ok + ["benign/nope.png,benign"]))
    with pytest.raises(BusiDataError, match=r"row 2 \(line 3\): unknown label 'cyst'"):
        read_labels_csv(hospital_b, _write_csv(tmp_path, [ok[0], "benign/benign (2).png,cyst"]))
    with pytest.raises(BusiDataError, match="missing column for the label"):
        read_labels_csv(hospital_b, _write_csv(tmp_path, ["benign/benign (1).png"], header="image"))
    with pytest.raises(BusiDataError, match=r"row 2 \(line 3\).*listed twice \(also row 1\)"):
        read_labels_csv(hospital_b, _write_csv(tmp_path, [ok[0], ok[0]]))
    with pytest.raises(BusiDataError, match=r"row 1 \(line 2\): mask 'benign/m.png' not found"):
        read_labels_csv(hospital_b, _write_csv(tmp_path, ["benign/benign (1).png,benign,benign/m.png"],
                                               header="file,diagnosis,mask"))
    table, excluded = read_labels_csv(hospital_b, _write_csv(tmp_path, ok + ["normal/normal (1).png,normal"],
                                                             header="Filename,CLASS"))
    assert list(table["target"]) == [0, 1] and excluded == {"normal": 1} and table["patient_id"].isna().all()


def test_cli_bad_csv_is_one_line(run, hospital_b, tmp_path, capsys):
    csv = _write_csv(tmp_path, ["benign/benign (1).png,benign", "benign/benign (2).png,maybe"])
    code = main(["evaluate", "--model", str(run / "model"), "--data", str(hospital_b), "--labels", str(csv),
                 "--out", str(tmp_path / "ev"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "row 2 (line 3)" in err and "maybe" in err and "Traceback" not in err
    assert not (tmp_path / "ev").exists()


def test_own_column_names_and_no_masks(run, hospital_b, tmp_path):
    manifest = pd.read_csv(hospital_b / MANIFEST_NAME)
    labels = manifest.rename(columns={"image": "scan", "label": "dx"})[["scan", "dx"]]
    labels["dx"] = labels["dx"].map({"benign": "0", "malignant": "1", "normal": "normal"})
    labels.to_csv(tmp_path / "mine.csv", index=False)
    ev = evaluate_model(run / "model", hospital_b, labels=tmp_path / "mine.csv", columns={"image": "scan",
                        "label": "dx"}, n_boot=20, progress=False)
    assert "segmentation" not in ev.metrics and "not scored" in ev.metrics["segmentation_note"]
    assert ev.metrics["bootstrap"]["unit"] == "image" and ev.metrics["n_images"] == 2 * N_B
    assert "classification" in ev.metrics


@pytest.mark.parametrize("layout", ["busi", "csv"])
def test_bad_file_is_reported_and_the_rest_scored(run, hospital_b, tmp_path, checksums, layout):
    data = tmp_path / "copy"
    shutil.copytree(hospital_b, data)
    bad = data / "malignant" / "malignant (3).png"
    bad.write_bytes(b"not a png at all")
    before = checksums(data)
    ev = evaluate_model(run / "model", data, labels=data / MANIFEST_NAME if layout == "csv" else None, n_boot=20,
                        progress=False, out=tmp_path / "ev")
    assert [s["file"] for s in ev.metrics["skipped"]] == [str(bad)]
    assert ev.metrics["n_images"] == 2 * N_B - 1
    assert str(bad) in (tmp_path / "ev" / "report.md").read_text()
    assert checksums(data) == before  # the data folder is never written


def test_a_busi_folder_is_decoded_once(hospital_b, tmp_path, monkeypatch):
    """Evaluating on the same BUSI-layout folder again (07 does it four times on BUSI itself) reads the cached
    table, skipped files included, instead of decoding every scan again; a changed file is decoded anew."""
    data = tmp_path / "copy"
    shutil.copytree(hospital_b, data)
    bad = data / "benign" / "benign (2).png"
    bad.write_bytes(b"not a png at all")
    first = load_external(data, progress=False)
    decoded = []
    monkeypatch.setattr(table_module, "read_image", lambda p: decoded.append(p) or _real_read_image(p))
    again = load_external(data, progress=False)
    assert decoded == []  # from the cache
    assert again.skipped == first.skipped == [dict(file=str(bad), reason=first.skipped[0]["reason"])]
    pd.testing.assert_frame_equal(again.table, first.table)
    shutil.copy(hospital_b / "benign" / "benign (2).png", bad)  # mended: a new cache entry
    mended = load_external(data, progress=False)
    assert bad in decoded and mended.skipped == [] and len(mended.table) == len(first.table) + 1
    # a folder a model was trained on (its table cached by load_dataset, as in notebook 07): nothing decoded
    load_dataset(data)
    decoded.clear()
    trained_on = load_external(data, progress=False)
    assert decoded == [] and trained_on.skipped == []
    pd.testing.assert_frame_equal(trained_on.table, mended.table)


def test_split_part_and_foreign_split(run, synthetic_dir, hospital_b):
    split = pd.read_csv(run / "split.csv")
    ev = evaluate_model(run / "model", synthetic_dir, split=run / "split.csv", part="test", n_boot=20, progress=False)
    assert set(ev.predictions["image_id"]) == set(split.query("split == 'test'")["image_id"])
    trained = json.loads((run / "metrics.json").read_text())["test"]["classification"]
    assert ev.metrics["classification"]["roc_auc"] == pytest.approx(trained["roc_auc"], nan_ok=True)
    with pytest.raises(BusiDataError, match="not in"):  # BUSI's split names scans the other folder lacks
        evaluate_model(run / "model", _subset(hospital_b), split=run / "split.csv", n_boot=20, progress=False)


def _subset(root):
    """A BUSI-layout folder with fewer scans than the split names (a split of another data set)."""
    out = root.parent / "subset"
    if not out.exists():
        for label in ("benign", "malignant"):
            (out / label).mkdir(parents=True)
            for f in (root / label).glob(f"{label} (1)*.png"):
                shutil.copy(f, out / label / f.name)
    return out


def test_calibrate_then_evaluate_before_and_after(run, synthetic_dir, hospital_b, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(run / "model", model)
    assert main(["calibrate", "--model", str(model), "--data", str(synthetic_dir), "--split",
                 str(run / "split.csv"), "--quiet"]) == 0
    assert "fitted on the 'valid' part" in capsys.readouterr().out
    config = json.loads((model / "config.json").read_text())
    t = config["temperature"]
    assert t != 1.0 and config["temperature_fit"]["part"] == "valid"
    plain = evaluate_model(run / "model", hospital_b, n_boot=20, progress=False)
    scaled = evaluate_model(model, hospital_b, n_boot=20, progress=False, out=tmp_path / "ev")
    after = scaled.metrics["calibration"]["after"]
    assert plain.metrics["calibration"]["after"] is None and after["temperature"] == t
    assert scaled.metrics["calibration"]["before"] == plain.metrics["calibration"]["before"]
    assert scaled.metrics["classification"] == plain.metrics["classification"]  # calls unchanged
    assert "after temperature" in (tmp_path / "ev" / "report.md").read_text()


def test_compare_table(run, evaluated, synthetic_dir):
    m_b = json.loads((evaluated / "evaluation.json").read_text())
    m_a = evaluate_model(run / "model", synthetic_dir, split=run / "split.csv", n_boot=20, progress=False).metrics
    df = compare({"BUSI test": m_a, "hospital B": m_b})
    assert df.loc["roc_auc", "hospital B - BUSI test"] == pytest.approx(
        m_b["classification"]["roc_auc"] - m_a["classification"]["roc_auc"])
    assert "patient: roc_auc" in df.index and "dice_pooled" in df.index


def test_synthetic_views_share_the_patient(hospital_b):
    from busi_lib.data.images import read_image, read_mask

    m = pd.read_csv(hospital_b / MANIFEST_NAME)
    views = m.dropna(subset=["view_of"])
    assert len(views) == 3 * 4
    ids = m.set_index("image_id")
    for _, v in views.iterrows():
        src = ids.loc[v["view_of"]]
        assert v["patient_id"] == src["patient_id"] and v["label"] == src["label"]
        a, b = read_image(hospital_b / src["image"]), read_image(hospital_b / v["image"])
        assert a.shape[0] == b.shape[0] and 0.8 * a.shape[1] < b.shape[1] < a.shape[1]  # the probe moved sideways
        if v["label"] != "normal":  # the same lesion: about the same area
            area_a = read_mask([hospital_b / q for q in src["mask"].split("|")]).sum()
            area_b = read_mask([hospital_b / q for q in v["mask"].split("|")]).sum()
            assert 0.6 * area_a <= area_b <= area_a
    ext = load_external(hospital_b, hospital_b / MANIFEST_NAME, progress=False)
    assert ext.has_patients and ext.table["has_mask"].all()
