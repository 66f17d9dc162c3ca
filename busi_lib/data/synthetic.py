"""A synthetic stand-in for BUSI: ultrasound-like scans with known lesions, in BUSI's exact layout.
:func:`make_synthetic_busi` (``busi data synthetic``) writes a dataset, :func:`render_scan` draws one scan and
:class:`AppearanceShift` (e.g. ``HOSPITAL_B``) makes a "second hospital". Manual: docs/synthetic.md."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from busi_lib.data.table import CLASSES
from busi_lib.files import check_new_folder

MANIFEST_NAME = "synthetic_manifest.csv"

#: Default image size: widths 200-320 and heights 180-280 pixels, drawn per image.
DEFAULT_SIZE = ((200, 320), (180, 280))

#: Fraction of images with a second lesion (written to ``_mask_1.png``), per class.
TWO_LESION_FRACTION = {"benign": 0.10, "malignant": 0.05, "normal": 0.0}

#: Fraction of masks saved as 1-bit and as RGB PNGs (the rest are 8-bit "L", 0/255).
MASK_MODE_FRACTION = {"1": 0.10, "RGB": 0.10}

_TEXT_LABELS = ("LT BREAST", "RT BREAST", "LEFT BREAST 2:00", "RIGHT 10:00", "LT 3:00 4CMFN", "RT BR RAD")


# ---------------------------------------------------------------- Appearance of a "hospital"
@dataclass(frozen=True)
class AppearanceShift:
    """How a hospital's scanner and habits change its scans (a *domain shift*); a seed's anatomy and lesions stay the
    same under any shift. ``speckle_size``, ``gain``, ``attenuation`` multiply the reference; ``gamma``: display
    exponent (< 1 brighter, flatter); ``text_labels``: burnt-in text, depth scale; ``caliper_rate``: share of lesion
    scans with ``+`` calipers."""

    speckle_size: float = 1.0
    gain: float = 1.0
    attenuation: float = 1.0
    gamma: float = 1.0
    text_labels: bool = False
    caliper_rate: float = 0.15

    def __post_init__(self):
        for name in ("speckle_size", "gain", "attenuation", "gamma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"AppearanceShift.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.caliper_rate <= 1.0:
            raise ValueError(f"AppearanceShift.caliper_rate must be in [0, 1], got {self.caliper_rate!r}")


#: A ready-made "second hospital": coarser speckle, brighter, stronger attenuation,
#: flatter display curve, text labels and calipers on most lesion scans.
HOSPITAL_B = AppearanceShift(speckle_size=1.8, gain=1.1, attenuation=1.8, gamma=0.8, text_labels=True, caliper_rate=0.8)


def as_shift(shift: AppearanceShift | dict | None) -> AppearanceShift:
    """Turn ``None``, a dict of field values, or an :class:`AppearanceShift` into an :class:`AppearanceShift`."""
    if shift is None:
        return AppearanceShift()
    if isinstance(shift, AppearanceShift):
        return shift
    if isinstance(shift, dict):
        known = {f.name for f in fields(AppearanceShift)}
        unknown = sorted(set(shift) - known)
        if unknown:
            raise ValueError(f"unknown AppearanceShift field(s) {unknown}; known: {sorted(known)}")
        return AppearanceShift(**shift)
    raise TypeError(f"shift must be None, a dict or an AppearanceShift, not {type(shift).__name__}")


# ---------------------------------------------------------------- Small image helpers
def _blur(a: np.ndarray, sigma_x: float, sigma_y: float | None = None) -> np.ndarray:
    """Gaussian blur of a float image; ``sigma_x`` across (width), ``sigma_y`` along depth."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return cv2.GaussianBlur(a.astype(np.float32), (0, 0), sigmaX=float(sigma_x), sigmaY=float(sigma_y))


