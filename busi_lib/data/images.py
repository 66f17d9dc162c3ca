"""Reading scans and lesion masks into one representation: a scan is uint8 (H, W), a mask uint8 (H, W) in {0, 1}.
Conversion rules (colour, 16-bit, mask modes): docs/library.md. Every failure raises
:class:`~busi_lib.errors.BusiDataError` naming the file."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from busi_lib.errors import BusiDataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Larger scans are refused, not decoded: PIL's decompression-bomb guard (about 89 Mpx) is far beyond any
# ultrasound frame, and decoding more would take gigabytes of memory.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def _open(path: Path) -> Image.Image:
    """Open and fully decode an image file, turning every PIL failure into a clear error."""
    path = Path(path)
    if not path.is_file():
        raise BusiDataError(path, "file not found")
    if path.stat().st_size == 0:
        raise BusiDataError(path, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            if img.width * img.height > MAX_PIXELS:
                raise BusiDataError(
                    path, f"image is {img.width}x{img.height}, larger than the {MAX_PIXELS} pixel limit"
                )
            img.load()
    except BusiDataError:
        raise
    except UnidentifiedImageError:
        raise BusiDataError(path, "not an image file PIL can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BusiDataError(path, f"image is larger than the {MAX_PIXELS} pixel limit ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BusiDataError(path, f"unreadable or truncated image ({e})") from None
    return img


def _to_array(img: Image.Image) -> np.ndarray:
    """Decode a PIL image into a numpy array without changing its values."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8)
    if img.mode == "LA":
        img = img.getchannel(0)
    return np.asarray(img)


def image_to_gray(arr: np.ndarray) -> np.ndarray:
    """Turn an image array (H, W), (H, W, 3) or (H, W, 4) of any integer type into uint8 (H, W)."""
    arr = np.asarray(arr)
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = arr[..., :3]
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        elif arr.shape[2] == 3:
            if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
                arr = arr[..., 0]
            else:
                # ITU-R 601-2 luma, the weights of PIL's "L" conversion, rounded.
                rgb = arr.astype(np.float64)
                arr = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
                arr = np.clip(np.rint(arr), 0, 255 if arr.max() <= 255 else 65535)
        else:
            raise ValueError(f"cannot read an image with {arr.shape[2]} channels")
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D or 3-D image array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        top = 1.0 if arr.max() <= 1.0 else 255.0
        return np.clip(np.rint(arr / top * 255), 0, 255).astype(np.uint8)
    if arr.max() > 255 or arr.dtype == np.uint16:
        return (np.clip(arr, 0, 65535) // 257).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def mask_to_binary(arr: np.ndarray) -> np.ndarray:
    """Turn a mask array of any mode into uint8 (H, W) with values {0, 1} (rules: docs/library.md)."""
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr[..., : min(arr.shape[2], 3)].max(axis=2)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D or 3-D mask array, got shape {arr.shape}")
    values = np.unique(arr)
    if len(values) <= 1:
        return np.zeros(arr.shape, np.uint8) if values.size == 0 or values[0] == 0 else np.ones(arr.shape, np.uint8)
    if len(values) == 2:
        return (arr > values[0]).astype(np.uint8)
    return (arr >= values.max() / 2).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read a scan as uint8 grayscale (H, W)."""
    img = _open(Path(path))
    try:
        return image_to_gray(_to_array(img))
    except ValueError as e:
        raise BusiDataError(path, str(e)) from None


def read_mask(paths: str | Path | Iterable[str | Path], shape: tuple[int, int] | None = None) -> np.ndarray:
    """The union of one or several mask files, uint8 (H, W) in {0, 1}; a mask not of ``shape`` (the scan's (H, W)) is an
    error, never resized."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise BusiDataError(None, "no mask file given")
    union = None
    for p in paths:
        try:
            m = mask_to_binary(_to_array(_open(p)))
        except ValueError as e:
            raise BusiDataError(p, str(e)) from None
        if shape is not None and m.shape != tuple(shape):
            raise BusiDataError(
                p, f"mask is {m.shape[1]}x{m.shape[0]} but its image is {shape[1]}x{shape[0]} (width x height)"
            )
        if union is not None and m.shape != union.shape:
            raise BusiDataError(p, f"mask size {m.shape} differs from {paths[0].name} {union.shape}")
        union = m if union is None else np.maximum(union, m)
    return union

