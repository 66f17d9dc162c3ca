"""``busi data external``: BUS-BRA, as published, into the folder + labels CSV ``busi evaluate`` reads.

Each test builds a tiny fake archive in the published layout (file names, CSV
headers, a mask of another size, a patient with several scans).
"""

import csv
import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from busi_lib.apps.cli import build_parser, main
from busi_lib.apps.external import load_external
from busi_lib.data.download import download_public_set
from busi_lib.data.external_sets import SETS, convert_busbra
from busi_lib.errors import BusiDataError

W, H = 40, 30
BUSBRA_HEADER = "ID,Case,Histology,Pathology,BIRADS,Device,Width,Height,Side,BBOX"
# ID, Case (patient), Histology, Pathology, BIRADS, Device, Side; patient 1 has two scans
BUSBRA_ROWS = [
    ("bus_0001-l", "1", "Fibroadenoma", "benign", "3", "GE Logiq 7", "left"),
    ("bus_0001-r", "1", "Cyst", "benign", "2", "GE Logiq 7", "right"),
    ("bus_0002-l", "2", "Invasive ductal carcinoma", "malignant", "5", "Toshiba Aplio 300", "left"),
    ("bus_0003-r", "3", "Invasive lobular carcinoma", "malignant", "4", "GE Logiq 5", "right"),
]
SMALL_MASK = "bus_0002-l"  # its mask is half its scan's size


def _scan(seed: int, size=(W, H), rgb: bool = False) -> Image.Image:
    g = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    return Image.fromarray(np.stack([g] * 3, axis=2) if rgb else g)


def _box(size, value, box=(0.25, 0.3, 0.6, 0.7)) -> np.ndarray:
    """An (H, W[, 3]) mask with a rectangle of ``value`` (a gray level or an RGB triple)."""
    w, h = size
    x0, y0, x1, y1 = int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)
    m = np.zeros((h, w, 3) if isinstance(value, tuple) else (h, w), np.uint8)
    m[y0:y1, x0:x1] = value
    return m


