"""The ``busi`` command (also ``python -m busi_lib``).

::

    busi data summary   --data DIR [--json] [--skip-bad]
    busi data synthetic --out DIR [--n-per-class N] [--seed S]
    busi data download  --to DIR [--no-verify]
    busi data verify    --data DIR
    busi data split     --data DIR --out CSV [--folds K] [--seed S]
    busi train          --arch NAME --data DIR --out DIR [options]
    busi evaluate       --model DIR --data DIR [--split CSV] --out DIR

``--data`` defaults to ``$BUSI_DATA_DIR``, and without it to a synthetic BUSI
generated once into the cache folder (so every command runs on a fresh machine). Bad input ends with one line naming
the file and the reason, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .errors import BusiDataError


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default=os.environ.get("BUSI_DATA_DIR"),
        help="BUSI folder (default: $BUSI_DATA_DIR, else a synthetic BUSI)",
    )


# ---------------------------------------------------------------------- data
def data_summary(data, skip_bad: bool = False) -> dict:
    """The figures ``busi data summary`` prints, as a dict."""
    from .cache import cached_table
    from .duplicates import duplicate_groups

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


def cmd_data(args) -> int:
    if args.data_cmd == "summary":
        s = data_summary(_need_data(args.data), skip_bad=args.skip_bad)
        print(json.dumps(s, indent=2)) if args.json else _print_summary(s)
    elif args.data_cmd == "synthetic":
        from .synthetic import make_synthetic_busi

        out = make_synthetic_busi(args.out, n_per_class=args.n_per_class, seed=args.seed, overwrite=args.overwrite)
        print(f"synthetic BUSI written to {out}")
    elif args.data_cmd == "download":
        from .download import download_busi

        out = download_busi(args.to, verify=not args.no_verify)
        print(f"BUSI is in {out}\nexport BUSI_DATA_DIR={out}")
    elif args.data_cmd == "verify":
        from .download import verify_folder

        res = verify_folder(_need_data(args.data))
        print(res)
        return 0 if res.ok else 1
    elif args.data_cmd == "split":
        from .data import load_dataset
        from .splits import kfold_split, save_split, split_report, train_valid_test_split

        df = load_dataset(_need_data(args.data))
        split = kfold_split(df, args.folds, args.seed) if args.folds else train_valid_test_split(df, seed=args.seed)
        save_split(split, args.out)
        print(split_report(df, split).to_string())
        print(f"split written to {args.out}")
    return 0


def _need_data(data) -> Path:
    """The data folder: ``--data``, else ``$BUSI_DATA_DIR``, else the synthetic BUSI (said on stderr)."""
    from .data import resolve_data_dir

    path, real = resolve_data_dir(data)
    if not data and not real:
        print(f"busi: no --data and no BUSI_DATA_DIR: using the synthetic BUSI at {path}", file=sys.stderr)
    return path


# --------------------------------------------------------------------- train
def _add_train_args(p: argparse.ArgumentParser) -> None:
    from .learners import TrainConfig

    d = TrainConfig()
    p.add_argument("--arch", default=d.arch, help="custom_cnn, resnet50, vgg16_bn, vit_*, swin_*, unet, uresnet, fcn, "
                   "multitask (default: %(default)s)")
    p.add_argument("--out", required=True)
    p.add_argument("--split", help="split CSV to reuse (default: a new seeded split)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate; 0 = fastai's lr_find suggestion")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default=d.optimizer)
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=d.pretrained,
                   help="ImageNet weights for the transfer models (default: on)")
    p.add_argument("--encoder", default=d.encoder, help="ResNet encoder of uresnet/multitask")
    p.add_argument("--augment", choices=["none", "default", "strong"], default=d.augment)
    p.add_argument("--w-cls", type=float, default=d.w_cls)
    p.add_argument("--w-seg", type=float, default=d.w_seg)
    p.add_argument("--dice-weight", type=float, default=d.dice_weight)
    p.add_argument("--patience", type=int, default=None, help="early stopping patience (epochs)")
    p.add_argument("--monitor", default=d.monitor)
    p.add_argument("--max-images", type=int, default=None, help="train on a stratified subset (quick runs)")
    p.add_argument("--tta", action="store_true", help="also report flip test-time augmentation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_train(args) -> int:
    from dataclasses import fields

    from .learners import TrainConfig, train

    # every option has the name of a TrainConfig field (dashes become underscores)
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    given.update(data=str(_need_data(args.data)), lr=args.lr or None, progress=not args.quiet)
    cfg = TrainConfig(**given)
    t0 = time.time()
    res = train(cfg)
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


def cmd_evaluate(args) -> int:
    from .data import load_dataset
    from .learners import predict_loader, score_predictions
    from .loaders import make_dataset
    from .saving import load_model
    from .splits import apply_split, load_split

    model, config = load_model(args.model)
    df = load_dataset(_need_data(args.data))
    if args.split:
        df = apply_split(df, load_split(args.split, df))
        df = df[df["split"] == args.part].reset_index(drop=True)
    ds = make_dataset(df, config["image_size"], config["task"])
    from fastai.data.load import DataLoader

    pred = predict_loader(model, DataLoader(ds, bs=args.batch_size), config["task"])
    metrics = score_predictions(pred, config.get("threshold", 0.5))
    metrics.update(model=str(args.model), data=str(args.data), n_images=len(df), threshold=config.get("threshold"))
    from .files import write_json

    write_json(Path(args.out) / "evaluation.json", metrics)
    for kind in ("classification", "segmentation"):
        if kind in metrics:
            print(kind, "  ".join(f"{k}={v:.3f}" for k, v in metrics[kind].items() if isinstance(v, float)))
    print(f"written to {Path(args.out) / 'evaluation.json'}")
    return 0


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="busi", description="Deep learning on breast ultrasound (BUSI).")
    sub = parser.add_subparsers(dest="cmd", required=True)

    data = sub.add_parser("data", help="inspect, generate, download or split data")
    dsub = data.add_subparsers(dest="data_cmd", required=True)
    p = dsub.add_parser("summary", help="counts, sizes, duplicate groups and rejected files")
    _data_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--skip-bad", action="store_true", help="report bad files and go on")
    p = dsub.add_parser("synthetic", help="write a synthetic BUSI-like folder")
    p.add_argument("--out", required=True)
    p.add_argument("--n-per-class", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p = dsub.add_parser("download", help="download and verify the real BUSI")
    p.add_argument("--to", required=True)
    p.add_argument("--no-verify", action="store_true")
    p = dsub.add_parser("verify", help="check a folder against BUSI's pixel fingerprint")
    _data_arg(p)
    p = dsub.add_parser("split", help="write a seeded, group-aware split CSV")
    _data_arg(p)
    p.add_argument("--out", required=True)
    p.add_argument("--folds", type=int, default=0, help="k-fold cross-validation (0: train/valid/test)")
    p.add_argument("--seed", type=int, default=42)
    data.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train one model")
    _data_arg(p)
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a saved model on a folder")
    p.add_argument("--model", required=True)
    _data_arg(p)
    p.add_argument("--split", help="split CSV; with --part, score only that part")
    p.add_argument("--part", default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BusiDataError as e:
        print(f"busi: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
