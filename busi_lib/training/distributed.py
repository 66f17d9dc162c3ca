"""Training on several GPUs or machines: PyTorch DDP through Hugging Face Accelerate, as fastai does it.
``accelerate launch`` starts the same command once per process; only rank 0 writes files (docs/library.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from accelerate import PartialState
from fastai.callback.progress import ProgressCallback
from fastai.distributed import DistributedDL
from fastai.distributed import DistributedTrainer as FastaiDistributedTrainer
from fastai.learner import Learner
from fastai.torch_core import distrib_barrier, num_distrib, rank_distrib

T = TypeVar("T")

__all__ = ["DistributedTrainer", "barrier", "distributed", "is_main_process", "main_process_result",
           "n_processes", "start_processes", "stop_processes"]


def n_processes() -> int:
    """How many processes train together (1 unless started by ``accelerate launch`` / ``torchrun``)."""
    return max(1, num_distrib())


def is_main_process() -> bool:
    """Rank 0: the one process that writes files and prints results."""
    return rank_distrib() == 0


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    distrib_barrier()


_started = False


def start_processes() -> None:
    """Join the other processes of an ``accelerate launch`` (gloo without a GPU; no-op in a single process)."""
    global _started
    if num_distrib() <= 1 or _started:
        return

    state = PartialState(cpu=not torch.cuda.is_available())
    _started = True
    print(f"process {state.process_index + 1} of {state.num_processes} "
          f"(rank {state.process_index}, {state.backend} on {state.device})", flush=True)


def stop_processes() -> None:
    """Leave the process group at the end of a run: a barrier, then the group destroyed (no-op in a single process).
    A process exiting with the group up can abort (SIGABRT), and the launcher then reports the run as failed."""
    global _started
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    try:
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()
        _started = False


def main_process_result(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on the main process only; every process returns its result once ``fn`` is done."""
    if num_distrib() <= 1 or not torch.distributed.is_initialized():
        return fn(*args, **kwargs)
    box = [fn(*args, **kwargs) if is_main_process() else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


class _DistributedDL(DistributedDL):
    """fastai's ``DistributedDL``, able to run on CPU processes: fastai broadcasts the shuffled order through a GPU
    tensor (NCCL needs one), gloo needs it on the CPU. Only that method is replaced."""

    def _broadcast(self, t, rank):
        device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
        t = torch.tensor(t, dtype=torch.long, device=device)
        torch.distributed.broadcast(t, rank)
        return t.cpu().tolist()


class DistributedTrainer(FastaiDistributedTrainer):
    """fastai's DDP callback (``Learner.to_distributed``), wrapping the loaders in :class:`_DistributedDL`."""

    def _wrap_dl(self, dl):
        return dl if isinstance(dl, DistributedDL) else _DistributedDL(dl, device=self.learn.model.device)


@contextmanager
def distributed(learn: Learner) -> Iterator[Learner]:
    """fastai's ``Learner.distrib_ctx`` for CPU processes as well as GPUs; does nothing in a single process. CPU
    processes keep per-process batch statistics (no ``SyncBatchNorm``); only the main process shows progress bars."""
    if num_distrib() <= 1:
        yield learn
        return
    start_processes()
    gpu = torch.cuda.is_available()
    cb = DistributedTrainer(sync_bn=gpu, cpu=not gpu)
    learn.add_cb(cb)
    bar = [c for c in learn.cbs if isinstance(c, ProgressCallback)] if rank_distrib() else []
    for c in bar:
        learn.remove_cb(c)
    try:
        yield learn
    finally:
        learn.remove_cb(cb)
        for c in bar:
            learn.add_cb(c)
