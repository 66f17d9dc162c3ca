"""Splits are seeded, stratified, group-aware and round-trip through CSV."""

import numpy as np
import pandas as pd
import pytest

from busi_lib.data.splits import (
    groups_straddling,
    kfold_split,
    load_split,
    save_split,
    train_valid_test_split,
)
from busi_lib.errors import BusiDataError


@pytest.fixture
def table():
    """200 scans in 120 groups (some of 2-4 copies), 1/3 malignant, one label-conflict group."""
    rng = np.random.default_rng(0)
    sizes = rng.choice([1, 1, 1, 2, 3, 4], size=120)
    groups = np.repeat(np.arange(120), sizes)[:200]
    target = (rng.random(120) < 1 / 3).astype(int)[groups]
    target[np.flatnonzero(groups == groups[-1])[0]] = 1 - target[-1]  # a conflict
    return pd.DataFrame(
        dict(
            image_id=[f"scan ({i})" for i in range(len(groups))],
            label=np.where(target == 1, "malignant", "benign"),
            target=target,
            dup_group=groups,
        )
    )


def test_holdout_keeps_groups_whole_and_is_stratified(table):
    s = train_valid_test_split(table, 0.15, 0.15, seed=3)
    assert groups_straddling(table, s) == []
    assert set(s["split"]) == {"train", "valid", "test"}
    frac = s.assign(t=table["target"]).groupby("split")["t"].mean()
    assert (abs(frac - table["target"].mean()) < 0.12).all()
    assert 0.08 < (s["split"] == "test").mean() < 0.25


def test_kfold_keeps_groups_whole(table):
    f = kfold_split(table, 5, seed=0)
    assert sorted(f["split"].unique()) == [0, 1, 2, 3, 4]
    assert groups_straddling(table, f) == []


def test_seed_reproducible(table):
    a, b = train_valid_test_split(table, seed=7), train_valid_test_split(table, seed=7)
    assert a.equals(b)
    assert not a.equals(train_valid_test_split(table, seed=8))


def test_csv_round_trip(table, tmp_path):
    s = kfold_split(table, 5, seed=1)
    path = save_split(s, tmp_path / "split.csv")
    back = load_split(path, table)
    assert back["split"].tolist() == s["split"].tolist()


def test_bad_split_files(table, tmp_path):
    with pytest.raises(BusiDataError, match="not found"):
        load_split(tmp_path / "none.csv")
    p = tmp_path / "x.csv"
    pd.DataFrame({"image_id": ["nobody"], "split": ["train"]}).to_csv(p, index=False)
    with pytest.raises(BusiDataError, match="not in the dataset"):
        load_split(p, table)
    pd.DataFrame({"image": ["a"]}).to_csv(p, index=False)
    with pytest.raises(BusiDataError, match="lacks column"):
        load_split(p)
