"""Choose a cpu-profile recipe on validation data only.

Each candidate trains the model on the training part of bench folds 1 and 2 and is scored on those folds'
*validation* parts (a group-aware 15 % of the training folds); the test folds are never read. The candidate
with the best mean validation ROC-AUC becomes the model's recipe in ``busi_lib.profiles``.

    python tools/tune.py --model efficientnet_lite0 --data $BUSI_DATA_DIR --out runs/tune
    python tools/tune.py --model multitask --data $BUSI_DATA_DIR --out runs/tune_multitask
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from busi_lib.apps.bench import run_bench

CANDIDATES = {
    "efficientnet_lite0": {
        # fastai's fine_tune: 1 frozen epoch, then 6 at half the rate, the body down to 1/100 (the recipe before)
        "fine_tune_1+6": dict(epochs=6),
        # the multitask model's schedule: 12 epochs of one fit_one_cycle, every layer at 2e-3
        "one_cycle_12": dict(epochs=12, freeze_epochs=0, lr_mult=1.0),
        # 1 head-only epoch, then 12 epochs with the body at a tenth of the head's rate (discriminative rates)
        "freeze_1+12_slice10": dict(epochs=12, freeze_epochs=1, lr_mult=10.0),
        # second round, around the first round's best (one_cycle_12): longer, larger input, stronger augmentation
        "one_cycle_20": dict(epochs=20, freeze_epochs=0, lr_mult=1.0),
        "one_cycle_12_160px": dict(epochs=12, freeze_epochs=0, lr_mult=1.0, image_size=160),
        "one_cycle_12_strong_aug": dict(epochs=12, freeze_epochs=0, lr_mult=1.0, augment="strong"),
        "one_cycle_12_lr1e-3": dict(epochs=12, freeze_epochs=0, lr_mult=1.0, lr=1e-3),
    },
    # the multitask model's levers, one at a time from the cpu profile (128 px, Lite0, 12 epochs, w_seg 0.6)
    "multitask": {
        "profile_128px": {},
        "160px": dict(image_size=160),
        "192px": dict(image_size=192),
        "224px": dict(image_size=224),
        "lite1_encoder": dict(encoder="tf_efficientnet_lite1"),
        "lite2_encoder": dict(encoder="tf_efficientnet_lite2"),
        "w_cls_0.6": dict(w_cls=0.6, w_seg=0.4),
        "instance_norm_decoder": dict(decoder_norm="instance"),
        "aspect_crops": dict(aspect_crop=True),
    },
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(CANDIDATES), default="efficientnet_lite0")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--folds", default="0,1", help="bench folds (0-based) whose validation parts choose")
    ap.add_argument("--only", nargs="*", help="run these candidates only (the others' finished runs still count)")
    args = ap.parse_args(argv)
    folds = [int(f) for f in args.folds.split(",")]
    rows = {}
    for name, overrides in CANDIDATES[args.model].items():
        out = Path(args.out) / name
        if args.only is None or name in args.only:
            run_bench(args.data, out, models=[args.model], profile="cpu", folds=folds, n_boot=10, **overrides)
        metrics = [out / args.model / f"fold{f}" / "metrics.json" for f in folds]
        if not all(m.exists() for m in metrics):
            continue
        valid = [json.loads(m.read_text())["valid"] for m in metrics]
        aucs = [v["classification"]["roc_auc"] for v in valid]
        rows[name] = {"valid_roc_auc": aucs, "mean": sum(aucs) / len(aucs), "settings": overrides}
        if "segmentation" in valid[0]:
            rows[name]["valid_dice"] = [v["segmentation"]["dice_pooled"] for v in valid]
        print(f"[tune] {name}: validation ROC-AUC {', '.join(f'{a:.3f}' for a in aucs)}", flush=True)
    best = max(rows, key=lambda n: rows[n]["mean"])
    (Path(args.out) / "tuning.json").write_text(json.dumps({"chosen": best, "candidates": rows}, indent=1))
    print(f"[tune] chosen on validation: {best}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
