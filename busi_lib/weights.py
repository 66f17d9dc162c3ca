"""ImageNet weights from the standard caches, or a clear error.

Transfer learning is the default for the pretrained architectures. Their weights
live where torchvision and timm always keep them:

* torchvision: ``$TORCH_HOME/hub/checkpoints/`` (default ``~/.cache/torch/hub/checkpoints``);
* timm: the Hugging Face hub cache (``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``).

If the file is there it is used. If not, one download is tried; if that fails
too (no internet, a firewall), :class:`WeightsNotFoundError` says which file
to put in which folder, or to pass ``pretrained=False``. Training never falls
back to random weights silently: a "pretrained" result from random weights
would be a wrong number in a table.
"""

from __future__ import annotations

import os
from pathlib import Path


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are neither in the cache nor downloadable."""


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
