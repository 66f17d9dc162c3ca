"""Google Colab in one call, from every notebook's setup cell: ``busi_lib.colab.setup(drive=True)``.

Outside Colab it does nothing; what it does in Colab (Drive, BUSI, the gpu profile) and the setup cell: docs/library.md.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from busi_lib.data.download import DEFAULT_URL, FOLDER_NAME, download_busi, kaggle_configured

DRIVE_ROOT = "/content/drive"
DRIVE_RUNS = "MyDrive/busi/runs"  # under the mounted Drive
DATA_ROOT = "/content/data"
KAGGLE_SECRETS = ("KAGGLE_USERNAME", "KAGGLE_KEY")


@dataclass
class ColabSetup:
    """What :func:`setup` did; ``in_colab=False`` and nothing else outside Colab."""

    in_colab: bool
    drive: Path | None = None  # where Drive is mounted; None: not mounted
    runs_dir: Path | None = None  # the output folder set here ($BUSI_RUNS_DIR); None: left as it was
    kaggle: bool = False  # the Kaggle key was read from the Colab secrets
    data_dir: Path | None = None  # $BUSI_DATA_DIR after the setup; None: the synthetic set
    downloaded: bool = False  # BUSI was downloaded (and verified) by this call
    profile: str | None = None  # $BUSI_PROFILE after the setup; None: the parameters cell's default
    lines: list[str] = field(default_factory=list)  # what was printed


def in_colab() -> bool:
    """True inside a Google Colab kernel, which imports ``google.colab`` when it starts."""
    return "google.colab" in sys.modules


def setup(
    drive: bool = True,
    *,
    data: bool = True,
    data_root: str | Path = DATA_ROOT,
    drive_root: str | Path = DRIVE_ROOT,
    data_url: str | None = None,
    reference: str | Path | dict | None = None,
    verbose: bool = True,
) -> ColabSetup:
    """Set up a Colab session for the notebooks (docs/library.md); outside Colab, do nothing. ``data=False``: no
    download (the synthetic set); ``data_url`` (a mirror), ``reference``: passed to ``download_busi``."""
    result = ColabSetup(in_colab=in_colab())
    if not result.in_colab:
        return result

    def say(line: str) -> None:
        result.lines.append(line)
        if verbose:
            print(f"Colab: {line}", flush=True)

    if drive:
        _mount_drive(Path(drive_root), result, say)
    if data:
        _get_data(Path(data_root), data_url, reference, verbose, result, say)
    elif os.environ.get("BUSI_DATA_DIR"):
        result.data_dir = Path(os.environ["BUSI_DATA_DIR"])
    _choose_profile(result, say)
    return result


def _mount_drive(root: Path, result: ColabSetup, say) -> None:
    from google.colab import drive as gdrive  # optional: exists only in Colab

    try:
        gdrive.mount(str(root))
    except Exception as e:  # declined in the dialog, or timed out: the session goes on without Drive
        say(f"Drive not mounted ({e}); outputs stay on this session's disk and are lost when it ends")
        return
    result.drive = root
    if os.environ.get("BUSI_RUNS_DIR"):
        say(f"Drive mounted at {root}; outputs go to BUSI_RUNS_DIR={os.environ['BUSI_RUNS_DIR']} (yours, kept)")
        return
    runs = root / DRIVE_RUNS
    runs.mkdir(parents=True, exist_ok=True)
    os.environ["BUSI_RUNS_DIR"] = str(runs)
    result.runs_dir = runs
    say(f"Drive mounted; outputs go to {runs} (BUSI_RUNS_DIR), kept across sessions")


def _kaggle_from_secrets(result: ColabSetup, say) -> None:
    if all(os.environ.get(k) for k in KAGGLE_SECRETS):
        say("Kaggle: KAGGLE_USERNAME and KAGGLE_KEY already set")
        return
    from google.colab import userdata  # optional: exists only in Colab

    values = {}
    for key in KAGGLE_SECRETS:
        try:
            values[key] = userdata.get(key)
        except Exception:  # no such secret, or the notebook was not given access to it
            return
    if all(values.values()):
        os.environ.update(values)
        result.kaggle = True
        say("Kaggle: key read from the Colab secrets KAGGLE_USERNAME and KAGGLE_KEY")


def _get_data(root: Path, url: str | None, reference, verbose: bool, result: ColabSetup, say) -> None:
    env = os.environ.get("BUSI_DATA_DIR")
    if env and Path(env).expanduser().is_dir():
        result.data_dir = Path(env).expanduser()
        say(f"Data: BUSI_DATA_DIR={env} (yours, kept)")
        return
    target = root / FOLDER_NAME
    if target.is_dir() and any(target.iterdir()):
        say(f"Data: BUSI already at {target} (downloaded earlier in this session)")
    else:
        _kaggle_from_secrets(result, say)
        source = "Kaggle" if kaggle_configured() else (url or DEFAULT_URL)
        target = download_busi(root, url=url or DEFAULT_URL, reference=reference, progress=verbose)
        result.downloaded = True
        say(f"Data: BUSI downloaded from {source} and verified, in {target}")
    os.environ["BUSI_DATA_DIR"] = str(target)
    result.data_dir = target


def _choose_profile(result: ColabSetup, say) -> None:
    if os.environ.get("BUSI_PROFILE"):
        result.profile = os.environ["BUSI_PROFILE"]
        say(f"Profile: BUSI_PROFILE={result.profile} (yours, kept)")
        return

    if torch.cuda.is_available():
        os.environ["BUSI_PROFILE"] = result.profile = "gpu"
        say(f"Profile: gpu (a GPU is visible; torch {torch.__version__})")
    else:
        say(f"Profile: the parameters cell's default (no GPU; torch {torch.__version__}): "
            "Runtime > Change runtime type for one")
