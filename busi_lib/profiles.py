"""Run profiles: one name for "how big a run", shared by the notebooks, ``busi notebooks`` and ``busi bench``.

=========  ================================================================================
profile    meant for
=========  ================================================================================
``smoke``  tests (nbval, CI): tiny images, one epoch, a small stratified subset; minutes
``cpu``    a laptop or this project's 2-core CPU: from scratch, small encoders, 64-128 px
``gpu``    the full study settings: ImageNet weights, ResNet-50 encoders, 224-256 px
=========  ================================================================================

:func:`settings_for` turns (profile, architecture, explicit overrides) into the
keyword arguments of :class:`busi_lib.learners.TrainConfig`. An override of ``None``
means "the profile's value", so a notebook's parameters cell can leave any setting
at ``None``.
"""

from __future__ import annotations

PROFILES: dict[str, dict] = {
    "smoke": dict(
        image_size=32, epochs=1, batch_size=8, lr=2e-3, pretrained=False, encoder="resnet18",
        transformer="vit_tiny_patch16_224", max_images=48, augment="default", keep_checkpoints=False,
    ),
    "cpu": dict(
        image_size=128, epochs=6, batch_size=16, lr=2e-3, pretrained=False, encoder="resnet18",
        transformer="vit_tiny_patch16_224", max_images=None, augment="default", keep_checkpoints=True,
    ),
    "gpu": dict(
        image_size=256, epochs=40, batch_size=16, lr=1e-3, pretrained=True, encoder="resnet50",
        transformer="vit_base_patch16_224", max_images=None, augment="default", keep_checkpoints=True,
    ),
}

# Per-architecture changes to a profile (CPU cost: the big ImageNet bodies are trained at a
# smaller size on a CPU; the transformers need the side they were built for on a GPU).
ARCH_OVERRIDES: dict[str, dict[str, dict]] = {
    "cpu": {
        "multitask": dict(epochs=12),
        "resnet50": dict(image_size=96),
        "vgg16_bn": dict(image_size=64),
        "transformer": dict(image_size=64),
        "unet": dict(image_size=96),
        "fcn": dict(image_size=64),
    },
    "gpu": {"transformer": dict(image_size=224)},
}

# The models of the study, in the order the notebooks and the results table show them.
# "transformer" stands for the profile's vision transformer.
STUDY_MODELS = ("custom_cnn", "resnet50", "vgg16_bn", "transformer", "unet", "uresnet", "fcn", "multitask")

TRAIN_KEYS = ("image_size", "epochs", "batch_size", "lr", "pretrained", "encoder", "max_images", "augment",
              "keep_checkpoints")


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    return profile


def resolve_arch(arch: str, profile: str) -> str:
    """``"transformer"`` becomes the profile's vision transformer; other names stay."""
    return PROFILES[check_profile(profile)]["transformer"] if arch == "transformer" else arch


def settings_for(profile: str, arch: str, **overrides) -> dict:
    """``TrainConfig`` keyword arguments for ``arch`` under ``profile``; ``None`` overrides are ignored.

    >>> settings_for("cpu", "resnet50")["image_size"]
    96
    >>> settings_for("cpu", "resnet50", image_size=None, epochs=3)["epochs"]
    3
    """
    base = PROFILES[check_profile(profile)]
    key = "transformer" if arch == "transformer" or arch.startswith(("vit_", "deit_", "swin")) else arch
    merged = {k: base[k] for k in TRAIN_KEYS}
    merged.update(ARCH_OVERRIDES.get(profile, {}).get(key, {}))
    merged.update({k: v for k, v in overrides.items() if v is not None})
    merged["arch"] = resolve_arch(arch, profile)
    return merged
