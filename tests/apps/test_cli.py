"""The ``busi`` command end to end on the synthetic set."""

import json
import subprocess
import sys

import pytest

from busi_lib.apps.cli import main


def test_data_summary_json(synthetic_dir, capsys):
    assert main(["data", "summary", "--data", str(synthetic_dir), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["images"] == 36 and s["per_class"] == {"benign": 12, "malignant": 12, "normal": 12}
    assert s["images_with_several_masks"] >= 1 and s["duplicate_groups"] >= 1 and s["rejected"] == []


def test_bad_folder_is_one_clear_line(tmp_path, capsys):
    assert main(["data", "summary", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "does not exist" in err and "Traceback" not in err


def test_synthetic_and_split(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["data", "synthetic", "--out", str(out), "--n-per-class", "6", "--seed", "3"]) == 0
    assert len(list((out / "malignant").glob("malignant (*)_mask.png"))) == 6
    assert main(["data", "split", "--data", str(out), "--out", str(tmp_path / "s.csv"), "--folds", "3"]) == 0
    assert (tmp_path / "s.csv").read_text().startswith("image_id,label,dup_group,split")


def test_train_then_evaluate(synthetic_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--arch", "custom_cnn", "--data", str(synthetic_dir), "--out", str(run), "--image-size", "32",
            "--epochs", "1", "--batch-size", "8", "--quiet", "--seed", "1"]
    assert main(args) == 0
    assert "test  classification" in capsys.readouterr().out
    # not --quiet, into a pipe (pytest's capture): one plain line per epoch, no bar redraws
    assert main([a for a in args if a != "--quiet"] + ["--epochs", "2", "--out", str(tmp_path / "run2")]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and [line.split()[:2] for line in out.splitlines() if line.startswith("epoch ")] == [
        ["epoch", "0"], ["epoch", "1"]]
    assert main(["evaluate", "--model", str(run / "model"), "--data", str(synthetic_dir), "--split",
                 str(run / "split.csv"), "--part", "test", "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    trained = json.loads((run / "metrics.json").read_text())
    assert ev["classification"]["roc_auc"] == pytest.approx(trained["test"]["classification"]["roc_auc"])


@pytest.mark.parametrize("command", [[], ["train"]])
def test_python_m_entry_point_and_help_without_torch(command):
    """``python -m busi_lib`` is the ``busi`` command, and its help (the options of ``train`` included) answers
    without importing torch: ``-X importtime`` lists every module the process imported."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "busi_lib", *command, "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    expected = ["--arch", "--augment", "--decoder-norm", "--precision"] if command else ["train", "data", "notebooks"]
    assert all(word in r.stdout for word in expected), r.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "busi_lib.apps.cli" in imported and "torch" not in imported and "fastai" not in imported


def test_missing_hub_weights_are_one_clear_line(synthetic_dir, tmp_path, monkeypatch, capsys):
    """ResNet-50's ImageNet weights are in no package: without them in the cache, one line and exit 2."""
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    code = main(["train", "--arch", "multitask", "--encoder", "resnet50", "--data", str(synthetic_dir),
                 "--out", str(tmp_path / "run"), "--image-size", "32", "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("busi: error: ImageNet weights for resnet50") and "Traceback" not in err
    assert "--no-pretrained" in err


def test_downloads_off_is_one_line_naming_the_file(synthetic_dir, tmp_path, monkeypatch, capsys):
    """$BUSI_OFFLINE=1 (read at each call) and ResNet-50's weights not in torchvision's cache: one line that names
    the file and where it goes, exit 2, no download tried."""
    import torch

    monkeypatch.setenv("BUSI_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("a download was tried"))
    code = main(["train", "--arch", "multitask", "--encoder", "resnet50", "--data", str(synthetic_dir),
                 "--out", str(tmp_path / "run"), "--image-size", "32", "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("busi: error:") and "downloads are off" in err and "--no-pretrained" in err
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in err


@pytest.mark.slow
def test_missing_hub_weights_fail_fast_in_one_line(synthetic_dir, tmp_path):
    """The command as a user types it, on a machine without timm's weights and without the hub (a closed port; the
    hub's address is read when huggingface_hub is imported, hence a new process): one line naming the file and
    where it goes, exit 2, no traceback, and no retrying (the hub client alone retries for ~30 s)."""
    import os
    import time

    environ = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf"),
               "HF_ENDPOINT": "http://127.0.0.1:9"}
    for offline in ("HF_HUB_OFFLINE", "BUSI_OFFLINE"):
        environ.pop(offline, None)
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "busi_lib", "train", "--arch", "vit_base_patch16_224", "--data",
                        str(synthetic_dir), "--out", str(tmp_path / "run"), "--image-size", "32", "--epochs", "1",
                        "--quiet"], capture_output=True, text=True, env=environ, timeout=120)
    seconds = time.time() - t0
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr and "Retry" not in r.stderr, r.stderr
    assert len([line for line in err if line.startswith("busi: error:")]) == 1, r.stderr
    msg = next(line for line in err if line.startswith("busi: error:"))
    assert "--no-pretrained" in msg
    assert "127.0.0.1:9 cannot be reached" in msg and "hf download timm/vit_base_patch16_224" in msg
    assert str(tmp_path / "hf" / "hub" / "models--timm--vit_base_patch16_224") in msg
    print(f"exit 2 after {seconds:.1f} s")  # ~12 s of CPU here, 8 of them imports
    # no timing assertion: on a loaded 2-core machine the imports alone took 30-110 s; "Retry" above is the guard


def test_reachable_probe():
    from busi_lib.models.weights import reachable

    assert not reachable("http://127.0.0.1:9/nothing", seconds=2)  # the discard port: closed here
    assert not reachable("not a url")


def test_every_command_answers_help(capsys):
    """``busi COMMAND --help`` (and ``busi data SUB --help``) prints that command's usage and exits 0."""
    import argparse

    from busi_lib.apps import cli

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert sorted(commands) == sorted({"data", "train", "evaluate", "calibrate", "bench", "notebooks", "predict"})
    data = next(a for a in commands["data"]._actions if isinstance(a, argparse._SubParsersAction)).choices
    for argv in [[c] for c in commands] + [["data", d] for d in data]:
        with pytest.raises(SystemExit) as stop:
            cli.build_parser().parse_args([*argv, "--help"])
        assert stop.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: busi {' '.join(argv)}")


def test_train_profile_gives_the_profile_settings_and_explicit_options_win(synthetic_dir):
    from busi_lib.apps.cli import build_parser, train_config
    from busi_lib.config import TrainConfig
    from busi_lib.profiles import settings_for

    def cfg(*argv):
        return train_config(build_parser().parse_args(["train", "--data", str(synthetic_dir), "--out", "x", *argv]))

    cpu = cfg("--profile", "cpu", "--arch", "multitask")
    assert {k: getattr(cpu, k) for k in settings_for("cpu", "multitask")} == settings_for("cpu", "multitask")
    assert cfg("--profile", "cpu", "--arch", "multitask", "--epochs", "3").epochs == 3
    assert cfg("--profile", "cpu", "--arch", "efficientnet_lite0_scratch").arch == "tf_efficientnet_lite0"
    # without --profile: the dataclass's defaults, as before; --lr 0 asks lr_find
    plain, d = cfg("--arch", "multitask"), TrainConfig()
    assert (plain.image_size, plain.epochs, plain.lr, plain.channels_last) == (d.image_size, d.epochs, d.lr, False)
    assert cfg("--lr", "0").lr is None
