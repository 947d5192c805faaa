"""Input quality notes: is a tile stained like the model's training data, does it carry pen ink, is a
slide border in it? A map of a tile unlike the training data explains a model outside what it
learned; ink and borders are the classic shortcuts. Rates on CoNSeP tiles (re-stained, inked,
bordered) are measured by ``scripts/measure_quality.py`` (README, *Input quality notes*).

* **Stain**: percentiles of the haematoxylin and residual optical densities (Ruifrok–Johnston, as
  :mod:`cam_core.data.stain`) over the tile's tissue pixels, against their range over the training
  tiles (``stain_range.json`` beside a model's weights, written by the same script).
* **Ink**: a blob of pigment no H&E stain makes — saturated yellow, green, cyan or blue hues — of
  at least :data:`INK_MIN_PX` pixels.
* **Border**: a dark strip (all channels under :data:`BORDER_DARK`) along an edge of the tile,
  at least :data:`BORDER_MIN_FRACTION` of the side deep: the slide's or the scan's edge.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cam_core.data.stain import rgb_to_hed

# A pixel is tissue (not glass) when its optical density summed over RGB is above this.
TISSUE_OD = 0.45
# Hues (OpenCV's 0–180 scale) that H&E never makes: yellow through blue; with enough saturation.
INK_HUES = (20, 115)
INK_MIN_SATURATION = 90
INK_MIN_PX = 150
# A dark strip along an edge: every channel under this, over at least this fraction of the side.
BORDER_DARK = 45
BORDER_MIN_FRACTION = 0.03
BORDER_COVERAGE = 0.9
STAIN_RANGE_FILE = "stain_range.json"


# The stain statistics compared with the training range: (HED channel, percentile over the tissue
# pixels). The residual channel (what H and E do not explain) moves when a tile is stained or
# scanned differently, while its tissue composition (nuclei against stroma) barely moves it; the
# haematoxylin and eosin medians vary with composition too much to separate re-staining from
# tissue (scripts/measure_quality.py measured both: README, *Input quality notes*).
STAIN_STATS: dict[str, tuple[int, float]] = {
    "haematoxylin, lightest 5 %": (0, 5.0),
    "residual stain, lowest 5 %": (2, 5.0),
    "residual stain, median": (2, 50.0),
    "residual stain, highest 5 %": (2, 95.0),
}


class StainRange(BaseModel):
    """The training tiles' range of each :data:`STAIN_STATS` statistic (``stain_range.json``)."""

    model_config = ConfigDict(extra="forbid")

    ranges: dict[str, tuple[float, float]] = Field(description="statistic → [low, high] over the training tiles")
    tiles: int = Field(ge=1, description="training tiles measured")
    source: str = Field(description="what was measured, by which command")


def stain_stats(image: np.ndarray) -> dict[str, float] | None:
    """Each :data:`STAIN_STATS` statistic over the tile's tissue pixels (None: too little tissue)."""
    rgb = image.astype(np.float64) / 255.0
    od = -np.log(np.maximum(rgb, 1e-6)).sum(axis=2)
    # tissue: stained, and neither ink nor a dark border (their own notes name those)
    tissue = (od > TISSUE_OD) & ~ink_mask(image) & ~(image < BORDER_DARK).all(axis=2)
    if tissue.sum() < 0.05 * tissue.size:
        return None
    hed = rgb_to_hed(rgb[tissue][None])[0]
    return {name: float(np.percentile(hed[:, ch], q)) for name, (ch, q) in STAIN_STATS.items()}


def stain_note(image: np.ndarray, expected: StainRange) -> str | None:
    """A note when a stain statistic of the tile lies outside the training tiles' range."""
    stats = stain_stats(image)
    if stats is None:
        return None
    off = [
        f"{name} {stats[name]:.2f} (training tiles {lo:.2f}–{hi:.2f})"
        for name, (lo, hi) in expected.ranges.items()
        if name in stats and not lo <= stats[name] <= hi
    ]
    if not off:
        return None
    return (
        "This tile is stained unlike the model's training data — " + "; ".join(off) + " (optical density). Its "
        "predictions and maps may shift (e.g. nuclei called another type); compare with a tile stained like the "
        "training set."
    )


def ink_mask(image: np.ndarray) -> np.ndarray:
    """Pixels of a pigment H&E does not make (pen ink, a marker dot), as a boolean mask."""
    hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)
    hue, sat = hsv[..., 0], hsv[..., 1]
    return (hue >= INK_HUES[0]) & (hue <= INK_HUES[1]) & (sat >= INK_MIN_SATURATION)


def ink_note(image: np.ndarray) -> str | None:
    """A note when a blob of ink of at least :data:`INK_MIN_PX` pixels is on the tile."""
    mask = ink_mask(image).astype(np.uint8)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    area = int(stats[k, cv2.CC_STAT_AREA])
    if area < INK_MIN_PX:
        return None
    x, y = (int(v) for v in centroids[k])
    return (
        f"Pen ink or a marker on the tile ({area} px around x {x}, y {y}): a model can learn such marks instead "
        "of the tissue — check how much of the map lies on it (an A/B view with the mark removed, on a copy)."
    )


def border_note(image: np.ndarray) -> str | None:
    """A note when a dark strip runs along an edge of the tile (the slide's or the scan's edge)."""
    dark: np.ndarray = np.asarray((image < BORDER_DARK).all(axis=2))
    h, w = dark.shape
    depth = max(2, round(BORDER_MIN_FRACTION * min(h, w)))
    sides = {
        "top": dark[:depth],
        "bottom": dark[-depth:],
        "left": dark[:, :depth],
        "right": dark[:, -depth:],
    }
    found = [side for side, strip in sides.items() if strip.mean() >= BORDER_COVERAGE]
    if not found:
        return None
    return (
        f"A dark strip along the {' and '.join(found)} edge — the slide's or the scan's border. Maps near it explain "
        "the border, not tissue; explain a region inside the tissue."
    )


def stain_range_for(model_folder: Path) -> StainRange | None:
    """The training stain range beside a model's weights, when the model ships one."""
    path = Path(model_folder) / STAIN_RANGE_FILE
    if not path.is_file():
        return None
    return StainRange.model_validate(json.loads(path.read_text()))


def notes(image: np.ndarray, expected: StainRange | None) -> list[str]:
    """Every quality note for a tile (stain only when the model's training range is known)."""
    found = [ink_note(image), border_note(image)]
    if expected is not None:
        found.insert(0, stain_note(image, expected))
    return [n for n in found if n]
