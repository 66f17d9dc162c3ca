"""A saved model is a folder anyone can inspect and load safely (``model.safetensors``, ``config.json``,
``metrics.json``); problems raise :class:`~busi_lib.errors.BusiDataError` naming the folder. Format: docs/library.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from busi_lib import __version__
from busi_lib.data.transforms import IMAGENET, Normalization
from busi_lib.errors import BusiDataError
from busi_lib.files import sha256_of, temp_path_for, write_json
from busi_lib.models.networks import build_model

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"


def save_model(model: torch.nn.Module, config: dict, folder: str | Path, metrics: dict | None = None) -> Path:
    """Write ``model``'s weights, its ``config`` and optional ``metrics`` into ``folder``; ``config`` needs ``arch``
    (and ``encoder``, ``image_size`` where they matter): :func:`build_model` gets them on load."""
    if "arch" not in config:
        raise ValueError("config needs an 'arch' entry to rebuild the model")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    tmp = temp_path_for(folder / WEIGHTS)
    save_file(state, str(tmp))
    tmp.replace(folder / WEIGHTS)
    full = dict(config)
    full.update(
        format_version=FORMAT_VERSION,
        busi_lib_version=__version__,
        weights_sha256=sha256_of(folder / WEIGHTS),
        tensors={k: list(v.shape) for k, v in state.items()},
    )
    write_json(folder / CONFIG, full)
    if metrics is not None:
        write_json(folder / METRICS, metrics)
    return folder


def config_normalization(config: dict) -> Normalization:
    """(mean, std) of a saved model's inputs. Folders saved before they were stored say ``"imagenet"``."""
    norm = config.get("normalization", "imagenet")
    if norm == "imagenet":
        return IMAGENET
    return tuple(float(v) for v in norm["mean"]), tuple(float(v) for v in norm["std"])


def read_config(folder: str | Path) -> dict:
    """The checked ``config.json`` of a model folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BusiDataError(folder, "model folder not found")
    cfg_path = folder / CONFIG
    if not cfg_path.is_file():
        raise BusiDataError(folder, f"incomplete model folder: {CONFIG} is missing")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BusiDataError(cfg_path, f"not valid JSON ({e})") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise BusiDataError(
            cfg_path,
            f"model format version {config.get('format_version')!r}, this busi_lib reads version {FORMAT_VERSION}",
        )
    for key in ("arch", "weights_sha256", "tensors"):
        if key not in config:
            raise BusiDataError(cfg_path, f"config lacks '{key}'")
    return config


#: Fields that describe the weights themselves: :func:`update_config` never changes them.
PROTECTED_FIELDS = (
    "arch", "encoder", "decoder_norm", "image_size", "task", "format_version", "weights_sha256", "tensors",
)


def _check_weights_hash(folder: Path, config: dict) -> Path:
    wpath = folder / WEIGHTS
    if not wpath.is_file():
        raise BusiDataError(folder, f"incomplete model folder: {WEIGHTS} is missing")
    if sha256_of(wpath) != config["weights_sha256"]:
        raise BusiDataError(wpath, "weights do not match config.json (sha256 differs): the file was changed or swapped")
    return wpath


def update_config(folder: str | Path, **changes: object) -> dict:
    """Set fields of a saved model's ``config.json`` (e.g. ``temperature=1.7``) and return the new config. The weights
    are checked first; changing :data:`PROTECTED_FIELDS` or a non-JSON value raises ``ValueError``; atomic."""
    folder = Path(folder)
    config = read_config(folder)
    _check_weights_hash(folder, config)
    bad = sorted(set(changes) & set(PROTECTED_FIELDS))
    if bad:
        raise ValueError(f"cannot change {bad} of a saved model: they describe its weights")
    try:
        json.dumps(changes, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"config values must be finite JSON values ({e})") from None
    config.update(changes)
    write_json(folder / CONFIG, config)
    return config


def use_operating_point(config: dict, name: str | None) -> dict:
    """``config`` deciding at its saved operating point ``name`` (e.g. ``"youden"``); ``None``: unchanged."""
    if name is None:
        return config
    points = config.get("operating_points") or {}
    if name not in points:
        raise BusiDataError(config.get("members", [None])[0], f"no operating point '{name}' saved with this model "
                            f"(it has: {', '.join(points) or 'only its threshold'})")
    return dict(config, threshold=float(points[name]), operating_point=name)


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild and load a saved model: ``(model in eval mode, config)``; ``config["temperature"]`` defaults to 1.0."""
    folder = Path(folder)
    config = read_config(folder)
    wpath = _check_weights_hash(folder, config)
    config.setdefault("temperature", 1.0)
    try:
        state = load_file(str(wpath), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise BusiDataError(wpath, f"corrupted weights file ({e})") from None
    shapes = {k: list(v.shape) for k, v in state.items()}
    if shapes != config["tensors"]:
        raise BusiDataError(wpath, "tensor names or shapes differ from config.json")
    model = build_model(
        config["arch"],
        encoder=config.get("encoder", "resnet50"),
        pretrained=False,
        image_size=config.get("image_size", 224),
        decoder_norm=config.get("decoder_norm", "batch"),  # folders saved before the option: batch norm
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise BusiDataError(folder, f"config and weights disagree: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), config
