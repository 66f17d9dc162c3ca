"""The first line of every lesson notebook: ``run = start("02_custom_cnn", profile=..., ...)``.

:func:`start` picks the data and output folders and returns a :class:`Run` (docs/library.md).
"""

from __future__ import annotations

import io
import json
import os
import random
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from busi_lib.ui.quiet import quiet_known_warnings

# The filters go on before the imports below, which import torch and fastai: a lesson's first cell shows
# no library warning a student cannot act on (the browser test fails on any red output box).
quiet_known_warnings()

from busi_lib.config import TrainConfig  # noqa: E402
from busi_lib.data.dataset import resolve_data_dir  # noqa: E402
from busi_lib.files import atomic_write_bytes, write_json  # noqa: E402
from busi_lib.profiles import PROFILES, WEIGHTS_LINE, check_profile, settings_for  # noqa: E402
from busi_lib.training.learners import train  # noqa: E402

# Whole-notebook run times on the development machine (2-core CPU, no GPU), shown when a notebook starts: smoke on
# the synthetic set, cpu on the real BUSI (07 with half of BUS-BRA) with the machine to itself.
EXPECTED_TIME: dict[str, dict[str, str]] = {
    "01_data_exploration": {"smoke": "~15 s", "cpu": "~15 s", "gpu": "not measured (no GPU here)"},
    "02_custom_cnn": {"smoke": "~10 s", "cpu": "~3 min", "gpu": "not measured (no GPU here)"},
    "03_transfer_learning": {"smoke": "~20 s", "cpu": "~10 min", "gpu": "not measured (no GPU here)"},
    "04_unet_segmentation": {"smoke": "~25 s", "cpu": "~12 min", "gpu": "not measured (no GPU here)"},
    "05_multitask_uresnet": {"smoke": "~15 s", "cpu": "~5 min", "gpu": "not measured (no GPU here)"},
    "06_results": {"smoke": "~15 s", "cpu": "~1 min", "gpu": "not measured (no GPU here)"},
    "07_external_validation": {"smoke": "~2.5 min*", "cpu": "~25 min", "gpu": "not measured (no GPU here)"},
}

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_runs_dir() -> Path:
    """``$BUSI_RUNS_DIR``, else ``runs/notebooks`` in the repository (or the working folder when installed)."""
    env = os.environ.get("BUSI_RUNS_DIR")
    if env:
        return Path(env).expanduser()
    root = REPO_ROOT if (REPO_ROOT / "pyproject.toml").exists() else Path.cwd()
    return root / "runs" / "notebooks"


def profile_line(profile: str) -> str:
    """One sentence saying what a profile trains, e.g. ``32 px, 1 epoch, 48 images, <where the weights come from>``."""
    p = PROFILES[check_profile(profile)]
    parts = [f"{p['image_size']} px", f"{p['epochs']} epoch{'s' if p['epochs'] != 1 else ''}"]
    parts.append(f"{p['max_images']} images" if p["max_images"] else "all images")
    parts.append(WEIGHTS_LINE[profile] if p["pretrained"] else "from scratch")
    return ", ".join(parts)


