"""busi_lib.colab: the notebooks' Colab setup.

The fast tests run :func:`busi_lib.colab.setup` in this process with a stand-in
``google.colab`` in ``sys.modules``. The slow one (marker ``colab``, deselected by
default; run it with ``pytest -m colab tests/test_colab.py``) simulates a Colab
machine: a fresh venv that already holds torch, a stand-in ``google.colab``
package, busi_lib installed from a ``git+file://`` URL of a commit of the current
tree, then the notebook's two setup lines.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib
sys.path.insert(0, str(Path(__file__).parent / "data"))  # the fake BUSI archive of the download tests
from test_download import _make_busi, _zip_folder  # noqa: E402  (the local HTTP fixture `server`: tests/conftest.py)

from busi_lib import colab
from busi_lib.data.download import FOLDER_NAME, pixel_fingerprint

ROOT = Path(__file__).resolve().parents[1]
ENV_KEYS = ("BUSI_RUNS_DIR", "BUSI_DATA_DIR", "BUSI_PROFILE", "KAGGLE_USERNAME", "KAGGLE_KEY")


class SecretNotFoundError(Exception):
    pass


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    """A stand-in ``google.colab`` (drive.mount, userdata.get) in sys.modules; yields its call log and secrets."""
    calls: list[tuple] = []
    secrets: dict[str, str] = {}
    state = {"decline": False}

    def mount(mountpoint, force_remount=False):
        calls.append(("mount", mountpoint))
        if state["decline"]:
            raise ValueError("mount failed: credential propagation was unsuccessful")
        (Path(mountpoint) / "MyDrive").mkdir(parents=True, exist_ok=True)

    def get(key):
        calls.append(("secret", key))
        if key not in secrets:
            raise SecretNotFoundError(key)
        return secrets[key]

    pkg = types.ModuleType("google.colab")
    pkg.drive = types.SimpleNamespace(mount=mount)
    pkg.userdata = types.SimpleNamespace(get=get)
    monkeypatch.setitem(sys.modules, "google.colab", pkg)
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    return types.SimpleNamespace(calls=calls, secrets=secrets, state=state)


@pytest.fixture
def no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_outside_colab_it_does_nothing(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    before = {k: os.environ.get(k) for k in ENV_KEYS}
    result = colab.setup()
    assert result == colab.ColabSetup(in_colab=False)
    assert capsys.readouterr().out == ""
    assert {k: os.environ.get(k) for k in ENV_KEYS} == before


def test_in_colab_drive_kaggle_data_and_gpu(fake_colab, server, tmp_path, monkeypatch, capsys):  # noqa: F811
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    www, base = server
    busi = _make_busi(tmp_path / "src" / FOLDER_NAME)
    _zip_folder(busi, www / "Dataset_BUSI.zip")
    fake_colab.secrets.update(KAGGLE_USERNAME="me", KAGGLE_KEY="k3y-v4lue")
    monkeypatch.setattr("busi_lib.data.download.find_spec", lambda name: None)  # no kaggle client: the URL is used

    result = colab.setup(drive_root=tmp_path / "drive", data_root=tmp_path / "data",
                         data_url=f"{base}/Dataset_BUSI.zip", reference=pixel_fingerprint(busi), verbose=True)
    out = capsys.readouterr().out
    assert result.in_colab and result.drive == tmp_path / "drive"
    assert result.runs_dir == tmp_path / "drive" / "MyDrive" / "busi" / "runs" and result.runs_dir.is_dir()
    assert os.environ["BUSI_RUNS_DIR"] == str(result.runs_dir)
    assert result.kaggle and (os.environ["KAGGLE_USERNAME"], os.environ["KAGGLE_KEY"]) == ("me", "k3y-v4lue")
    assert result.downloaded and result.data_dir == tmp_path / "data" / FOLDER_NAME
    assert os.environ["BUSI_DATA_DIR"] == str(result.data_dir) and (result.data_dir / "benign").is_dir()
    assert result.profile == "gpu" and os.environ["BUSI_PROFILE"] == "gpu"
    assert ("mount", str(tmp_path / "drive")) in fake_colab.calls
    assert out.count("Colab: ") == len(result.lines) == 4, out  # one line per thing done
    assert "k3y-v4lue" not in out  # the key is never printed

    # A second run in the same session downloads nothing and keeps what the first one set.
    again = colab.setup(drive_root=tmp_path / "drive", data_root=tmp_path / "data", verbose=False)
    assert not again.downloaded and again.data_dir == result.data_dir and again.profile == "gpu"


def test_declined_drive_no_secrets_no_gpu(fake_colab, no_gpu, server, tmp_path, monkeypatch):  # noqa: F811
    www, base = server
    busi = _make_busi(tmp_path / "src" / FOLDER_NAME)
    _zip_folder(busi, www / "Dataset_BUSI.zip")
    fake_colab.state["decline"] = True
    result = colab.setup(drive_root=tmp_path / "drive", data_root=tmp_path / "data",
                         data_url=f"{base}/Dataset_BUSI.zip", reference=pixel_fingerprint(busi), verbose=False)
    assert result.drive is None and result.runs_dir is None and "BUSI_RUNS_DIR" not in os.environ
    assert "Drive not mounted" in result.lines[0]
    assert not result.kaggle and "KAGGLE_KEY" not in os.environ
    assert result.downloaded and "BUSI_PROFILE" not in os.environ and result.profile is None


def test_what_the_user_set_is_kept_and_drive_false_asks_nothing(fake_colab, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    mine = _make_busi(tmp_path / "mine" / FOLDER_NAME)
    monkeypatch.setenv("BUSI_DATA_DIR", str(mine))
    monkeypatch.setenv("BUSI_PROFILE", "smoke")
    result = colab.setup(drive=False, data_root=tmp_path / "data", verbose=False)
    assert fake_colab.calls == []  # neither Drive nor the secrets were asked for
    assert result.data_dir == mine and not result.downloaded and not (tmp_path / "data").exists()
    assert result.profile == "smoke" and os.environ["BUSI_PROFILE"] == "smoke"
    assert result.drive is None and "BUSI_RUNS_DIR" not in os.environ


def test_a_failed_download_stops_with_the_manual_steps(fake_colab, no_gpu, server, tmp_path):  # noqa: F811
    from busi_lib.errors import BusiDataError

    _, base = server
    with pytest.raises(BusiDataError, match="(?s)HTTP 404.*BUSI_DATA_DIR"):
        colab.setup(drive=False, data_root=tmp_path / "data", data_url=f"{base}/missing.zip", verbose=False)
    assert "BUSI_DATA_DIR" not in os.environ


# --------------------------------------------------------------------------- a simulated Colab machine

FAKE_COLAB = {
    "google/colab/__init__.py": "from . import drive, userdata  # noqa: F401\n",
    "google/colab/drive.py": textwrap.dedent('''
        import json, os, pathlib

        def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
            with open(os.environ["FAKE_COLAB_LOG"], "a") as f:
                f.write(json.dumps(["mount", mountpoint]) + "\\n")
            (pathlib.Path(mountpoint) / "MyDrive").mkdir(parents=True, exist_ok=True)
        '''),
    "google/colab/userdata.py": textwrap.dedent('''
        import json, os

        class SecretNotFoundError(Exception):
            pass

        def get(key):
            secrets = json.loads(os.environ.get("FAKE_COLAB_SECRETS", "{}"))
            if key not in secrets:
                raise SecretNotFoundError(key)
            return secrets[key]
        '''),
}

# The notebook cell's second line, in a Colab kernel (which has imported google.colab when it starts); CUDA is
# switched on or off by patching torch.cuda.is_available. Prints what setup() did as JSON on its last line.
CELL = textwrap.dedent('''
    import json, os, sys
    import google.colab  # noqa: F401  (a Colab kernel imports it at start)
    import torch
    torch.cuda.is_available = lambda: {cuda}
    import busi_lib.colab
    colab = busi_lib.colab.setup(drive=True, drive_root={drive!r}, data_root={data!r}, data_url={url!r},
                                 reference={reference!r})
    print(json.dumps({{"busi_lib": busi_lib.__file__, "torch": torch.__version__, "profile": colab.profile,
                      "downloaded": colab.downloaded, "kaggle": colab.kaggle,
                      "env": {{k: os.environ.get(k) for k in ("BUSI_DATA_DIR", "BUSI_RUNS_DIR", "BUSI_PROFILE",
                                                              "KAGGLE_USERNAME")}}}}))
    ''')


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def _commit_of_the_current_tree(dest: Path) -> Path:
    """The working tree as it is (tracked and untracked, not ignored files) in a fresh one-commit repository."""
    listed = _run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT).stdout.split("\0")
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes((ROOT / rel).read_bytes())
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false"]
    _run(["git", "init", "-q"], cwd=dest)
    _run(["git", "add", "-A"], cwd=dest)
    _run([*git, "commit", "-q", "-m", "the tree under test"], cwd=dest)
    return dest


def _du(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.colab
@pytest.mark.slow
def test_a_simulated_colab_machine(tmp_path, server):  # noqa: F811
    t0 = time.monotonic()
    times: dict[str, float] = {}
    repo = _commit_of_the_current_tree(tmp_path / "repo")

    # A fresh venv that already holds torch and torchvision, as Colab does.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BUSI_", "KAGGLE_", "PYTHON", "VIRTUAL_ENV", "CUDA_VISIBLE"))}
    _run([python, "-m", "pip", "install", "-q", "torch==2.14.1", "torchvision==0.29.1"], env=env)
    times["venv with torch"] = time.monotonic() - t0
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    torch_files = {p: p.stat().st_mtime_ns for p in (site / "torch/__init__.py", site / "torchvision/__init__.py")}
    torch_dist = sorted(p.name for p in site.glob("torch*.dist-info"))

    # The cell's first line: %pip install "busi-lib @ git+<URL>" (here without -q, to read pip's report). The host
    # "localhost" is there for older pip, whose URL parser refuses git+file:/// (no host) in a "name @ URL".
    t = time.monotonic()
    r = _run([python, "-m", "pip", "install", f"busi-lib @ git+file://localhost{repo}"], env=env, cwd=tmp_path)
    times["pip install busi-lib"] = time.monotonic() - t
    installed = next((line for line in r.stdout.splitlines() if line.startswith("Successfully installed")), "")
    assert "busi-lib-" in installed, r.stdout[-3000:]
    reinstalled = [w for w in installed.split()[2:] if w.startswith(("torch-", "torchvision-", "nvidia-", "triton-"))]
    assert not reinstalled, f"pip replaced Colab's torch: {reinstalled}"
    assert "Requirement already satisfied: torch" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in torch_files} == torch_files
    assert sorted(p.name for p in site.glob("torch*.dist-info")) == torch_dist

    # BUSI on a local server; the Colab stand-ins on the path; the second line, with and without a GPU.
    www, base = server
    busi = _make_busi(tmp_path / "src" / FOLDER_NAME)
    _zip_folder(busi, www / "Dataset_BUSI.zip")
    (tmp_path / "reference.json").write_text(json.dumps(pixel_fingerprint(busi)))
    fake = tmp_path / "fake_colab"
    for rel, text in FAKE_COLAB.items():
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(text)
    content = tmp_path / "content"
    content.mkdir()
    results = {}
    for cuda, secrets in ((True, {"KAGGLE_USERNAME": "me", "KAGGLE_KEY": "k3y-v4lue"}), (False, {})):
        t = time.monotonic()
        log = tmp_path / f"colab-{cuda}.log"
        log.touch()
        child_env = {**env, "PYTHONPATH": str(fake), "FAKE_COLAB_LOG": str(log),
                     "FAKE_COLAB_SECRETS": json.dumps(secrets), "BUSI_CACHE_DIR": str(tmp_path / "cache")}
        cell = CELL.format(cuda=cuda, drive=str(content / "drive"), data=str(content / f"data-{cuda}"),
                           url=f"{base}/Dataset_BUSI.zip", reference=str(tmp_path / "reference.json"))
        r = _run([python, "-c", cell], env=child_env, cwd=content)
        times[f"setup() cuda={cuda}"] = time.monotonic() - t
        results[cuda] = json.loads(r.stdout.strip().splitlines()[-1]) | {"out": r.stdout, "log": log.read_text()}

    for cuda, res in results.items():
        assert res["busi_lib"].startswith(str(site)), res  # the installed package, not this checkout
        assert res["torch"].startswith("2.14.1")
        assert res["downloaded"] and res["env"]["BUSI_DATA_DIR"] == str(content / f"data-{cuda}" / FOLDER_NAME)
        assert (Path(res["env"]["BUSI_DATA_DIR"]) / "benign" / "benign (1).png").is_file()
        assert res["env"]["BUSI_RUNS_DIR"] == str(content / "drive" / "MyDrive" / "busi" / "runs")
        assert json.loads(res["log"]) == ["mount", str(content / "drive")]
        assert res["out"].count("Colab: ") == (4 if cuda else 3), res["out"]
    assert results[True]["profile"] == "gpu" and results[True]["env"]["BUSI_PROFILE"] == "gpu"
    assert results[False]["profile"] is None and results[False]["env"]["BUSI_PROFILE"] is None
    assert results[True]["kaggle"] and results[True]["env"]["KAGGLE_USERNAME"] == "me"
    assert not results[False]["kaggle"] and results[False]["env"]["KAGGLE_USERNAME"] is None
    assert "k3y-v4lue" not in results[True]["out"]

    times["total"] = time.monotonic() - t0
    print("\nColab simulation:", ", ".join(f"{k} {v:.0f} s" for k, v in times.items()),
          f"; disk {_du(tmp_path) / 1e9:.2f} GB (venv {_du(venv) / 1e9:.2f} GB)")


# --------------------------------------------------------------------------- what a Colab install brings


def test_the_runtime_package_imports_only_runtime_dependencies():
    """Every module busi_lib imports is the standard library's or comes with a runtime dependency of
    pyproject.toml (not with the [dev] or [lab] extras, which a Colab or `pip install -e .` install lacks)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def name(req: str) -> str:
        return re.split(r"[ <>=!~;\[@]", req, maxsplit=1)[0].lower().replace("_", "-")

    runtime = {name(r) for r in project["dependencies"]}
    extras = {name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    # Modules of packages that a runtime dependency brings (its own requirement); kaggle, which busi_lib.data.download
    # imports only when it is installed; google.colab, which only Colab has (busi_lib.colab, in Colab only).
    indirect = {"cv2": "albumentations", "fastcore": "fastai", "fastprogress": "fastai", "huggingface_hub": "timm",
                "IPython": "ipykernel", "kaggle": None, "google": None}
    dists = md.packages_distributions()
    imported = set()
    for path in (ROOT / "busi_lib").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    for module in sorted(imported - set(sys.stdlib_module_names) - {"busi_lib", "__future__"}):
        if module in indirect:
            assert indirect[module] is None or indirect[module] in runtime, module
            continue
        owners = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        assert owners & runtime, f"busi_lib imports {module} ({owners or 'unknown'}), not a runtime dependency"
        assert not owners & (extras - runtime), f"busi_lib imports {module}, which only an extra installs"
