"""``busi data external``: BUS-BRA and BUS-UCLM, as published, into the folder + labels CSV ``busi evaluate`` reads.

Each test builds a tiny fake archive in the published layout (file names, CSV
headers, colour masks, a mask of another size, a patient with several scans).
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
from busi_lib.data.external_sets import SETS, colour_label, convert_busbra, convert_busuclm, patient_from_name
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


GREEN, RED = (0, 255, 0), (255, 0, 0)
# name, label, mask colour (None: all black); ALWI has three scans, COPE_000's mask is smaller than its scan
UCLM = [
    ("ALWI_000", "benign", GREEN),
    ("ALWI_001", "normal", None),
    ("ALWI_002", "benign", GREEN),
    ("COPE_000", "malignant", RED),
    ("COPE_001", "normal", None),
    ("FLKA_000", "malignant", RED),
]
UCLM_SMALL = "COPE_000"


def make_busuclm(parent: Path, info: str | None = "Image,Label\n") -> Path:
    """``parent/BUS-UCLM/{images,masks,INFO.csv}`` (RGB scans, RGB masks); returns the BUS-UCLM folder.

    ``info`` is INFO.csv's header line; its columns are filled from UCLM (None: no INFO.csv).
    """
    root = parent / "BUS-UCLM"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k, (name, _, colour) in enumerate(UCLM):
        _scan(k, rgb=True).save(root / "images" / f"{name}.png")
        size = (W // 2, H // 2) if name == UCLM_SMALL else (W, H)
        mask = _box(size, colour) if colour else np.zeros((size[1], size[0], 3), np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    if info is not None:
        sep = ";" if ";" in info else ","
        cols = [c.strip().lower() for c in info.strip().split(sep)]
        values = {"image": lambda n, lab: f"{n}.png", "label": lambda n, lab: lab.capitalize(),
                  "class": lambda n, lab: lab.upper(), "patient": lambda n, lab: f"P-{n[:4]}"}
        body = "".join(sep.join(values[c](n, lab) for c in cols) + "\n" for n, lab, _ in UCLM)
        (root / "INFO.csv").write_text(info + body)
    return root


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


# ----------------------------------------------------------------------------- BUS-UCLM
def test_busuclm_published_layout(tmp_path, checksums):
    src = make_busuclm(tmp_path / "mendeley")
    before = checksums(src)
    out = tmp_path / "uclm"
    conv = convert_busuclm(src, out)
    rows = read_labels(out)
    assert rows == [dict(image=f"images/{n}.png", label=lab, mask=f"masks/{n}.png", patient=n[:4])
                    for n, lab, _ in UCLM]
    assert conv.per_class == {"benign": 2, "malignant": 2, "normal": 2} and conv.n_patients == 3
    assert conv.resized_masks == [f"{UCLM_SMALL}.png"] and conv.skipped == []
    assert any("checked against INFO.csv" in n for n in conv.notes)
    assert any("683 scans of 38 patients" in n for n in conv.notes)
    check_masks(out, rows)
    for n, lab, _ in UCLM:
        m = np.asarray(Image.open(out / "masks" / f"{n}.png"))
        assert (m.max() == 255) == (lab != "normal")
        assert (out / "images" / f"{n}.png").read_bytes() == (src / "images" / f"{n}.png").read_bytes()
    assert checksums(src) == before and no_leftovers(tmp_path)


def test_busuclm_output_is_what_busi_evaluate_reads(tmp_path):
    out = tmp_path / "uclm"
    convert_busuclm(make_busuclm(tmp_path / "mendeley"), out)
    ext = load_external(out, labels=out / "labels.csv", progress=False)
    lesions = [(n, lab) for n, lab, _ in UCLM if lab != "normal"]
    assert list(ext.table["image_id"]) == [f"images/{n}.png" for n, _ in lesions]
    assert list(ext.table["label"]) == [lab for _, lab in lesions]
    assert list(ext.table["patient_id"]) == ["ALWI", "ALWI", "COPE", "FLKA"] and ext.has_patients
    assert ext.excluded == {"normal": 2} and ext.skipped == []


def test_busuclm_folder_or_one_above_and_without_info(tmp_path):
    src = make_busuclm(tmp_path / "mendeley", info=None)
    a = convert_busuclm(src, tmp_path / "a")
    b = convert_busuclm(src.parent, tmp_path / "b")
    assert a.rows == b.rows and a.source == b.source == src
    assert [r["label"] for r in a.rows] == [lab for _, lab, _ in UCLM]  # from the mask colours alone
    assert any("no INFO.csv" in n for n in a.notes)


def test_busuclm_patients_from_info_semicolons(tmp_path):
    src = make_busuclm(tmp_path / "mendeley", info="Image;Patient;Class\n")
    conv = convert_busuclm(src, tmp_path / "out")
    assert [r["patient"] for r in conv.rows] == [f"P-{n[:4]}" for n, _, _ in UCLM]
    assert any("patients from INFO.csv" in n for n in conv.notes)
    ext = load_external(tmp_path / "out", labels=tmp_path / "out" / "labels.csv", progress=False)
    assert set(ext.table["patient_id"]) == {"P-ALWI", "P-COPE", "P-FLKA"}


def test_busuclm_two_colour_mask_is_an_error_naming_the_file(tmp_path, checksums):
    src = make_busuclm(tmp_path / "mendeley")
    mask = np.asarray(Image.open(src / "masks" / "ALWI_000.png")).copy()
    mask[:3, :3] = RED  # green lesion plus a few red pixels
    Image.fromarray(mask).save(src / "masks" / "ALWI_000.png")
    before = checksums(src)
    with pytest.raises(BusiDataError, match="both red .* and green") as e:
        convert_busuclm(src, tmp_path / "out")
    assert e.value.path == src / "masks" / "ALWI_000.png"
    assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)
    conv = convert_busuclm(src, tmp_path / "out", skip_bad=True)
    assert len(conv.rows) == 5 and [s["file"] for s in conv.skipped] == [str(src / "masks" / "ALWI_000.png")]
    assert checksums(src) == before


def test_busuclm_info_label_must_agree_with_the_colour(tmp_path):
    src = make_busuclm(tmp_path / "mendeley")
    info = src / "INFO.csv"
    info.write_text(info.read_text().replace("FLKA_000.png,Malignant", "FLKA_000.png,Benign"))
    with pytest.raises(BusiDataError, match="colour says malignant but INFO.csv says benign") as e:
        convert_busuclm(src, tmp_path / "out")
    assert e.value.path.name == "FLKA_000.png" and "INFO.csv row 6 (line 7)" in e.value.reason


def test_busuclm_missing_files(tmp_path):
    src = make_busuclm(tmp_path / "mendeley")
    (src / "masks" / "COPE_001.png").unlink()
    with pytest.raises(BusiDataError, match=r"INFO.csv row 5 \(line 6\): mask file not found") as e:
        convert_busuclm(src, tmp_path / "out")
    assert e.value.path.name == "COPE_001.png"
    (src / "images" / "COPE_001.png").unlink()  # now INFO.csv lists a scan that is not there
    with pytest.raises(BusiDataError, match="image 'COPE_001.png' not found in images/"):
        convert_busuclm(src, tmp_path / "out")


def test_busuclm_refuses_out_inside_source(tmp_path, checksums):
    src = make_busuclm(tmp_path / "mendeley")
    before = checksums(tmp_path / "mendeley")
    with pytest.raises(BusiDataError, match="inside the source folder"):
        convert_busuclm(src, src / "images" / "out")
    with pytest.raises(BusiDataError, match="inside the source folder"):  # the folder given, even one level above
        convert_busuclm(src.parent, src.parent / "converted")
    assert checksums(tmp_path / "mendeley") == before


def test_colour_label_and_patient_rule():
    lesion, n = colour_label(_box((8, 6), GREEN))
    assert n["green"] == lesion.sum() > 0 and n["red"] == n["other"] == 0
    assert colour_label(_box((8, 6), (255, 255, 0)))[1]["other"] > 0  # yellow: neither colour
    lesion, n = colour_label(_box((8, 6), 255))  # a gray mask: a lesion, no colour
    assert lesion.sum() > 0 and n == {"red": 0, "green": 0, "other": 0}
    dim = _box((8, 6), (90, 0, 0))  # below half in every channel: background
    assert colour_label(dim)[0].sum() == 0
    assert [patient_from_name(s) for s in ("ALWI_000", "COPE001", "123_4", "x")] == ["ALWI", "COPE", "123", "x"]


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


def test_cli_data_external_busuclm_json_and_errors(tmp_path, capsys):
    src = make_busuclm(tmp_path / "mendeley")
    assert main(["data", "external", "busuclm", str(src.parent), "--out", str(tmp_path / "u"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["per_class"] == {"benign": 2, "malignant": 2, "normal": 2} and s["patients"] == 3
    assert s["resized_masks"] == 1 and s["dataset"] == "busuclm"
    mask = np.asarray(Image.open(src / "masks" / "FLKA_000.png")).copy()
    mask[:2, :2] = GREEN
    Image.fromarray(mask).save(src / "masks" / "FLKA_000.png")
    assert main(["data", "external", "busuclm", str(src), "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert "FLKA_000.png" in err and "both red" in err and err.count("\n") == 1
    assert main(["data", "external", "busuclm", str(src), "--out", str(tmp_path / "v"), "--skip-bad"]) == 0
    assert "skipped: 1" in capsys.readouterr().out


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


def test_busuclm_has_no_stable_address_and_says_where_to_get_it(tmp_path):
    assert SETS["busbra"].archive.url.startswith("https://zenodo.org/records/8231412/")
    assert SETS["busuclm"].archive is None
    with pytest.raises(BusiDataError, match=r"data.mendeley.com/datasets/7fvgj4jsp7.*busi data external busuclm"):
        download_public_set("busuclm", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_cli_data_download_dataset(tmp_path, server, capsys, monkeypatch):
    www, base = server
    _, digest = _zip_tree(make_busbra(tmp_path / "zenodo"), www / "BUSBRA.zip")
    local = dataclasses.replace(SETS["busbra"].archive, url=f"{base}/BUSBRA.zip", sha256=digest,
                                size=(www / "BUSBRA.zip").stat().st_size)
    monkeypatch.setitem(SETS, "busbra", dataclasses.replace(SETS["busbra"], archive=local))
    assert main(["data", "download", "--dataset", "busbra", "--to", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert f"busi data external busbra {tmp_path / 'data' / 'BUSBRA'}" in out
    assert main(["data", "download", "--dataset", "busuclm", "--to", str(tmp_path / "u")]) == 2
    assert "mendeley" in capsys.readouterr().err
