"""The BUSI table, tasks, class weights and bad input, on the synthetic set."""

import shutil
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from busi_lib.data.dataset import load_dataset, resolve_data_dir
from busi_lib.data.table import pos_weight, scan_folder, select_labels
from busi_lib.errors import BusiDataError


def test_table_of_synthetic_folder(synthetic_dir):
    df = scan_folder(synthetic_dir)
    assert df["label"].value_counts().to_dict() == {"benign": 12, "malignant": 12, "normal": 12}
    assert (df.loc[df["label"] == "normal", "lesion_area"] == 0).all()
    assert (df.loc[df["label"] != "normal", "lesion_area"] > 0).all()
    # the synthetic set, like BUSI, has images with an extra _mask_1 file
    several = df[df["n_masks"] > 1]
    assert len(several) >= 1
    assert all("_mask_1" in s for s in several["mask_paths"])
    assert np.allclose(df["lesion_fraction"], df["lesion_area"] / (df["width"] * df["height"]), equal_nan=True)


def test_label_sets(synthetic_dir):
    df = load_dataset(synthetic_dir)
    assert set(df["label"]) == {"benign", "malignant"} and len(df) == 24
    assert (df["target"] == (df["label"] == "malignant")).all()
    three = load_dataset(synthetic_dir, labels="three_class")
    assert len(three) == 36 and sorted(three["target"].unique()) == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown label set"):
        select_labels(df, "four_class")


def test_duplicate_groups_found_in_synthetic(synthetic_dir):
    df = load_dataset(synthetic_dir, labels="three_class")
    manifest = pd.read_csv(synthetic_dir / "synthetic_manifest.csv")
    copies = manifest.dropna(subset=["duplicate_of"])
    assert len(copies) > 0
    gid = df.set_index("image_id")["dup_group"]
    for _, row in copies.iterrows():
        assert gid[row["image_id"]] == gid[row["duplicate_of"]], row["image_id"]


def test_pos_weight():
    assert pos_weight([0, 0, 0, 1]) == 3.0
    with pytest.raises(ValueError):
        pos_weight([0, 0])


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("BUSI_DATA_DIR", raising=False)
    path, real = resolve_data_dir(None, n_per_class=3, cache_dir=tmp_path)
    assert not real and (path / "benign").is_dir()
    with pytest.raises(BusiDataError, match="does not exist"):
        resolve_data_dir(tmp_path / "missing")


# ----------------------------------------------------------------- bad input
@pytest.fixture
def copy(synthetic_dir, tmp_path):
    dst = tmp_path / "busi"
    shutil.copytree(synthetic_dir, dst)
    return dst


def test_missing_and_empty_folder(tmp_path):
    with pytest.raises(BusiDataError, match="does not exist"):
        scan_folder(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BusiDataError, match="empty"):
        scan_folder(tmp_path / "empty")


def test_unknown_class_folder(copy):
    (copy / "suspicious").mkdir()
    with pytest.raises(BusiDataError, match="unknown class folder 'suspicious'"):
        scan_folder(copy)


def test_truncated_image_is_named_and_skippable(copy):
    bad = copy / "benign" / "benign (3).png"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(BusiDataError, match=r"benign \(3\)\.png"):
        scan_folder(copy)
    df = scan_folder(copy, skip_bad=True)
    assert "benign (3)" not in set(df["image_id"]) and len(df) == 35
    assert any("benign (3).png" in f and "truncated" in r for f, r in df.attrs["rejected"])


def test_mask_size_mismatch(copy):
    m = copy / "malignant" / "malignant (2)_mask.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(m)
    with pytest.raises(BusiDataError, match=r"malignant \(2\)_mask\.png.*but its image is"):
        scan_folder(copy)


def test_image_without_mask(copy):
    for m in (copy / "benign").glob("benign (5)_mask*.png"):
        m.unlink()
    with pytest.raises(BusiDataError, match="has no mask file"):
        scan_folder(copy)
    assert len(scan_folder(copy, require_masks=False)) == 36


def test_reading_never_changes_the_folder(copy, tmp_path, checksums):
    before = checksums(copy)
    load_dataset(copy, cache_dir=tmp_path / "cache")
    from busi_lib.data.cache import cached_arrays

    cached_arrays(load_dataset(copy, cache_dir=tmp_path / "cache"), 64, cache_dir=tmp_path / "cache")
    assert checksums(copy) == before


def test_two_readers_at_once_scan_the_folder_once(synthetic_dir, tmp_path, monkeypatch):
    """Two notebooks or test workers that start together: one scans the folder, the other waits for its table
    (the cache's lock), instead of both decoding every scan side by side."""
    import threading

    from busi_lib.data import cache

    scans = []
    real_scan = cache.scan_folder

    def slow_scan(*args, **kwargs):
        scans.append(threading.get_ident())
        time.sleep(0.5)  # long enough for the other reader to arrive while this one scans
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(cache, "scan_folder", slow_scan)
    tables = []
    readers = [threading.Thread(target=lambda: tables.append(cache.cached_table(synthetic_dir,
                                                                                  cache_dir=tmp_path / "c")))
               for _ in range(2)]
    for r in readers:
        r.start()
    for r in readers:
        r.join()
    assert len(scans) == 1 and len(tables) == 2
    pd.testing.assert_frame_equal(tables[0], tables[1])
