"""Pictures from arrays: class mask, heatmap, overlay, threshold, legend and colour bar (the
figure that lays them out is :mod:`cam_core.output.figure`).

numpy + Pillow + ``matplotlib.colormaps`` only; no pyplot, so nothing global is touched in a
threaded server. Everything here is fast enough to run on every slider move.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from cam_core.errors import InputError, unknown

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
# The raw signed CAM: blue = evidence against the class, white = none, red = for it (centred on 0).
SIGNED_COLORMAP = "RdBu_r"
# How a CAM is shown: grad-cam's min-max map, or the raw map before ReLU on a shared signed scale.
VALUE_VIEWS: dict[str, str] = {
    "min-max 0–1": "grad-cam's output: ReLU, then scaled to 0–1 per map (shapes compare, magnitudes do not)",
    "raw signed": "before ReLU and scaling, centred on 0, one scale for every class of this image",
    "raw signed, this class": "before ReLU, centred on 0, scaled to this map's own largest value (a weak class's "
    "evidence shows; magnitudes do not compare across classes)",
}
# The signed views and where their scale comes from: shared by every class of the image, or the map's own.
SIGNED_SCALES: dict[str, str] = {"raw signed": "shared", "raw signed, this class": "own"}
THRESHOLD_MODES = ("none", "absolute", "percentile", "otsu")
# How the heatmap is laid on the tissue: its weight grows with the map (tissue the map ignores
# stays untinted, as a microscope shows it), or the same weight everywhere (grad-cam's
# show_cam_on_image, where viridis' dark end veils every pixel).
BLENDS: dict[str, str] = {
    "ramp": "the heatmap's weight grows with the map: unattended tissue stays untinted",
    "uniform": "the same weight everywhere (grad-cam's show_cam_on_image)",
}
DEFAULT_BLEND = "ramp"
# What a threshold shows on the overlay (``overlay(show=...)``).
SHOW_MODES = ("mask+contour", "mask", "contour")
_LUT_CACHE: dict[str, np.ndarray] = {}


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    if len(c) != 6:
        raise InputError(f"colour {color!r} is not #RRGGBB")
    return tuple(int(c[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def _lut(name: str) -> np.ndarray:
    if name not in COLORMAPS and name != SIGNED_COLORMAP:
        raise unknown("colormap", name, list(COLORMAPS))
    if name not in _LUT_CACHE:
        _LUT_CACHE[name] = (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
    return _LUT_CACHE[name]


def colorize_mask(mask: np.ndarray, colors: list[str]) -> np.ndarray:
    """H×W class indices → H×W×3 uint8 with one colour per class."""
    palette = np.array([hex_to_rgb(c) for c in colors], dtype=np.uint8)
    return palette[np.clip(mask, 0, len(palette) - 1)]


def heatmap(cam: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """H×W values in [0, 1] → H×W×3 uint8 through a 256-entry lookup table (OpenCV's LUT: ~10× numpy)."""
    idx = cv2.convertScaleAbs(np.asarray(cam, dtype=np.float32), alpha=255.0)  # round + saturate to uint8
    return cv2.LUT(cv2.merge([idx, idx, idx]), _lut(colormap).reshape(256, 1, 3))


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


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold on values in [0, 1], by OpenCV's Otsu (the one the slides' tissue mask
    uses too) on the values quantised to 256 levels; the level returned lies halfway between the
    last level of the low class and the next one."""
    idx = cv2.convertScaleAbs(np.asarray(values, dtype=np.float32), alpha=255.0)
    level, _ = cv2.threshold(idx, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float((level + 0.5) / 255.0)


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def contour(region: np.ndarray) -> np.ndarray:
    """One-pixel inner boundary of a boolean region (inside, with a 4-neighbour outside)."""
    r = region.view(np.uint8) if region.dtype == bool else (region > 0).astype(np.uint8)
    return (r - cv2.erode(r, _CROSS, borderType=cv2.BORDER_REPLICATE)).astype(bool)


def overlay(
    image: np.ndarray,
    cam: np.ndarray,
    opacity: float = 0.5,
    colormap: str = DEFAULT_COLORMAP,
    level: float | None = None,
    show: str = "mask+contour",
    contour_color: str = "#FFFFFF",
    blend: str = "uniform",
    weight: np.ndarray | None = None,
) -> np.ndarray:
    """Heatmap blended on the tissue.

    Args:
        image: H×W×3 uint8 RGB tile.
        cam: H×W in [0, 1].
        opacity: heatmap weight in [0, 1] (0 = tissue only).
        level: threshold; None shows the whole heatmap.
        show: with a level, ``mask`` hides the heatmap below it, ``contour`` draws its edge,
            ``mask+contour`` does both.
        blend: a key of :data:`BLENDS`; ``ramp`` weighs each pixel by ``opacity × weight``.
        weight: the ramp's per-pixel weight in [0, 1] (default: ``cam``; the signed view passes
            the distance from 0, so no evidence either way stays untinted).
    """
    if not 0.0 <= opacity <= 1.0:
        raise InputError(f"opacity {opacity} must be in [0, 1]")
    if image.shape[:2] != cam.shape:
        raise InputError(f"image {image.shape[:2]} and CAM {cam.shape} differ in size")
    if blend not in BLENDS:
        raise unknown("blend", blend, list(BLENDS))
    heat = heatmap(cam, colormap)
    if blend == "ramp":
        alpha = (opacity * np.clip(cam if weight is None else weight, 0.0, 1.0)).astype(np.float32)[..., None]
        blended = (image * (1.0 - alpha) + heat * alpha + 0.5).astype(np.uint8)
    else:
        blended = cv2.addWeighted(image, 1.0 - opacity, heat, opacity, 0.0)
    region = None
    if level is not None:
        region = cam >= level
    if region is not None and "mask" in show:
        out = image.copy()
        cv2.copyTo(blended, region.view(np.uint8), out)  # heatmap only where the CAM reaches the level
    else:
        out = blended
    if region is not None and "contour" in show:
        out[contour(region)] = hex_to_rgb(contour_color)  # a thin line: few pixels to write
    return out


@functools.cache
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib: has µ, —, −), else Pillow's default font."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if path.is_file():
        return ImageFont.truetype(str(path), size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def legend(classes: list[str], colors: list[str], extra: list[str] | None = None, size: int = 14) -> np.ndarray:
    """A legend strip: a swatch and a label per class (labels may carry e.g. area %)."""
    labels = extra or classes
    face = font(size)
    row = size + 8
    width = 24 + max(int(face.getlength(t)) for t in labels) + 16
    img = Image.new("RGB", (width, row * len(labels) + 6), "white")
    draw = ImageDraw.Draw(img)
    for i, (text, color) in enumerate(zip(labels, colors)):
        y = 4 + i * row
        draw.rectangle([6, y, 6 + size, y + size], fill=hex_to_rgb(color), outline=(80, 80, 80))
        draw.text((12 + size, y - 1), text, fill=(20, 20, 20), font=face)
    return np.asarray(img)


def signed_unit(raw: np.ndarray, scale: float) -> np.ndarray:
    """The raw signed CAM mapped to [0, 1] with 0 at 0.5: −scale → 0, +scale → 1 (clipped)."""
    scale = float(scale) if scale and np.isfinite(scale) and scale > 0 else 1.0
    return np.clip(np.asarray(raw, dtype=np.float32) / (2 * scale) + 0.5, 0.0, 1.0)


def signed_heatmap(raw: np.ndarray, scale: float) -> np.ndarray:
    """The raw signed CAM on the diverging colormap, centred on 0."""
    return heatmap(signed_unit(raw, scale), SIGNED_COLORMAP)


def signed_scale(raws: list[np.ndarray]) -> float:
    """One symmetric scale for several raw maps (e.g. every class of an image): the largest |value|."""
    peak = max((float(np.abs(r).max()) for r in raws if r.size), default=0.0)
    return peak if peak > 0 and np.isfinite(peak) else 1.0


def signed_colorbar(scale: float, width: int = 256, height: int = 14) -> np.ndarray:
    """Colour bar of the signed view, in the CAM's raw units."""
    return colorbar(SIGNED_COLORMAP, width, height, ticks=((0.0, f"−{scale:.3g}"), (0.5, "0"), (1.0, f"+{scale:.3g}")))


