"""busi_lib: the library behind the BUSI deep-learning notebooks.

The folders import only downward, in this order (smp's concept folders; one job per file, as going_modular
does it); ``tests/test_layout.py`` keeps it so:

==============  ===================================================================================
top level       ``names`` (the architectures and their task, augmentations, precisions), ``config`` (every
                setting of a run), ``profiles`` (smoke / cpu / gpu), ``errors``, ``files`` (atomic writes,
                SHA-256); ``colab`` and ``__main__`` start the apps
``data/``       from the folder on disk to fastai DataLoaders: ``table``, ``images``, ``duplicates``,
                ``cache``, ``sites`` (several hospitals), ``dataset``, ``splits``, ``transforms``,
                ``loaders``, ``synthetic``, ``download``, ``external_sets`` (BUS-BRA, BUS-UCLM)
``models/``     ``networks`` (the lesson networks and ``build_model``), ``weights`` (ImageNet weights or a
                clear error), ``saving`` (the saved-model folder)
``evaluation/`` ``metrics`` (the one scoring path, bootstrap intervals), ``inference`` (the one prediction
                path), ``calibration``, ``ensemble`` (fold ensembles, AdaBN), ``baselines``, ``study``
``training/``   ``losses``, ``learners`` (the fastai Learner, the run), ``hardware``, ``checkpoints``,
                ``distributed``
``ui/``         what a notebook shows: ``notebook`` (the first cell), ``plots``, ``report``, ``widgets``,
                ``quiet``
``apps/``       what a user runs: ``cli`` (``busi``), ``runner`` (``busi notebooks``), ``predict``, ``cam``,
                ``external`` (``busi evaluate``), ``bench`` (``busi bench``), ``speed``
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
    "TrainConfig": "busi_lib.config",
    "train": "busi_lib.training.learners",
    "load_model": "busi_lib.models.saving",
    "classification_metrics": "busi_lib.evaluation.metrics",
    "predict_folder": "busi_lib.apps.predict",
    "evaluate_model": "busi_lib.apps.external",
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