def _smooth_noise(rng: np.random.Generator, shape, sigma_x: float, sigma_y: float) -> np.ndarray:
    """White noise blurred and rescaled to mean 0, standard deviation 1: random smooth 'blobs'."""
    n = _blur(rng.standard_normal(shape, dtype=np.float32), sigma_x, sigma_y)
    return (n - n.mean()) / (n.std() + 1e-8)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates as broadcastable column (y, depth) and row (x, width) vectors."""
    return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]


# ---------------------------------------------------------------- 1. Tissue layers
def _layer_step(depth: np.ndarray, at: float, width: float) -> np.ndarray:
    """A soft step from 0 (above ``at``) to 1 (below), ``width`` thick, in relative depth units."""
    return 1.0 / (1.0 + np.exp(-(depth - at) / width))


def _tissue(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Echogenicity (how strongly tissue reflects sound, about 0.1-3) of wavy layers: skin, fat, gland, muscle."""
    y, x = _grid(h, w)
    wave = sum(
        rng.uniform(0.005, 0.025) * np.sin(2 * np.pi * x / w * rng.uniform(0.3, 1.2) + rng.uniform(0, 6.3))
        for _ in range(2)
    )
    depth = y / h + wave  # relative depth, bent laterally

    fat_end = rng.uniform(0.12, 0.3)
    gland_end = rng.uniform(0.6, 0.85)
    fat, gland, deep = rng.uniform(0.25, 0.45), rng.uniform(0.8, 1.3), rng.uniform(0.2, 0.4)
    tissue = fat + (gland - fat) * _layer_step(depth, fat_end, 0.015)
    tissue = tissue + (deep - gland) * _layer_step(depth, gland_end, 0.025)

    # streaks: noise smeared sideways (fibrous, layered texture)
    streaks = _smooth_noise(rng, (h, w), sigma_x=rng.uniform(10, 25), sigma_y=1.5)
    tissue = tissue * np.exp(0.3 * streaks)
    # fat lobules: dark rounded patches where smooth noise is high
    lobules = _smooth_noise(rng, (h, w), sigma_x=rng.uniform(7, 12), sigma_y=rng.uniform(4, 7))
    tissue = tissue * (1 - 0.6 / (1 + np.exp(-4 * (lobules - 1.0))))

    # bright curved lines: Cooper's ligaments and layer interfaces
    for _ in range(rng.integers(4, 9)):
        d0 = rng.uniform(0.06, 0.95)
        curve = d0 + rng.uniform(0.005, 0.03) * np.sin(2 * np.pi * x / w * rng.uniform(0.3, 1.0) + rng.uniform(0, 6.3))
        thickness = rng.uniform(0.6, 1.5) / h
        strength = rng.uniform(0.6, 1.6) * np.clip(_smooth_noise(rng, (1, w), 12, 1), 0, None)  # broken lines
        tissue = tissue + strength * np.exp(-(((depth - curve) / thickness) ** 2))

    # the skin: a bright line a few pixels below the top
    skin_row = rng.uniform(2, 6)
    tissue = tissue + rng.uniform(1.5, 3.0) * np.exp(-(((y - skin_row) / rng.uniform(1.2, 2.5)) ** 2))
    return np.clip(tissue, 0.05, None).astype(np.float32)


# ---------------------------------------------------------------- 2. Lesions
@dataclass
class LesionStyle:
    """How one lesion looks; drawn by :func:`_lesion_style` from its class."""

    echo: float  # lesion echogenicity relative to the tissue around it (< 1: darker)
    heterogeneity: float  # 0: uniform inside; larger: patchy inside
    edge_sigma: float  # blur of the margin in pixels (sharp: < 1)
    halo: float  # brightness of an echogenic rim around the lesion
    halo_sigma: float  # its thickness in pixels
    shadow: float  # posterior shadowing, 0-1 (< 0: posterior enhancement)
    calcifications: int  # bright specks inside


