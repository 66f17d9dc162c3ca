"""What a run does differently on a GPU: mixed precision, data-loader workers, pinned memory, cuDNN autotuning.
Every decision asks :func:`cuda_available` alone (tests patch it). The precisions: docs/library.md."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import torch
from fastai.callback.fp16 import AMPMode, MixedPrecision

from busi_lib.errors import BusiDataError
from busi_lib.names import PRECISIONS

if TYPE_CHECKING:  # names for the type hints only
    from fastai.learner import Learner


def cuda_available() -> bool:
    """Whether a CUDA GPU is here: the one question every decision of this module asks (tests patch it)."""
    return torch.cuda.is_available()


def resolve_precision(precision: str, cuda: bool | None = None) -> str:
    """The precision a run uses: ``fp32``, ``bf16`` or ``fp16`` (``mixed`` resolved for this machine). One this
    machine cannot run raises :class:`BusiDataError` naming why, never a silent float32 run."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    cuda = cuda_available() if cuda is None else cuda
    bf16_gpu = cuda and torch.cuda.is_bf16_supported()
    if precision == "mixed":
        return ("bf16" if bf16_gpu else "fp16") if cuda else "fp32"
    if precision in ("fp16", "bf16") and not cuda:
        raise BusiDataError(None, f"precision {precision} needs a CUDA GPU (on a CPU, 16-bit training is slower "
                            "than float32, RESULTS.md): use fp32, or mixed, which is fp32 without a GPU")
    if precision == "bf16" and cuda and not bf16_gpu:
        raise BusiDataError(None, f"this GPU ({torch.cuda.get_device_name(0)}) does not support bfloat16: "
                            "use precision fp16 or mixed")
    return precision


def apply_precision(learn: Learner, precision: str) -> str:
    """Add mixed precision to a fastai ``Learner`` (nothing for fp32); returns the precision used."""
    used = resolve_precision(precision)
    if used != "fp32":
        learn.add_cb(MixedPrecision(amp_mode=AMPMode(used)))
    return used


def default_num_workers(cuda: bool | None = None) -> int:
    """DataLoader worker processes when ``TrainConfig.num_workers`` is None: 0 without a GPU and on Windows and
    macOS (docs/library.md), else up to 4, half the cores."""
    cuda = cuda_available() if cuda is None else cuda
    if not cuda or sys.platform in ("win32", "darwin"):
        return 0
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def loader_options(num_workers: int | None = None, cuda: bool | None = None) -> dict:
    """``num_workers`` and ``pin_memory`` of the DataLoaders: pinned (page-locked) batches copy to a GPU
    asynchronously, so they are pinned only when CUDA is here."""
    cuda = cuda_available() if cuda is None else cuda
    workers = default_num_workers(cuda) if num_workers is None else int(num_workers)
    return dict(num_workers=workers, pin_memory=bool(cuda))


def configure_backends(cuda: bool | None = None) -> dict:
    """Switch on cuDNN autotuning on a GPU (call after ``set_seed``, which switches it off; not bit-reproducible);
    returns the settings."""
    cuda = cuda_available() if cuda is None else cuda
    if cuda:
        torch.backends.cudnn.benchmark = True
    return dict(cudnn_benchmark=bool(torch.backends.cudnn.benchmark))
