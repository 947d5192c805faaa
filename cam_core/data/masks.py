"""Mask files, read one way everywhere: ground truth (app, CLI ``--gt``), ``evaluate``, and
``mask:PATH`` targets.

A label mask is ambiguous by nature: values {0, 1} are a binary nucleus mask *or* an index
mask whose nuclei are all class 1. Guessing "binary" silently dropped per-class scores (and
scored any class on those pixels as perfect), so the reader is told which kind a mask is
(:data:`MASK_KINDS`), and ``auto`` says in a note when it had to choose.

Pixel rules, one place:

* transparency means "not marked": a pixel with alpha 0 reads as 0;
* a label mask is greyscale or palette indices (a colour picture is refused with a message);
* :data:`IGNORE_INDEX` (255) in an index mask is "not scored", the common convention, unless
  the model has that many classes;
* values {0, 255} are a binary mask in ``auto`` (an index mask of only background and
  "ignore" would score nothing).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from cam_core.errors import InputError

IGNORE_INDEX = 255
MASK_KINDS: dict[str, str] = {
    "auto": "decide from the values (0/255: binary; otherwise class indices; a note when ambiguous)",
    "index": "pixel value = class index of the model",
    "binary": "non-zero = nucleus, compared with any nucleus predicted",
}
MAX_MASK_BYTES = 64 * 1024 * 1024


def check_kind(kind: str) -> str:
    if kind not in MASK_KINDS:
        from cam_core.errors import unknown

        raise unknown("mask kind", kind, list(MASK_KINDS))
    return kind


def decode(data: bytes, label: str, what: str) -> np.ndarray:
    """Decode a mask file to H×W (label values) or H×W×3 (a colour picture), transparent → 0.

    Raises:
        InputError: too large or not a readable image; the message names ``what`` it was for.
    """
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_MASK_BYTES:
        raise InputError(f"{what} '{label}' is {len(data) >> 20} MB; a mask PNG of one tile is far smaller")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            arr = np.array(im)  # P: palette indices, L / I;16: values, RGB(A): colours
            transparent = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            alpha = np.asarray(im.convert("RGBA"))[..., 3] if transparent else None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InputError(
            f"{what} '{label}' is not a readable image; give a PNG (greyscale or palette values, 0 = outside)"
        ) from exc
    if arr.ndim == 3 and arr.shape[2] in (2, 4):  # LA / PA / RGBA: the alpha is read above
        arr = arr[..., 0] if arr.shape[2] == 2 else arr[..., :3]
    if alpha is not None:
        arr[alpha == 0] = 0
    return arr


def check_shape(arr: np.ndarray, shape: tuple[int, int], label: str, what: str) -> None:
    h, w = shape
    if arr.shape[:2] != (h, w):
        raise InputError(
            f"{what} '{label}' is {arr.shape[1]}×{arr.shape[0]} but the image is {w}×{h}; "
            "give the mask of this image, at the same size"
        )


def region(data: bytes, shape: tuple[int, int], label: str) -> np.ndarray:
    """A target region from a mask file: the pixels that are marked (non-zero, not transparent)."""
    arr = decode(data, label, "target mask")
    check_shape(arr, shape, label, "target mask")
    out = arr.max(axis=2) > 0 if arr.ndim == 3 else arr > 0
    if not out.any():
        raise InputError(f"target mask '{label}' marks no pixel; paint the region with any non-zero, opaque value")
    return out


@dataclass(frozen=True)
class LabelMask:
    """A label mask as read.

    Attributes:
        labels: H×W uint8; class indices, or 0/1 when ``binary``.
        binary: nucleus vs background only.
        scored: H×W bool, False where the mask says "ignore"; None when every pixel is scored.
        note: why the kind was chosen, when ``auto`` had to choose (shown to the user).
    """

    labels: np.ndarray
    binary: bool
    scored: np.ndarray | None = None
    note: str | None = None


def interpret(
    arr: np.ndarray, classes: list[str], kind: str = "auto", label: str = "mask", ignore_index: int = IGNORE_INDEX
) -> LabelMask:
    """Read decoded mask values as a ``kind`` mask for a model with ``classes``.

    Args:
        ignore_index: the index-mask value left out of every score (when it is not a class).

    Raises:
        InputError: a colour picture, or values that are neither classes nor the ignore label.
    """
    check_kind(kind)
    n = len(classes)
    if arr.ndim == 3:
        if not (arr == arr[..., :1]).all():
            raise InputError(
                f"mask '{label}' is a colour picture; give class indices (0–{n - 1}, a greyscale or palette PNG) "
                f"or a binary mask (0 and 255), not a coloured mask"
            )
        arr = arr[..., 0]
    values = {int(v) for v in np.unique(arr)}
    note = None
    if kind == "auto":
        if values <= {0, 255} and 255 in values and n <= 255:
            kind = "binary"
        else:
            kind = "index"
            if values == {0, 1} and n > 2:
                note = (
                    f"mask '{label}' has only the values 0 and 1: read as class indices (1 = '{classes[1]}'); "
                    "choose 'binary' if 1 marks any nucleus"
                )
    if kind == "binary":
        return LabelMask((arr > 0).astype(np.uint8), True, None, note)
    ignore = ignore_index if ignore_index >= n else None
    bad = sorted(v for v in values if v >= n and v != ignore)
    if bad:
        shown = ", ".join(str(v) for v in bad[:8])
        raise InputError(
            f"mask '{label}' has values {shown} that are not classes of this model "
            f"({', '.join(f'{i}={c}' for i, c in enumerate(classes))}); give class indices "
            f"({ignore_index} = not scored) or choose 'binary' for a nucleus mask"
        )
    scored = None if ignore is None or ignore not in values else arr != ignore
    labels = np.where(arr == ignore, 0, arr).astype(np.uint8) if scored is not None else arr.astype(np.uint8)
    return LabelMask(labels, False, scored, note)
