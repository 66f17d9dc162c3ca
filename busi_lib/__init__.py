"""busi_lib: the library behind the BUSI deep-learning notebooks.

The folders follow the pipeline, left to right (smp's concept folders; one job per file, as
going_modular does it):

==============  ===================================================================================
``data/``       from the folder on disk to fastai DataLoaders: ``table`` (the BUSI folder as a
                table, the class names), ``images`` (scans and masks in one representation),
                ``duplicates`` (near-duplicate groups), ``cache`` (decode and resize once),
                ``sites`` (several hospitals, labels CSVs), ``dataset`` (a folder ready to train on),
                ``splits`` (seeded, group-aware),
                ``transforms`` (albumentations, scan and mask together), ``loaders`` (fastai
                DataLoaders), ``synthetic`` (a BUSI-like set and a "second hospital" from a seed),
                ``download`` (the real BUSI, verified), ``external_sets`` (BUS-BRA, BUS-UCLM)
``models/``     ``networks`` (the lesson networks CustomCNN, the U-Net decoder and
                MultitaskUResNet, and the registry that builds every network by name),
                ``weights`` (ImageNet weights: pip packages, the torchvision / timm caches, or a
                clear error)
``training/``   ``losses``, ``config`` (every setting of a run), ``learners`` (the fastai Learner, the run),
                ``profiles`` (smoke / cpu / gpu), ``hardware`` (precision, GPU loaders),
                ``checkpoints`` (resume), ``distributed`` (Accelerate), ``saving`` (the saved-model
                folder)
``evaluation/`` ``metrics`` (metrics, bootstrap intervals, the one scoring path), ``inference`` (the one
                prediction path), ``ensemble`` (fold ensembles, AdaBN), ``calibration``, ``external``
                (scoring a saved model on a new site), ``report``, ``bench`` (cross-validation,
                RESULTS.md), ``speed``, ``study`` (the reference study)
``apps/``       what a user runs: ``cli`` (``busi``), ``runner`` (``busi notebooks``), ``predict``,
                ``cam`` (Grad-CAM)
``ui/``         what a notebook shows: ``notebook`` (the first cell), ``plots``, ``widgets``,
                ``quiet`` (the warning filters)
top level       ``names`` (architectures, augmentations, precisions: the names a run is set up with, and the
                one task dispatch ``task_of``), ``errors`` (the exception family), ``files`` (atomic
                writes, SHA-256), ``colab`` (Colab setup)
==============  ===================================================================================

The lesson code is re-exported here, as smp re-exports its models: ``from busi_lib import CustomCNN``.
The names load on first use (PEP 562), so ``import busi_lib`` and ``busi --help`` stay fast and do not
import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module, in the order of the lessons
_LESSON_API = {
    # 01 the data
    "load_dataset": "busi_lib.data.dataset",
    "CLASSES": "busi_lib.data.table",
    "duplicate_groups": "busi_lib.data.duplicates",
    "train_valid_test_split": "busi_lib.data.splits",
    "build_transforms": "busi_lib.data.transforms",
    "make_dataloaders": "busi_lib.data.loaders",
    # 02 a CNN from scratch
    "CustomCNN": "busi_lib.models.networks",
    "ClassificationLoss": "busi_lib.training.losses",
    "make_learner": "busi_lib.training.learners",
    # 04 segmentation
    "soft_dice_loss": "busi_lib.training.losses",
    "SegmentationLoss": "busi_lib.training.losses",
    "segmentation_counts": "busi_lib.evaluation.metrics",
    "scores_from_counts": "busi_lib.evaluation.metrics",
    # 05 the multitask network
    "MultitaskUResNet": "busi_lib.models.networks",
    "MultitaskLoss": "busi_lib.training.losses",
    # 06 on: the whole run in one call
    "build_model": "busi_lib.models.networks",
    "TrainConfig": "busi_lib.training.config",
    "train": "busi_lib.training.learners",
    "load_model": "busi_lib.training.saving",
    "classification_metrics": "busi_lib.evaluation.metrics",
    "predict_folder": "busi_lib.apps.predict",
    "evaluate_model": "busi_lib.evaluation.external",
}
__all__ = ["__version__", *_LESSON_API]


def __getattr__(name: str):
    if name in _LESSON_API:
        value = getattr(importlib.import_module(_LESSON_API[name]), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'busi_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LESSON_API))
