"""GeoJSON that QuPath's *File → Import objects* reads, and a validator written from its rules.

QuPath's reader (``PathObjectTypeAdapters`` in qupath-core) takes a ``FeatureCollection`` of
``Feature`` objects: ``geometry`` a GeoJSON Polygon / MultiPolygon in **level-0 pixels with the
origin at the top-left of the slide**; ``properties.objectType`` ``"detection"`` or
``"annotation"`` (also ``cell``, ``tile``); ``properties.classification`` ``{"name", "color":
[r, g, b]}``; ``properties.measurements`` an object of name → number; ``id`` a UUID string (v0.4+).
JSON has no NaN: a measurement that cannot be computed is left out.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

OBJECT_TYPES = ("annotation", "detection", "cell", "tile")
# Polygons are simplified by at most this many pixels (Douglas–Peucker), at the mask's resolution.
SIMPLIFY_PX = 1.0
NAMESPACE = uuid.UUID("6f1c9a52-4d0e-4b7a-9c1e-5e9a2f3b7d11")  # ids are stable across runs


Ring = list[list[float]]
PolygonCoords = list[Ring]


def _segments_cross(p1: np.ndarray, p2: np.ndarray, p3: np.ndarray, p4: np.ndarray) -> bool:
    def orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    d1, d2 = orient(p3, p4, p1), orient(p3, p4, p2)
    d3, d4 = orient(p1, p2, p3), orient(p1, p2, p4)
    return d1 * d2 < 0 and d3 * d4 < 0


def ring_self_crosses(ring: np.ndarray) -> bool:
    """True when two non-adjacent edges of a closed ring cross (a proper crossing)."""
    pts = ring[:-1] if len(ring) > 1 and (ring[0] == ring[-1]).all() else ring
    n = len(pts)
    if n < 4:
        return False
    for i in range(n):
        a, b = pts[i], pts[(i + 1) % n]
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue
            if _segments_cross(a, b, pts[j], pts[(j + 1) % n]):
                return True
    return False


def _ring(contour: np.ndarray, simplify: float) -> np.ndarray:
    """A closed ring (N×2, first = last) from an OpenCV contour; tiny contours become pixel squares."""
    import cv2

    pts = contour.reshape(-1, 2).astype(np.float64)
    if simplify > 0 and len(pts) > 4:
        simple = cv2.approxPolyDP(contour, simplify, True).reshape(-1, 2).astype(np.float64)
        if len(simple) >= 3:
            closed = np.vstack([simple, simple[:1]])
            if not ring_self_crosses(closed):
                pts = simple
    if len(np.unique(pts, axis=0)) < 3:  # a one- or two-pixel object: its pixels' outline
        x0, y0 = pts.min(axis=0) - 0.5
        x1, y1 = pts.max(axis=0) + 0.5
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return np.vstack([pts, pts[:1]])


def mask_polygons(mask: np.ndarray, simplify: float = SIMPLIFY_PX) -> list[list[np.ndarray]]:
    """Polygons (outer ring, then holes) of a boolean mask, in pixel-centre coordinates."""
    import cv2

    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if not m.any():
        return []
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    out: list[list[np.ndarray]] = []
    if hierarchy is None:
        return out
    h = hierarchy[0]
    for i, c in enumerate(contours):
        if h[i][3] != -1:
            continue  # a hole: added to its parent below
        rings = [_ring(c, simplify)]
        child = h[i][2]
        while child != -1:
            rings.append(_ring(contours[child], simplify))
            child = h[child][0]
        out.append(rings)
    return out


def to_level0(rings: list[np.ndarray], offset_xy: tuple[float, float], scale: float, digits: int = 2) -> PolygonCoords:
    """Mask pixel centres → level-0 coordinates: x0 + (i + 0.5) · scale."""
    ox, oy = offset_xy
    return [
        [[round(ox + (x + 0.5) * scale, digits), round(oy + (y + 0.5) * scale, digits)] for x, y in ring]
        for ring in rings
    ]


def feature(
    coords: PolygonCoords,
    object_type: str,
    class_name: str,
    color_rgb: tuple[int, int, int],
    measurements: dict[str, float],
    key: str,
) -> dict[str, Any]:
    """One QuPath object. ``key`` names it uniquely (slide, tile, index) for a stable UUID."""
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"objectType must be one of {OBJECT_TYPES}")
    return {
        "type": "Feature",
        "id": str(uuid.uuid5(NAMESPACE, key)),
        "geometry": {"type": "Polygon", "coordinates": coords},
        "properties": {
            "objectType": object_type,
            "classification": {"name": class_name, "color": [int(c) for c in color_rgb]},
            "measurements": {k: float(v) for k, v in measurements.items() if v is not None and math.isfinite(v)},
        },
    }


def feature_collection(features: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": features}


def validate(doc: Any, width: float, height: float) -> list[str]:
    """Problems QuPath's import would have with ``doc`` (empty list: none), for a slide of
    ``width`` × ``height`` level-0 pixels. Checked: collection and feature types, Polygon /
    MultiPolygon geometry with closed rings of ≥ 4 finite positions inside the slide and no
    crossing edges, objectType, classification name and colour, numeric measurements, UUID ids."""
    problems: list[str] = []
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
        return ["top level must be {'type': 'FeatureCollection', 'features': [...]}"]
    for n, f in enumerate(doc["features"]):
        where = f"feature {n}"
        if not isinstance(f, dict) or f.get("type") != "Feature":
            problems.append(f"{where}: type must be 'Feature'")
            continue
        try:
            uuid.UUID(str(f.get("id")))
        except ValueError:
            problems.append(f"{where}: id must be a UUID string")
        geom = f.get("geometry") or {}
        kind = geom.get("type")
        polys = (
            [geom.get("coordinates")]
            if kind == "Polygon"
            else geom.get("coordinates")
            if kind == "MultiPolygon"
            else None
        )
        if not isinstance(polys, list) or not polys:
            problems.append(f"{where}: geometry must be a Polygon or MultiPolygon with coordinates")
            continue
        for poly in polys:
            if not isinstance(poly, list) or not poly:
                problems.append(f"{where}: a polygon needs at least an outer ring")
                continue
            for ring in poly:
                arr = np.asarray(ring, dtype=float) if isinstance(ring, list) else np.zeros((0, 2))
                if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 4:
                    problems.append(f"{where}: a ring needs ≥ 4 [x, y] positions")
                    continue
                if not np.isfinite(arr).all():
                    problems.append(f"{where}: coordinates must be finite numbers")
                    continue
                if not (arr[0] == arr[-1]).all():
                    problems.append(f"{where}: ring not closed (first ≠ last position)")
                if arr[:, 0].min() < 0 or arr[:, 1].min() < 0 or arr[:, 0].max() > width or arr[:, 1].max() > height:
                    problems.append(f"{where}: coordinates outside the {width}×{height} slide")
                if ring_self_crosses(arr):
                    problems.append(f"{where}: a ring crosses itself")
        props = f.get("properties")
        if not isinstance(props, dict):
            problems.append(f"{where}: properties missing")
            continue
        if props.get("objectType") not in OBJECT_TYPES:
            problems.append(f"{where}: objectType must be one of {OBJECT_TYPES}")
        cls = props.get("classification")
        if cls is not None:
            color = cls.get("color") if isinstance(cls, dict) else None
            if not isinstance(cls, dict) or not isinstance(cls.get("name"), str) or not cls["name"]:
                problems.append(f"{where}: classification needs a name")
            if not (
                isinstance(color, list)
                and len(color) == 3
                and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
            ):
                problems.append(f"{where}: classification color must be [r, g, b] integers 0–255")
        meas = props.get("measurements", {})
        if not isinstance(meas, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in meas.values()
        ):
            problems.append(f"{where}: measurements must map names to finite numbers")
    return problems


def rasterize(
    doc: dict[str, Any],
    shape_hw: tuple[int, int],
    classes: list[str],
    scale: float = 1.0,
    offset_xy: tuple[float, float] = (0.0, 0.0),
    object_type: str = "detection",
) -> np.ndarray:
    """Fill the polygons of one object type into an H×W class-index image (the class's index in
    ``classes``), at ``scale`` level-0 pixels per output pixel from ``offset_xy``: to compare the
    export with the model's own mask."""
    import cv2

    out = np.zeros(shape_hw, np.int32)
    ox, oy = offset_xy
    for f in doc["features"]:
        if f["properties"]["objectType"] != object_type:
            continue
        name = f["properties"].get("classification", {}).get("name", "")
        label = classes.index(name) if name in classes else len(classes)
        rings = f["geometry"]["coordinates"]
        pts = [np.round((np.asarray(r, dtype=np.float64) - [ox, oy]) / scale - 0.5).astype(np.int32) for r in rings]
        layer = np.zeros(shape_hw, np.uint8)
        cv2.fillPoly(layer, [pts[0]], 1)
        if len(pts) > 1:
            cv2.fillPoly(layer, pts[1:], 0)
        # holes' boundary pixels belong to the object (pixel-centre outlines): redraw them
        for hole in pts[1:]:
            cv2.polylines(layer, [hole], True, 1)
        out[layer > 0] = label
    return out