def _lesion_style(rng: np.random.Generator, label: str) -> LesionStyle:
    """Class-dependent appearance. The ranges overlap on purpose: no single cue is perfect."""
    if label == "benign":
        return LesionStyle(
            echo=rng.uniform(0.08, 0.35),
            heterogeneity=rng.uniform(0.0, 0.15),
            edge_sigma=rng.uniform(0.4, 0.9),
            halo=rng.uniform(0.0, 0.35),  # a thin bright capsule, sometimes
            halo_sigma=rng.uniform(0.8, 1.5),
            shadow=rng.uniform(-0.25, 0.3),
            calcifications=0,
        )
    return LesionStyle(
        echo=rng.uniform(0.12, 0.4),
        heterogeneity=rng.uniform(0.3, 0.6),
        edge_sigma=rng.uniform(0.8, 1.6),
        halo=rng.uniform(0.2, 0.6),  # a thick echogenic halo
        halo_sigma=rng.uniform(2.5, 4.5),
        shadow=rng.uniform(0.35, 0.75),
        calcifications=int(rng.integers(0, 5)) if rng.random() < 0.5 else 0,
    )


def _radius_function(rng: np.random.Generator, label: str, n_angles: int = 1024) -> np.ndarray:
    """The outline ``r(theta)`` of a lesion (1 = its ellipse), tabulated at ``n_angles`` angles in [-pi, pi). Benign: a
    gently lobulated oval; malignant: an irregular outline with spicules. One in six of each is atypical (macrolobulated
    benign, nearly circumscribed malignant), so shape alone cannot separate the classes."""
    theta = np.linspace(-np.pi, np.pi, n_angles, endpoint=False)
    atypical = rng.random() < 1 / 6
    if label == "benign":
        ks = np.arange(2, 5)
        amps = rng.uniform(0.0, 0.14 if atypical else 0.05, ks.size)
        spikes = np.zeros((0, 3))
    else:
        ks = np.arange(2, 10)
        amps = rng.uniform(0.03, 0.12, ks.size) / np.sqrt(ks / 2) * (0.5 if atypical else 1.0)
        n = int(rng.integers(0, 4) if atypical else rng.integers(5, 12))
        spikes = np.column_stack([rng.uniform(-np.pi, np.pi, n), rng.uniform(0.12, 0.4, n), rng.uniform(0.04, 0.1, n)])
    phases = rng.uniform(0, 2 * np.pi, ks.size)
    r = 1.0 + (amps[:, None] * np.cos(ks[:, None] * theta + phases[:, None])).sum(axis=0)
    for centre, length, width in spikes:
        d = np.angle(np.exp(1j * (theta - centre)))  # angle difference wrapped to [-pi, pi]
        r = r + length * np.exp(-((d / width) ** 2))
    return r


def _lesion_geometry(rng: np.random.Generator, label: str, h: int, w: int, scale: float = 1.0):
    """Semi-axes (a across, b along depth), tilt and centre of a lesion's ellipse; the area range is the same for
    both classes, only the aspect differs."""
    r_eq = rng.uniform(0.07, 0.15) * np.sqrt(h * w) * scale  # radius of a circle of the same area
    if label == "benign":
        aspect = rng.uniform(0.45, 0.8)  # b / a
        tilt = rng.uniform(-0.2, 0.2)
    else:
        aspect = rng.uniform(1.05, 1.5) if rng.random() < 0.5 else rng.uniform(0.7, 1.0)
        tilt = rng.uniform(-0.35, 0.35)
    a, b = r_eq / np.sqrt(aspect), r_eq * np.sqrt(aspect)
    cx = rng.uniform(0.3, 0.7) * w
    lo, hi = max(0.3 * h, 0.1 * h + 1.3 * b), min(0.62 * h, 0.92 * h - 1.3 * b)
    cy = rng.uniform(lo, hi) if lo < hi else 0.5 * h
    return a, b, tilt, cx, cy