def colorbar(
    colormap: str = DEFAULT_COLORMAP,
    width: int = 256,
    height: int = 14,
    ticks: tuple[tuple[float, str], ...] = ((0.0, "0"), (0.5, "0.5"), (1.0, "1")),
    font_px: int = 13,
    pad: int = 12,
) -> np.ndarray:
    """A horizontal colour bar ``width`` long, 0 (left) to 1 (right), with labelled ticks
    (default 0, 0.5, 1) at ``font_px``; the end labels add a margin on each side."""
    lut = _lut(colormap)
    face = font(font_px)
    side = pad + max(int(face.getlength(t)) // 2 for _, t in ticks)
    bar = np.repeat(lut[np.linspace(0, 255, width).astype(int)][None, :, :], height, axis=0)
    tick = max(3, font_px // 4)
    canvas = Image.new("RGB", (width + 2 * side, height + tick + round(font_px * 1.35)), "white")
    canvas.paste(Image.fromarray(bar), (side, 0))
    draw = ImageDraw.Draw(canvas)
    for frac, text in ticks:
        x = side + int(frac * (width - 1))
        draw.line([(x, height), (x, height + tick)], fill=(0, 0, 0), width=max(1, font_px // 12))
        draw.text((x - int(face.getlength(text)) // 2, height + tick), text, fill=(0, 0, 0), font=face)
    return np.asarray(canvas)


# Colours of the truth comparison (Okabe–Ito, colour-blind safe), keyed by cam_core.truth codes.
OUTCOME_COLORS: dict[int, str] = {0: "#000000", 1: "#BBBBBB", 2: "#D55E00", 3: "#56B4E9"}


def outcome_map(codes: np.ndarray) -> np.ndarray:
    """TN/TP/FP/FN codes (``cam_core.truth``) → RGB: black, grey, vermilion, sky blue."""
    palette = np.array([hex_to_rgb(OUTCOME_COLORS[i]) for i in range(4)], dtype=np.uint8)
    return palette[codes]


def outline(rgb: np.ndarray, region: np.ndarray, color: str = "#FFFFFF") -> np.ndarray:
    """A copy with the region's edge drawn in ``color`` on a black rim, visible on any panel."""
    out = rgb.copy()
    edge = contour(region.astype(bool))
    rim = cv2.dilate(edge.view(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    out[rim] = (0, 0, 0)
    out[edge] = hex_to_rgb(color)
    return out


def _nice_length_um(width_um: float) -> float:
    """A round bar length near a fifth of the width (1, 2, 5 × 10^k µm)."""
    target = width_um / 5
    base = 10 ** np.floor(np.log10(target))
    return float(max((m * base for m in (1, 2, 5) if m * base <= target), default=base))


def scale_bar(rgb: np.ndarray, mpp: float | None, display_width: int | None = None) -> np.ndarray:
    """A copy with a µm scale bar at the bottom left; unchanged when the resolution is unknown.

    Args:
        mpp: microns per pixel of ``rgb``.
        display_width: the width the picture is shown at, so the bar's text stays legible.
    """
    if not mpp or mpp <= 0:
        return rgb
    h, w = rgb.shape[:2]
    length_um = _nice_length_um(w * mpp)
    px = max(1, round(length_um / mpp))
    k = max(1.0, w / (display_width or w))  # source pixels per displayed pixel
    thick, margin, size = max(2, round(4 * k)), round(8 * k), max(10, round(13 * k))
    img = Image.fromarray(rgb.copy())
    draw = ImageDraw.Draw(img)
    face = font(size)
    text = f"{length_um:g} µm"
    tw = int(face.getlength(text))
    x0, y1 = margin, h - margin
    draw.rectangle([x0 - 4, y1 - thick - size - 10, x0 + max(px, tw) + 4, y1 + 4], fill=(255, 255, 255))
    draw.rectangle([x0, y1 - thick, x0 + px, y1], fill=(0, 0, 0))
    draw.text((x0, y1 - thick - size - 6), text, fill=(0, 0, 0), font=face)
    return np.asarray(img)


def contact_sheet(
    images: list[np.ndarray], labels: list[str], per_row: int = 4, cell: int = 64, label_px: int = 14
) -> tuple[np.ndarray, int]:
    """Thumbnails in a grid with a label under each; returns the picture and the row height
    (a click at (x, y) is thumbnail ``(y // row) * per_row + x // (cell + 4)``)."""
    face = font(label_px - 3)
    row = cell + label_px + 4
    rows = -(-len(images) // per_row)
    sheet = Image.new("RGB", (per_row * (cell + 4), rows * row), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (img, text) in enumerate(zip(images, labels)):
        x, y = (i % per_row) * (cell + 4), (i // per_row) * row
        sheet.paste(Image.fromarray(cv2.resize(img, (cell, cell), interpolation=cv2.INTER_AREA)), (x, y))
        draw.text((x, y + cell + 1), text, fill=(40, 40, 40), font=face)
    return np.asarray(sheet), row


def wrap(text: str, face: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and face.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def to_png(array: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG bytes; the CLI and the page, writing many or large pictures, ask for zlib level 1.

    Grey and RGB pictures are written by OpenCV with one row filter ("up") instead of Pillow's
    choice per row: the same pixels and about the same size, in ~60 % of the time (a large
    image's three 1024² panels: 241 → 150 ms here, ``scripts/measure_png.py``)."""
    if array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        import cv2

        bgr = array if array.ndim == 2 else cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
        flags = [cv2.IMWRITE_PNG_COMPRESSION, compress_level, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
        ok, data = cv2.imencode(".png", bgr, flags)
        if ok:
            return data.tobytes()
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
