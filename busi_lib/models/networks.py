"""Every network of the study, built from maintained parts (the architectures are listed in ``busi_lib.names``).

Which parts make which network, why smp, and where the weights come from: docs/library.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from fastai.vision.learner import create_timm_model, create_vision_model
from torchvision.models.segmentation import fcn_resnet50

from busi_lib.data.transforms import Normalization
from busi_lib.models.weights import (
    ensure_torchvision_weights,
    is_packaged,
    load_packaged_weights,
    normalization_for,
    timm_pretrained_kwargs,
    torchvision_state_dict,
)
from busi_lib.names import DECODER_NORMS, SEGMENTERS, is_transformer, task_of, weights_network


def input_normalization(arch: str, encoder: str) -> Normalization:
    """(mean, std) of the inputs of ``arch``: those of its pretrained weights (also when trained from scratch,
    so that a pretrained network and its from-scratch twin differ in their weights only)."""
    return normalization_for(weights_network(arch, encoder))


class CustomCNN(nn.Module):
    """A small CNN a student can read in one screen.

    Four blocks of (3x3 conv, batch norm, ReLU) x 2 and a 2x2 max-pool; global average pooling makes it independent
    of the image size; dropout and one linear layer give the malignancy logit.
    """

    def __init__(self, n_out: int = 1, in_channels: int = 3, widths=(32, 64, 128, 256), dropout: float = 0.3):
        super().__init__()
        blocks, c_in = [], in_channels
        for c in widths:
            blocks += [
                nn.Conv2d(c_in, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, n_out))

    def forward(self, x):
        return self.head(self.features(x))


class FCN(nn.Module):
    """torchvision's FCN-ResNet50, returning the mask logits tensor instead of a dict."""

    def __init__(self, n_out: int = 1, pretrained: bool = False):
        super().__init__()

        self.net = fcn_resnet50(weights=None, weights_backbone=None, num_classes=n_out, aux_loss=False)
        if pretrained:
            sd = torchvision_state_dict("resnet50")
            self.net.backbone.load_state_dict({k: v for k, v in sd.items() if not k.startswith("fc.")}, strict=True)

    def forward(self, x):
        return self.net(x)["out"]


class MultitaskUResNet(nn.Module):
    """One encoder shared by a classification head and a U-Net decoder (smp's ``Unet`` with ``aux_params``).

    ``forward`` returns ``(class_logit, mask_logits)``, shapes (B, 1) and (B, 1, H, W); the class head pools the
    deepest encoder map.
    """

    def __init__(self, encoder: str = "resnet50", pretrained: bool = False, dropout: float = 0.2,
                 decoder_norm: str = "batch"):
        super().__init__()
        self.net = smp_unet(encoder, pretrained, decoder_norm, aux_params=dict(classes=1, dropout=dropout))

    def forward(self, x):
        features = self.net.encoder(x)  # feature maps, from the input's resolution down to 1/32 of it
        decoded = self.net.decoder(features)  # upsampling with skip connections back to full resolution
        mask_logits = self.net.segmentation_head(decoded)  # (B, 1, H, W)
        class_logit = self.net.classification_head(features[-1])  # the deepest map, pooled: (B, 1)
        return class_logit, mask_logits


class SegmentationNet(nn.Module):
    """Wraps an smp model so that it returns mask logits (B, 1, H, W)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.segmentation_head(self.net.decoder(self.net.encoder(x)))


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 convolution (no bias: batch norm adds its own shift) → batch norm → ReLU; the size is kept."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """One stage of a U-Net decoder: upsample to the next size, append the encoder's map of that size (the skip
    connection) as extra channels, then let two 3x3 convolutions mix the coarse and the fine features."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = conv_bn_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, size, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")  # twice the side: every pixel becomes 2 x 2
        if skip is not None:
            x = torch.cat([x, skip], dim=1)  # (B, in + skip, H, W)
        return self.conv2(self.conv1(x))


class UNetDecoder(nn.Module):
    """The decoder of every U-shaped model here: from the encoder's deepest map back up to the input's size.

    ``encoder_channels`` run from the scan itself to the deepest map; one block per halving. ``center`` adds the
    classic U-Net's bottleneck convolutions, for encoders (VGG) whose deepest map comes straight from a max-pool.
    """

    def __init__(self, encoder_channels, decoder_channels=(256, 128, 64, 32, 16), center: bool = False):
        super().__init__()
        deepest = encoder_channels[-1]
        self.center = nn.Sequential(conv_bn_relu(deepest, deepest), conv_bn_relu(deepest, deepest)) if center \
            else nn.Identity()
        ins = [deepest, *decoder_channels[:-1]]
        skips = [*encoder_channels[1:-1][::-1], 0]  # the last block has none: the scan itself is not a feature
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, decoder_channels))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x, skips = self.center(features[-1]), features[1:-1][::-1]  # deepest map; the others, deepest first
        sizes = [f.shape[-2:] for f in features[:-1]][::-1]  # 1/16, 1/8, ..., the input's size
        for k, block in enumerate(self.blocks):
            x = block(x, sizes[k], skips[k] if k < len(skips) else None)
        return x


