"""Bad input, tried on purpose: each case gets a clear error naming the file, or is handled as documented.

Every folder run also proves that nothing was written into the input folder.
"""

from __future__ import annotations

import json
import struct
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_predict import tiny_model

from busi_lib.apps.cli import main
from busi_lib.apps.predict import predict_arrays, predict_files
from busi_lib.data.dataset import load_dataset
from busi_lib.data.images import read_image, read_mask
from busi_lib.errors import BusiDataError
from busi_lib.models.saving import load_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _scan(seed: int = 0, shape=(60, 80)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims a size and holds no pixels: enough for PIL's size check, costs no memory."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def model(module_tmp) -> Path:
    return tiny_model(module_tmp / "model", size=32)


@pytest.fixture(scope="module")
def loaded(model):
    return load_model(model)


@pytest.fixture()
def bad_folder(tmp_path) -> tuple[Path, dict]:
    """A folder of scans (names with spaces and brackets, like BUSI's) and every kind of bad file beside them."""
    root = tmp_path / "scans (ward 3) [2024]"
    good = {
        "benign (1).png": _png(root / "benign (1).png", _scan(1)),
        "malignant (2) [copy].png": _png(root / "sub dir" / "malignant (2) [copy].png", _scan(2, (45, 30))),
        "sixteen bit.png": _png(root / "sixteen bit.png", _scan(3).astype(np.uint16) * 257),
    }
    full = (root / "benign (1).png").read_bytes()
    bad = {
        "truncated.png": (full[: len(full) // 2], "unreadable or truncated"),
        "empty.png": (b"", "file is empty"),
        "notes.png": (b"these are my notes, not a scan\n", "not an image file"),
        "too big.png": (None, "exceeds limit"),
    }
    for name, (data, _) in bad.items():
        if data is None:
            _png_header_only(root / name, 12_000, 12_000)
        else:
            (root / name).write_bytes(data)
    _png(root / "benign (1)_mask.png", (_scan(4) > 128).astype(np.uint8) * 255)  # BUSI's mask: skipped
    (root / "._benign (1).png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")  # hidden: skipped
    return root, dict(good=good, bad={k: v[1] for k, v in bad.items()})


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("truncated.png", "half", "unreadable or truncated image"),
        ("zero.png", b"", "file is empty (0 bytes)"),
        ("text.png", b"hello, I am a text file\n", "not an image file PIL can read"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, name, data, reason):
    if data == "half":
        full = _png(tmp_path / "full.png", _scan()).read_bytes()
        data = full[: len(full) // 2]
    path = tmp_path / "a folder (1)" / name
    path.parent.mkdir()
    path.write_bytes(data)
    with pytest.raises(BusiDataError) as e:
        read_image(path)
    assert e.value.path == path and reason in str(e.value) and str(path) in str(e.value)


def test_huge_scans_are_processed_up_to_pils_limit_and_refused_above(loaded, tmp_path):
    model, config = loaded
    img = np.zeros((8000, 8000), np.uint8)
    cv2.circle(img, (3000, 4000), 1500, 200, -1)
    ok, buf = cv2.imencode(".png", img)
    big = tmp_path / "in" / "big.png"
    big.parent.mkdir()
    big.write_bytes(buf.tobytes())
    rep = predict_files(model, config, [big], tmp_path / "out")
    row = rep.table.iloc[0]
    assert (row["width"], row["height"]) == (8000, 8000) and pd.isna(row["error"])
    assert np.asarray(Image.open(tmp_path / "out" / row["mask_png"])).shape == (8000, 8000)
    # above PIL's decompression-bomb limit (about 89 million pixels) the file is refused before decoding
    huge = _png_header_only(tmp_path / "in" / "huge.png", 12_000, 12_000)
    with pytest.raises(BusiDataError, match=r"huge\.png: .*exceeds limit"):
        read_image(huge)


def test_sixteen_bit_png_reads_as_its_high_byte(loaded, tmp_path):
    model, config = loaded
    gray = _scan(5)
    noise = np.where(gray < 255, 200, 0).astype(np.uint16)  # dropped by the rule v // 257
    p16 = _png(tmp_path / "16.png", gray.astype(np.uint16) * 257 + noise)
    assert Image.open(p16).mode.startswith("I")
    assert np.array_equal(read_image(p16), gray)
    # The property itself is the equality of the two inputs above. The two predictions share one batch, and CPU
    # kernels (oneDNN with AVX-512) may round batch rows differently, so outputs agree to float32 precision only.
    a, b = predict_arrays(model, config, [read_image(p16), gray])
    assert a.probability == pytest.approx(b.probability, abs=1e-5)
    assert (a.mask != b.mask).mean() <= 1e-3  # a pixel whose probability sits within 1e-6 of 0.5 may flip


def test_a_mask_that_is_not_binary_follows_the_documented_rule(tmp_path, synthetic_dir):
    soft = np.zeros((40, 50), np.uint8)
    soft[10:30, 10:40] = 255
    soft[9, 10:40] = 100  # anti-aliased edge below half the maximum: background
    soft[30, 10:40] = 140  # above half: lesion
    path = _png(tmp_path / "scan (1)_mask.png", soft)
    m = read_mask(path, (40, 50))
    assert set(np.unique(m)) == {0, 1} and m[9].sum() == 0 and m[30].sum() == 30 and m.sum() == 21 * 30
    # in a BUSI folder the soft mask is read the same way, and predict never treats it as a scan
    import shutil

    data = tmp_path / "busi"
    shutil.copytree(synthetic_dir, data)
    scan = next(p for p in sorted((data / "benign").glob("*.png")) if "_mask" not in p.name)
    h, w = read_image(scan).shape
    big = cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR)  # many grey levels
    for old in data.glob(f"benign/{scan.stem}_mask*.png"):
        old.unlink()
    _png(data / "benign" / f"{scan.stem}_mask.png", big)
    df = load_dataset(data)
    row = df[df["path"] == str(scan)].iloc[0]
    assert row["lesion_area"] == int((big >= big.max() / 2).sum())


def test_an_empty_folder_is_a_clear_error(loaded, model, tmp_path, capsys):
    empty = tmp_path / "no scans [yet]"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here")
    with pytest.raises(BusiDataError, match=r"no scans \[yet\]: no scans found"):
        predict_files(*loaded, [empty], tmp_path / "out")
    assert main(["predict", "--model", str(model), str(empty), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no scans found" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_folder_run_reports_the_bad_files_and_finishes_the_good_ones(model, bad_folder, tmp_path, checksums,
                                                                       capsys):
    root, files = bad_folder
    before = checksums(root)
    code = main(["predict", "--model", str(model), str(root), "--out", str(tmp_path / "out"), "--cam",
                 "--batch-size", "3"])
    assert code == 1  # documented: some files unreadable, the others predicted
    assert checksums(root) == before  # nothing written into the input folder
    err = capsys.readouterr().err
    t = pd.read_csv(tmp_path / "out" / "predictions.csv")
    by_name = {Path(f).name: r for f, (_, r) in zip(t["file"], t.iterrows())}
    assert set(by_name) == set(files["good"]) | set(files["bad"])  # the mask and the hidden file are not scans
    for name, reason in files["bad"].items():
        assert reason in by_name[name]["error"] and name in err
    for name, path in files["good"].items():
        r = by_name[name]
        assert pd.isna(r["error"]) and r["file"] == str(path)
        mask = np.asarray(Image.open(tmp_path / "out" / r["mask_png"]))
        assert mask.shape == read_image(path).shape
        assert (tmp_path / "out" / r["cam_png"]).is_file() and (tmp_path / "out" / r["overlay_png"]).is_file()
    assert (tmp_path / "out" / "malignant (2) [copy]_overlay.png").is_file()


def test_a_folder_of_only_bad_files_exits_2(model, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"")
    assert main(["predict", "--model", str(model), str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 2
    assert "a.png" in capsys.readouterr().err


def test_bad_arrays_are_clear_errors(loaded):
    with pytest.raises(ValueError, match="channels"):
        predict_arrays(*loaded, [np.zeros((20, 20, 2), np.uint8)])
    with pytest.raises(ValueError, match="empty"):
        predict_arrays(*loaded, [np.zeros((0, 20), np.uint8)])


# ------------------------------------------------------------ model folders
def _copy_model(model: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(model, tmp_path / "model copy"))


def _rehash(folder: Path) -> None:
    """Make config.json agree with whatever weights file is there (someone 'fixing' the hash by hand)."""
    import hashlib

    cfg = json.loads((folder / "config.json").read_text())
    cfg["weights_sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "config.json").write_text(json.dumps(cfg))


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    "damage, message",
    [
        ("no weights", "model.safetensors is missing"),
        ("flipped byte", "sha256 differs"),
        ("truncated, rehashed", "corrupted weights file"),
        ("no config", "config.json is missing"),
        ("config not json", "not valid JSON"),
        ("other format version", "model format version 99"),
        ("other encoder", "config and weights disagree"),
        ("edited tensor list", "tensor names or shapes differ"),
        ("not a folder", "model folder not found"),
    ],
)
def test_damaged_model_folders_are_clear_errors(model, tmp_path, damage, message, capsys):
    folder = _copy_model(model, tmp_path)
    w, c = folder / "model.safetensors", folder / "config.json"
    if damage == "no weights":
        w.unlink()
    elif damage == "flipped byte":
        data = bytearray(w.read_bytes())
        data[len(data) // 2] ^= 0xFF
        w.write_bytes(bytes(data))
    elif damage == "truncated, rehashed":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])
        _rehash(folder)
    elif damage == "no config":
        c.unlink()
    elif damage == "config not json":
        c.write_text("{arch: multitask")
    elif damage == "other format version":
        _edit_config(folder, format_version=99)
    elif damage == "other encoder":
        _edit_config(folder, encoder="resnet34")  # same tensor list recorded, but resnet34 has more blocks
    elif damage == "edited tensor list":
        cfg = json.loads(c.read_text())
        cfg["tensors"].pop(next(iter(cfg["tensors"])))
        c.write_text(json.dumps(cfg))
    elif damage == "not a folder":
        folder = tmp_path / "missing model"
    with pytest.raises(BusiDataError, match=message) as e:
        load_model(folder)
    assert str(folder) in str(e.value)
    scan = _png(tmp_path / "in" / "x.png", _scan())
    assert main(["predict", "--model", str(folder), str(scan), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# ------------------------------------------------------------ random bytes
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3000), png_like=st.booleans())
def test_random_bytes_never_crash_and_never_stop_a_folder_run(loaded, data, png_like):
    model, config = loaded
    if png_like:
        data = PNG_SIGNATURE + data  # past the signature check, into the chunk parser
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "in"
        root.mkdir()
        _png(root / "good.png", _scan())
        (root / "random.png").write_bytes(data)
        try:
            img = read_image(root / "random.png")
            assert img.dtype == np.uint8 and img.ndim == 2  # it happened to be an image
        except BusiDataError as e:
            assert e.path == root / "random.png"
        rep = predict_files(model, config, [root], Path(tmp) / "out")
        t = rep.table.set_index(rep.table["file"].map(lambda f: Path(f).name))
        assert pd.isna(t.loc["good.png", "error"]) and len(t) == 2
        assert sorted(p.name for p in root.iterdir()) == ["good.png", "random.png"]


# ------------------------------------------------------------ bad option values on the command line
USAGE_ERRORS = [  # refused by the option's type before anything runs: argparse's usage line, then one error line
    (["data", "synthetic", "--out", "{tmp}/s", "--n-per-class", "0"], "--n-per-class: must be at least 1, got 0"),
    (["data", "split", "--out", "{tmp}/s.csv", "--folds", "x"], "--folds: invalid int value: 'x'"),
    (["train", "--out", "{tmp}/t", "--epochs", "-1"], "--epochs: must be at least 1, got -1"),
    (["train", "--out", "{tmp}/t", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["train", "--out", "{tmp}/t", "--lr", "-1"], "--lr: must be at least 0.0, got -1"),
    (["train", "--out", "{tmp}/t", "--image-size", "7"], "--image-size: must be at least 32, got 7"),
    (["bench", "--out", "{tmp}/b", "--folds", "9"], "--folds: comma-separated fold numbers from 1 to 5, got 9"),
    (["bench", "--out", "{tmp}/b", "--folds", "1,x"], "--folds: comma-separated fold numbers from 1 to 5, got 1,x"),
    (["bench", "--out", "{tmp}/b", "--n-boot", "0"], "--n-boot: must be at least 1, got 0"),
    (["evaluate", "--model", "m", "--out", "{tmp}/e", "--seed", "-1"], "--seed: must be at least 0, got -1"),
    (["predict", "--model", "m", "x.png", "--out", "{tmp}/p", "--batch-size", "0"],
     "--batch-size: must be at least 1, got 0"),
]


@pytest.mark.parametrize("argv, says", USAGE_ERRORS, ids=lambda v: " ".join(v[:1] + v[-2:]) if isinstance(v, list)
                         else None)
def test_a_bad_option_value_is_a_usage_error(argv, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.strip().splitlines()[-1].endswith(f"error: argument {says}"), err
    assert not any(tmp_path.iterdir())  # nothing was started


def test_values_only_the_run_can_check_are_one_error_line(synthetic_dir, tmp_path, capsys):
    """An unknown architecture, an image size that is no multiple of 32, too few scans for the split, a split
    that is no CSV, a fold count of 1, notebooks that do not exist, an unknown metric to monitor, nothing to
    predict: ``busi: error:`` and one line each."""
    from busi_lib.data.synthetic import make_synthetic_busi

    tiny = make_synthetic_busi(tmp_path / "tiny", n_per_class=3, n_duplicates=0)
    bad_csv = tmp_path / "split.csv"
    bad_csv.write_text("image_id\nbenign (1)\nbenign (2),train,3\n")
    cases = [
        (["train", "--data", str(synthetic_dir), "--out", str(tmp_path / "t1"), "--arch", "nosuchnet"],
         "timm knows no model named 'nosuchnet'"),
        (["train", "--data", str(synthetic_dir), "--out", str(tmp_path / "t2"), "--image-size", "48"],
         "image size must be a multiple of 32"),
        (["train", "--data", str(tiny), "--out", str(tmp_path / "t3"), "--arch", "custom_cnn"],
         "scans cannot be split into 7 parts, groups whole"),
        (["train", "--data", str(synthetic_dir), "--out", str(tmp_path / "t4"), "--split", str(bad_csv)],
         f"{bad_csv}: not a readable CSV"),
        (["data", "split", "--data", str(synthetic_dir), "--out", str(tmp_path / "s.csv"), "--folds", "1"],
         "n_splits=2 or more"),
        (["notebooks", "--only", "99", "--out", str(tmp_path / "nb")], "no numbered notebooks (NN_name.ipynb)"),
        (["train", "--data", str(synthetic_dir), "--out", str(tmp_path / "t5"), "--arch", "custom_cnn", "--profile",
          "smoke", "--monitor", "nosuch"], "monitor 'nosuch' is not a metric of this run (train_loss, valid_loss, "),
        (["predict", "--model", "m", "--out", str(tmp_path / "p")], "busi predict needs scans or folders and --out"),
    ]
    for argv, says in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("busi: error: ") and err.count("\n") == 1 and says in err, (argv, err)
