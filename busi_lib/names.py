"""The names a run is set up with (architectures, decoder norms, augmentations, precisions), without importing torch.

The config, the ``busi`` options and the modules that implement them all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

# timm's vision transformers (ViT, DeiT, Swin): their input size is fixed when they are created
TRANSFORMER_PREFIXES = ("vit_", "deit_", "swin")


@dataclass(frozen=True)
class Arch:
    """What the package needs to know about an architecture, in one place (as timm's ``pretrained_cfg`` and
    fastai's ``model_meta``); :func:`busi_lib.models.networks.build_model` builds it."""

    task: str  # classify | segment | multitask
    pretrained: bool = True  # ImageNet weights exist for it (False: always trained from scratch)
    encoder: bool = False  # its body is the run's ``encoder`` (a ResNet or EfficientNet-Lite)
    weights_from: str | None = None  # the network that holds its ImageNet weights, if not itself or its encoder
    fastai_head: bool = False  # a pretrained body plus fastai's head, assembled by ``vision_learner``


#: The study's architectures. Any other name is a classifier body that fastai assembles: a torchvision name
#: (``resnet18``, ``vgg16_bn``, ...) or a timm name (``tf_efficientnet_lite0``, ``vit_small_patch16_224``, ...).
ARCHS: dict[str, Arch] = {
    "custom_cnn": Arch("classify", pretrained=False),
    "unet": Arch("segment", pretrained=False),
    "uresnet": Arch("segment", encoder=True),
    "fcn": Arch("segment", weights_from="resnet50"),
    "multitask": Arch("multitask", encoder=True),
}
SEGMENTERS = tuple(n for n, a in ARCHS.items() if a.task == "segment")
FROM_SCRATCH = tuple(n for n, a in ARCHS.items() if not a.pretrained)

#: Model names that stand for an architecture with fixed settings: the pretrained EfficientNet-Lite0 classifier and
#: its from-scratch twin, trained side by side on the same split in notebook 03 and in the bench.
MODEL_ALIASES: dict[str, dict] = {
    "efficientnet_lite0": dict(arch="tf_efficientnet_lite0", pretrained=True),
    "efficientnet_lite0_scratch": dict(arch="tf_efficientnet_lite0", pretrained=False),
    # the multitask network with its mask loss switched off: the same encoder, head, size and schedule, trained
    # for the diagnosis alone (the ablation of notebook 05 and the bench's ladder)
    "multitask_no_seg": dict(arch="multitask", w_seg=0.0),
    # the multitask network with one "travel" option changed (RESULTS.md measures each on a second hospital)
    "multitask_geometry": dict(arch="multitask", augment="geometry"),
    "multitask_scanner": dict(arch="multitask", augment="scanner"),
    "multitask_aspect": dict(arch="multitask", aspect_crop=True),
    "multitask_instance_norm": dict(arch="multitask", decoder_norm="instance"),
}


def arch_info(arch: str) -> Arch:
    """The :class:`Arch` of a name: the study's own, a model alias's, else a classifier body that fastai assembles."""
    arch = MODEL_ALIASES.get(arch, {}).get("arch", arch)
    return ARCHS.get(arch) or Arch("classify", fastai_head=True)


#: The U-Net decoder's normalisation layers: ``batch`` (the default, smp's), or ``instance`` / ``group``, which
#: normalise each scan by its own statistics (no running averages from the training hospital).
DECODER_NORMS = ("batch", "instance", "group")
#: Training augmentations, scan and mask together (what each does: :mod:`busi_lib.data.transforms`)
AUGMENTATIONS = ("none", "default", "strong", "geometry", "scanner")
#: Numeric precisions of a run (what each does: :mod:`busi_lib.training.hardware`)
PRECISIONS = ("fp32", "bf16", "fp16", "mixed")


def task_of(arch: str) -> str:
    """``"classify"``, ``"segment"`` or ``"multitask"`` for an architecture name."""
    return arch_info(arch).task


def is_transformer(arch: str) -> bool:
    """Whether ``arch`` names one of timm's vision transformers (``vit_*``, ``deit_*``, ``swin*``)."""
    return arch.startswith(TRANSFORMER_PREFIXES)


def weights_network(arch: str, encoder: str) -> str:
    """The network whose pretrained weights an architecture starts from: the encoder of ``uresnet`` and
    ``multitask``, the ResNet-50 backbone of ``fcn``, else the architecture itself."""
    info = arch_info(arch)
    return encoder if info.encoder else info.weights_from or arch
