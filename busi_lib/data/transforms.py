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
  dynamic-range settings differ between scanners;
* ``"scanner"``: the same geometry with the intensity changes another scanner
  makes: gain (brightness/contrast), display curve (gamma), coarser or finer
  *multiplicative* speckle (ultrasound noise multiplies the echo, it is not
  added), blur, and a simulated low-resolution probe (downscale and back up).
  ``"geometry"``: the geometry only, no intensity change at all (the control).

**Lesion-preserving aspect-ratio crops** (``aspect_crop=True``,
:class:`LesionAspectCrop`): scans are resized to a square before the network
sees them, so a tall, narrow scan (BUS-BRA crops its scans to the breast) shows
its lesions squeezed sideways. The crop cuts a random rectangle of another
aspect ratio out of the square scan, always containing the whole lesion (the
mask's bounding box), and resizes it back to the square: lesions get stretched
and squeezed as they would be by other crops, and no lesion pixel is ever cut off.

Scans are grayscale; networks pretrained on ImageNet expect three channels, so
the gray channel is repeated and normalised with the mean and std of the
network's pretrained weights (:func:`busi_lib.models.weights.normalization_for`:
ImageNet's numbers for torchvision models, 0.5 and 0.5 for EfficientNet-Lite).
"""

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
    """What another scanner changes in the look of a scan (see the module doc)."""
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
    """``(x0, y0, x1, y1)``: a random crop of ``shape`` that holds every nonzero pixel of ``mask``.

    Its aspect ratio (width / height, relative to the scan's) is drawn log-uniformly from
    ``ratio`` and its area as a fraction of the scan from ``scale``; where the
    lesion's bounding box does not fit, the crop grows to hold it (so the ratio
    is then closer to the lesion's). An empty or missing mask: any crop.
    """
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
    """Crop a random rectangle of another aspect ratio that holds the whole lesion; resize it back.

    The crop is at most the scan's size, so resizing it back enlarges it: with
    nearest-neighbour interpolation for the mask, every lesion pixel survives
    and the mask stays binary. See :func:`lesion_crop_box` for ``ratio`` and ``scale``.
    """

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
    """The albumentations pipeline for one side of a split.

    ``augment`` is ``"none"`` (validation, test, prediction), ``"default"``
    (training), ``"strong"`` (more intensity change, for robustness to other
    scanners), ``"geometry"`` (flips and affine only) or ``"scanner"`` (geometry
    and scanner-style gain, gamma, speckle, blur, low resolution). ``aspect_crop``:
    first a :class:`LesionAspectCrop` (half the scans). Input: a uint8 (H, W) scan and optional (H, W) mask,
    already resized (see :mod:`busi_lib.data.cache`). Output: a float tensor (3, H, W) and,
    if given, the mask as a tensor (H, W). ``norm`` is the (mean, std) of the
    network's pretrained weights.
    """
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
    """Make the next random draws of ``tfms`` a function of the integers ``key`` only.

    The training set calls it with ``(seed, epoch, index)`` before each scan
    (:class:`busi_lib.data.loaders.BusiDataset`), so the augmentation of a scan does
    not depend on what ran before it: a resumed run, or one with worker
    processes, sees exactly the scans an uninterrupted single-process run saw.

    All transforms share one generator. ``Compose.set_random_seed`` would give
    each transform its own generator with the *same* seed, so their first draws
    would be equal (a flip would always come with a brightness change).
    """
    np_seq, py_seq = np.random.SeedSequence([int(k) for k in key]).spawn(2)  # independent streams
    tfms.set_random_state(np.random.default_rng(np_seq), random.Random(int(py_seq.generate_state(1, np.uint64)[0])))
    return tfms


def denormalize(x: torch.Tensor | np.ndarray, norm: Normalization = IMAGENET) -> np.ndarray:
    """Undo the normalisation ``norm`` of a (…, 3, H, W) tensor or array for display: values in [0, 1]."""

    x = torch.as_tensor(x).detach().float().cpu()
    mean = torch.tensor(norm[0]).view(3, 1, 1)
    std = torch.tensor(norm[1]).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1)
