"""fastai ``DataLoaders`` for the three problem shapes: a batch is ``(x, y)`` for ``"classify"``, ``(x, mask)`` for
``"segment"``, ``(x, y, mask)`` for ``"multitask"``; ``x`` is float (B, 3, S, S) normalised, ``y`` float (B,) (1 =
malignant), ``mask`` float (B, 1, S, S) in {0, 1}. Caching and seeded augmentation: docs/library.md."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader

from busi_lib.data.cache import cached_arrays
from busi_lib.data.splits import apply_split
from busi_lib.data.table import pos_weight
from busi_lib.data.transforms import IMAGENET, Normalization, build_transforms, seed_transforms

KINDS = ("classify", "segment", "multitask")


def check_image_size(size: int) -> int:
    """U-Net-style encoders halve the image five times: the side must be a multiple of 32."""
    if not isinstance(size, (int, np.integer)) or size < 32 or size % 32:
        raise ValueError(
            f"image size must be a multiple of 32 and at least 32 (U-Net encoders downsample by 32), got {size!r}"
        )
    return int(size)


class BusiDataset(torch.utils.data.Dataset):
    """Pre-resized arrays → augmented tensors, in one of the three problem shapes."""

    n_inp = 1  # fastai: the first element of a batch is the input, the rest are targets

    def __init__(self, images, masks, targets, kind: str = "classify", tfms=None, image_ids=None, seed=None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.images, self.masks, self.kind = images, masks, kind
        self.targets = np.asarray(targets, dtype=np.float32)
        self.tfms = tfms or build_transforms("none")
        self.image_ids = list(image_ids) if image_ids is not None else [str(i) for i in range(len(images))]
        self.seed, self.epoch = seed, None

    def set_epoch(self, epoch: int | None) -> None:
        """Draw the augmentation of scan ``i`` from ``(seed, epoch, i)`` (None: from the pipeline's running state)."""
        self.epoch = epoch

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        if self.epoch is not None and self.seed is not None:
            seed_transforms(self.tfms, self.seed, self.epoch, i)
        out = self.tfms(image=self.images[i], mask=self.masks[i])
        x = out["image"]
        y = torch.tensor(self.targets[i])
        mask = out["mask"].float().unsqueeze(0)
        if self.kind == "classify":
            return x, y
        if self.kind == "segment":
            return x, mask
        return x, y, mask


class BusiDataLoaders(DataLoaders):
    """fastai ``DataLoaders`` (train, valid[, test]) with ``kind``, ``image_size``, ``pos_weight`` (from the training
    part), ``tables`` (``{"train": df, "valid": df, "test": df}``) and ``norm`` (the inputs' mean and std)."""


class AugmentEpoch(Callback):
    """fastai callback: tell the training set the epoch, so a scan's augmentation depends on (seed, epoch, scan)."""

    def before_train(self):
        ds = getattr(self.dls.train, "dataset", None)
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(self.epoch)


def make_dataset(df: pd.DataFrame, image_size: int, kind: str, augment: str = "none", seed: int | None = None,
                 cache_dir: str | Path | None = None, norm: Normalization = IMAGENET,
                 aspect_crop: bool = False) -> BusiDataset:
    """A :class:`BusiDataset` over the rows of ``df`` (a dataset table with ``target``), normalised with ``norm``
    (``augment``, ``aspect_crop``: see :func:`busi_lib.data.transforms.build_transforms`)."""
    images, masks = cached_arrays(df, image_size, cache_dir=cache_dir)
    tfms = build_transforms(augment, seed, norm, aspect_crop=aspect_crop)
    return BusiDataset(images, masks, df["target"], kind, tfms, df["image_id"], seed)


def make_dataloaders(
    df: pd.DataFrame,
    split: pd.DataFrame,
    kind: str = "classify",
    image_size: int = 128,
    batch_size: int = 16,
    augment: str = "default",
    seed: int = 42,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    cache_dir: str | Path | None = None,
    norm: Normalization = IMAGENET,
    aspect_crop: bool = False,
    pin_memory: bool = False,
) -> BusiDataLoaders:
    """Train / valid (/ test, if the split has one) loaders for a dataset table and a split table; ``norm``: the
    pretrained weights' (mean, std). ``num_workers`` is 0 by default (workers hang in Jupyter on Windows and macOS); a
    training run picks workers and ``pin_memory`` with :func:`busi_lib.training.hardware.loader_options`."""
    check_image_size(image_size)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    m = apply_split(df, split)
    if m["split"].isna().any():
        missing = m.loc[m["split"].isna(), "image_id"].iloc[0]
        raise ValueError(f"image '{missing}' has no side in the split")
    parts = {s: m[m["split"] == s].reset_index(drop=True) for s in ("train", "valid", "test")}
    if len(parts["train"]) == 0 or len(parts["valid"]) == 0:
        raise ValueError("the split needs non-empty 'train' and 'valid' parts")
    torch.manual_seed(seed)  # fastai's DataLoader draws its shuffling seed from torch / random
    random.seed(seed)
    loaders = []
    for s in ("train", "valid", "test"):
        if len(parts[s]) == 0:
            continue
        train = s == "train"
        ds = make_dataset(parts[s], image_size, kind, augment if train else "none", seed, cache_dir, norm,
                          aspect_crop=aspect_crop and train)
        loaders.append(
            DataLoader(
                ds,
                bs=batch_size,
                shuffle=train,
                drop_last=train and len(ds) > batch_size,
                num_workers=num_workers,
                pin_memory=pin_memory,
                device=device,
            )
        )
    dls = BusiDataLoaders(*loaders, device=device)
    dls.kind, dls.image_size, dls.tables, dls.norm = kind, image_size, parts, norm
    dls.pos_weight = pos_weight(parts["train"]["target"]) if parts["train"]["target"].max() == 1 else None
    return dls