@dataclass
class Run:
    """Where one notebook run reads and writes; made by :func:`start`."""

    name: str
    profile: str
    data: Path
    is_real: bool
    out: Path
    seed: int = 42

    @property
    def root(self) -> Path:
        """The folder holding every notebook's output folder."""
        return self.out.parent

    def config(self, arch: str, *, folder: str | None = None, **overrides):
        """The ``TrainConfig`` of ``arch`` under this run's profile, writing into ``run.out/<folder or arch>``. ``None``
        overrides keep the profile's value, except ``lr``: ``None`` or 0 asks fastai's ``lr_find`` (the smoke profile
        keeps its fixed rate). Progress bars are off in the smoke profile (tests read the output)."""
        has_lr, lr = "lr" in overrides, overrides.pop("lr", None)
        kw = settings_for(self.profile, arch, **overrides)
        if has_lr and (lr or self.profile != "smoke"):
            kw["lr"] = lr or None  # None: lr_find
        kw.setdefault("progress", self.profile != "smoke")
        kw.update(data=str(self.data), out=str(self.out / (folder or arch)), seed=self.seed)
        return TrainConfig(**kw)

    def lesson_model(self, notebook: str, folder: str, arch: str, **overrides) -> Path:
        """The run folder of the model a lesson saved beside this run (``<root>/<notebook>/<folder>``), or, when
        that lesson has not run, the same model trained here with :meth:`config` (an answer notebook's start)."""
        saved = self.root / notebook / folder
        if (saved / "model").is_dir() and (saved / "metrics.json").is_file():
            return saved
        return train(self.config(arch, folder=folder, progress=False, **overrides)).out

    def save_metrics(self, metrics: dict, name: str = "metrics.json") -> Path:
        """Write ``metrics`` as JSON into ``run.out`` (atomically) and return the path."""
        path = self.out / name
        write_json(path, metrics)
        return path

    def save_figure(self, fig, name: str, dpi: int = 120) -> Path:
        """Save a matplotlib figure as ``run.out/<name>.png`` and return the path."""
        name = name if name.endswith(".png") else name + ".png"
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        path = self.out / name
        atomic_write_bytes(path, buf.getvalue())
        return path

    def read_metrics(self, notebook: str, name: str = "metrics.json") -> dict:
        """The metrics another notebook saved (``<root>/<notebook>/<name>``); a clear error if it has not run."""
        path = self.root / notebook / name
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run notebook {notebook} first (same out_dir and profile)")
        return json.loads(path.read_text())


def versions_line() -> str:
    """``busi_lib 0.1.0 · torch 2.14.1 · fastai 2.8.12 · ... · device cpu``, as MONAI's ``print_config`` does."""
    parts = []
    for name in ("busi-lib", "torch", "fastai", "timm", "segmentation-models-pytorch", "albumentations"):
        try:
            parts.append(f"{name.replace('segmentation-models-pytorch', 'smp')} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} not installed")
    try:
        import torch  # optional: a missing package is reported below

        parts.append(f"device {'cuda (' + torch.cuda.get_device_name(0) + ')' if torch.cuda.is_available() else 'cpu'}")
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return "Versions: " + " · ".join(parts)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch  # optional: a missing package is reported below

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency; kept so 01 could run without it
        pass


def start(name: str, profile: str = "cpu", data_dir: str | Path | None = None,
          out_dir: str | Path | None = None, seed: int = 42, *, verbose: bool = True) -> Run:
    """Set up a notebook run: data folder, output folder, seeds, quiet warnings; print what was chosen."""
    check_profile(profile)
    quiet_known_warnings()  # again: a kernel restarted by hand keeps the module but not the filters
    data, is_real = resolve_data_dir(data_dir or None)
    out = Path(out_dir).expanduser() if out_dir else default_runs_dir()
    run = Run(name=name, profile=profile, data=Path(data), is_real=is_real, out=out / name, seed=int(seed))
    run.out.mkdir(parents=True, exist_ok=True)
    _seed_everything(run.seed)
    if verbose:
        if is_real:
            print(f"Data: the real BUSI at {run.data}")
        else:
            print(
                f"Data: a synthetic BUSI-like set at {run.data} "
                "(set data_dir or BUSI_DATA_DIR for the real one)"
            )
        expected = EXPECTED_TIME.get(name, {}).get(profile, "unknown")
        print(f"Profile: {profile} ({profile_line(profile)}); expected run time {expected}")
        print(f"Outputs: {run.out}")
        print(versions_line())
    write_json(
        run.out / "run.json",
        {"notebook": name, "profile": profile, "data": str(run.data), "is_real": is_real, "seed": run.seed},
    )
    return run
