"""What a run does differently on a GPU: mixed precision, data-loader workers, pinned memory, cuDNN autotuning.

Every decision is a small function of "is CUDA here?" (``torch.cuda.is_available()``), so the same
``TrainConfig`` runs on a laptop and on a GPU, and the tests check the GPU decisions on a CPU by
patching that one function.

**Precision** (``TrainConfig.precision``, ``busi train --precision``):

=========  =========================================================================================
``fp32``   float32 everywhere (the cpu and smoke profiles; every figure in RESULTS.md)
``bf16``   autocast to bfloat16, no loss scaling (bfloat16 has float32's range); CUDA GPUs that
           support it (Ampere and newer) and CPUs
``fp16``   autocast to float16 with loss scaling (``GradScaler``); CUDA GPUs only
``mixed``  the gpu profile's default: ``bf16`` on a GPU that supports it, else ``fp16`` on a GPU,
           ``fp32`` without a GPU (on most CPUs bfloat16 is not faster, RESULTS.md)
=========  =========================================================================================

The weights, the optimiser state, the saved model and the final evaluation stay float32; only the
forward pass and the loss of each training and validation batch are autocast (fastai's
``MixedPrecision``). fastai's callback always autocasts on ``"cuda"``, which on a CPU silently does
nothing; :class:`DeviceMixedPrecision` autocasts on the device the model is on.

**Determinism.** On a GPU, ``torch.backends.cudnn.benchmark`` is switched on (:func:`configure_backends`):
cuDNN times several convolution algorithms and keeps the fastest, which can differ from run to run,
and so can the last bits of the results. A seeded GPU run is therefore repeatable in its figures to a
few decimals, not bit for bit; on a CPU (benchmark unused) a seeded run is bit-identical.
"""

from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

import torch
from fastai.callback.fp16 import AMPMode, MixedPrecision
from fastcore.foundation import L

from busi_lib.errors import BusiDataError
from busi_lib.names import PRECISIONS

if TYPE_CHECKING:  # names for the type hints only
    from fastai.learner import Learner

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cuda_available() -> bool:
    """Whether a CUDA GPU is here: the one question every decision of this module asks (tests patch it)."""
    return torch.cuda.is_available()


def resolve_precision(precision: str, cuda: bool | None = None) -> str:
    """The precision a run uses: ``fp32``, ``bf16`` or ``fp16`` (``mixed`` resolved for this machine).

    A precision this machine cannot run is an error naming why (:class:`BusiDataError`: ``busi`` prints one
    line and exits 2), never a silent float32 run.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    cuda = cuda_available() if cuda is None else cuda
    bf16_gpu = cuda and torch.cuda.is_bf16_supported()
    if precision == "mixed":
        return ("bf16" if bf16_gpu else "fp16") if cuda else "fp32"
    if precision == "fp16" and not cuda:
        raise BusiDataError(None, "precision fp16 needs a CUDA GPU: float16 training needs loss scaling "
                            "(GradScaler), which this library runs on CUDA only, and float16 arithmetic on a CPU is "
                            "slow; on a CPU use bf16 (no loss scaling needed) or fp32")
    if precision == "bf16" and cuda and not bf16_gpu:
        raise BusiDataError(None, f"this GPU ({torch.cuda.get_device_name(0)}) does not support bfloat16: "
                            "use precision fp16 or mixed")
    return precision


def _device_type(model: torch.nn.Module) -> str:
    p = next(model.parameters(), None)
    return p.device.type if p is not None else "cpu"


class DeviceMixedPrecision(MixedPrecision):
    """fastai's ``MixedPrecision``, autocasting on the model's device (fastai's own uses ``"cuda"`` only)."""

    def before_fit(self):
        device = _device_type(self.learn.model)  # TrainEvalCallback (order -10) has moved it to the device
        dtype = DTYPES[self.amp_mode.value]
        if dtype == torch.float16 and device != "cuda":
            resolve_precision("fp16", cuda=False)  # raises: fp16 runs on CUDA only
        self.kwargs["enabled"] = dtype == torch.float16  # bfloat16 has float32's range: no loss scaling
        self.autocast = torch.autocast(device, dtype=dtype)
        self.learn.scaler = torch.amp.GradScaler(device, **self.kwargs)
        self.scales = L()


def apply_precision(learn: Learner, precision: str) -> str:
    """Add mixed precision to a fastai ``Learner`` (nothing for fp32); returns the precision used."""
    used = resolve_precision(precision)
    if used != "fp32":
        learn.add_cb(DeviceMixedPrecision(amp_mode=AMPMode(used)))
    return used


def autocast_context(precision: str, device: str) -> AbstractContextManager:
    """``torch.autocast`` for a resolved precision (a no-op context for fp32), for loops outside fastai."""

    return nullcontext() if precision == "fp32" else torch.autocast(device, dtype=DTYPES[precision])


def default_num_workers(cuda: bool | None = None) -> int:
    """DataLoader worker processes when ``TrainConfig.num_workers`` is None.

    0 without a GPU: the arrays are cached and augmenting a batch costs little next to a CPU's training step,
    and worker processes would compete with training for the same cores. With a GPU the CPU only feeds it:
    up to 4 workers (half the cores, at least 1), except on Windows and macOS, where DataLoader workers hang
    in Jupyter (fastai also sets 0 there).
    """
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
    """Switch on cuDNN autotuning on a GPU (call after ``set_seed``, which switches it off); returns the settings.

    Not bit-reproducible: see the module doc.
    """
    cuda = cuda_available() if cuda is None else cuda
    if cuda:
        torch.backends.cudnn.benchmark = True
    return dict(cudnn_benchmark=bool(torch.backends.cudnn.benchmark))