def replace_batch_norm(module: nn.Module, norm: str) -> nn.Module:
    """Swap every ``BatchNorm2d`` in ``module`` for ``InstanceNorm2d`` (affine) or ``GroupNorm`` (up to 8 groups), in
    place, and return it; ``"batch"`` changes nothing, an unknown ``norm`` raises ``ValueError``."""
    if norm not in DECODER_NORMS:
        raise ValueError(f"unknown decoder norm {norm!r}; choose one of {DECODER_NORMS}")
    if norm == "batch":
        return module
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            new = nn.InstanceNorm2d(c, affine=True) if norm == "instance" else nn.GroupNorm(math.gcd(8, c), c)
            setattr(module, name, new)
        else:
            replace_batch_norm(child, norm)
    return module


def smp_unet(encoder: str, pretrained: bool, decoder_norm: str = "batch", **kwargs: object) -> nn.Module:
    """smp's ``Unet`` on ``encoder`` with this course's decoder (:class:`UNetDecoder`, smp's initial weights) and
    the encoder's ImageNet weights when ``pretrained``; ``kwargs`` go to smp (``aux_params`` adds a class head)."""
    packaged = is_packaged(encoder)
    # smp's "tu-" encoders are timm's own networks, features only (its older "timm-" copies are deprecated)
    smp_name = f"tu-{encoder}" if packaged else encoder
    net = smp.Unet(encoder_name=smp_name, encoder_weights=None, in_channels=3, classes=1, **kwargs)
    with torch.random.fork_rng(devices=[]):  # the random numbers after this call are those smp alone leaves
        decoder = UNetDecoder(net.encoder.out_channels, center=not isinstance(net.decoder.center, nn.Identity))
    decoder.load_state_dict(net.decoder.state_dict())  # smp's initial weights: the same model as smp's Unet
    net.decoder = replace_batch_norm(decoder, decoder_norm)
    if pretrained:
        if packaged:
            load_packaged_weights(net.encoder.model, encoder)
        elif encoder.startswith("resnet"):
            # smp's ResNet encoder is a torchvision ResNet: load ImageNet weights from TORCH_HOME
            sd = torchvision_state_dict(encoder)
            net.encoder.load_state_dict({k: v for k, v in sd.items() if not k.startswith("fc.")}, strict=True)
        else:
            raise ValueError(f"pretrained weights are supported for ResNet and EfficientNet-Lite encoders, "
                             f"not {encoder!r}")
    return net


def build_segmenter(arch: str, encoder: str = "resnet50", pretrained: bool = False,
                    decoder_norm: str = "batch") -> nn.Module:
    """A segmentation network returning mask logits (B, 1, H, W)."""
    if arch == "unet":
        if pretrained:
            raise ValueError("the classic U-Net is trained from scratch: pass pretrained=False")
        return SegmentationNet(smp_unet("vgg11_bn", False, decoder_norm))
    if arch == "uresnet":
        return SegmentationNet(smp_unet(encoder, pretrained, decoder_norm))
    if arch == "fcn":
        if decoder_norm != "batch":
            raise ValueError("fcn has no U-Net decoder: decoder_norm applies to unet, uresnet and multitask")
        return FCN(1, pretrained)
    raise ValueError(f"unknown segmentation architecture {arch!r}; choose one of {SEGMENTERS}")


def build_model(arch: str, *, encoder: str = "resnet50", pretrained: bool = False, image_size: int = 224,
                decoder_norm: str = "batch") -> nn.Module:
    """The bare ``nn.Module`` of an architecture (no learner), as :mod:`busi_lib.training.learners` builds it; other
    classifiers than ``custom_cnn`` come from fastai's ``create_vision_model``/``create_timm_model``."""
    task = task_of(arch)
    if task == "classify" and decoder_norm != "batch":
        raise ValueError(f"{arch} is a classifier: decoder_norm applies to unet, uresnet and multitask")
    if task == "multitask":
        return MultitaskUResNet(encoder, pretrained, decoder_norm=decoder_norm)
    if task == "segment":
        return build_segmenter(arch, encoder, pretrained, decoder_norm)
    if arch == "custom_cnn":
        return CustomCNN(1)

    tv = torchvision_arch(arch)
    if tv is not None:
        if pretrained:
            ensure_torchvision_weights(arch)
        return create_vision_model(tv, 1, pretrained=pretrained)
    if is_packaged(arch):
        model = create_timm_model(arch, 1, pretrained=False)[0]
        if pretrained:
            load_packaged_weights(model[0].model, arch)  # fastai's TimmBody holds timm's model, classifier-free
        return model
    return create_timm_model(arch, 1, pretrained=pretrained, **timm_kwargs(arch, image_size, pretrained))[0]


def torchvision_arch(name: str) -> Callable[..., nn.Module] | None:
    """The torchvision model function of a name (``resnet50`` → ``torchvision.models.resnet50``), or None."""
    if name in tvm.list_models(module=tvm):
        return getattr(tvm, name)
    return None


def timm_kwargs(arch: str, image_size: int, pretrained: bool = False) -> dict:
    """timm creation arguments: transformers fix their input size at creation, and pretrained weights come from the
    cached file (:func:`~busi_lib.models.weights.timm_pretrained_kwargs`, a clear error without it)."""
    kw = {}
    if is_transformer(arch):
        kw["img_size"] = image_size
    if arch.startswith("swin"):
        # Swin's forward_features returns channels-last maps that fastai's pooling head
        # cannot read; without a pool_size in its config fastai uses timm's own pooling.
        kw["pretrained_cfg_overlay"] = dict(pool_size=None)
    overlay = timm_pretrained_kwargs(arch, pretrained).get("pretrained_cfg_overlay")
    if overlay:
        kw["pretrained_cfg_overlay"] = {**kw.get("pretrained_cfg_overlay", {}), **overlay}
    return kw


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
