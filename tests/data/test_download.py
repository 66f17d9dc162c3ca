"""Tests of busi_lib.data.download: pixel fingerprints, verification and the (local, fake) download.

No test touches the internet: archives are served from 127.0.0.1 by ``http.server``
in a background thread. The one test on the real dataset runs only when
``BUSI_DATA_DIR`` is set.
"""

from __future__ import annotations

import os
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from busi_lib.data import download as dl
from busi_lib.data.download import (
    FOLDER_NAME,
    VerifyResult,
    download_busi,
    load_reference,
    pixel_fingerprint,
    verify_folder,
    write_reference,
)
from busi_lib.errors import BusiDataError

# --------------------------------------------------------------------------- fixtures


def _scan(seed: int, shape=(12, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _blob(shape=(12, 16), box=(2, 6, 3, 9)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[box[0] : box[1], box[2] : box[3]] = 1
    return m


def _make_busi(root: Path) -> Path:
    """A tiny BUSI-layout folder: grayscale scans, masks in modes '1', 'L' 0/255 and RGB, one extra _mask_1."""
    for cls in ("benign", "malignant", "normal"):
        (root / cls).mkdir(parents=True)
    Image.fromarray(_scan(1)).save(root / "benign" / "benign (1).png")
    Image.fromarray(_blob() * 255).convert("1").save(root / "benign" / "benign (1)_mask.png")
    Image.fromarray(_scan(2, (10, 14))).save(root / "benign" / "benign (2).png")
    Image.fromarray(_blob((10, 14)) * 255).save(root / "benign" / "benign (2)_mask.png")  # L, 0/255
    second = np.stack([_blob((10, 14), (6, 9, 8, 12)) * 255] * 3, axis=2)
    Image.fromarray(second).save(root / "benign" / "benign (2)_mask_1.png")  # RGB
    Image.fromarray(_scan(3)).save(root / "malignant" / "malignant (1).png")
    Image.fromarray(np.stack([_blob() * 255] * 3, axis=2)).save(root / "malignant" / "malignant (1)_mask.png")
    Image.fromarray(_scan(4)).save(root / "normal" / "normal (1).png")
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(root / "normal" / "normal (1)_mask.png")
    return root


def _zip_folder(folder: Path, zip_path: Path, prefix: str = FOLDER_NAME, extra: dict[str, bytes] | None = None) -> Path:
    """Zip ``folder`` with members ``<prefix>/<class>/<file>`` (as the public archive does)."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{prefix}/{p.relative_to(folder).as_posix()}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return zip_path


@pytest.fixture
def busi(tmp_path) -> Path:
    return _make_busi(tmp_path / "src" / FOLDER_NAME)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_lists_every_file_with_counts(busi):
    fp = pixel_fingerprint(busi)
    assert fp["version"] == 1
    assert sorted(fp["files"]) == [
        "benign/benign (1).png",
        "benign/benign (1)_mask.png",
        "benign/benign (2).png",
        "benign/benign (2)_mask.png",
        "benign/benign (2)_mask_1.png",
        "malignant/malignant (1).png",
        "malignant/malignant (1)_mask.png",
        "normal/normal (1).png",
        "normal/normal (1)_mask.png",
    ]
    assert all(len(h) == 16 for h in fp["files"].values())
    assert fp["counts"] == {
        "benign": {"images": 2, "masks": 3},
        "malignant": {"images": 1, "masks": 1},
        "normal": {"images": 1, "masks": 1},
    }
    assert pixel_fingerprint(busi)["digest"] == fp["digest"]  # deterministic


def test_fingerprint_ignores_hidden_and_non_png_files(busi):
    before = pixel_fingerprint(busi)
    (busi / "benign" / ".DS_Store").write_bytes(b"junk")
    (busi / "benign" / "notes.txt").write_text("hello")
    assert pixel_fingerprint(busi) == before


def test_rgb_with_equal_channels_has_the_same_fingerprint(busi):
    before = pixel_fingerprint(busi)
    p = busi / "benign" / "benign (1).png"
    Image.open(p).convert("RGB").save(p)
    assert Image.open(p).mode == "RGB"
    assert pixel_fingerprint(busi) == before


@pytest.mark.parametrize("mode", ["1", "L", "RGB", "RGBA"])
def test_mask_modes_have_the_same_fingerprint(busi, mode):
    before = pixel_fingerprint(busi)
    p = busi / "malignant" / "malignant (1)_mask.png"
    Image.fromarray(_blob() * 255).convert(mode).save(p)
    assert pixel_fingerprint(busi) == before


def test_shape_is_part_of_the_hash(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, shape in ((a, (4, 6)), (b, (6, 4))):
        (root / "normal").mkdir(parents=True)
        Image.fromarray(np.zeros(shape, np.uint8)).save(root / "normal" / "normal (1).png")
    assert pixel_fingerprint(a)["files"] != pixel_fingerprint(b)["files"]


def test_fingerprint_of_missing_folder_raises(tmp_path):
    with pytest.raises(BusiDataError, match="does not exist"):
        pixel_fingerprint(tmp_path / "nope")


def test_write_reference_round_trips(busi, tmp_path):
    out = tmp_path / "ref.json"
    fp = write_reference(busi, out)
    assert load_reference(out) == fp
    assert "\n" not in out.read_text().strip()  # compact
    assert verify_folder(busi, out).ok


# --------------------------------------------------------------------------- verification


def test_verify_ok_and_summary(busi):
    result = verify_folder(busi, pixel_fingerprint(busi))
    assert isinstance(result, VerifyResult)
    assert result.ok
    assert result.n_checked == 9
    assert "OK" in str(result)


def test_one_changed_pixel_is_reported(busi):
    ref = pixel_fingerprint(busi)
    p = busi / "malignant" / "malignant (1).png"
    arr = np.array(Image.open(p))
    arr[0, 0] ^= 1
    Image.fromarray(arr).save(p)
    result = verify_folder(busi, ref)
    assert not result.ok
    assert result.changed == ["malignant/malignant (1).png"]
    assert result.missing == [] and result.extra == []
    assert "malignant/malignant (1).png" in result.summary()


def test_missing_extra_and_unreadable_files_are_reported(busi):
    ref = pixel_fingerprint(busi)
    (busi / "normal" / "normal (1)_mask.png").unlink()
    Image.fromarray(_scan(9)).save(busi / "normal" / "normal (2).png")
    (busi / "benign" / "benign (1).png").write_bytes(b"not a png")
    result = verify_folder(busi, ref)  # reports, never raises
    assert result.missing == ["normal/normal (1)_mask.png"]
    assert result.extra == ["normal/normal (2).png"]
    assert list(result.unreadable) == ["benign/benign (1).png"]
    assert not result.ok
    text = result.summary()
    assert "1 missing" in text and "1 extra" in text and "1 unreadable" in text


def test_bad_reference_raises(busi, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BusiDataError, match="not readable JSON"):
        verify_folder(busi, bad)
    with pytest.raises(BusiDataError, match="fingerprint"):
        verify_folder(busi, {"version": 99, "files": {}})


def test_shipped_reference_is_consistent():
    """The fingerprint shipped with the library describes the full BUSI dataset."""
    ref = load_reference()
    assert dl.REFERENCE_PATH.stat().st_size < 150_000
    assert len(ref["files"]) == 1578
    assert {c: n["images"] for c, n in ref["counts"].items()} == {"benign": 437, "malignant": 210, "normal": 133}
    assert ref["digest"] == dl._digest(ref["files"])
    assert ref["counts"] == dl._count(ref["files"])


# --------------------------------------------------------------------------- download


def test_download_unpacks_and_verifies(busi, server, tmp_path, capsys):
    www, base = server
    _zip_folder(busi, www / "Dataset_BUSI.zip", extra={"__MACOSX/._x": b"mac junk"})
    ref = pixel_fingerprint(busi)
    out = download_busi(tmp_path / "data", url=f"{base}/Dataset_BUSI.zip", use_kaggle=False, reference=ref)
    assert out == tmp_path / "data" / FOLDER_NAME
    assert verify_folder(out, ref).ok
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err  # into a pipe or a log: no progress bar redraws
    # Only the dataset folder is left behind: no archive, no temporary folder.
    assert [p.name for p in (tmp_path / "data").iterdir()] == [FOLDER_NAME]


def test_download_finds_a_nested_folder(busi, server, tmp_path):
    www, base = server
    _zip_folder(busi, www / "nested.zip", prefix=f"Dataset_BUSI/{FOLDER_NAME}")
    out = download_busi(
        tmp_path / "data", url=f"{base}/nested.zip", use_kaggle=False, reference=pixel_fingerprint(busi), progress=False
    )
    assert verify_folder(out, pixel_fingerprint(busi)).ok


def test_download_with_different_pixels_fails_and_keeps_nothing(busi, server, tmp_path):
    www, base = server
    ref = pixel_fingerprint(busi)
    p = busi / "normal" / "normal (1).png"
    arr = np.array(Image.open(p))
    arr[3, 3] ^= 0xFF
    Image.fromarray(arr).save(p)
    _zip_folder(busi, www / "Dataset_BUSI.zip")
    url = f"{base}/Dataset_BUSI.zip"
    with pytest.raises(BusiDataError, match=r"does not match.*normal/normal \(1\)\.png"):
        download_busi(tmp_path / "data", url=url, use_kaggle=False, reference=ref, progress=False)
    assert not (tmp_path / "data" / FOLDER_NAME).exists()
    # verify=False keeps it anyway.
    out = download_busi(tmp_path / "data", url=url, use_kaggle=False, verify=False, progress=False)
    assert out.is_dir()


def test_html_page_gives_the_manual_steps(server, tmp_path):
    www, base = server
    (www / "login.zip").write_text("<!DOCTYPE html><html><body>Please sign in</body></html>")
    with pytest.raises(BusiDataError) as e:
        download_busi(tmp_path / "data", url=f"{base}/login.zip", use_kaggle=False, progress=False)
    msg = str(e.value)
    assert "HTML page" in msg
    assert dl.KAGGLE_PAGE in msg and dl.DEFAULT_URL in msg and "BUSI_DATA_DIR" in msg
    assert str(tmp_path / "data" / FOLDER_NAME) in msg
    assert not (tmp_path / "data" / FOLDER_NAME).exists()


def test_http_error_gives_the_manual_steps(server, tmp_path):
    _, base = server
    with pytest.raises(BusiDataError, match=r"(?s)HTTP 404.*BUSI_DATA_DIR"):
        download_busi(tmp_path / "data", url=f"{base}/missing.zip", use_kaggle=False, progress=False)


def test_unreachable_server_gives_the_manual_steps(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/Dataset_BUSI.zip"  # nothing listens there
    with pytest.raises(BusiDataError, match=r"(?s)network error.*BUSI_DATA_DIR"):
        download_busi(tmp_path / "data", url=url, use_kaggle=False, progress=False)


@pytest.mark.parametrize("evil", ["../evil", f"{FOLDER_NAME}/../../evil", "/tmp/evil_abs", "..\\evil"])
def test_zip_slip_is_rejected(busi, server, tmp_path, evil):
    www, base = server
    _zip_folder(busi, www / "evil.zip", extra={evil: b"owned"})
    with pytest.raises(BusiDataError, match="refusing archive"):
        download_busi(tmp_path / "data", url=f"{base}/evil.zip", use_kaggle=False, verify=False, progress=False)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "data" / "evil").exists()
    assert not (tmp_path / "data" / FOLDER_NAME).exists()


def test_existing_target_is_not_overwritten(tmp_path):
    target = tmp_path / "data" / FOLDER_NAME
    target.mkdir(parents=True)
    (target / "keep.txt").write_text("mine")
    # An unreachable URL: the check must come before any download is tried.
    url = f"http://127.0.0.1:{_free_port()}/Dataset_BUSI.zip"
    with pytest.raises(BusiDataError, match="not overwriting"):
        download_busi(tmp_path / "data", url=url, use_kaggle=False, progress=False)
    assert (target / "keep.txt").read_text() == "mine"


def test_empty_target_folder_is_filled(busi, server, tmp_path):
    www, base = server
    _zip_folder(busi, www / "Dataset_BUSI.zip")
    (tmp_path / "data" / FOLDER_NAME).mkdir(parents=True)
    ref = pixel_fingerprint(busi)
    url = f"{base}/Dataset_BUSI.zip"
    out = download_busi(tmp_path / "data", url=url, use_kaggle=False, reference=ref, progress=False)
    assert (out / "benign" / "benign (1).png").is_file()


def test_never_downloads_into_the_library_source():
    with pytest.raises(BusiDataError, match="source folder"):
        download_busi(dl.REFERENCE_PATH.parent / "data", use_kaggle=False, progress=False)


def test_kaggle_detection(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle"))
    monkeypatch.setattr(dl, "find_spec", lambda name: object())  # pretend the package is installed
    assert not dl.kaggle_configured()
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    assert dl.kaggle_configured()
    monkeypatch.setattr(dl, "find_spec", lambda name: None)  # credentials but no package
    assert not dl.kaggle_configured()


def test_use_kaggle_true_without_configuration_explains(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "kaggle_configured", lambda: False)
    with pytest.raises(BusiDataError, match=r"(?s)Kaggle API is not configured.*BUSI_DATA_DIR"):
        download_busi(tmp_path / "data", use_kaggle=True, progress=False)


# --------------------------------------------------------------------------- the real dataset


@pytest.mark.real_data
@pytest.mark.skipif(not os.environ.get("BUSI_DATA_DIR"), reason="set BUSI_DATA_DIR to the real BUSI folder")
@pytest.mark.slow
def test_real_folder_matches_the_shipped_reference():
    result = verify_folder(os.environ["BUSI_DATA_DIR"])
    assert result.ok, result.summary()
    assert {c: n["images"] for c, n in result.counts.items()} == {"benign": 437, "malignant": 210, "normal": 133}