def _lesion_mask(rng: np.random.Generator, label: str, h: int, w: int, scale: float = 1.0, cx: float | None = None):
    """A boolean (H, W) lesion mask: the pixels inside ``r(theta)`` around a tilted ellipse."""
    a, b, tilt, cx0, cy = _lesion_geometry(rng, label, h, w, scale)
    cx = cx0 if cx is None else cx
    table = _radius_function(rng, label)
    y, x = _grid(h, w)
    dx, dy = x - cx, y - cy
    u = (dx * np.cos(tilt) + dy * np.sin(tilt)) / a  # coordinates in units of the ellipse axes
    v = (-dx * np.sin(tilt) + dy * np.cos(tilt)) / b
    index = ((np.arctan2(v, u) + np.pi) / (2 * np.pi) * table.size).astype(int) % table.size
    return np.hypot(u, v) <= table[index]


def _second_lesion(rng: np.random.Generator, label: str, first: np.ndarray) -> np.ndarray:
    """A smaller lesion beside the first one, not touching it (BUSI's ``_mask_1.png``)."""
    h, w = first.shape
    keep_out = cv2.dilate(first.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    first_x = np.nonzero(first.any(axis=0))[0].mean() if first.any() else w / 2
    for _ in range(8):
        side = rng.uniform(0.08, 0.22) * w
        cx = side if first_x > w / 2 else w - side
        second = _lesion_mask(rng, label, h, w, scale=rng.uniform(0.4, 0.7), cx=cx)
        if second.any() and not (second & keep_out).any():
            return second
    return second & ~keep_out


# ---------------------------------------------------------------- 3. Drawing lesions into tissue; posterior shadowing
def _posterior_shadow(mask: np.ndarray, strength: float) -> np.ndarray:
    """A multiplicative factor (H, W): 1 everywhere except in the columns below the lesion, softened sideways."""
    behind = np.maximum.accumulate(mask, axis=0) & ~mask
    width = max(mask.any(axis=0).sum(), 1)
    soft = _blur(behind.astype(np.float32), sigma_x=0.1 * width + 1, sigma_y=2)
    return 1.0 - strength * soft


def _draw_lesion(rng: np.random.Generator, tissue: np.ndarray, mask: np.ndarray, style: LesionStyle) -> np.ndarray:
    """Paint one hypoechoic lesion, its margin, halo, calcifications and shadow into ``tissue``."""
    h, w = tissue.shape
    m = mask.astype(np.float32)
    ring = np.clip(_blur(m, style.halo_sigma) - m, 0, None)
    tissue = tissue * (1 + style.halo * ring / (ring.max() + 1e-6))

    around = np.median(tissue[cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool) & ~mask])
    inside = style.echo * around * (1 + style.heterogeneity * _smooth_noise(rng, (h, w), 3, 3))
    inside = np.clip(inside, 0.02, None)
    alpha = np.clip(_blur(m, style.edge_sigma), 0, 1) if style.edge_sigma > 0 else m
    tissue = tissue * (1 - alpha) + inside * alpha

    ys, xs = np.nonzero(mask)
    for i in rng.integers(0, ys.size, style.calcifications):
        tissue[ys[i] : ys[i] + 2, xs[i] : xs[i] + 2] += 2.0 * around
    return tissue * _posterior_shadow(mask, style.shadow)


# ---------------------------------------------------------------- 4-6. Attenuation, speckle, log compression
def _speckle(rng: np.random.Generator, h: int, w: int, size: float, looks: int = 2) -> np.ndarray:
    """Speckle with mean 1: ``|smoothed complex Gaussian noise|``, averaged over a few "looks" (as spatial
    compounding does); grains are about twice as wide as tall, as lateral resolution is worse than axial."""
    sx, sy = 1.3 * size, 0.6 * size
    intensity = np.zeros((h, w), np.float32)
    for _ in range(looks):
        re = _blur(rng.standard_normal((h, w), dtype=np.float32), sx, sy)
        im = _blur(rng.standard_normal((h, w), dtype=np.float32), sx, sy)
        intensity += re * re + im * im
    amp = np.sqrt(intensity)
    return amp / amp.mean()


