"""How fast does each model train and predict here, and what does fastai cost? (RESULTS.md, "Encoder speed")

    python tools/speed.py --data $BUSI_DATA_DIR --out runs/speed --profile cpu --models multitask \
        --encoder tf_efficientnet_lite0 resnet18 --channels-last both


For each model, at its profile's training image size and batch size, in a fresh
process (so that peak memory belongs to that model alone):

* data loading: images per second through the training DataLoader alone
  (decode is cached; augmentation runs here), to show it is not the bottleneck;
* training: images per second of the project's fastai ``Learner`` (``fit`` over
  the same number of batches, timed from the second batch to fastai's
  ``after_train`` event, so the warm-up batch and validation are left out), and of a plain PyTorch loop over the same
  network, loss, optimiser and batches — the ratio is fastai's overhead;
* inference: images per second in batches and one image at a time;
* peak resident memory of the process (``ru_maxrss``).

``encoders`` measures ``uresnet``/``multitask`` once per encoder (for example
EfficientNet-Lite0 against ResNet-18 and ResNet-34), and ``channels_last`` in
``(False, True)`` measures each model in PyTorch's default memory format and in
``channels_last`` (fastai's ``Learner.to_channelslast(use_amp=False)``; the plain
loop converts the model the same way). ``precisions`` (``--precision fp32 mixed``)
measures each model in float32 and in mixed precision (:mod:`busi_lib.training.hardware`; the
plain loop autocasts and scales the loss the same way). On a GPU the clock is read
after ``torch.cuda.synchronize()``. The cpu profile's encoder, image size and
epochs were chosen from these figures (RESULTS.md).

The plain loop is written here by hand on purpose: it is the yardstick.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from fastai.callback.core import Callback

from busi_lib.config import TrainConfig
from busi_lib.files import atomic_write_bytes, write_json
from busi_lib.profiles import STUDY_MODELS, settings_for
from busi_lib.training.hardware import resolve_precision
from busi_lib.training.learners import build_learner, environment, prepare_data

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(precision: str, device: str) -> AbstractContextManager:
    """``torch.autocast`` for a resolved precision (a no-op context for fp32), for the plain loop."""
    return nullcontext() if precision == "fp32" else torch.autocast(device, dtype=DTYPES[precision])


N_BATCHES = 8  # timed training batches per measurement (after one warm-up batch)


def _rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 1024**2


def measure(arch: str, data: str, profile: str = "cpu", n_batches: int = N_BATCHES, seed: int = 0,
            encoder: str | None = None, channels_last: bool = False, precision: str = "fp32") -> dict:
    """Throughput figures of one model (runs in the calling process)."""


    kw = settings_for(profile, arch, encoder=encoder)
    kw["channels_last"] = channels_last
    kw["precision"] = precision
    used = resolve_precision(precision)
    kw["pretrained"] = False  # speed does not depend on the starting weights
    kw["max_images"] = None
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(**kw, data=data, out=tmp, seed=seed, progress=False)
        _, _, dls = prepare_data(cfg)
        bs = cfg.batch_size
        n_batches = min(n_batches, len(dls.train_ds) // bs - 1)  # warm-up + timed batches fit one epoch
        batches = []
        t0 = time.perf_counter()
        for i, b in enumerate(dls.train):
            batches.append(b)
            if i == n_batches:
                break
        load_ips = len(batches) * bs / (time.perf_counter() - t0)

        # fastai: train on exactly these batches; time the training phase only
        class Timer(Callback):
            order = -100

            def before_batch(self):
                if self.training and self.iter == 1:  # the first batch is a warm-up, as in the plain loop
                    self.t0 = time.perf_counter()

            def after_train(self):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()  # GPU work is asynchronous: wait for it before reading the clock
                self.seconds = time.perf_counter() - self.t0

        learn = build_learner(dls, cfg)  # channels_last: fastai's Learner.to_channelslast(use_amp=False)
        learn.dls.train.n = (n_batches + 1) * bs  # one epoch = warm-up batch + timed batches
        learn.dls.valid.n = min(bs, len(dls.valid_ds))  # validation is not timed; keep it short
        timer = Timer()
        with learn.no_bar(), learn.no_logging():
            learn.fit(1, cfg.lr or 1e-3, cbs=[timer])
        fastai_ips = n_batches * bs / timer.seconds

        # the plain PyTorch loop over the same network, loss and optimiser (and the same autocast and loss scaling)
        torch.manual_seed(seed)
        model = learn.model
        loss_func = learn.loss_func
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr or 1e-3)
        device = next(model.parameters()).device.type
        scaler = torch.amp.GradScaler(device, enabled=used == "fp16")
        model.train()

        def sync():
            if device == "cuda":
                torch.cuda.synchronize()

        def step(b):
            with autocast_context(used, device):
                out = model(b[0])
                loss = loss_func(out, *b[1:])
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        step(batches[0])  # warm-up
        sync()
        t0 = time.perf_counter()
        for b in batches[1:]:
            step(b)
        sync()
        plain_ips = (len(batches) - 1) * bs / (time.perf_counter() - t0)

        model.eval()
        x = batches[0][0]
        with torch.no_grad(), autocast_context(used, device):
            model(x)
            sync()
            t0 = time.perf_counter()
            for _ in range(3):
                model(x)
            sync()
            batch_ips = 3 * len(x) / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            for i in range(len(x)):
                model(x[i : i + 1])
            sync()
            single_ips = len(x) / (time.perf_counter() - t0)
    return {
        "arch": cfg.arch,
        "encoder": cfg.encoder if cfg.task != "classify" else None,
        "channels_last": channels_last,
        "precision": used,
        "image_size": cfg.image_size,
        "batch_size": bs,
        "threads": torch.get_num_threads(),
        "loading_images_per_s": round(load_ips, 1),
        "train_images_per_s_fastai": round(fastai_ips, 2),
        "train_images_per_s_plain": round(plain_ips, 2),
        "fastai_to_plain": round(fastai_ips / plain_ips, 3),
        "infer_images_per_s_batch": round(batch_ips, 1),
        "infer_images_per_s_single": round(single_ips, 1),
        "peak_rss_mb": round(_rss_mb(), 0),
    }


def _child(arch, data, profile, n_batches, encoder, channels_last, precision, q):
    try:
        q.put(measure(arch, data, profile, n_batches, encoder=encoder, channels_last=channels_last,
                      precision=precision))
    except Exception as e:  # report the failure of one model, keep measuring the others
        q.put({"arch": arch, "error": f"{type(e).__name__}: {e}"})


def run_speed(data: str, out: str, models: Sequence[str] = STUDY_MODELS, profile: str = "cpu",
              n_batches: int = N_BATCHES, log: Callable[[str], None] = print, encoders: list[str] | None = None,
              channels_last: Sequence[bool] = (False,),
              precisions: list[str] | None = None) -> list[dict]:
    """Measure every model (each encoder of ``encoders`` for the encoder models, each memory format of
    ``channels_last``, each precision of ``precisions``: default fp32) in its own process; write ``speed.json``
    and ``speed.md`` into ``out``."""

    ctx = mp.get_context("spawn")
    rows = []
    for arch in models:
        uses_encoder = arch in ("uresnet", "multitask")
        for encoder in (encoders or [None]) if uses_encoder else [None]:
            for cl in channels_last:
                for precision in precisions or ["fp32"]:
                    q = ctx.Queue()
                    p = ctx.Process(target=_child, args=(arch, data, profile, n_batches, encoder, cl, precision, q))
                    p.start()
                    row = q.get()
                    p.join()
                    row["model"] = arch
                    rows.append(row)
                    log(speed_line(row))
    out = Path(out)
    write_json(out / "speed.json", {"profile": profile, "rows": rows, "environment": environment()})
    atomic_write_bytes(out / "speed.md", speed_markdown(rows).encode())
    return rows


def _name(r: dict) -> str:
    """``multitask · tf_efficientnet_lite0 · channels_last · bf16``: the model, its encoder, memory format and
    precision (float32 unnamed)."""
    parts = [r["model"]] + ([r["encoder"]] if r.get("encoder") else [])
    parts += ["channels_last"] if r.get("channels_last") else []
    return " · ".join(parts + ([r["precision"]] if r.get("precision", "fp32") != "fp32" else []))


def speed_line(r: dict) -> str:
    """One measured row as the line this tool prints."""
    if "error" in r:
        return f"{_name(r):12s} failed: {r['error']}"
    return (f"{_name(r):12s} {r['image_size']:4d} px  load {r['loading_images_per_s']:7.1f} img/s  "
            f"train fastai {r['train_images_per_s_fastai']:6.2f} / plain {r['train_images_per_s_plain']:6.2f} img/s "
            f"(x{r['fastai_to_plain']:.2f})  infer {r['infer_images_per_s_batch']:6.1f} batch / "
            f"{r['infer_images_per_s_single']:6.1f} single img/s  peak {r['peak_rss_mb']:.0f} MB")


def speed_markdown(rows: list[dict]) -> str:
    """The measured rows as a Markdown table (the speed section of RESULTS.md)."""
    lines = [
        "| model | image size | loading (img/s) | training, fastai (img/s) | training, plain PyTorch (img/s) "
        "| fastai / plain | inference, batch (img/s) | inference, one image (img/s) | peak memory (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {_name(r)} | failed: {r['error']} |")
            continue
        lines.append(
            f"| {_name(r)} ({r['arch']}) | {r['image_size']} | {r['loading_images_per_s']:.0f} | "
            f"{r['train_images_per_s_fastai']:.1f} | {r['train_images_per_s_plain']:.1f} | "
            f"{r['fastai_to_plain']:.2f} | {r['infer_images_per_s_batch']:.1f} | "
            f"{r['infer_images_per_s_single']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from busi_lib.names import PRECISIONS
    from busi_lib.profiles import PROFILES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", nargs="+", default=list(STUDY_MODELS))
    ap.add_argument("--profile", choices=list(PROFILES), default="cpu")
    ap.add_argument("--encoder", nargs="+", help="encoders of uresnet / multitask, each measured")
    ap.add_argument("--channels-last", choices=["no", "yes", "both"], default="no")
    ap.add_argument("--precision", nargs="+", choices=PRECISIONS, help="each measured (default: the profile's)")
    args = ap.parse_args(argv)
    run_speed(args.data, args.out, models=args.models, profile=args.profile, encoders=args.encoder,
              channels_last={"no": (False,), "yes": (True,), "both": (False, True)}[args.channels_last],
              precisions=args.precision or [PROFILES[args.profile]["precision"]])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
