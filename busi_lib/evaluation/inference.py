"""The one prediction path: scans in, probabilities out, for every kind of model. Training's evaluation, the bench,
``busi evaluate``, ``busi predict`` and the notebooks all go through :func:`predict_batch`, so they cannot disagree."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np
import torch

from busi_lib.data.images import image_to_gray
from busi_lib.data.transforms import IMAGENET, Normalization, build_transforms
from busi_lib.names import task_of


def task_of_config(config: dict) -> str:
    """``classify``, ``segment`` or ``multitask`` of a saved model's config."""
    return config.get("task") or task_of(config["arch"])


def preprocess(images: Sequence[np.ndarray], image_size: int, norm: Normalization = IMAGENET) -> torch.Tensor:
    """Scans of any size and type → the model's input batch (N, 3, S, S), normalised with ``norm``, as in training."""
    tfm = build_transforms("none", norm=norm)
    xs = []
    for i, im in enumerate(images):
        im = np.asarray(im)
        if im.size == 0:
            raise ValueError(f"image {i} is empty (shape {im.shape})")
        try:
            gray = image_to_gray(im)
        except ValueError as e:
            raise ValueError(f"image {i}: {e}") from None
        # area interpolation, as busi_lib.data.cache resizes the training scans
        gray = cv2.resize(gray, (image_size, image_size), interpolation=cv2.INTER_AREA)
        xs.append(tfm(image=gray)["image"])
    return torch.stack(xs)


def split_output(
    out: torch.Tensor | tuple[torch.Tensor, torch.Tensor], task: str
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(class logits (B,) or None, mask logits (B, S, S) or None) of any of the three model kinds."""
    if task == "multitask":
        return out[0].reshape(-1), out[1][:, 0]
    if task == "segment":
        return None, out[:, 0]
    return out.reshape(-1), None


@torch.no_grad()
def predict_batch(
    model: torch.nn.Module, x: torch.Tensor, task: str, tta: bool = False
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(prob (B,) or None, mask_prob (B, S, S) or None)``: the sigmoid of a model's outputs on one batch; ``tta``
    averages with the horizontal mirror's (its mask flipped back first)."""
    logits, mask_logits = split_output(model(x), task)
    prob = None if logits is None else torch.sigmoid(logits)
    mask_prob = None if mask_logits is None else torch.sigmoid(mask_logits)
    if tta:
        logits, mask_logits = split_output(model(x.flip(-1)), task)
        prob = None if prob is None else (prob + torch.sigmoid(logits)) / 2
        mask_prob = None if mask_prob is None else (mask_prob + torch.sigmoid(mask_logits).flip(-1)) / 2
    return prob, mask_prob


@torch.no_grad()
def predict_loader(model: torch.nn.Module, dl: Iterable, task: str, tta: bool = False) -> dict:
    """Run a model over a (non-shuffled) loader, as numpy arrays: ``y`` and ``prob`` (N,) for classification,
    ``mask`` and ``mask_prob`` (N, H, W) for segmentation, all four for multitask."""
    model.eval()
    out = {"y": [], "prob": [], "mask": [], "mask_prob": []}
    for b in dl:
        prob, mask_prob = predict_batch(model, b[0], task, tta)
        if prob is not None:
            out["prob"].append(prob.reshape(-1).float().cpu())
            out["y"].append(b[1].reshape(-1).float().cpu())
        if mask_prob is not None:
            out["mask_prob"].append(mask_prob.half().cpu())
            out["mask"].append(b[-1][:, 0].to(torch.uint8).cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items() if v}
