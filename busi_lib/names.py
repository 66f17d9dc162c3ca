"""The names a run is set up with, and what they stand for, without importing torch.

Architectures (which task each does, which network holds its ImageNet weights, which are vision
transformers), the decoder norms, the augmentation recipes and the precisions.
:class:`busi_lib.config.TrainConfig` and the ``busi`` command's options read them from here, so
``busi --help`` answers at once; the modules that implement them (:mod:`busi_lib.models.networks`,
:mod:`busi_lib.data.transforms`, :mod:`busi_lib.training.hardware`) import them from here too.
"""

from __future__ import annotations

SEGMENTERS = ("unet", "uresnet", "fcn")
MULTITASK = ("multitask",)
FROM_SCRATCH = ("custom_cnn", "unet")  # architectures that have no pretrained version here
# timm's vision transformers (ViT, DeiT, Swin): their input size is fixed when they are created
TRANSFORMER_PREFIXES = ("vit_", "deit_", "swin")
#: The U-Net decoder's normalisation layers: ``batch`` (the default, smp's), or ``instance`` / ``group``, which
#: normalise each scan by its own statistics (no running averages from the training hospital).
DECODER_NORMS = ("batch", "instance", "group")
#: Training augmentations, scan and mask together (what each does: :mod:`busi_lib.data.transforms`)
AUGMENTATIONS = ("none", "default", "strong", "geometry", "scanner")
#: Numeric precisions of a run (what each does: :mod:`busi_lib.training.hardware`)
PRECISIONS = ("fp32", "bf16", "fp16", "mixed")


def task_of(arch: str) -> str:
    """``"classify"``, ``"segment"`` or ``"multitask"`` for an architecture name."""
    if arch in MULTITASK:
        return "multitask"
    if arch in SEGMENTERS:
        return "segment"
    return "classify"


def is_transformer(arch: str) -> bool:
    """Whether ``arch`` names one of timm's vision transformers (``vit_*``, ``deit_*``, ``swin*``)."""
    return arch.startswith(TRANSFORMER_PREFIXES)


def weights_network(arch: str, encoder: str) -> str:
    """The network whose pretrained weights an architecture starts from: the encoder of ``uresnet`` and
    ``multitask``, the ResNet-50 backbone of ``fcn``, else the architecture itself."""
    if arch in ("uresnet", "multitask"):
        return encoder
    return "resnet50" if arch == "fcn" else arch
