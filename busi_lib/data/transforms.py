"""Augmentation and normalisation with albumentations, applied to scan and mask together.
The recipes (``augment``) and why they suit ultrasound: docs/library.md."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from busi_lib.names import AUGMENTATIONS

if TYPE_CHECKING:  # names for the type hints only
    import torch

Normalization = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per channel
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET: Normalization = (IMAGENET_MEAN, IMAGENET_STD)


def _geometry() -> list:
    """Horizontal flips only: a vertical flip puts the shadow above the lesion, which no probe produces."""
    return [
        A.HorizontalFlip(p=0.5),
        A.Affine(
            rotate=(-15, 15),
            scale=(0.9, 1.15),
            translate_percent=(-0.05, 0.05),
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
            p=0.7,
        ),
    ]


def _intensity(strong: bool) -> list:
    tfms = [A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5)]
    if strong:
        tfms += [
            A.RandomGamma(gamma_limit=(70, 150), p=0.5),
            A.GaussNoise(std_range=(0.02, 0.08), p=0.3),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
        ]
    return tfms


def _scanner() -> list:
    """What another scanner changes in the look of a scan."""
    return [
        A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.7),  # gain, dynamic range
        A.RandomGamma(gamma_limit=(65, 150), p=0.5),  # display curve
        A.MultiplicativeNoise(multiplier=(0.75, 1.25), elementwise=True, p=0.4),  # speckle
        A.GaussianBlur(blur_limit=(3, 5), p=0.3),  # a softer probe
        A.Downscale(scale_range=(0.4, 0.8), interpolation_pair={"downscale": cv2.INTER_AREA,
                                                                "upscale": cv2.INTER_LINEAR}, p=0.3),  # low resolution
    ]


def lesion_crop_box(mask: np.ndarray | None, shape: tuple[int, int], rng: random.Random,
                    ratio: tuple[float, float] = (0.5, 2.0),
                    scale: tuple[float, float] = (0.5, 1.0)) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: a random crop of ``shape`` that holds every nonzero pixel of ``mask`` (any crop if none).
    Aspect ratio (relative to the scan's) log-uniform in ``ratio``, area fraction from ``scale``; the crop grows where
    the lesion's bounding box does not fit."""
    h, w = shape
    r = float(np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]))))
    a = rng.uniform(*scale)
    cw, ch = min(w, max(1, round(w * np.sqrt(a * r)))), min(h, max(1, round(h * np.sqrt(a / r))))
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        bx0, bx1, by0, by1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    else:
        bx0, bx1, by0, by1 = w, 0, h, 0  # no constraint
    cw, ch = max(cw, bx1 - bx0), max(ch, by1 - by0)
    x0 = rng.randint(max(0, bx1 - cw), min(bx0, w - cw)) if bx1 > bx0 else rng.randint(0, w - cw)
    y0 = rng.randint(max(0, by1 - ch), min(by0, h - ch)) if by1 > by0 else rng.randint(0, h - ch)
    return x0, y0, x0 + cw, y0 + ch


class LesionAspectCrop(A.DualTransform):
    """Crop a random rectangle of another aspect ratio that holds the whole lesion; resize it back. The crop is at most
    the scan's size, so the nearest-neighbour resize keeps every lesion pixel and a binary mask."""

    def __init__(self, ratio: tuple[float, float] = (0.5, 2.0), scale: tuple[float, float] = (0.5, 1.0),
                 p: float = 0.5):
        super().__init__(p=p)
        self.ratio, self.scale = tuple(ratio), tuple(scale)

    def get_params_dependent_on_data(self, params, data):
        mask = data.get("mask")
        return {"box": lesion_crop_box(mask, params["shape"][:2], self.py_random, self.ratio, self.scale)}

    @staticmethod
    def _crop_resize(a: np.ndarray, box, interpolation) -> np.ndarray:
        x0, y0, x1, y1 = box
        h, w = a.shape[:2]
        return cv2.resize(np.ascontiguousarray(a[y0:y1, x0:x1]), (w, h), interpolation=interpolation)

    def apply(self, img, box=None, **params):
        return self._crop_resize(img, box, cv2.INTER_LINEAR)

    def apply_to_mask(self, mask, box=None, **params):
        return self._crop_resize(mask, box, cv2.INTER_NEAREST)

    def get_transform_init_args_names(self):
        return ("ratio", "scale")


def build_transforms(augment: str = "default", seed: int | None = None, norm: Normalization = IMAGENET,
                     aspect_crop: bool = False) -> A.Compose:
    """The albumentations pipeline for one side of a split: a resized uint8 (H, W) scan and mask to float (3, H, W) and
    (H, W) tensors. ``augment``: ``"none"`` (evaluation), ``"default"``, ``"strong"``, ``"geometry"`` or ``"scanner"``
    (docs/library.md); ``aspect_crop`` adds a :class:`LesionAspectCrop` on half the scans."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    tfms = []
    if aspect_crop:
        tfms.append(LesionAspectCrop())
    if augment == "scanner":
        tfms += _geometry() + _scanner()
    elif augment == "geometry":
        tfms += _geometry()
    elif augment != "none":
        tfms += _geometry() + _intensity(strong=augment == "strong")
    tfms += [A.ToRGB(p=1.0), A.Normalize(mean=norm[0], std=norm[1]), ToTensorV2()]
    compose = A.Compose(tfms, seed=seed)
    return compose if seed is None else seed_transforms(compose, seed)


def seed_transforms(tfms: A.Compose, *key: int) -> A.Compose:
    """Make the next random draws of ``tfms`` a function of the integers ``key`` only (``(seed, epoch, index)`` before
    each training scan). One shared generator: ``Compose.set_random_seed`` would give every transform the *same* seed,
    so their draws would be correlated."""
    np_seq, py_seq = np.random.SeedSequence([int(k) for k in key]).spawn(2)  # independent streams
    tfms.set_random_state(np.random.default_rng(np_seq), random.Random(int(py_seq.generate_state(1, np.uint64)[0])))
    return tfms


def denormalize(x: torch.Tensor | np.ndarray, norm: Normalization = IMAGENET) -> np.ndarray:
    """Undo the normalisation ``norm`` of a (…, 3, H, W) tensor or array for display: values in [0, 1]."""
    x = torch.as_tensor(x).detach().float().cpu()
    mean = torch.tensor(norm[0]).view(3, 1, 1)
    std = torch.tensor(norm[1]).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1)
