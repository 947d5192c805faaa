"""Pictures from arrays: class mask, heatmap, overlay, threshold, legend and colour bar.

numpy + Pillow + ``matplotlib.colormaps`` only; no pyplot, so nothing global is touched in a
threaded server. Everything here is fast enough to run on every slider move.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from .errors import InputError, unknown

# Perceptually uniform and readable with colour-vision deficiencies first; jet last, for habit.
COLORMAPS: dict[str, str] = {
    "viridis": "colour-blind safe, perceptually uniform (default)",
    "cividis": "colour-blind safe (optimised for deuteranopia)",
    "magma": "perceptually uniform, dark to light",
    "inferno": "perceptually uniform, dark to light",
    "turbo": "rainbow-like, better than jet but not colour-blind safe",
    "jet": "classic CAM rainbow; not perceptually uniform or colour-blind safe",
}
DEFAULT_COLORMAP = "viridis"
THRESHOLD_MODES = ("none", "absolute", "percentile", "otsu")
_LUT_CACHE: dict[str, np.ndarray] = {}


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    if len(c) != 6:
        raise InputError(f"colour {color!r} is not #RRGGBB")
    return tuple(int(c[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def _lut(name: str) -> np.ndarray:
    if name not in COLORMAPS:
        raise unknown("colormap", name, list(COLORMAPS))
    if name not in _LUT_CACHE:
        _LUT_CACHE[name] = (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
    return _LUT_CACHE[name]


def colorize_mask(mask: np.ndarray, colors: list[str]) -> np.ndarray:
    """H×W class indices → H×W×3 uint8 with one colour per class."""
    palette = np.array([hex_to_rgb(c) for c in colors], dtype=np.uint8)
    return palette[np.clip(mask, 0, len(palette) - 1)]


def heatmap(cam: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """H×W values in [0, 1] → H×W×3 uint8 through a lookup table (fast at 2048²)."""
    idx = np.clip(cam * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return _lut(colormap)[idx]


def threshold_level(cam: np.ndarray, mode: str, value: float = 0.5) -> float | None:
    """The CAM level for a threshold mode: ``absolute`` (value in [0,1]), ``percentile``
    (value in [0,100]: keep the top 100−value %), ``otsu`` (automatic), ``none``.
    """
    if mode not in THRESHOLD_MODES:
        raise unknown("threshold mode", mode, list(THRESHOLD_MODES))
    if mode == "none":
        return None
    if mode == "absolute":
        if not 0.0 <= value <= 1.0:
            raise InputError(f"absolute threshold {value} must be in [0, 1]")
        return float(value)
    if mode == "percentile":
        if not 0.0 <= value <= 100.0:
            raise InputError(f"percentile {value} must be in [0, 100]")
        return float(np.percentile(cam, value))
    return otsu(cam)


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold on values in [0, 1]: maximises the between-class variance."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def contour(region: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a boolean region (pixels inside with a neighbour outside)."""
    r = np.pad(region, 1, mode="edge")
    inner = r[1:-1, 1:-1]
    edge = (inner != r[:-2, 1:-1]) | (inner != r[2:, 1:-1]) | (inner != r[1:-1, :-2]) | (inner != r[1:-1, 2:])
    return edge & inner


def overlay(
    image: np.ndarray,
    cam: np.ndarray,
    opacity: float = 0.5,
    colormap: str = DEFAULT_COLORMAP,
    level: float | None = None,
    show: str = "mask+contour",
    contour_color: str = "#FFFFFF",
) -> np.ndarray:
    """Heatmap blended on the tissue.

    Args:
        image: H×W×3 uint8 RGB tile.
        cam: H×W in [0, 1].
        opacity: heatmap weight in [0, 1] (0 = tissue only).
        level: threshold; None shows the whole heatmap.
        show: with a level, ``mask`` hides the heatmap below it, ``contour`` draws its edge,
            ``mask+contour`` does both.
    """
    if not 0.0 <= opacity <= 1.0:
        raise InputError(f"opacity {opacity} must be in [0, 1]")
    if image.shape[:2] != cam.shape:
        raise InputError(f"image {image.shape[:2]} and CAM {cam.shape} differ in size")
    heat = heatmap(cam, colormap).astype(np.float32)
    base = image.astype(np.float32)
    alpha = np.full(cam.shape, opacity, dtype=np.float32)
    region = None
    if level is not None:
        region = cam >= level
        if "mask" in show:
            alpha = np.where(region, alpha, 0.0).astype(np.float32)
    out = base * (1 - alpha[..., None]) + heat * alpha[..., None]
    out = (out + 0.5).astype(np.uint8)
    if region is not None and "contour" in show:
        out[contour(region)] = hex_to_rgb(contour_color)
    return out


def mask_overlay(image: np.ndarray, mask: np.ndarray, colors: list[str], opacity: float = 0.45) -> np.ndarray:
    """The class mask blended on the tissue, background left untouched."""
    col = colorize_mask(mask, colors).astype(np.float32)
    a = np.where(mask > 0, opacity, 0.0)[..., None]
    return (image.astype(np.float32) * (1 - a) + col * a + 0.5).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def legend(classes: list[str], colors: list[str], extra: list[str] | None = None, size: int = 14) -> np.ndarray:
    """A legend strip: a swatch and a label per class (labels may carry e.g. area %)."""
    labels = extra or classes
    font = _font(size)
    row = size + 8
    width = 24 + max(int(font.getlength(t)) for t in labels) + 16
    img = Image.new("RGB", (width, row * len(labels) + 6), "white")
    draw = ImageDraw.Draw(img)
    for i, (text, color) in enumerate(zip(labels, colors)):
        y = 4 + i * row
        draw.rectangle([6, y, 6 + size, y + size], fill=hex_to_rgb(color), outline=(80, 80, 80))
        draw.text((12 + size, y - 1), text, fill=(20, 20, 20), font=font)
    return np.asarray(img)


def colorbar(colormap: str = DEFAULT_COLORMAP, width: int = 256, height: int = 14) -> np.ndarray:
    """A horizontal colour bar, 0 (left) to 1 (right), with ticks at 0, 0.5 and 1."""
    lut = _lut(colormap)
    bar = np.repeat(lut[np.linspace(0, 255, width).astype(int)][None, :, :], height, axis=0)
    font = _font(11)
    canvas = Image.new("RGB", (width + 24, height + 20), "white")
    canvas.paste(Image.fromarray(bar), (12, 2))
    draw = ImageDraw.Draw(canvas)
    for frac, text in ((0.0, "0"), (0.5, "0.5"), (1.0, "1")):
        x = 12 + int(frac * (width - 1))
        draw.line([(x, height + 2), (x, height + 5)], fill=(0, 0, 0))
        draw.text((x - int(font.getlength(text)) // 2, height + 6), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def to_png(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()
