"""The cross-validation bench, on the synthetic set (smoke profile)."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from busi_lib.apps.bench import confidence_intervals, results_markdown, run_bench, score_table
from busi_lib.data.dataset import load_dataset
from busi_lib.data.splits import cv_fold_split, groups_straddling, kfold_split
from busi_lib.evaluation.metrics import bootstrap_many, scores_from_counts


@pytest.fixture(scope="module")
def bench(synthetic_dir, module_tmp):
    out = module_tmp / "bench"
    res = run_bench(synthetic_dir, out, models=["prior", "shape_oracle", "custom_cnn", "multitask_no_seg", "multitask"],
                    profile="smoke", n_boot=100, log=lambda *_: None)
    return out, res


def test_cv_fold_split_keeps_groups_and_test_fold(synthetic_dir):
    df = load_dataset(synthetic_dir)
    folds = kfold_split(df, 5, seed=3)
    for f in range(5):
        split = cv_fold_split(df, folds, f, seed=3)
        test_ids = set(split.loc[split["split"] == "test", "image_id"])
        assert test_ids == set(folds.loc[folds["split"] == f, "image_id"])
        assert (split["split"] == "valid").sum() > 0
        assert groups_straddling(df, split) == []


def test_bench_writes_results_and_pools_like_sklearn(bench):
    out, res = bench
    assert (out / "results.json").is_file() and (out / "RESULTS.md").is_file()
    mt = res["models"]["multitask"]
    assert mt["folds"] == [0, 1] and res["models"]["custom_cnn"]["folds"] == [0]
    # pooled out-of-fold predictions, each scan called at its own fold's threshold
    t = pd.concat([pd.read_csv(out / r["predictions"]) for r in mt["fold_results"]], ignore_index=True)
    assert t["image_id"].is_unique  # a scan is tested once
    calls = (t["prob"] >= t["threshold"]).astype(int)
    pooled = mt["main"]["pooled"]["classification"]
    assert pooled["accuracy"] == pytest.approx(accuracy_score(t["target"], calls))
    assert pooled["f1"] == pytest.approx(f1_score(t["target"], calls))
    assert pooled["roc_auc"] == pytest.approx(roc_auc_score(t["target"], t["prob"]))
    dice = scores_from_counts(t["tp"], t["fp"], t["fn"])["dice"]
    assert mt["main"]["pooled"]["segmentation"]["dice_pooled"] == pytest.approx(dice)
    # every interval brackets its pooled value (percentile bootstrap of the same statistic)
    for key, (lo, hi) in mt["main"]["ci95"].items():
        section, name = key.split(".")
        v = mt["main"]["pooled"][section][name]
        assert lo <= v + 1e-9 and v - 1e-9 <= hi, key
    # over-fold means are means of the fold results
    accs = [r["test"]["classification"]["accuracy"] for r in mt["fold_results"]]
    assert mt["main"]["over_folds"]["classification"]["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    md = (out / "RESULTS.md").read_text()
    assert "0.908" in md and "multitask" in md and "pooled" in md


def test_threshold_comes_from_validation_not_test(bench):
    out, res = bench
    for r in res["models"]["multitask"]["fold_results"]:
        m = json.loads((out / "multitask" / f"fold{r['fold']}" / "metrics.json").read_text())
        assert m["threshold_rule"].startswith("Youden") and "validation" in m["threshold_rule"]
        assert r["threshold"] == pytest.approx(m["threshold"])


def test_bench_resumes_without_redoing_folds(bench, synthetic_dir):
    out, _ = bench
    done = out / "custom_cnn" / "fold0" / "fold_result.json"
    before = done.stat().st_mtime_ns
    logs = []
    res = run_bench(synthetic_dir, out, models=["custom_cnn"], profile="smoke", n_boot=50, log=logs.append)
    assert done.stat().st_mtime_ns == before
    assert res["models"]["custom_cnn"]["fold_results"][0]["fold"] == 0
    assert "custom_cnn" in results_markdown(res)


def test_score_table_calls_each_row_at_its_threshold():
    t = pd.DataFrame({"target": [1, 0, 1, 0], "prob": [0.6, 0.6, 0.3, 0.1], "threshold": [0.5, 0.7, 0.2, 0.2]})
    c = score_table(t)["classification"]
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (2, 0, 2, 0)


@pytest.mark.slow
def test_bootstrap_fast_path_gives_the_intervals_of_the_sklearn_path():
    """The bench's intervals use the numpy twin; with the same resamples they equal scikit-learn's exactly."""
    rng = np.random.default_rng(3)
    n = 60
    t = pd.DataFrame({"target": rng.integers(0, 2, n), "prob": np.round(rng.random(n), 2),
                      "threshold": rng.choice([0.3, 0.5, 0.7], n), "dup_group": rng.integers(0, 40, n)})

    def slow(i):
        s = score_table(t.iloc[i])["classification"]
        return {f"classification.{k}": v for k, v in s.items() if isinstance(v, float)}

    # 60 resamples: the same 60 draw for draw, so their percentiles must agree exactly (sklearn's path costs
    # 0.05 s per resample)
    ref = bootstrap_many(slow, np.arange(n), n_boot=60, seed=0, groups=t["dup_group"].to_numpy())
    fast = confidence_intervals(t, n_boot=60, seed=0)
    assert set(fast) == set(ref) and len(ref) == 7
    for k in ref:
        assert fast[k] == pytest.approx(ref[k], nan_ok=True), k



def test_the_ladder_scores_baselines_and_pairs_rows_on_the_same_scans(bench):
    out, res = bench
    m = res["models"]
    prior = m["prior"]["main"]["pooled"]["classification"]
    assert prior["recall"] == 0 and prior["specificity"] == 1 and prior["roc_auc"] == 0.5
    assert m["shape_oracle"]["main"]["pooled"]["classification"]["roc_auc"] > 0.5  # the synthetic lesions' shapes
    # with its mask loss off the decoder learnt nothing: no segmentation row for it
    assert "segmentation" not in m["multitask_no_seg"]["main"]["pooled"]
    assert m["multitask_no_seg"]["settings"]["w_seg"] == 0 and m["multitask"]["settings"]["w_seg"] > 0
    d = res["paired_differences"]["multitask - multitask_no_seg"]

    def pooled(name):
        return pd.concat([pd.read_csv(out / r["predictions"]) for r in m[name]["fold_results"]], ignore_index=True)

    both = pooled("multitask").merge(pooled("multitask_no_seg"), on=["image_id", "target"], suffixes=("", "_b"))
    want = roc_auc_score(both["target"], both["prob"]) - roc_auc_score(both["target"], both["prob_b"])
    assert d["n_images"] == len(both) > 0 and d["difference"]["roc_auc"] == pytest.approx(want)
    lo, hi = d["ci95"]["roc_auc"]
    assert lo <= want + 1e-9 <= hi + 2e-9
    assert "Paired differences" in results_markdown(res) and "prior · no network" in results_markdown(res)
