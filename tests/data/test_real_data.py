"""Real BUSI checks; they run when BUSI_DATA_DIR points to the real folder (CI sets it)."""

import numpy as np
import pytest

from busi_lib.data.duplicates import label_conflicts
from busi_lib.data.splits import groups_straddling, kfold_split, train_valid_test_split

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


def test_counts(real_table):
    df = real_table
    assert len(df) == 780
    assert df["label"].value_counts().to_dict() == {"benign": 437, "malignant": 210, "normal": 133}
    assert df["n_masks"].sum() == 798  # 780 _mask files + 18 extra _mask_N files
    several = df[df["n_masks"] > 1]
    assert len(several) == 17  # benign (195) has two extra masks
    assert several.set_index("image_id").loc["benign (195)", "n_masks"] == 3
    assert (df.loc[df["label"] == "normal", "lesion_area"] == 0).all()
    assert (df.loc[df["label"] != "normal", "lesion_area"] > 0).all()
    assert not df.attrs.get("rejected")


def test_known_duplicates_are_grouped(real_table):
    g = real_table.set_index("image_id")["dup_group"]
    assert g["benign (10)"] == g["benign (327)"]
    assert g["benign (433)"] == g["malignant (145)"]
    conflicts = label_conflicts(real_table)
    assert any({"benign (433)", "malignant (145)"} <= set(m) for m in conflicts["members"])
    # unrelated scans stay apart: no giant group from chaining
    assert real_table["group_size"].max() <= 10


def test_binary_task_and_group_aware_splits(real_dir):
    from busi_lib.data.dataset import load_dataset

    df = load_dataset(real_dir)
    assert len(df) == 647 and df["target"].sum() == 210
    s = train_valid_test_split(df, seed=42)
    assert groups_straddling(df, s) == []
    f = kfold_split(df, 5, seed=42)
    assert groups_straddling(df, f) == []
    frac = f.assign(t=df["target"]).groupby("split")["t"].mean()
    assert (abs(frac - 210 / 647) < 0.05).all()


def test_a_multitask_batch_loads_and_folder_is_unchanged(real_dir, checksums):
    from busi_lib.data.dataset import load_dataset
    from busi_lib.data.loaders import make_dataloaders
    from busi_lib.training.learners import subset

    before = checksums(real_dir)
    df = subset(load_dataset(real_dir), 96, seed=0)  # a stratified 96 of the 647 lesion scans: decoded in a second
    dls = make_dataloaders(df, train_valid_test_split(df, seed=0), "multitask", image_size=64, batch_size=8)
    x, y, m = dls.one_batch()
    assert x.shape == (8, 3, 64, 64) and y.shape == (8,) and m.shape == (8, 1, 64, 64)
    assert set(np.unique(m.numpy())) <= {0.0, 1.0} and m.sum() > 0
    assert checksums(real_dir) == before


def test_multitask_trains_on_a_few_real_batches(real_dir, tmp_path):
    from busi_lib.config import TrainConfig
    from busi_lib.training.learners import train

    cfg = TrainConfig(arch="multitask", encoder="resnet18", data=str(real_dir), out=str(tmp_path), image_size=64,
                      epochs=1, batch_size=16, pretrained=False, max_images=96, progress=False, keep_checkpoints=False)
    res = train(cfg)
    assert np.isfinite(res.learn.recorder.values[-1][0])
    assert res.metrics["n_images"]["train"] > 50
