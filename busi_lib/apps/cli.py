"""The ``busi`` command (also ``python -m busi_lib``); every command and option: ``busi COMMAND --help``.

``--data`` defaults to ``$BUSI_DATA_DIR``, else a synthetic BUSI made once in the cache (so every command runs on a
fresh machine). Bad input ends with one line naming the file and the reason, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from busi_lib.config import TrainConfig  # light: no torch, so `busi --help` stays fast
from busi_lib.errors import BusiDataError, BusiError


def _at_least(low: float, kind: type = int):
    """An argparse type: a number of ``kind`` no smaller than ``low`` (a bad value is one usage error line)."""

    def parse(text: str):
        value = kind(text)  # a ValueError here: argparse says "invalid int value: 'x'"
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


COUNT, WHOLE, NON_NEGATIVE = _at_least(1), _at_least(0), _at_least(0.0, float)  # the usual kinds of number


BENCH_FOLDS = 5  # busi bench's k


def _fold_numbers(text: str) -> list[int]:
    """``busi bench --folds``: comma-separated fold numbers 1..BENCH_FOLDS, as 0-based indices."""
    try:
        folds = [int(f) - 1 for f in text.split(",")]
    except ValueError:
        folds = [-1]
    if not all(0 <= f < BENCH_FOLDS for f in folds):
        raise argparse.ArgumentTypeError(f"comma-separated fold numbers from 1 to {BENCH_FOLDS}, got {text}")
    return folds


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default=os.environ.get("BUSI_DATA_DIR"),
        help="BUSI folder (default: $BUSI_DATA_DIR, else a synthetic BUSI)",
    )


def _operating_point_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--operating-point", metavar="NAME", help="decide at this operating point saved with the model "
                   "(youden, sensitivity_95) instead of its own (sensitivity_95, or a site's re-tuned threshold)")


def _sites_arg(p: argparse.ArgumentParser) -> None:
    env = os.environ.get("BUSI_DATA_DIR")
    p.add_argument("--data", nargs="+", default=[env] if env else None,
                   help="BUSI folder (default: $BUSI_DATA_DIR, else a synthetic BUSI), or several data folders, "
                   "each a site: BUSI's layout or a folder with labels.csv (busi data external's output)")
    p.add_argument("--train-sites", nargs="+", metavar="SITE",
                   help="train and validate on these sites only (folder names); the others' scans are only tested")


def _need_sites(data: list | None) -> str | list[str]:
    """``--data`` of train and bench: one folder (as ``_need_data``), or several (sites)."""
    if not data or len(data) == 1:
        return str(_need_data(data[0] if data else None))
    return [str(_need_data(d)) for d in data]


# ---------------------------------------------------------------------- data
def data_summary(data: str | Path, skip_bad: bool = False) -> dict:
    """The figures ``busi data summary`` prints, as a dict."""
    from busi_lib.data.cache import cached_table
    from busi_lib.data.duplicates import duplicate_groups

    df = cached_table(data, skip_bad=skip_bad)
    groups = duplicate_groups(df)
    conflicts = groups[groups["conflict"]]
    return {
        "data": str(data),
        "images": int(len(df)),
        "per_class": {k: int(v) for k, v in df["label"].value_counts().sort_index().items()},
        "mask_files": int(df["n_masks"].sum()),
        "images_with_several_masks": int((df["n_masks"] > 1).sum()),
        "several_masks": sorted(df.loc[df["n_masks"] > 1, "image_id"]),
        "empty_masks": int((df["lesion_area"] == 0).sum()),
        "width": {"min": int(df["width"].min()), "median": float(df["width"].median()), "max": int(df["width"].max())},
        "height": {
            "min": int(df["height"].min()),
            "median": float(df["height"].median()),
            "max": int(df["height"].max()),
        },
        "duplicate_groups": int(len(groups)),
        "images_in_duplicate_groups": int(groups["size"].sum()) if len(groups) else 0,
        "label_conflicts": [{"members": g["members"], "labels": g["labels"]} for _, g in conflicts.iterrows()],
        "phash_threshold": df.attrs.get("phash_threshold"),
        "rejected": [{"file": f, "reason": r} for f, r in df.attrs.get("rejected", [])],
    }


def _print_summary(s: dict) -> None:
    print(f"BUSI folder: {s['data']}")
    print(f"images: {s['images']}  " + "  ".join(f"{k}: {v}" for k, v in s["per_class"].items()))
    print(f"mask files: {s['mask_files']}; images with several mask files: {s['images_with_several_masks']}")
    print(f"images with an empty mask: {s['empty_masks']}")
    w, h = s["width"], s["height"]
    print(f"width  min/median/max: {w['min']} / {w['median']:.0f} / {w['max']}")
    print(f"height min/median/max: {h['min']} / {h['median']:.0f} / {h['max']}")
    print(
        f"near-duplicate groups (pHash distance <= {s['phash_threshold']}): {s['duplicate_groups']} "
        f"groups holding {s['images_in_duplicate_groups']} images"
    )
    print(f"label conflicts: {len(s['label_conflicts'])}")
    for c in s["label_conflicts"]:
        print(f"  {', '.join(c['members'])}  ({' vs '.join(c['labels'])})")
    print(f"rejected files: {len(s['rejected'])}")
    for r in s["rejected"]:
        print(f"  {r['file']}: {r['reason']}")


def cmd_data(args: argparse.Namespace) -> int:
    """``busi data ...``: summary, synthetic, download, verify, split, external."""
    if args.data_cmd == "summary":
        s = data_summary(_need_data(args.data), skip_bad=args.skip_bad)
        print(json.dumps(s, indent=2)) if args.json else _print_summary(s)
    elif args.data_cmd == "synthetic":
        from busi_lib.data.synthetic import make_synthetic_busi

        out = make_synthetic_busi(args.out, n_per_class=args.n_per_class, seed=args.seed, overwrite=args.overwrite)
        print(f"synthetic BUSI written to {out}")
    elif args.data_cmd == "download" and args.dataset != "busi":
        from busi_lib.data.download import download_public_set

        out = download_public_set(args.dataset, args.to)
        print(f"{args.dataset} is in {out}, as published\n"
              f"next: busi data external {args.dataset} {out} --out data/{args.dataset}")
    elif args.data_cmd == "download":
        from busi_lib.data.download import download_busi

        out = download_busi(args.to, verify=not args.no_verify)
        print(f"BUSI is in {out}\nexport BUSI_DATA_DIR={out}")
    elif args.data_cmd == "verify":
        from busi_lib.data.download import verify_folder

        res = verify_folder(_need_data(args.data))
        print(res)
        return 0 if res.ok else 1
    elif args.data_cmd == "split":
        from busi_lib.data.dataset import load_dataset
        from busi_lib.data.splits import kfold_split, save_split, split_report, train_valid_test_split

        df = load_dataset(_need_data(args.data))
        split = kfold_split(df, args.folds, args.seed) if args.folds else train_valid_test_split(df, seed=args.seed)
        save_split(split, args.out)
        print(split_report(df, split).to_string())
        print(f"split written to {args.out}")
    elif args.data_cmd == "external":
        from busi_lib.data.external_sets import convert_external

        conv = convert_external(args.name, args.source, args.out, skip_bad=args.skip_bad, hardlink=args.hardlink,
                                progress=not args.json)
        if args.json:
            print(json.dumps(conv.to_dict(), indent=2))
        else:
            print(conv.summary())
            print(f"next: busi evaluate --model MODEL_DIR --data {conv.out} --labels {conv.labels} --out EVAL_DIR")
    return 0


def _need_data(data) -> Path:
    """The data folder: ``--data``, else ``$BUSI_DATA_DIR``, else the synthetic BUSI (said on stderr)."""
    from busi_lib.data.dataset import resolve_data_dir

    path, real = resolve_data_dir(data)
    if not data and not real:
        print(f"busi: no --data and no BUSI_DATA_DIR: using the synthetic BUSI at {path}", file=sys.stderr)
    return path


# --------------------------------------------------------------------- train
PRECISION_HELP = ("fp32; bf16 (bfloat16 autocast: CUDA GPUs from Ampere on); fp16 (float16 autocast with loss "
                  "scaling, CUDA only); mixed (bf16 where the GPU has it, else fp16; fp32 without a GPU)")


def _precision_arg(p: argparse.ArgumentParser, default) -> None:
    from busi_lib.names import PRECISIONS

    shown = "the profile's" if default is None else default
    p.add_argument("--precision", choices=PRECISIONS, default=default,
                   help=f"{PRECISION_HELP} (default: {shown})")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from busi_lib.names import ARCHS, AUGMENTATIONS, DECODER_NORMS, MODEL_ALIASES

    d = TrainConfig()

    def shown(name):  # the default of an option that a profile sets
        return f"the profile's; without --profile {getattr(d, name)}"

    p.add_argument("--profile", choices=["smoke", "cpu", "gpu"],
                   help="start from a profile's settings for --arch (busi_lib/profiles.py); options given "
                   "explicitly win")
    p.add_argument("--arch", default=d.arch, help=f"{', '.join(ARCHS)}, a model name ({', '.join(MODEL_ALIASES)}), "
                   "or a torchvision / timm classifier (resnet50, vgg16_bn, vit_*, swin_*) (default: %(default)s)")
    p.add_argument("--out", required=True)
    p.add_argument("--split", help="split CSV to reuse (default: a new seeded split)")
    p.add_argument("--seed", type=WHOLE, default=d.seed)
    p.add_argument("--image-size", type=_at_least(32), help=f"default: {shown('image_size')}")
    p.add_argument("--epochs", type=COUNT, help=f"default: {shown('epochs')}")
    p.add_argument("--batch-size", type=COUNT, help=f"default: {shown('batch_size')}")
    p.add_argument("--lr", type=NON_NEGATIVE,
                   help=f"learning rate; 0 = fastai's lr_find suggestion (default: {shown('lr')})")
    p.add_argument("--freeze-epochs", type=WHOLE, help="transfer classifiers: head-only epochs before the whole "
                   "network trains (default: fastai's fine_tune for a pretrained body)")
    p.add_argument("--lr-mult", type=NON_NEGATIVE, help="transfer classifiers: the body's rate is lr / this")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default=d.optimizer)
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction,
                   help=f"ImageNet weights for the transfer models (default: {shown('pretrained')})")
    p.add_argument("--encoder", help="encoder of uresnet/multitask: tf_efficientnet_lite0 (weights from pip), "
                   f"resnet18, resnet50 (default: {shown('encoder')})")
    p.add_argument("--decoder-norm", choices=DECODER_NORMS, default=d.decoder_norm,
                   help="normalisation in the U-Net decoder of unet/uresnet/multitask: per-scan instance or group "
                   "norm instead of batch norm (models that travel; default: %(default)s)")
    p.add_argument("--augment", choices=AUGMENTATIONS,
                   help="training augmentation: geometry = flips and affine only; scanner = geometry and gain, "
                   f"gamma, speckle, blur, low resolution (default: {shown('augment')})")
    p.add_argument("--aspect-crop", action=argparse.BooleanOptionalAction, default=d.aspect_crop,
                   help="random aspect-ratio crops that keep the whole lesion (default: off)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                   help=f"PyTorch's channels_last memory format (default: {shown('channels_last')})")
    _precision_arg(p, None)
    p.add_argument("--w-cls", type=NON_NEGATIVE, default=d.w_cls)
    p.add_argument("--w-seg", type=NON_NEGATIVE, default=d.w_seg)
    p.add_argument("--dice-weight", type=NON_NEGATIVE, default=d.dice_weight)
    p.add_argument("--patience", type=COUNT, default=None, help="early stopping patience (epochs)")
    p.add_argument("--monitor", default=d.monitor)
    p.add_argument("--max-images", type=COUNT, default=None, help="train on a stratified subset (quick runs)")
    p.add_argument("--tta", action="store_true", help="also report flip test-time augmentation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """``busi train``'s ``TrainConfig``: the profile's settings for ``--arch`` (without ``--profile``: the
    dataclass's defaults), overridden by every option given explicitly."""
    from dataclasses import fields

    from busi_lib.names import MODEL_ALIASES
    from busi_lib.profiles import settings_for

    # every option has the name of a TrainConfig field (dashes become underscores); None: not given
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    if args.lr == 0:
        given["lr"] = None  # fastai's lr_find chooses
    base = settings_for(args.profile, args.arch) if args.profile else dict(MODEL_ALIASES.get(args.arch, {}))
    return TrainConfig(**{**base, **given, "arch": base.get("arch", args.arch),
                          "data": _need_sites(args.data), "progress": not args.quiet})


def cmd_train(args: argparse.Namespace) -> int:
    """``busi train``: one training run from the options (each named as a ``TrainConfig`` field)."""
    from busi_lib.training.learners import train

    cfg = train_config(args)
    from busi_lib.training.distributed import is_main_process

    t0 = time.time()
    res = train(cfg)
    if is_main_process():  # under `accelerate launch`, one report, not one per process
        _print_metrics(res.metrics)
        print(f"done in {time.time() - t0:.0f} s; model and metrics in {res.out}")
    return 0


def _print_metrics(m: dict) -> None:
    for part in ("valid", "test"):
        if part not in m:
            continue
        for kind, vals in m[part].items():
            keys = [k for k in vals if not k.startswith(("tp", "fp", "tn", "fn", "n"))]
            print(f"{part:5s} {kind:14s} " + "  ".join(f"{k}={vals[k]:.3f}" for k in keys if vals[k] is not None))


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``busi evaluate``: score a saved model on a folder it never saw (see :mod:`busi_lib.apps.external`)."""
    from busi_lib.apps.external import evaluate_model

    ev = evaluate_model(
        args.model, _need_data(args.data), labels=args.labels, columns=dict(args.column or []) or None,
        split=args.split, part=args.part, out=args.out, tta=args.tta, n_boot=args.n_boot, seed=args.seed,
        n_bins=args.n_bins, batch_size=args.batch_size, progress=not args.quiet, adapt_bn=args.adapt_bn,
        calibration_size=args.calibration_size, save_model_to=args.save_model, operating_point=args.operating_point,
    )
    _print_evaluation(ev.metrics)
    print(f"report: {Path(args.out) / 'report.md'}  (every number: evaluation.json, every image: predictions.csv)")
    return 0


def _print_evaluation(m: dict) -> None:
    def line(title, values, cis, keys):
        parts = [f"{k}={values[k]:.3f} [{cis[k][0]:.3f}, {cis[k][1]:.3f}]" for k in keys if k in values]
        print(f"{title}: " + "  ".join(parts))

    n_pat = f", {m['n_patients']} patients" if m.get("n_patients") else ""
    print(f"{m['data']}: {m['n_images']} images{n_pat}; 95% CIs resample {m['bootstrap']['unit']}s")
    for note in m.get("notes", []):
        print(f"  note: {note}")
    for s in m.get("skipped", []):
        print(f"  skipped {s['file']}: {s['reason']}")
    keys = ("roc_auc", "accuracy", "sensitivity", "specificity", "f1")
    if "classification" in m:
        line(f"classification (threshold {m['threshold']:.3f}, saved with the model)", m["classification"],
             m["classification_ci"], keys)
        if "patient" in m:
            line("per patient", m["patient"]["classification"], m["patient"]["classification_ci"], keys)
        if "optimistic" in m:
            o = m["optimistic"]
            print(f"optimistic (threshold {o['threshold']:.3f} chosen on this data): "
                  + "  ".join(f"{k}={o['classification'][k]:.3f}" for k in keys[1:]))
        cal = m["calibration"]
        after = cal["after"]
        print(f"calibration ({cal['n_bins']} equal-width bins): ECE {cal['before']['ece']:.3f}, "
              f"Brier {cal['before']['brier']:.3f}"
              + (f"; after temperature {after['temperature']:.2f}: ECE {after['ece']:.3f}, Brier {after['brier']:.3f}"
                 if after else ""))
    if m.get("site_threshold", {}).get("threshold") is not None:
        st = m["site_threshold"]
        print(f"re-tuned on a calibration part ({st['n_calibration_images']} images, {st['unit']}-grouped, seed "
              f"{st['seed']}): threshold {st['threshold']:.3f}, scored on the other {st['n_scored_images']}: "
              + "  ".join(f"{k}={st['classification'][k]:.3f}" for k in keys[1:])
              + f"  (saved threshold there: accuracy={st['saved_threshold_classification']['accuracy']:.3f})")
    elif m.get("site_threshold"):
        print(f"calibration part: {m['site_threshold']['note']}")
    for name, op in (m.get("operating_points") or {}).items():
        print(f"operating point {name} (threshold {op['threshold']:.3f}{', used' if op['used'] else ''}): "
              + "  ".join(f"{k}={op[k]:.3f} [{op['ci95'][k][0]:.3f}, {op['ci95'][k][1]:.3f}]"
                          for k in ("sensitivity", "specificity")))
    if m.get("site_model"):
        print(f"saved for this site: {m['site_model']} (busi predict --model {m['site_model']} uses the re-tuned "
              "threshold)")
    if "segmentation" in m:
        line("segmentation", m["segmentation"], m["segmentation_ci"], ("dice_pooled", "iou_pooled", "dice_per_image"))


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``busi calibrate``: fit the model's temperature on the validation part of its split, save it in config.json."""
    from busi_lib.apps.external import fit_model_temperature

    split = Path(args.split) if args.split else Path(args.model).resolve().parent / "split.csv"
    if not split.is_file():
        raise BusiDataError(split, "split file not found (give the training run's split.csv with --split)")
    fit = fit_model_temperature(args.model, _need_data(args.data), split, part=args.part, n_bins=args.n_bins,
                                batch_size=args.batch_size, progress=not args.quiet)
    print(f"temperature {fit['temperature']:.3f} fitted on the '{args.part}' part ({fit['n']} images): "
          f"NLL {fit['nll_before']:.3f} -> {fit['nll_after']:.3f}, ECE ({args.n_bins} bins) "
          f"{fit['ece_before']:.3f} -> {fit['ece_after']:.3f}")
    if "warning" in fit:
        print(f"busi calibrate: warning: {fit['warning']}", file=sys.stderr)
    print(f"saved in {Path(args.model) / 'config.json'}; `busi evaluate` now reports calibration before and after")
    return 0


# ------------------------------------------------------------------- predict
def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _calibration_size(text: str) -> float:
    value = float(text)
    if not value > 0 or (value >= 1 and value != int(value)):
        raise argparse.ArgumentTypeError(f"a fraction between 0 and 1 or a whole number, got {text}")
    return int(value) if value >= 1 else value


def cmd_predict(args: argparse.Namespace) -> int:
    """Exit status: 0 all scans predicted; 1 some files unreadable, the others done; 2 nothing predicted."""
    from busi_lib.apps.predict import best_device, measure_speed, predict_folder

    if args.benchmark:
        from busi_lib.evaluation.ensemble import load_models

        model, config = load_models(args.model, device=best_device())
        s = measure_speed(model, config, batch_size=args.batch_size)
        print(f"{s['arch']} ({s['encoder']}) at {s['image_size']} px on {s['device']}, {s['threads']} threads: "
              f"{s['images_per_s_batch']} images/s in batches of {s['batch_size']}, "
              f"{s['images_per_s_single']} images/s one at a time")
        return 0
    if not args.inputs or not args.out:
        raise BusiDataError(None, "busi predict needs scans or folders and --out (or --benchmark)")
    rep = predict_folder(args.model, args.inputs, args.out, threshold=args.threshold, cam=args.cam,
                         batch_size=args.batch_size, adapt_bn=args.adapt_bn, operating_point=args.operating_point)
    if rep.adaptation and not args.quiet:
        print(f"BatchNorm statistics re-estimated on the {rep.adaptation['n_images']} readable scans "
              "(in memory; the model folder is unchanged)")
    for _, row in rep.failed.iterrows():
        print(f"busi predict: skipped {row['file']}: {row['error']}", file=sys.stderr)
    if not args.quiet:
        print(rep.operating_point)
    print(f"{len(rep.done)} scans predicted, {len(rep.failed)} unreadable; results in {rep.csv}")
    if rep.failed.empty:
        return 0
    return 1 if len(rep.done) else 2


# --------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    """``busi bench``: cross-validate the study's models."""
    from busi_lib.apps.bench import run_bench

    overrides = dict(epochs=args.epochs, image_size=args.image_size, encoder=args.encoder,
                     precision=args.precision, train_sites=args.train_sites)
    res = run_bench(_need_sites(args.data), args.out, models=args.models, profile=args.profile, k=BENCH_FOLDS,
                    seed=args.seed, n_boot=args.n_boot, folds=args.folds, protocol=args.protocol,
                    progress=not args.quiet, **overrides)
    from busi_lib.training.distributed import is_main_process

    if is_main_process():
        print(f"results in {Path(args.out) / 'results.json'} and {Path(args.out) / 'RESULTS.md'} "
              f"({res['wall_seconds'] / 60:.1f} min)")
    return 0


# ----------------------------------------------------------------- notebooks
def cmd_notebooks(args: argparse.Namespace) -> int:
    """``busi notebooks``: run every numbered notebook in order through papermill."""
    from busi_lib.apps.runner import NotebookFailed, parse_value, run_notebooks

    params = {name: parse_value(value) for name, value in (args.param or [])}
    try:
        res = run_notebooks(args.profile, data=args.data, out=args.out, params=params, only=args.only,
                            cell_timeout=args.cell_timeout)
    except NotebookFailed as e:
        print(f"busi notebooks: {e}", file=sys.stderr)
        return 1
    print(f"summary: {res.summary_csv} and {res.summary_md}")
    return 0


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The ``busi`` command's parser: every sub-command and option (building it imports no torch)."""
    parser = argparse.ArgumentParser(prog="busi", description="Deep learning on breast ultrasound (BUSI).")
    sub = parser.add_subparsers(dest="cmd", required=True)

    data = sub.add_parser("data", help="inspect, generate, download, convert or split data")
    dsub = data.add_subparsers(dest="data_cmd", required=True)
    p = dsub.add_parser("summary", help="counts, sizes, duplicate groups and rejected files")
    _data_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--skip-bad", action="store_true", help="report bad files and go on")
    p = dsub.add_parser("synthetic", help="write a synthetic BUSI-like folder")
    p.add_argument("--out", required=True)
    p.add_argument("--n-per-class", type=COUNT, default=40)
    p.add_argument("--seed", type=WHOLE, default=0)
    p.add_argument("--overwrite", action="store_true")
    p = dsub.add_parser("download", help="download and verify the real BUSI, or a public external set")
    p.add_argument("--to", required=True)
    p.add_argument("--dataset", choices=["busi", "busbra"], default="busi",
                   help="busi (default; pixel-verified), busbra (Zenodo archive, SHA-256 checked)")
    p.add_argument("--no-verify", action="store_true", help="keep BUSI even if its pixels differ from the reference")
    p = dsub.add_parser("verify", help="check a folder against BUSI's pixel fingerprint")
    _data_arg(p)
    p = dsub.add_parser("split", help="write a seeded, group-aware split CSV")
    _data_arg(p)
    p.add_argument("--out", required=True)
    p.add_argument("--folds", type=WHOLE, default=0, help="k-fold cross-validation (0: train/valid/test)")
    p.add_argument("--seed", type=WHOLE, default=42)
    p = dsub.add_parser("external", help="turn BUS-BRA, unpacked as published, into a folder with a labels CSV "
                        "for `busi evaluate`")
    p.add_argument("name", choices=["busbra"], help="the public set")
    p.add_argument("source", metavar="SOURCE_DIR", help="the set as unpacked (only read, never written)")
    p.add_argument("--out", required=True, help="new folder for labels.csv, images/ and masks/ (not inside SOURCE_DIR)")
    p.add_argument("--skip-bad", action="store_true", help="report bad rows and files and go on")
    p.add_argument("--hardlink", action="store_true", help="hard-link the scans instead of copying them")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    data.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train one model")
    _sites_arg(p)
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a saved model on a folder it never saw (external validation)")
    p.add_argument("--model", required=True, nargs="+", action="extend",
                   help="saved model folder(s): a model/, a run or fold folder holding model/, or a folder of fold "
                   "runs; several are averaged (an ensemble, threshold: the mean of theirs)")
    _data_arg(p)
    p.add_argument("--labels", help="labels CSV (image path relative to --data, label; optional mask, patient_id); "
                   "without it --data must have the BUSI layout")
    p.add_argument("--column", nargs=2, action="append", metavar=("ROLE", "NAME"),
                   help="the CSV column holding ROLE (image, label, mask, patient), if not a standard name")
    p.add_argument("--split", help="split CSV; with --part, score only that part")
    p.add_argument("--part", default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--n-boot", type=COUNT, default=1000, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--n-bins", type=COUNT, default=10, help="equal-width calibration bins (default: %(default)s)")
    p.add_argument("--seed", type=WHOLE, default=0, help="bootstrap seed")
    p.add_argument("--batch-size", type=COUNT, default=32)
    p.add_argument("--adapt-bn", action=argparse.BooleanOptionalAction,
                   help="re-estimate BatchNorm statistics on the scored scans first (AdaBN; images only, no labels; "
                   "default: on at a site the model was not calibrated on, with 32 scans or more)")
    p.add_argument("--calibration-size", type=_calibration_size, metavar="F_OR_N",
                   help="also re-tune the threshold on a labelled part of this site (fraction < 1 or a number of "
                   "patients, images without ids; seeded by --seed) and score the rest")
    _operating_point_arg(p)
    p.add_argument("--save-model", metavar="DIR", help="with --calibration-size: write a copy of the model that "
                   "uses the re-tuned threshold (for busi predict at this site; a new folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("calibrate", help="fit a probability temperature on the validation part; save it with the model")
    p.add_argument("--model", required=True, help="saved model folder; its config.json gets 'temperature'")
    _data_arg(p)
    p.add_argument("--split", help="the training run's split CSV (default: split.csv beside the model folder)")
    p.add_argument("--part", default="valid", help="the part to fit on (default: %(default)s; never the test part)")
    p.add_argument("--n-bins", type=COUNT, default=10)
    p.add_argument("--batch-size", type=COUNT, default=32)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_calibrate)
    from busi_lib.profiles import STUDY_MODELS

    p = sub.add_parser("bench", help="cross-validate every model")
    _sites_arg(p)
    p.add_argument("--out", required=True)
    p.add_argument("--protocol", choices=["cv5", "loso"], default="cv5",
                   help="cv5: 5-fold cross-validation; loso: leave one site out (several --data folders)")
    p.add_argument("--models", nargs="+", default=list(STUDY_MODELS), help="default: %(default)s")
    p.add_argument("--profile", choices=["smoke", "cpu", "gpu"], default="cpu")
    p.add_argument("--folds", type=_fold_numbers, help="comma-separated fold numbers 1..5 (default: the profile's "
                   "choice)")
    p.add_argument("--epochs", type=COUNT, help="override the profile's epochs")
    p.add_argument("--image-size", type=_at_least(32), help="override the profile's image size")
    p.add_argument("--encoder", help="override the profile's encoder of uresnet / multitask")
    _precision_arg(p, None)
    p.add_argument("--seed", type=WHOLE, default=42)
    p.add_argument("--n-boot", type=COUNT, default=1000)
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines, only a line per fold")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("notebooks", help="run every numbered notebook in order (papermill)")
    p.add_argument("--profile", choices=["smoke", "cpu", "gpu"], default="cpu")
    p.add_argument("--data", help="BUSI folder for the notebooks (default: $BUSI_DATA_DIR, else a synthetic BUSI)")
    p.add_argument("--out", help="folder for executed notebooks, outputs and summary (default: runs/notebooks)")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a notebook parameter; VALUE is read like papermill's -p / -y (numbers, True, lists)")
    p.add_argument("--only", nargs="+", help="run only notebooks whose names start with these (e.g. 01 05)")
    p.add_argument("--cell-timeout", type=COUNT, help="seconds per cell (default: 300 for smoke, 4 h otherwise)")
    p.set_defaults(func=cmd_notebooks)
    p = sub.add_parser("predict", help="probability, label, lesion mask, overlay (and Grad-CAM) for new scans")
    p.add_argument("--model", required=True, action="append",
                   help="a saved model folder (busi train's <out>/model, or <out>); repeat --model for an ensemble "
                   "(probabilities averaged)")
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_FOLDER", help="scans, or folders walked for scans")
    p.add_argument("--out", help="output folder (never an input folder)")
    p.add_argument("--threshold", type=_probability, help="malignant when probability >= this (default: the model's)")
    _operating_point_arg(p)
    p.add_argument("--cam", action="store_true", help="also write a Grad-CAM heatmap of the classification")
    p.add_argument("--batch-size", type=COUNT, default=16)
    p.add_argument("--adapt-bn", action=argparse.BooleanOptionalAction,
                   help="re-estimate BatchNorm statistics on the given scans first (AdaBN; in memory only; "
                   "default: as the model says, on for a site's re-tuned copy that was adapted there)")
    p.add_argument("--benchmark", action="store_true", help="measure images per second instead (no inputs)")
    p.add_argument("--quiet", action="store_true", help="print only the summary line (and unreadable files)")
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``busi`` with ``argv`` (default: the command line); bad input is one line on stderr and exit 2."""
    from busi_lib.ui.quiet import quiet_known_warnings

    quiet_known_warnings()  # the same narrow filters as the notebooks: no library warning a user cannot act on
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (BusiError, ValueError) as e:  # bad input or value, missing weights, a failed notebook: one line
        print(f"busi: error: {e}", file=sys.stderr)
        return 2
    finally:
        if "torch.distributed" in sys.modules:  # only a command that imported torch can have joined a process group
            from busi_lib.training.distributed import (
                stop_processes,  # heavy (torch, fastai): not imported for `busi --help`
            )

            stop_processes()  # under accelerate launch / torchrun: leave the process group before exiting


if __name__ == "__main__":
    sys.exit(main())
