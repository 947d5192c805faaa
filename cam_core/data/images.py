"""Read whatever image a user has into an 8-bit RGB array, or say clearly why not.

Every conversion that changes what the user sees (16-bit scaling, alpha flattening, grey to RGB,
first frame of a stack, EXIF rotation) is reported as a note, so the UI can show it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from cam_core import limits
from cam_core.errors import InputError
from cam_core.limits import MAX_BYTES, MAX_PIXELS

__all__ = ["MAX_BYTES", "MAX_PIXELS", "SUPPORTED", "LoadedImage", "load_image"]
# File names read as tiles in a folder (evaluate, trust): the formats a tile set comes in, the
# first the one looked for first.
TILE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
SUPPORTED = "PNG, JPEG, TIFF (8/16-bit, multi-page: first page), BMP, WebP, GIF (first frame)"


@dataclass
class LoadedImage:
    """An RGB uint8 image plus what was done to get it."""

    array: np.ndarray
    notes: list[str] = field(default_factory=list)
    source_mode: str = "RGB"
    mpp: float | None = None  # microns per pixel from the file's metadata, None when it has none


MPP_RANGE = limits.MPP_RANGE  # a resolution written in a file is believed only in this range


def _mpp_from_metadata(img: Image.Image) -> float | None:
    """Microns per pixel from TIFF resolution tags or a PNG/JPEG dpi, when plausible."""
    mpp: float | None = None
    tags = getattr(img, "tag_v2", None)
    if tags is not None and 282 in tags:
        unit = {2: 25400.0, 3: 10000.0}.get(int(tags.get(296, 2)))  # inch or centimetre, in µm
        res = float(tags[282])
        if unit and res > 0:
            mpp = unit / res
    elif "dpi" in img.info:
        dpi = float(img.info["dpi"][0])
        mpp = 25400.0 / dpi if dpi > 0 else None
    return mpp if limits.plausible_mpp(mpp) else None


def _to_rgb8(img: Image.Image, notes: list[str]) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if mode.startswith("I;16") else (float(arr.min()), float(arr.max()))
        if mode.startswith("I;16") and arr.max() <= 4095:
            hi = 4095.0  # 12-bit data stored in 16-bit containers
        arr = np.clip((arr - lo) / max(hi - lo, 1e-12), 0, 1) * 255
        notes.append(f"{mode} greyscale scaled to 8-bit and copied to RGB")
        grey = (arr + 0.5).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("transparency flattened onto white (slide background)")
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode in ("L", "1"):
        notes.append("greyscale image copied to RGB: H&E models expect colour, results may be poor")
    elif mode == "CMYK":
        notes.append("CMYK converted to RGB")
    elif mode == "P":
        notes.append("palette image converted to RGB")
    elif mode != "RGB":
        notes.append(f"{mode} converted to RGB")
    return np.asarray(img.convert("RGB"))


def _rgb48(arr: np.ndarray, notes: list[str]) -> np.ndarray:
    scale = 4095.0 if arr.max() <= 4095 else 65535.0
    notes.append(f"16-bit RGB scaled to 8-bit (full scale {int(scale)})")
    return (np.clip(arr / scale, 0, 1) * 255 + 0.5).astype(np.uint8)


def _read(source: str | Path | bytes, label: str) -> bytes:
    """The file's bytes (or the upload's), refused when missing, empty or above MAX_BYTES."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"image {label!r} not found; give the path of a {SUPPORTED} file")
        if path.stat().st_size > MAX_BYTES:
            raise InputError(f"{label!r} is larger than {MAX_BYTES // 2**20} MB; export a smaller region")
        data = path.read_bytes()
    else:
        data = source
    if not data:
        raise InputError(f"{label!r} is empty (0 bytes); choose a {SUPPORTED} file")
    if len(data) > MAX_BYTES:
        raise InputError(f"{label!r} is larger than {MAX_BYTES // 2**20} MB; export a smaller region")
    return data


def _open(data: bytes, label: str) -> ImageFile.ImageFile:
    """Pillow's image of the bytes (header only, nothing decoded); what is not an image is named
    by what it looks like (an HTML page, a PDF, a ZIP, an SVG)."""
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        head = data[:64].lstrip().lower()
        kind = ""
        if head.startswith((b"<!doctype html", b"<html")):
            kind = " (it looks like an HTML page)"
        elif head.startswith(b"%pdf"):
            kind = " (it looks like a PDF)"
        elif head.startswith(b"pk\x03\x04"):
            kind = " (it looks like a ZIP archive)"
        elif b"<svg" in data[:512].lower():
            kind = " (SVG vector images are not supported)"
        raise InputError(f"{label!r} is not a readable image{kind}; choose a {SUPPORTED} file") from None
    except Image.DecompressionBombError:
        raise InputError(
            f"{label!r} has more than {MAX_PIXELS / 1e6:.0f} megapixels (a decompression bomb or a whole slide); "
            "export a smaller region or tiles"
        ) from None
    except Exception as exc:  # PIL raises several types for malformed headers
        raise InputError(f"{label!r} could not be opened ({exc}); choose a {SUPPORTED} file") from None
    return img


def load_image(source: str | Path | bytes, name: str | None = None) -> LoadedImage:
    """Decode an image file or bytes to RGB uint8.

    Args:
        source: a path or the raw bytes of an upload.
        name: a display name for messages (the upload's file name).

    Raises:
        InputError: empty, not an image, truncated, too large, or an unsupported layout.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    img = _open(_read(source, label), label)
    notes: list[str] = []
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise InputError(
            f"{label!r} is {w}×{h} = {w * h / 1e6:.0f} megapixels, above the {MAX_PIXELS / 1e6:.0f} MP limit; "
            "export a smaller region or tiles"
        )
    if w < 8 or h < 8:
        raise InputError(f"{label!r} is only {w}×{h} pixels; give an image at least 8×8 (ideally ≥256×256)")
    rawmodes = [str(t[3]) for t in (img.tile or []) if len(t) > 3]
    if img.mode == "RGB" and any(";16" in r for r in rawmodes):
        # Pillow decodes 16-bit RGB by keeping the high byte: right for full-range data.
        notes.append("16-bit RGB reduced to 8-bit (high byte)")
    n_frames = getattr(img, "n_frames", 1)
    if n_frames > 1:
        notes.append(f"{n_frames} frames/pages: the first is used")
        img.seek(0)
    try:
        img.load()
    except Exception as exc:
        raise InputError(f"{label!r} is truncated or corrupt ({exc}); re-export the image") from None
    mpp = _mpp_from_metadata(img)
    transposed = ImageOps.exif_transpose(img)
    if transposed is not None and transposed is not img and transposed.size != img.size:
        notes.append("rotated according to its EXIF orientation")
    if transposed is not None:
        img = transposed  # type: ignore[assignment]
    try:
        arr = np.asarray(img)
        if arr.ndim == 3 and arr.dtype == np.uint16 and arr.shape[2] >= 3:
            rgb = _rgb48(arr[:, :, :3].astype(np.float64), notes)
        else:
            rgb = _to_rgb8(img, notes)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{label!r} has an unsupported pixel layout ({img.mode}: {exc}); save it as 8-bit RGB"
        ) from None
    return LoadedImage(np.ascontiguousarray(rgb, dtype=np.uint8), notes, img.mode, mpp)