def make_busbra(parent: Path) -> Path:
    """``parent/BUSBRA/`` as published on Zenodo; returns ``parent``."""
    root = parent / "BUSBRA"
    (root / "Images").mkdir(parents=True)
    (root / "Masks").mkdir()
    lines = [BUSBRA_HEADER]
    for k, (sid, case, hist, path, birads, device, side) in enumerate(BUSBRA_ROWS):
        size = (44, 32) if sid == "bus_0003-r" else (W, H)
        _scan(k, size).save(root / "Images" / f"{sid}.png")
        msize = (size[0] // 2, size[1] // 2) if sid == SMALL_MASK else size
        Image.fromarray(_box(msize, 255)).save(root / "Masks" / f"mask_{sid[4:]}.png")
        lines.append(f'{sid},{case},{hist},{path},{birads},{device},{size[0]},{size[1]},{side},"[10, 9, 12, 9]"')
    (root / "bus_data.csv").write_text("\n".join(lines) + "\n")
    # The split files are part of the layout; the converter does not read them (placeholder contents).
    (root / "5-fold-cv.csv").write_text("ID,Fold\n" + "".join(f"{r[0]},1\n" for r in BUSBRA_ROWS))
    (root / "10-fold-cv.csv").write_text("ID,Fold\n" + "".join(f"{r[0]},1\n" for r in BUSBRA_ROWS))
    _scan(99).save(root / "Images" / "bus_0099-l.png")  # a scan bus_data.csv does not list
    return parent


def read_labels(out: Path) -> list[dict]:
    with open(out / "labels.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["image", "label", "mask", "patient"]
        return list(reader)


def check_masks(out: Path, rows: list[dict]) -> None:
    """Every written mask: 8-bit single channel, 0/255, the size of its scan."""
    for r in rows:
        img, mask = Image.open(out / r["image"]), Image.open(out / r["mask"])
        assert mask.mode == "L" and mask.size == img.size, r
        assert set(np.unique(np.asarray(mask))) <= {0, 255}, r


def no_leftovers(parent: Path) -> bool:
    return not any(p.name.startswith(".") and ".partial-" in p.name for p in parent.iterdir())


# ----------------------------------------------------------------------------- BUS-BRA
def test_busbra_published_layout(tmp_path, checksums):
    src = make_busbra(tmp_path / "zenodo")
    before = checksums(src)
    out = tmp_path / "busbra"
    conv = convert_busbra(src, out)
    rows = read_labels(out)
    assert rows == [dict(image=f"images/{sid}.png", label=path, mask=f"masks/mask_{sid[4:]}.png", patient=case)
                    for sid, case, _, path, *_ in BUSBRA_ROWS]
    assert conv.per_class == {"benign": 2, "malignant": 2} and conv.n_patients == 3
    assert conv.resized_masks == [f"{SMALL_MASK}.png"]
    assert conv.skipped == [dict(file=str(src / "BUSBRA" / "Images" / "bus_0099-l.png"),
                                 reason="not listed in bus_data.csv")]
    assert any("1875 scans of 1064 patients" in n for n in conv.notes)  # a partial copy is said so
    check_masks(out, rows)
    for sid, *_ in BUSBRA_ROWS:  # scans byte for byte; masks the same pixels (the small one resized)
        assert (out / "images" / f"{sid}.png").read_bytes() == (src / "BUSBRA" / "Images" / f"{sid}.png").read_bytes()
        m_out = np.asarray(Image.open(out / "masks" / f"mask_{sid[4:]}.png")) // 255
        m_src = np.asarray(Image.open(src / "BUSBRA" / "Masks" / f"mask_{sid[4:]}.png")) // 255
        if sid == SMALL_MASK:
            assert m_out.shape == (2 * m_src.shape[0], 2 * m_src.shape[1]) and m_out.sum() == 4 * m_src.sum()
        else:
            assert np.array_equal(m_out, m_src)
    summary = json.loads((out / "conversion.json").read_text())
    assert summary["images"] == 4 and summary["resized_masks"] == 1
    assert summary["licence"] == SETS["busbra"].licence and "CC BY 4.0" in summary["licence"]
    assert checksums(src) == before and no_leftovers(tmp_path)


def test_busbra_accepts_the_busbra_folder_itself(tmp_path):
    src = make_busbra(tmp_path / "zenodo")
    a, b = convert_busbra(src, tmp_path / "a"), convert_busbra(src / "BUSBRA", tmp_path / "b")
    assert a.rows == b.rows and a.source == b.source == src / "BUSBRA"


def test_busbra_output_is_what_busi_evaluate_reads(tmp_path):
    out = tmp_path / "busbra"
    convert_busbra(make_busbra(tmp_path / "zenodo"), out)
    ext = load_external(out, labels=out / "labels.csv", progress=False)
    t = ext.table
    assert list(t["image_id"]) == [f"images/{r[0]}.png" for r in BUSBRA_ROWS]
    assert list(t["label"]) == [r[3] for r in BUSBRA_ROWS] and list(t["target"]) == [0, 0, 1, 1]
    assert list(t["patient_id"]) == ["1", "1", "2", "3"] and ext.has_patients
    assert t["has_mask"].all() and ext.skipped == [] and ext.excluded == {}


def test_busbra_missing_mask_names_row_and_file(tmp_path, checksums):
    src = make_busbra(tmp_path / "zenodo")
    (src / "BUSBRA" / "Masks" / "mask_0002-l.png").unlink()
    before = checksums(src)
    with pytest.raises(BusiDataError) as e:
        convert_busbra(src, tmp_path / "out")
    assert e.value.path.name == "mask_0002-l.png" and "row 3 (line 4)" in e.value.reason
    assert "bus_0002-l" in e.value.reason and "not found" in e.value.reason
    assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)
    conv = convert_busbra(src, tmp_path / "out", skip_bad=True)  # --skip-bad: reported, the rest converted
    assert [r["image"] for r in conv.rows] == ["images/bus_0001-l.png", "images/bus_0001-r.png",
                                               "images/bus_0003-r.png"]
    assert any(s["file"].endswith("mask_0002-l.png") and "row 3" in s["reason"] for s in conv.skipped)
    assert checksums(src) == before


def test_busbra_unknown_pathology_and_missing_scan(tmp_path):
    src = make_busbra(tmp_path / "zenodo")
    csv_path = src / "BUSBRA" / "bus_data.csv"
    csv_path.write_text(csv_path.read_text().replace(",Cyst,benign,", ",Cyst,borderline,"))
    with pytest.raises(BusiDataError, match=r"row 2 \(line 3\) \(bus_0001-r\): unknown Pathology 'borderline'"):
        convert_busbra(src, tmp_path / "out")
    csv_path.write_text(csv_path.read_text().replace(",Cyst,borderline,", ",Cyst,benign,"))
    (src / "BUSBRA" / "Images" / "bus_0003-r.png").unlink()
    with pytest.raises(BusiDataError, match=r"row 4 \(line 5\) \(bus_0003-r\): scan file not found") as e:
        convert_busbra(src, tmp_path / "out")
    assert e.value.path.name == "bus_0003-r.png"


def test_busbra_refuses_out_inside_source_or_not_empty(tmp_path, checksums):
    src = make_busbra(tmp_path / "zenodo")
    before = checksums(src)
    for out in (src / "converted", src / "BUSBRA", src):
        with pytest.raises(BusiDataError, match="inside the source folder"):
            convert_busbra(src, out)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(BusiDataError, match="not empty"):
        convert_busbra(src, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()  # an existing empty folder is fine
    assert len(convert_busbra(src, tmp_path / "empty").rows) == 4
    assert checksums(src) == before


def test_not_a_busbra_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("")
    with pytest.raises(BusiDataError, match="not a BUS-BRA folder.*notes.txt"):
        convert_busbra(tmp_path / "x", tmp_path / "out")
    with pytest.raises(BusiDataError, match="does not exist"):
        convert_busbra(tmp_path / "missing", tmp_path / "out")


def test_hardlink_shares_the_scans(tmp_path, checksums):
    src = make_busbra(tmp_path / "zenodo")
    before = checksums(src)
    conv = convert_busbra(src, tmp_path / "out", hardlink=True)
    assert conv.hardlinked == 4
    a, b = tmp_path / "out" / "images" / "bus_0001-l.png", src / "BUSBRA" / "Images" / "bus_0001-l.png"
    assert a.stat().st_ino == b.stat().st_ino and checksums(src) == before


# ----------------------------------------------------------------------------- the command
def test_cli_data_external(tmp_path, capsys, checksums):
    src = make_busbra(tmp_path / "zenodo")
    before = checksums(src)
    out = tmp_path / "busbra"
    assert main(["data", "external", "busbra", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "images: 4  benign: 2  malignant: 2" in text and "patients: 3" in text
    assert "masks resized to their scan's size (nearest neighbour): 1" in text
    assert "bus_0099-l.png: not listed in bus_data.csv" in text and f"--labels {out / 'labels.csv'}" in text
    assert len(read_labels(out)) == 4
    assert main(["data", "external", "busbra", str(src), "--out", str(out)]) == 2  # not empty now
    err = capsys.readouterr().err
    assert err.startswith("busi: error: ") and "not empty" in err and err.count("\n") == 1
    assert main(["data", "external", "busbra", str(src), "--out", str(src / "BUSBRA" / "out")]) == 2
    err = capsys.readouterr().err
    assert "inside the source folder" in err and err.count("\n") == 1 and "Traceback" not in err
    assert checksums(src) == before


def test_cli_data_external_json_and_a_truncated_scan(tmp_path, capsys, checksums):
    src = make_busbra(tmp_path / "zenodo")
    assert main(["data", "external", "busbra", str(src), "--out", str(tmp_path / "u"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["per_class"] == {"benign": 2, "malignant": 2} and s["patients"] == 3
    assert s["resized_masks"] == 1 and s["dataset"] == "busbra"
    scan = src / "BUSBRA" / "Images" / "bus_0003-r.png"
    scan.write_bytes(scan.read_bytes()[:60])  # cut short: found when the scan is decoded
    before = checksums(src)
    assert main(["data", "external", "busbra", str(src), "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert "bus_0003-r.png" in err and "row 4" in err and err.count("\n") == 1
    assert main(["data", "external", "busbra", str(src), "--out", str(tmp_path / "v"), "--skip-bad"]) == 0
    assert "skipped: 2" in capsys.readouterr().out  # the truncated scan and the unlisted one
    assert checksums(src) == before


def test_cli_names_are_the_sets():
    for name in SETS:
        assert build_parser().parse_args(["data", "external", name, "src", "--out", "o"]).name == name
    with pytest.raises(SystemExit):
        build_parser().parse_args(["data", "external", "busi", "src", "--out", "o"])
    for name in ("busi", *SETS):
        assert build_parser().parse_args(["data", "download", "--dataset", name, "--to", "d"]).dataset == name


# --------------------------------------------------------------------------- busi data download --dataset
def _zip_tree(parent: Path, zip_path: Path) -> tuple[Path, str]:
    """Zip every file under ``parent`` with paths relative to it (``BUSBRA/...``, as Zenodo's BUSBRA.zip)."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(parent.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(parent).as_posix())
    return zip_path, hashlib.sha256(zip_path.read_bytes()).hexdigest()


def test_busbra_download_checks_the_archive_and_unpacks_it_as_published(tmp_path, server, checksums):
    www, base = server
    src = make_busbra(tmp_path / "zenodo")
    _, digest = _zip_tree(src, www / "BUSBRA.zip")
    out = download_public_set("busbra", tmp_path / "data", url=f"{base}/BUSBRA.zip", sha256=digest, progress=False)
    assert out == tmp_path / "data" / "BUSBRA"
    assert checksums(out) == checksums(src / "BUSBRA")  # byte for byte the published folder
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["BUSBRA"]  # no archive, no temporary folder
    conv = convert_busbra(out, tmp_path / "busbra")  # and `busi data external` reads it
    assert len(conv.rows) == len(BUSBRA_ROWS)


def test_busbra_download_with_another_checksum_keeps_nothing(tmp_path, server, monkeypatch):
    www, base = server
    _zip_tree(make_busbra(tmp_path / "zenodo"), www / "BUSBRA.zip")
    with pytest.raises(BusiDataError, match=r"SHA-256 is [0-9a-f]{64} \(\d+ bytes\), not 0{64}.*nothing was kept"):
        download_public_set("busbra", tmp_path / "data", url=f"{base}/BUSBRA.zip", sha256="0" * 64, progress=False)
    assert list((tmp_path / "data").iterdir()) == []
    # The published size and checksum are the default: the fake archive is not the real one.
    with pytest.raises(BusiDataError, match=rf"bytes, not the published {SETS['busbra'].archive.size}"):
        download_public_set("busbra", tmp_path / "data", url=f"{base}/BUSBRA.zip", progress=False)
    same_size = dataclasses.replace(SETS["busbra"].archive, size=(www / "BUSBRA.zip").stat().st_size)
    monkeypatch.setitem(SETS, "busbra", dataclasses.replace(SETS["busbra"], archive=same_size))
    with pytest.raises(BusiDataError, match=same_size.sha256):
        download_public_set("busbra", tmp_path / "data", url=f"{base}/BUSBRA.zip", progress=False)
    assert list((tmp_path / "data").iterdir()) == []


def test_busbra_download_failures_say_how_to_get_it_by_hand(tmp_path, server):
    www, base = server
    (www / "login.zip").write_text("<!DOCTYPE html><html><body>sign in</body></html>")
    with pytest.raises(BusiDataError, match=r"(?s)HTML page.*zenodo.org/records/8231412.*busi data external busbra"):
        download_public_set("busbra", tmp_path / "data", url=f"{base}/login.zip", sha256="0" * 64, progress=False)
    with pytest.raises(BusiDataError, match=r"(?s)HTTP 404.*zenodo.org/records/8231412"):
        download_public_set("busbra", tmp_path / "data", url=f"{base}/gone.zip", progress=False)
    (tmp_path / "full" / "BUSBRA").mkdir(parents=True)
    (tmp_path / "full" / "BUSBRA" / "mine.txt").write_text("keep")
    with pytest.raises(BusiDataError, match="not overwriting"):
        download_public_set("busbra", tmp_path / "full", url=f"{base}/BUSBRA.zip", progress=False)
    assert (tmp_path / "full" / "BUSBRA" / "mine.txt").read_text() == "keep"


def test_cli_data_download_dataset(tmp_path, server, capsys, monkeypatch):
    www, base = server
    _, digest = _zip_tree(make_busbra(tmp_path / "zenodo"), www / "BUSBRA.zip")
    local = dataclasses.replace(SETS["busbra"].archive, url=f"{base}/BUSBRA.zip", sha256=digest,
                                size=(www / "BUSBRA.zip").stat().st_size)
    monkeypatch.setitem(SETS, "busbra", dataclasses.replace(SETS["busbra"], archive=local))
    assert main(["data", "download", "--dataset", "busbra", "--to", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert f"busi data external busbra {tmp_path / 'data' / 'BUSBRA'}" in out
