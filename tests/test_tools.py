"""The developer tools in tools/: the speed bench measures fastai's loop against a plain PyTorch loop."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from speed import measure, speed_markdown  # noqa: E402


def test_speed_bench_measures_both_loops(synthetic_dir):
    r = measure("custom_cnn", str(synthetic_dir), profile="smoke", n_batches=3)
    for k in ("train_images_per_s_fastai", "train_images_per_s_plain", "infer_images_per_s_batch",
              "infer_images_per_s_single", "loading_images_per_s", "peak_rss_mb"):
        assert r[k] > 0, k
    assert r["fastai_to_plain"] == pytest.approx(r["train_images_per_s_fastai"] / r["train_images_per_s_plain"],
                                                 rel=0.01)
    r["model"] = "custom_cnn"
    assert speed_markdown([r]).count("\n") == 3  # header, rule, one row
