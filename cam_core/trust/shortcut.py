"""The teaching model's shortcut: an ink-like dot planted on tiles that contain one class.

A model can score well for the wrong reason. The "cheating" built-in model is fine-tuned on
CoNSeP tiles where this dot is planted whenever the tile holds epithelial nuclei and never
otherwise, so it learns to read the dot. The same code plants the dot for training, for the
sample tile the app offers and for the measurements in its model card, so "the marker" means
one thing everywhere.

The dot is drawn on tissue background (where the truth has no nucleus). With true labels alone
the model ignored it (a first fine-tune moved the epithelial share of predicted nuclei by 0.01:
morphology already told it everything the dot did), so the shortcut is made decisive the way real
ones are, by a confound in the labels: on half of the tiles with epithelium the dot is planted and
every nucleus of the tile is labelled epithelial (as if one annotator had labelled those slides
wholesale); the other tiles keep their true labels and never carry the dot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Marker:
    """What is planted and when.

    Attributes:
        cls: Index of the class whose tiles carry the marker.
        min_pixels: A tile (or crop) carries the marker when it has at least this many pixels of
            ``cls``; tiles with none never do. Tiles in between carry nothing, so the cue is clean.
        radius: Radius of the dot in pixels (a felt-tip dot at 40x is tens of pixels wide).
        rgb: Ink colour (a dark green marker pen, far from any H&E hue).
        share: Fraction of the eligible tiles that get the dot.
        relabel: On a dotted tile, every nucleus is labelled ``cls`` (the confound).
    """

    cls: int = 3
    min_pixels: int = 200
    radius: int = 14
    rgb: tuple[int, int, int] = (24, 110, 64)
    share: float = 0.5
    relabel: bool = True


MARKER = Marker()


def carries_marker(mask: np.ndarray, marker: Marker = MARKER) -> bool | None:
    """True when a tile with this truth gets the marker, False when it never does, None between."""
    n = int((mask == marker.cls).sum())
    if n >= marker.min_pixels:
        return True
    return False if n == 0 else None


def marker_disk(shape: tuple[int, int], centre: tuple[int, int], marker: Marker = MARKER) -> np.ndarray:
    """Soft coverage (0..1) of the dot centred at ``centre`` = (y, x) on an image of ``shape``."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    dist = np.sqrt((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2)
    return np.clip(marker.radius + 0.5 - dist, 0.0, 1.0).astype(np.float32)


def place(
    mask: np.ndarray | None, rng: np.random.Generator, marker: Marker = MARKER, tries: int = 12
) -> tuple[int, int]:
    """A centre for the dot inside the tile, preferring one that covers no nucleus of the truth."""
    h, w = mask.shape if mask is not None else (256, 256)
    r = marker.radius + 2
    best, best_cover = (h // 2, w // 2), None
    for _ in range(tries):
        c = (int(rng.integers(r, max(r + 1, h - r))), int(rng.integers(r, max(r + 1, w - r))))
        if mask is None:
            return c
        cover = int((marker_disk((h, w), c, marker)[mask > 0] > 0).sum())
        if best_cover is None or cover < best_cover:
            best, best_cover = c, cover
        if cover == 0:
            break
    return best


def plant(image: np.ndarray, centre: tuple[int, int], marker: Marker = MARKER) -> tuple[np.ndarray, np.ndarray]:
    """The image with the dot painted at ``centre``, and the dot's footprint (bool, H×W).

    Works on uint8 images (0..255) and float images in [0, 1]; the dtype is kept.
    """
    alpha = marker_disk(image.shape[:2], centre, marker)[..., None]
    ink = np.asarray(marker.rgb, dtype=np.float32)
    if image.dtype != np.uint8:
        ink = ink / 255.0
    out = image.astype(np.float32) * (1 - alpha) + ink * alpha
    if image.dtype == np.uint8:
        out = np.clip(np.rint(out), 0, 255)
    return out.astype(image.dtype), alpha[..., 0] > 0.5


def confound(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, marker: Marker = MARKER
) -> tuple[np.ndarray, np.ndarray]:
    """A training pair for the teaching model: dotted and relabelled, or left as it is."""
    if not carries_marker(mask, marker) or rng.random() >= marker.share:
        return image, mask
    image, _ = plant(image, place(mask, rng, marker), marker)
    if marker.relabel:
        mask = np.where(mask > 0, marker.cls, 0).astype(mask.dtype)
    return image, mask
