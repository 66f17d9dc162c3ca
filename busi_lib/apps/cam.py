"""Grad-CAM (Selvaraju et al., 2017): where in the scan did the classifier find its evidence?

:func:`grad_cam` writes it out with two hooks; the method and how to read the maps (heat on caliper marks, burnt-in
text or the border is a shortcut; Grad-CAM is a hint, not a proof): notebook 05 and docs/library.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from busi_lib.evaluation.inference import preprocess, task_of_config
from busi_lib.models.saving import config_normalization, load_model


class ClassLogit(torch.nn.Module):
    """A multitask model seen by Grad-CAM: only its malignancy logit (B, 1)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


def cam_target_layer(model: torch.nn.Module, config: dict) -> torch.nn.Module:
    """The last encoder stage, whose feature maps Grad-CAM weighs by the classifier's gradient."""
    arch = config["arch"]
    if arch == "multitask":
        encoder = model.net.encoder
        # smp's ResNet encoder is a torchvision ResNet; its "tu-" encoders (EfficientNet-Lite) hold timm's network
        return encoder.layer4 if hasattr(encoder, "layer4") else encoder.model.blocks[-1]
    if arch == "custom_cnn":
        return model.features
    if isinstance(model, torch.nn.Sequential) and isinstance(model[0], torch.nn.Sequential):
        return model[0][-1]  # fastai's (body, head): the body's last stage (layer4 of a ResNet)
    raise ValueError(
        f"Grad-CAM is available for the CNN classifiers and the multitask model, not for {arch!r} "
        "(transformers need a reshape of their tokens; segmentation models have no classification)"
    )


def grad_cam(model: torch.nn.Module, config: dict, x: torch.Tensor, labels: Sequence[int]) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] of the evidence for each scan's label (1 malignant, 0 benign).

    ``model, config`` as :func:`busi_lib.models.saving.load_model` returns them; ``x`` the normalised batch
    (:func:`busi_lib.evaluation.inference.preprocess`). pytorch-grad-cam's ``GradCAM`` gives the same maps (tested).
    Each map is scaled to [0, 1] on its own: compare where the heat is, not how much.
    """
    task = task_of_config(config)
    if task == "segment":
        raise ValueError("a segmentation-only model has no classification to explain")
    layer = cam_target_layer(model, config)
    net = (ClassLogit(model) if task == "multitask" else model).eval()
    kept = {}

    def keep_maps_and_their_gradient(module, inputs, maps):
        kept["maps"] = maps
        maps.register_hook(lambda grad: kept.update(grads=grad))  # called during backward()

    hook = layer.register_forward_hook(keep_maps_and_their_gradient)
    try:
        logit = net(x.clone().requires_grad_(True)).reshape(-1)  # an input that needs grad: frozen bodies too
        sign = torch.tensor([1.0 if lab else -1.0 for lab in labels])  # the evidence for the label given
        net.zero_grad()
        (sign * logit).sum().backward()
    finally:
        hook.remove()
    maps, grads = kept["maps"].detach(), kept["grads"].detach()  # (N, C, h, w) each
    weights = grads.mean(dim=(2, 3), keepdim=True)  # how much each feature map raised the score, on average
    cam = torch.relu((weights * maps).sum(dim=1)).numpy()  # (N, h, w): only what speaks *for* the label
    height, width = x.shape[-2:]
    cam = np.stack([cv2.resize(c, (width, height)) for c in cam])  # bilinear, to the input's size
    cam = cam - cam.min(axis=(1, 2), keepdims=True)
    peak = cam.max(axis=(1, 2), keepdims=True)  # each map to [0, 1] (a map without heat stays 0)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0).astype(np.float32)


def cam_gallery(model_folder: str | Path, part: dict, n_per_class: int = 3) -> dict:
    """Grad-CAM maps of the first ``n_per_class`` benign, then malignant, scans of ``part`` (a run or model folder's
    :func:`busi_lib.evaluation.study.predict_part` result). Returns ``images``, ``maps`` (N, S, S) in [0, 1], ``y``,
    ``prob``, ``called`` (at the saved threshold), ``threshold``, ``image_ids``."""
    folder = Path(model_folder)
    model, config = load_model(folder if folder.name == "model" else folder / "model")
    y = np.asarray(part["y"]).astype(int)
    picked = np.concatenate([np.flatnonzero(y == c)[:n_per_class] for c in (0, 1)])
    threshold = float(config.get("threshold", 0.5))
    prob = np.asarray(part["prob"])[picked]
    called = (prob >= threshold).astype(int)
    x = preprocess(list(part["images"][picked]), int(config["image_size"]), config_normalization(config))
    return {"images": part["images"][picked], "maps": grad_cam(model, config, x, called), "y": y[picked],
            "prob": prob, "called": called, "threshold": threshold,
            "image_ids": list(part["table"]["image_id"].iloc[picked])}