def _attenuation(h: int, coefficient: float) -> np.ndarray:
    """``exp(-coefficient * depth)``, depth from 0 (top) to 1 (bottom): deeper is darker."""
    return np.exp(-coefficient * np.arange(h, dtype=np.float32)[:, None] / h)


def _to_display(echo: np.ndarray, dynamic_range_db: float, mean: float, gain: float, gamma: float) -> np.ndarray:
    """Log-compress echo amplitudes to [0, 1] with the mean brightness ``mean``, then apply gain and gamma; the dB
    window is slid until the mean brightness is ``mean`` (a few steps, as clipping bends the relation)."""
    db = 20 * np.log10(echo / np.percentile(echo, 99) + 1e-6)
    v = 1 + db / dynamic_range_db
    offset = 0.0
    for _ in range(4):
        offset += mean - np.clip(v + offset, 0, 1).mean()
    v = np.clip(v + offset, 0, 1)
    return np.clip(v * gain, 0, 1) ** gamma


# ---------------------------------------------------------------- 7. Burnt-in marks
def _lesion_ends(mask: np.ndarray) -> list[tuple[int, int]]:
    """(x, y) of the leftmost and rightmost points of a lesion: where a sonographer puts calipers."""
    ys, xs = np.nonzero(mask)
    ends = []
    for x in (xs.min(), xs.max()):
        ends.append((int(x), int(np.median(ys[xs == x]))))
    return ends


def _draw_calipers(img: np.ndarray, points, arm: int = 3, value: int = 255) -> None:
    """Burn a small ``+`` into ``img`` (uint8, in place) at every (x, y) point."""
    h, w = img.shape
    for x, y in points:
        img[y, max(x - arm, 0) : min(x + arm + 1, w)] = value
        img[max(y - arm, 0) : min(y + arm + 1, h), x] = value


