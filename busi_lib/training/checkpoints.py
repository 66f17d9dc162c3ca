"""Checkpoints after every epoch, and resuming an interrupted run from them.

:class:`EpochCheckpoint` writes ``<out>/checkpoints/resume.pt`` atomically after each epoch with everything the
next one depends on: weights, optimizer state, every random generator (fastai loaders' included), trackers and
patience, smoothed loss, epoch log, stage, epoch and learning rate. :class:`ResumeEpochs` skips the finished
epochs and restores it all, so a resumed run does exactly what the uninterrupted one would have (augmentation
depends only on ``(seed, epoch, index)``). The file loads with ``weights_only=True``; one from other settings
or data is refused. With several processes only the main one writes; the unwrapped weights resume either way.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback, CancelEpochException
from fastai.callback.progress import CSVLogger
from fastai.callback.tracker import TrackerCallback
from fastai.distributed import DistributedDL
from fastai.learner import Learner
from fastai.torch_core import get_model, get_random_states, rank_distrib, set_random_states, to_device
from fastcore.foundation import L

from busi_lib.data.table import dataset_fingerprint
from busi_lib.errors import BusiDataError
from busi_lib.files import temp_path_for

CHECKPOINT_VERSION = 1
# Settings that may change between an interrupted run and its resumption (where, how loud, how many workers).
_NOT_IDENTITY = ("out", "data", "resume", "progress", "num_workers", "cache_dir", "extra")


def checkpoint_path(learn: Learner) -> Path:
    """``<out>/checkpoints/resume.pt``: the state after the last finished epoch."""
    return Path(learn.path) / learn.model_dir / "resume.pt"


def run_identity(learn: Learner, settings: dict) -> dict:
    """What a checkpoint must share with the run that resumes it: the settings (a ``TrainConfig`` as a dict)
    and the data of each part."""
    settings = {k: v for k, v in settings.items() if k not in _NOT_IDENTITY}
    tables = getattr(learn.dls, "tables", {})
    return dict(settings=settings, data={part: dataset_fingerprint(t) for part, t in tables.items()})


class EpochLog(CSVLogger):
    """fastai's ``CSVLogger``, except that appending (a resumed run) does not write the header a second time,
    and that with several processes only the main one opens the file (fastai's opens it in every process)."""

    def before_fit(self):
        self.writing = not rank_distrib() and not hasattr(self, "gather_preds")
        if not self.writing:
            return
        path = self.path / self.fname
        path.parent.mkdir(parents=True, exist_ok=True)
        continuing = self.append and path.is_file() and path.stat().st_size > 0
        self.file = path.open("a" if self.append else "w")
        if not continuing:
            self.file.write(",".join(self.recorder.metric_names) + "\n")
        self.old_logger, self.learn.logger = self.logger, self._write_line

    def after_fit(self):
        if self.writing:
            super().after_fit()


def _plain(obj):
    """Numbers, tensors and containers only, so the checkpoint loads with ``torch.load(weights_only=True)``."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, L)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.astype(np.int64) if obj.dtype == np.uint32 else obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _loaders(dls) -> list:
    # while several processes train, fastai's DistributedDL wraps each loader; the inner one shuffles
    return [dl.dl if isinstance(dl, DistributedDL) else dl for dl in dls.loaders]


def _rng_states(dls) -> dict:
    states = get_random_states()
    name, key, pos, has_gauss, gauss = states["numpy_state"]
    states["numpy_state"] = [name, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]
    states["loaders"] = [dl.rng.getstate() for dl in _loaders(dls)]  # each fastai DataLoader shuffles with its own
    return states


def _set_rng_states(states: dict, dls) -> None:
    states = dict(states)
    for dl, st in zip(_loaders(dls), states.pop("loaders")):
        dl.rng.setstate((st[0], tuple(st[1]), st[2]))
    name, key, pos, has_gauss, gauss = states["numpy_state"]
    states["numpy_state"] = (name, key.numpy().astype(np.uint32), pos, has_gauss, gauss)
    states["random_state"] = (states["random_state"][0], tuple(states["random_state"][1]), states["random_state"][2])
    set_random_states(**states)


class EpochCheckpoint(Callback):
    """After every finished epoch, write what a resumed run needs into one file, whole or not at all
    (the main process only: the others hold the same weights)."""

    order = 90  # after the Recorder, the CSV log and the trackers have taken the epoch into account

    def __init__(self, path: Path, stage: int, lr: float, identity: dict):
        self.path, self.stage, self.lr, self.identity = Path(path), stage, lr, identity

    def after_epoch(self):
        if rank_distrib():
            return
        log = next((cb for cb in self.learn.cbs if isinstance(cb, CSVLogger)), None)
        log_path = log.path / log.fname if log is not None else None
        state = dict(
            version=CHECKPOINT_VERSION,
            stage=self.stage,
            epoch=self.epoch,
            lr=self.lr,
            identity=self.identity,
            model=get_model(self.learn.model).state_dict(),  # without a DistributedDataParallel wrapper
            opt=_plain(self.learn.opt.state_dict()),
            rng=_rng_states(self.dls),
            trackers=[dict(best=float(cb.best), wait=getattr(cb, "wait", 0)) for cb in _trackers(self.learn)],
            smooth_loss=[self.recorder.smooth_loss.count, self.recorder.smooth_loss.val],
            train_iter=self.learn.train_iter,
            log=log_path.read_text() if log_path is not None and log_path.is_file() else "",
        )
        tmp = temp_path_for(self.path)
        torch.save(state, tmp)
        os.replace(tmp, self.path)


def _trackers(learn: Learner) -> list:
    return [cb for cb in learn.cbs if isinstance(cb, TrackerCallback)]


def read_checkpoint(path: Path, identity: dict) -> dict | None:
    """The checkpoint of an interrupted run, checked against this run's settings and data (None if there is none)."""
    path = Path(path)
    if not path.is_file():
        print(f"resume: no checkpoint at {path}: training from the first epoch")
        return None
    try:
        # weights_only: plain tensors and numbers, never pickled code
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises many kinds of errors
        raise BusiDataError(path, f"unreadable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
        raise BusiDataError(path, f"not a checkpoint of version {CHECKPOINT_VERSION} of this library")
    old, new = ckpt["identity"]["settings"], identity["settings"]
    diffs = [f"{k}={new.get(k)!r} here, {old.get(k)!r} in the checkpoint" for k in sorted(set(old) | set(new))
             if old.get(k) != new.get(k)]
    if ckpt["identity"]["data"] != identity["data"]:
        diffs.append("the scans or the split differ")
    if diffs:
        raise BusiDataError(
            path, f"written by a run with other settings ({'; '.join(diffs)}): resume with the same settings, "
            "or train into another --out"
        )
    print(f"resume: continuing after epoch {ckpt['epoch'] + 1} (stage {ckpt['stage'] + 1}) from {path}")
    return ckpt


class ResumeEpochs(Callback):
    """Skip the epochs a checkpoint already holds, then put the state back exactly as it was after them.

    fastai's own ``start_epoch`` (``SkipToEpoch``) lets the skipped epochs reach
    the other callbacks, which then fail (``SaveModelCallback`` reads an empty
    record); here they are muted while skipping.
    """

    order = -20  # before every other callback (fastai's TrainEvalCallback is -10)

    def __init__(self, ckpt: dict):
        self.ckpt, self.start, self.muted = ckpt, ckpt["epoch"] + 1, []

    def before_epoch(self):
        if self.epoch < self.start:
            if not self.muted:
                self.muted = [(cb, cb.run) for cb in self.learn.cbs if cb is not self]
                for cb, _ in self.muted:
                    cb.run = False
            raise CancelEpochException
        self._unmute()
        if self.epoch == self.start:
            self._restore()

    def after_fit(self):
        self._unmute()  # a finished run skips every epoch: SaveModelCallback must still load the best model

    def _unmute(self):
        for cb, run in self.muted:
            cb.run = run
        self.muted = []

    def _restore(self):
        c, learn = self.ckpt, self.learn
        device = next(learn.model.parameters()).device
        get_model(learn.model).load_state_dict(c["model"])
        opt = to_device(c["opt"], device)
        learn.opt.load_state_dict(dict(state=opt["state"], hypers=L(opt["hypers"])))
        for cb, saved in zip(_trackers(learn), c["trackers"]):
            cb.best = saved["best"]
            if hasattr(cb, "wait"):
                cb.wait = saved["wait"]
        learn.recorder.smooth_loss.count, learn.recorder.smooth_loss.val = c["smooth_loss"][0], c["smooth_loss"][1]
        learn.train_iter = c["train_iter"]
        _set_rng_states(c["rng"], learn.dls)
