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
the gray channel is repeated and normalised with the mean and std of the
network's pretrained weights (:func:`busi_lib.weights.normalization_for`:
ImageNet's numbers for torchvision models, 0.5 and 0.5 for EfficientNet-Lite).
"""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2

from .weights import IMAGENET_MEAN, IMAGENET_STD

Normalization = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per channel
IMAGENET: Normalization = (IMAGENET_MEAN, IMAGENET_STD)
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


def build_transforms(augment: str = "default", seed: int | None = None, norm: Normalization = IMAGENET) -> A.Compose:
    """The albumentations pipeline for one side of a split.

    ``augment`` is ``"none"`` (validation, test, prediction), ``"default"``
    (training) or ``"strong"`` (more intensity change, for robustness to other
    scanners). Input: a uint8 (H, W) scan and optional (H, W) mask, already
    resized (see :mod:`busi_lib.cache`). Output: a float tensor (3, H, W) and,
    if given, the mask as a tensor (H, W). ``norm`` is the (mean, std) of the
    network's pretrained weights.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    tfms = []
    if augment != "none":
        tfms += _geometry() + _intensity(strong=augment == "strong")
    tfms += [A.ToRGB(p=1.0), A.Normalize(mean=norm[0], std=norm[1]), ToTensorV2()]
    compose = A.Compose(tfms, seed=seed)
    return compose if seed is None else seed_transforms(compose, seed)


def seed_transforms(tfms: A.Compose, *key: int) -> A.Compose:
    """Make the next random draws of ``tfms`` a function of the integers ``key`` only.

    The training set calls it with ``(seed, epoch, index)`` before each scan
    (:class:`busi_lib.loaders.BusiDataset`), so the augmentation of a scan does
    not depend on what ran before it: a resumed run, or one with worker
    processes, sees exactly the scans an uninterrupted single-process run saw.

    All transforms share one generator. ``Compose.set_random_seed`` would give
    each transform its own generator with the *same* seed, so their first draws
    would be equal (a flip would always come with a brightness change).
    """
    np_seq, py_seq = np.random.SeedSequence([int(k) for k in key]).spawn(2)  # independent streams
    tfms.set_random_state(np.random.default_rng(np_seq), random.Random(int(py_seq.generate_state(1, np.uint64)[0])))
    return tfms


def denormalize(x, norm: Normalization = IMAGENET):
    """Undo the normalisation ``norm`` of a (…, 3, H, W) tensor or array for display: values in [0, 1]."""
    import torch

    x = torch.as_tensor(x).detach().float().cpu()
    mean = torch.tensor(norm[0]).view(3, 1, 1)
    std = torch.tensor(norm[1]).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1)
