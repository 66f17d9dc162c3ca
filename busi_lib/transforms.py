"""Augmentation and normalisation with albumentations, applied to scan and mask together.

Why together? A flip or rotation changes *where* the lesion is. If the scan is
rotated but its mask is not, the network is taught to segment the wrong
pixels. albumentations applies one random draw to every target passed in the
same call (``image=..., mask=...``), and warps masks with nearest-neighbour
interpolation so they stay binary.

Choices for ultrasound:

* horizontal flips only: a vertical flip would put the skin line at the bottom
  and the acoustic shadow *above* the lesion, which no probe produces;
* small rotations, zooms and shifts: the probe is held at slightly different
  angles and depths;
* brightness/contrast (and, in ``"strong"``, gamma, noise and blur): gain and
  dynamic-range settings differ between scanners.

Scans are grayscale; networks pretrained on ImageNet expect three channels, so
the gray channel is repeated and normalised with ImageNet's mean and std.
"""

from __future__ import annotations

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("none", "default", "strong")


def _geometry() -> list:
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


def build_transforms(augment: str = "default", seed: int | None = None) -> A.Compose:
    """The albumentations pipeline for one side of a split.

    ``augment`` is ``"none"`` (validation, test, prediction), ``"default"``
    (training) or ``"strong"`` (more intensity change, for robustness to other
    scanners). Input: a uint8 (H, W) scan and optional (H, W) mask, already
    resized (see :mod:`busi_lib.cache`). Output: a float tensor (3, H, W) and,
    if given, the mask as a tensor (H, W).
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    tfms = []
    if augment != "none":
        tfms += _geometry() + _intensity(strong=augment == "strong")
    tfms += [A.ToRGB(p=1.0), A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]
    return A.Compose(tfms, seed=seed)


def denormalize(x):
    """Undo the normalisation of a (…, 3, H, W) tensor or array for display: values in [0, 1]."""
    import torch

    x = torch.as_tensor(x).detach().float().cpu()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1)
