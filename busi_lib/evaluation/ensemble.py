"""Models that travel: fold ensembles and test-time BatchNorm adaptation (AdaBN, in memory only).
An ensemble averages its members' *probabilities* (never logits); its threshold is the mean of theirs.
How members must agree, thresholds and temperatures: docs/library.md."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from busi_lib.errors import BusiDataError
from busi_lib.evaluation.inference import preprocess, task_of_config
from busi_lib.models.saving import config_normalization, load_model, read_config

__all__ = ["Ensemble", "adapt_batchnorm", "batchnorm_layers", "load_models", "resolve_model_folders"]

#: Config entries every member of an ensemble must share.
MUST_AGREE = ("task", "classes", "image_size", "normalization")


def _is_model_folder(p: Path) -> bool:
    return (p / "config.json").is_file()


def resolve_model_folders(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """The model folders named by ``paths``: each a model folder (``config.json``), a run folder holding ``model/``,
    or a folder of such runs (all its folds)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: list[Path] = []
    for p in map(Path, paths):
        if _is_model_folder(p):
            found.append(p)
        elif _is_model_folder(p / "model"):
            found.append(p / "model")
        elif p.is_dir() and (runs := sorted(q / "model" for q in p.iterdir() if _is_model_folder(q / "model"))):
            found.extend(runs)
        else:
            read_config(p)  # raises the usual "model folder not found" / "incomplete model folder" error
    if not found:
        raise BusiDataError(None, "no model folder given")
    out = list(dict.fromkeys(f.resolve() for f in found))
    return out


class Ensemble(torch.nn.Module):
    """Several models of one task: the mean of their probabilities, returned as logits (float64), shaped as a single
    member's output (a tensor, or the multitask tuple)."""

    def __init__(self, members: Sequence[torch.nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = torch.nn.ModuleList(members)

    @staticmethod
    def _mean_logit(outs: list[torch.Tensor]) -> torch.Tensor:
        p = sum(torch.sigmoid(o.double()) for o in outs) / len(outs)
        return torch.logit(p.clamp(1e-15, 1 - 1e-15))

    def forward(self, x):
        outs = [m(x) for m in self.members]
        if isinstance(outs[0], tuple):
            return tuple(self._mean_logit([o[i] for o in outs]) for i in range(len(outs[0])))
        return self._mean_logit(outs)


def _ensemble_config(configs: list[dict], folders: list[Path]) -> dict:
    first = configs[0]
    for cfg, folder in zip(configs[1:], folders[1:]):
        for key in MUST_AGREE:
            a, b = first.get(key), cfg.get(key)
            if key == "task":
                a, b = task_of_config(first), task_of_config(cfg)
            if key == "normalization":  # the statistics each model's inputs get, old "imagenet" configs included
                a, b = config_normalization(first), config_normalization(cfg)
            if a != b:
                raise BusiDataError(folder, f"cannot join this model to the ensemble: its {key} is {b!r}, "
                                            f"the first member's ({folders[0]}) is {a!r}")
    config = dict(first)
    thresholds = [float(c.get("threshold", 0.5)) for c in configs]
    temperatures = sorted({float(c.get("temperature", 1.0)) for c in configs})
    points = [c.get("operating_points") or {} for c in configs]
    config["operating_points"] = {k: float(np.mean([p[k] for p in points])) for k in points[0]
                                  if all(k in p for p in points)} or None
    config.update(
        members=[str(f) for f in folders], member_thresholds=thresholds,
        threshold=float(np.mean(thresholds)),
        threshold_rule="the mean of the members' saved thresholds (each chosen on its own validation part)",
        arch=first["arch"] if len({c["arch"] for c in configs}) == 1 else "+".join(c["arch"] for c in configs),
        temperature=temperatures[0] if len(temperatures) == 1 else 1.0,
    )
    if len(temperatures) > 1:
        config["ensemble_note"] = "the members have different temperatures: none is applied to the ensemble"
    return config


def load_models(
    paths: str | Path | Sequence[str | Path], device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict]:
    """Load one model folder, or several as an :class:`Ensemble`: ``(model in eval mode, config)``; the config is
    :func:`~busi_lib.models.saving.load_model`'s plus ``members`` (of several: the first member's, mean threshold)."""
    folders = resolve_model_folders(paths)
    loaded = [load_model(f, device=device) for f in folders]
    if len(loaded) == 1:
        model, config = loaded[0]
        config = dict(config, members=[str(folders[0])])
        return model, config
    config = _ensemble_config([c for _, c in loaded], folders)
    return Ensemble([m for m, _ in loaded]).to(device).eval(), config


# ----------------------------------------------------------------------------- AdaBN
def batchnorm_layers(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` (timm's BatchNormAct2d included: it is a BatchNorm2d)."""
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def adapt_batchnorm(model: torch.nn.Module, config: dict, images: Iterable[np.ndarray], *,
                    batch_size: int = 32) -> dict:
    """Re-estimate every BatchNorm layer's running statistics on unlabelled ``images`` (AdaBN), in place.

    A cumulative average over no-gradient forward passes with only the BatchNorm layers in training mode; images are
    preprocessed as for prediction. Returns a summary; the model is left in eval mode.
    """
    images = list(images)
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(f"the {config.get('arch')} model has no BatchNorm layer: nothing to adapt")
    if len(images) < 2:
        raise ValueError(f"BatchNorm adaptation needs at least 2 scans of the new site, got {len(images)}")
    device = next(model.parameters()).device
    size, norm = int(config["image_size"]), config_normalization(config)
    saved = [(m, m.momentum) for m in layers]
    model.eval()
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches, not an exponential one
            m.train()
        step = max(2, int(batch_size))
        with torch.no_grad():
            for start in range(0, len(images), step):
                chunk = images[start:start + step]
                if len(chunk) < 2 and start:  # a batch of 1 has no variance: fold it into the previous one
                    chunk = images[start - 1:start + 1]
                model(preprocess(chunk, size, norm).to(device))
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()
    return dict(n_images=len(images), n_layers=len(layers), batch_size=step,
                method="AdaBN: running statistics reset and re-estimated (cumulative average, no gradient, "
                       "no labels) on the scored scans")