@dataclass(frozen=True)
class TileGeometry:
    """Where a tile's pixels are on the slide, and which of them it owns.

    Attributes:
        origin: level-0 (x, y) of the tile's top-left pixel (0, 0 for a lone tile).
        scale: level-0 pixels per tile pixel.
        own: owned cell (x0, y0, x1, y1) in tile pixels; objects are kept by their owner only.
        neighbours: left, top, right, bottom edges have another tile beyond them.
    """

    origin: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    own: tuple[int, int, int, int] | None = None
    neighbours: tuple[bool, bool, bool, bool] = (False, False, False, False)


def tile_features(
    geom: TileGeometry,
    mask: np.ndarray,
    probs: np.ndarray,
    cams: dict[int, np.ndarray],
    classes: list[str],
    colors: list[str],
    mpp: float | None,
    method: str,
    threshold: float,
    key: str,
) -> list[dict[str, Any]]:
    """QuPath objects of one tile: each predicted nucleus (of the classes in ``cams``) as a
    detection with its area, CAM and probability; each region where the class's CAM reaches
    ``threshold`` as an annotation. Used by ``batch`` for slides and by the app for one tile.

    Ownership: a whole object is kept by the tile whose owned cell holds its centre; an object
    cut by an edge with a neighbour (larger than the overlap) is kept as its part in the owned cell.
    """
    from scipy import ndimage

    from .render import hex_to_rgb

    h, w = mask.shape
    ox0, oy0, ox1, oy1 = geom.own or (0, 0, w, h)
    ox1, oy1 = min(ox1, w), min(oy1, h)
    left, top, right, bottom = geom.neighbours
    area_um2 = (mpp or 0.0) ** 2
    eight = np.ones((3, 3), bool)
    features: list[dict[str, Any]] = []

    def add(
        comp: np.ndarray, sl: tuple[slice, slice], kind: str, name: str, color: Any, meas: dict[str, Any], tag: str
    ) -> None:
        origin = (geom.origin[0] + sl[1].start * geom.scale, geom.origin[1] + sl[0].start * geom.scale)
        for rings in mask_polygons(comp):
            coords = to_level0(rings, origin, geom.scale)
            features.append(feature(coords, kind, name, color, meas, f"{key}:{tag}:{len(features)}"))

    for c, cam in cams.items():
        name, color = classes[c], hex_to_rgb(colors[c])
        labels, _ = ndimage.label(mask == c, structure=eight)
        for i, sl in enumerate(ndimage.find_objects(labels)):
            if sl is None:
                continue
            ys, xs = sl
            comp = labels[sl] == i + 1
            cut = (
                (left and xs.start == 0)
                or (top and ys.start == 0)
                or (right and xs.stop == w)
                or (bottom and ys.stop == h)
            )
            if cut:  # a cluster larger than the overlap: the part in the owned cell
                keep = np.zeros_like(comp)
                cy0, cx0 = max(oy0 - ys.start, 0), max(ox0 - xs.start, 0)
                cy1, cx1 = max(min(oy1 - ys.start, comp.shape[0]), 0), max(min(ox1 - xs.start, comp.shape[1]), 0)
                keep[cy0:cy1, cx0:cx1] = comp[cy0:cy1, cx0:cx1]
                comp = keep
                if not comp.any():
                    continue
            else:
                yy, xx = np.nonzero(comp)
                cy, cx = yy.mean() + ys.start, xx.mean() + xs.start
                if not (ox0 <= cx < ox1 and oy0 <= cy < oy1):
                    continue  # whole here, but another tile owns its centre
            cam_vals, prob_vals = cam[sl][comp], probs[c][sl][comp]
            meas = {
                "Area µm^2": round(float(comp.sum()) * area_um2, 3),
                f"{method} CAM mean": round(float(cam_vals.mean()), 4),
                f"{method} CAM max": round(float(cam_vals.max()), 4),
                "Class probability mean": round(float(prob_vals.mean()), 4),
            }
            add(comp, sl, "detection", name, color, meas, f"d:{c}:{i}")
        above = np.zeros((h, w), bool)  # cut to the owned cell, so tiles partition the regions
        above[oy0:oy1, ox0:ox1] = cam[oy0:oy1, ox0:ox1] >= threshold
        regions, _ = ndimage.label(above, structure=eight)
        for k, sl in enumerate(ndimage.find_objects(regions)):
            if sl is None:
                continue
            comp = regions[sl] == k + 1
            meas = {
                "Area µm^2": round(float(comp.sum()) * area_um2, 3),
                f"{method} CAM mean": round(float(cam[sl][comp].mean()), 4),
            }
            add(comp, sl, "annotation", f"{name} CAM ≥ {threshold:g}", color, meas, f"a:{c}:{k}")
    return features
