"""busi_lib: the library behind the BUSI deep-learning notebooks.

The folders import only downward, in this order (``tests/test_layout.py`` checks it); one job per file:

==============  ===================================================================================
top level       ``names`` (the architectures and their task, augmentations, precisions), ``config`` (every
                setting of a run), ``profiles`` (smoke / cpu / gpu), ``errors``, ``files`` (atomic writes,
                SHA-256), ``progress`` (the one progress bar); ``colab`` and ``__main__`` start the apps
``data/``       from the folder on disk to fastai DataLoaders: ``table``, ``images``, ``duplicates``,
                ``cache``, ``sites`` (several hospitals), ``dataset``, ``splits``, ``transforms``,
                ``loaders``, ``synthetic``, ``download``, ``external_sets`` (BUS-BRA)
``models/``     ``networks`` (the lesson networks and ``build_model``), ``weights`` (ImageNet weights or a
                clear error), ``saving`` (the saved-model folder)
``evaluation/`` ``metrics`` (the one scoring path, bootstrap intervals), ``inference`` (the one prediction
                path), ``calibration``, ``ensemble`` (fold ensembles, AdaBN), ``baselines``, ``study``
``training/``   ``losses``, ``learners`` (the fastai Learner, the run), ``hardware``,
                ``distributed``
``ui/``         what a notebook shows: ``notebook`` (the first cell), ``plots``, ``report``, ``widgets``,
                ``quiet``
``apps/``       what a user runs: ``cli`` (``busi``), ``runner`` (``busi notebooks``), ``predict``, ``cam``,
                ``external`` (``busi evaluate``), ``bench`` (``busi bench``)
==============  ===================================================================================

The lessons import each name from its module (``from busi_lib.models.networks import CustomCNN``), so a
reader sees where the code lives; ``import busi_lib`` itself loads nothing (``busi --help`` stays fast).
"""

from __future__ import annotations

__version__ = "0.1.0"