def _draw_text(img: np.ndarray, text: str) -> None:
    """Burn a text label (bottom left) and a dotted depth scale (right edge) into ``img`` (in place)."""
    h, w = img.shape
    cv2.putText(img, text, (6, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 235, 1, cv2.LINE_AA)
    for y in range(8, h - 4, max(h // 10, 4)):
        img[y : y + 2, w - 5 : w - 2] = 220


# ---------------------------------------------------------------- One scan
def _anatomy(rng: np.random.Generator, label: str, h: int, w: int, n_lesions: int = 1):
    """Tissue echogenicity (H, W) with its lesions drawn in, and the list of bool lesion masks."""
    tissue = _tissue(rng, h, w)
    masks: list[np.ndarray] = []
    if label != "normal":
        masks.append(_lesion_mask(rng, label, h, w))
        if n_lesions > 1:
            masks.append(_second_lesion(rng, label, masks[0]))
        masks = [m for m in masks if m.any()]  # (a lesion squeezed out of the image is dropped)
        for m in masks:
            tissue = _draw_lesion(rng, tissue, m, _lesion_style(rng, label))
    return tissue, masks


def _acquire(rng: np.random.Generator, tissue: np.ndarray, masks: list[np.ndarray], shift: AppearanceShift):
    """What the scanner makes of the tissue: attenuation, speckle, display curve, burnt-in marks (uint8 (H, W))."""
    h, w = tissue.shape
    echo = tissue * _attenuation(h, rng.uniform(1.0, 1.8) * shift.attenuation)
    echo = echo * _speckle(rng, h, w, rng.uniform(0.9, 1.3) * shift.speckle_size)
    img = _to_display(echo, rng.uniform(35, 45), mean=rng.uniform(0.3, 0.5), gain=shift.gain, gamma=shift.gamma)
    img = np.rint(img * 255).astype(np.uint8)

    text = _TEXT_LABELS[rng.integers(len(_TEXT_LABELS))]
    calipers = rng.random() < shift.caliper_rate
    if masks and calipers:
        _draw_calipers(img, [p for m in masks for p in _lesion_ends(m)])
    if shift.text_labels:
        _draw_text(img, text)
    return img


def render_scan(
    rng: np.random.Generator, label: str, h: int, w: int, shift: AppearanceShift, n_lesions: int = 1
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Draw one scan of class ``label``: (uint8 image (H, W), list of bool lesion masks; empty for ``normal``). The
    random draws do not depend on ``shift``: the same generator state gives the same anatomy under any look."""
    tissue, masks = _anatomy(rng, label, h, w, n_lesions)
    return _acquire(rng, tissue, masks, shift), masks


def _other_view(
    anatomy_rng: np.random.Generator, rng: np.random.Generator, label: str, h: int, w: int,
    shift: AppearanceShift, n_lesions: int = 1,
):
    """Another image of the same lesion (a second acquisition of one patient): ``anatomy_rng`` is seeded like the
    original's, so tissue and lesions match; 5-15 % of the width is cut from one side and ``rng`` draws the rest."""
    tissue, masks = _anatomy(anatomy_rng, label, h, w, n_lesions)
    cut = int(rng.uniform(0.05, 0.15) * w)
    keep = slice(cut, w) if rng.random() < 0.5 else slice(0, w - cut)
    tissue = np.ascontiguousarray(tissue[:, keep])
    masks = [np.ascontiguousarray(m[:, keep]) for m in masks if m[:, keep].any()]
    return _acquire(rng, tissue, masks, shift), masks


def _near_duplicate(rng: np.random.Generator, img: np.ndarray, masks: list[np.ndarray]):
    """The same scan re-saved: cropped by a few pixels on each side and/or slightly brighter or darker."""
    top, bottom, left, right = (int(c) for c in rng.integers(0, 5, 4))
    if top + bottom + left + right == 0:
        right = 3
    crop = (slice(top, img.shape[0] - bottom), slice(left, img.shape[1] - right))
    factor = rng.uniform(0.92, 1.08) if rng.random() < 0.6 else 1.0
    out = np.clip(np.rint(img[crop].astype(np.float32) * factor), 0, 255).astype(np.uint8)
    return out, [m[crop] for m in masks]


# ---------------------------------------------------------------- The dataset folder
def _sample_size(rng: np.random.Generator, size) -> tuple[int, int]:
    """(height, width) of one image from ``size``: ``int``, ``(w, h)`` or ``((w_min, w_max), (h_min, h_max))``."""
    if isinstance(size, (int, np.integer)):
        size = (size, size)
    w, h = size
    w = int(rng.integers(w[0], w[1] + 1)) if isinstance(w, (tuple, list)) else int(w)
    h = int(rng.integers(h[0], h[1] + 1)) if isinstance(h, (tuple, list)) else int(h)
    return h, w


def _check_size(size) -> None:
    """Refuse sizes too small to hold a lesion (64 pixels minimum) or malformed ones."""
    try:
        parts = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if len(parts) != 2:
            raise ValueError
        bounds = [v for p in parts for v in (tuple(p) if isinstance(p, (tuple, list)) else (p,))]
        ok = all(isinstance(v, (int, np.integer)) and v >= 64 for v in bounds)
        ranges_ok = all(p[0] <= p[1] for p in parts if isinstance(p, (tuple, list)))
    except (TypeError, ValueError):
        ok = ranges_ok = False
    if not (ok and ranges_ok):
        raise ValueError(
            f"size must be an int, (width, height) or ((w_min, w_max), (h_min, h_max)), all >= 64; got {size!r}"
        )


def _pick(rng: np.random.Generator, candidates, k: int) -> set[int]:
    """``k`` distinct members of ``candidates`` drawn at random (fewer if there are fewer)."""
    candidates = list(candidates)
    k = min(k, len(candidates))
    return {int(c) for c in rng.choice(candidates, size=k, replace=False)} if k else set()


def _count(fraction: float, n: int) -> int:
    """``round(fraction * n)``, but at least 1 when ``fraction > 0`` and ``n >= 5``."""
    k = int(round(fraction * n))
    return max(k, 1) if fraction > 0 and n >= 5 else k


@dataclass
class _ClassPlan:
    """Which numbers of one class are duplicates or other views (and of what), two-lesion scans, odd mask modes."""

    duplicate_of: dict[int, int]
    two_lesions: set[int]
    mask_mode: dict[int, str]
    view_of: dict[int, int] = field(default_factory=dict)

    def root(self, i: int) -> int:
        """The original scan that image ``i`` copies or views (itself for an original): its patient."""
        while i in self.duplicate_of or i in self.view_of:
            i = self.duplicate_of.get(i) or self.view_of[i]
        return i


def _plan_class(rng: np.random.Generator, label: str, n: int, n_duplicates: int, n_views: int = 0) -> _ClassPlan:
    """Decide, for numbers 1..n of one class, the duplicates, the other views, the two-lesion scans and the mask PNG
    modes. The views are drawn last, so ``n_views=0`` leaves every other draw as it was."""
    numbers = range(1, n + 1)
    dups = sorted(_pick(rng, numbers, min(n_duplicates, n // 2)))
    originals = [i for i in numbers if i not in dups]
    duplicate_of = {d: int(rng.choice(originals)) for d in dups}
    two = _pick(rng, originals, _count(TWO_LESION_FRACTION[label], len(originals)))
    mode_1 = _pick(rng, originals, _count(MASK_MODE_FRACTION["1"], len(originals)))
    mode_rgb = _pick(rng, sorted(set(originals) - mode_1), _count(MASK_MODE_FRACTION["RGB"], len(originals)))
    mask_mode = {i: "1" if i in mode_1 else "RGB" if i in mode_rgb else "L" for i in originals}
    view_of: dict[int, int] = {}
    if n_views:
        views = sorted(_pick(rng, originals, min(n_views, len(originals) // 2)))
        sources = [i for i in originals if i not in views]
        view_of = {v: int(rng.choice(sources)) for v in views}
        for v, src in view_of.items():
            mask_mode[v] = mask_mode[src]
    for d, src in duplicate_of.items():
        mask_mode[d] = mask_mode[src]
    return _ClassPlan(duplicate_of, two, mask_mode, view_of)


def _save_mask(mask: np.ndarray, path: Path, mode: str) -> None:
    """Save a bool mask as a PNG in BUSI's modes: "L" (0/255), "1" (1-bit) or "RGB" (three equal channels)."""
    m = mask.astype(np.uint8) * 255
    if mode == "1":
        Image.fromarray(m, mode="L").convert("1").save(path)
    elif mode == "RGB":
        Image.fromarray(np.stack([m] * 3, axis=-1), mode="RGB").save(path)
    else:
        Image.fromarray(m, mode="L").save(path)


def _write_scan(folder: Path, image_id: str, img: np.ndarray, masks: list[np.ndarray], mode: str) -> None:
    """Write ``<id>.png`` and its masks ``<id>_mask.png``, ``<id>_mask_1.png``... (one empty mask if none)."""
    Image.fromarray(img, mode="L").save(folder / f"{image_id}.png")
    masks = masks or [np.zeros(img.shape, bool)]
    for k, m in enumerate(masks):
        suffix = "_mask" if k == 0 else f"_mask_{k}"
        _save_mask(m, folder / f"{image_id}{suffix}.png", mode)


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Create ``out``; refuse a non-empty folder unless ``overwrite``, which removes only the files a previous
    run's manifest lists."""
    if overwrite and out.is_dir():
        _remove_previous(out)
    else:
        check_new_folder(out)
    out.mkdir(parents=True, exist_ok=True)


def _remove_previous(out: Path) -> None:
    """Delete the scans and masks listed in ``out``'s manifest (the files a previous run made)."""
    manifest = out / MANIFEST_NAME
    if not manifest.is_file():
        return
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        label, image_id = row.get("label", ""), row.get("image_id", "")
        if label not in CLASSES or not re.fullmatch(rf"{label} \(\d+\)", image_id):
            continue  # never delete anything a manifest names oddly
        for p in (out / label).glob(f"{_glob_escape(image_id)}*.png"):
            if re.fullmatch(rf"{re.escape(image_id)}(_mask(_\d+)?)?\.png", p.name):
                p.unlink()
    manifest.unlink()


def _glob_escape(name: str) -> str:
    """Escape the glob special characters ``[``, ``]``, ``*`` and ``?`` in a file name."""
    return re.sub(r"([\[\]*?])", r"[\1]", name)


def make_synthetic_busi(
    out_dir: str | Path,
    n_per_class: int = 20,
    seed: int = 0,
    size: tuple[tuple[int, int], tuple[int, int]] = DEFAULT_SIZE,
    shift: AppearanceShift | dict | None = None,
    *,
    n_duplicates: int = 2,
    n_views: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic BUSI-layout dataset (class folders, manifest) and return its folder; the same arguments give
    byte-identical files. ``size``: ``(width, height)``, an ``int`` or ``((w_min, w_max), (h_min, h_max))`` drawn per
    image; ``overwrite`` replaces only files a previous run's manifest lists. Views (``n_views``) are not pHash
    duplicates: split by ``patient_id`` (docs/synthetic.md)."""
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    if n_duplicates < 0:
        raise ValueError(f"n_duplicates must be >= 0, got {n_duplicates}")
    if n_views < 0:
        raise ValueError(f"n_views must be >= 0, got {n_views}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    _check_size(size)
    shift = as_shift(shift)
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)

    manifest = []
    for ci, label in enumerate(CLASSES):
        folder = out / label
        folder.mkdir(exist_ok=True)
        plan = _plan_class(np.random.default_rng([seed, ci, 0]), label, n_per_class, n_duplicates, n_views)
        scans = {}
        for i in range(1, n_per_class + 1):
            if i in plan.duplicate_of or i in plan.view_of:
                continue
            rng = np.random.default_rng([seed, ci, i])  # one stream per image: image k does not depend on n
            h, w = _sample_size(rng, size)
            scans[i] = render_scan(rng, label, h, w, shift, n_lesions=2 if i in plan.two_lesions else 1)
        for v, src in plan.view_of.items():  # views before duplicates: a duplicate may copy a view
            anatomy = np.random.default_rng([seed, ci, src])  # the original's stream: same size, tissue, lesions
            h, w = _sample_size(anatomy, size)
            n_lesions = 2 if src in plan.two_lesions else 1
            scans[v] = _other_view(anatomy, np.random.default_rng([seed, ci, v]), label, h, w, shift, n_lesions)
        for d, src in plan.duplicate_of.items():
            scans[d] = _near_duplicate(np.random.default_rng([seed, ci, d]), *scans[src])
        for i in range(1, n_per_class + 1):
            image_id = f"{label} ({i})"
            _write_scan(folder, image_id, *scans[i], plan.mask_mode[i])
            src, view = plan.duplicate_of.get(i), plan.view_of.get(i)
            n_masks = max(1, len(scans[i][1]))
            mask = "|".join(f"{label}/{image_id}_mask{'' if k == 0 else f'_{k}'}.png" for k in range(n_masks))
            manifest.append((
                image_id, label, f"{label} ({src})" if src else "", f"{label} ({view})" if view else "",
                f"{label}-{plan.root(i):03d}", f"{label}/{image_id}.png", mask,
            ))

    with open(out / MANIFEST_NAME, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image_id", "label", "duplicate_of", "view_of", "patient_id", "image", "mask"])
        writer.writerows(manifest)
    return out
