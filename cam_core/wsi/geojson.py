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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cam_core.data.objects import EIGHT  # objects are 8-connected, here as in the app's objects table

OBJECT_TYPES = ("annotation", "detection", "cell", "tile")
# Outlines are exact by default: the pixels whose centres lie inside or on an exported polygon are
# the object's pixels, no more, no fewer (tested at every size). Douglas–Peucker at 1 px halved the
# vertices of smooth shapes but turned a 3×3 nucleus into a triangle; a caller may still ask for it.
SIMPLIFY_PX = 0.0
NAMESPACE = uuid.UUID("6f1c9a52-4d0e-4b7a-9c1e-5e9a2f3b7d11")  # ids are stable across runs


Ring = list[list[float]]
PolygonCoords = list[Ring]


def _areas(geom: Any) -> list[Any]:
    """The polygons of an outline after ``make_valid`` (its lines and points dropped).

    Outlines through pixel centres (OpenCV's contours) are not always valid polygons: an object
    one pixel wide is a line with no area, two blobs joined by one diagonal pixel touch at a
    point. ``make_valid`` splits such an outline into its areas and its lines.
    """
    import shapely

    parts = shapely.get_parts(shapely.make_valid(geom))
    return [leaf for part in parts for leaf in shapely.get_parts(part) if leaf.geom_type == "Polygon"]


def _outline(contour: np.ndarray) -> Any:
    """An OpenCV contour as a shapely geometry: point, line or (possibly invalid) polygon."""
    import shapely

    pts = contour.reshape(-1, 2).astype(np.float64)
    if len(pts) == 1:
        return shapely.Point(pts[0])
    if len(pts) == 2:
        return shapely.LineString(pts)
    return shapely.Polygon(pts)


def object_shape(outer: np.ndarray, holes: list[np.ndarray], simplify: float = SIMPLIFY_PX) -> Any:
    """One object (an outer contour and its holes' contours) as a valid shapely geometry.

    Its areas are simplified by at most ``simplify`` pixels with their topology kept (outline and
    holes together, so a simplified hole never crosses its outline; 0: only collinear vertices
    go). Every outline pixel the areas leave out (a part one pixel wide, a diagonal step, the ring
    of pixels around a one-pixel hole) is added as its pixel's square, so every pixel is covered
    and QuPath never receives a zero-area nucleus. A hole's contour runs through the object's
    pixels around it: only the area inside it is cut out.
    """
    import shapely

    if not holes and simplify <= 0 and len(outer) > 2:  # most nuclei: a valid outline as it is
        plain = shapely.Polygon(outer.reshape(-1, 2).astype(np.float64))
        if plain.is_valid:  # every outline pixel is a vertex, so none is left out
            return shapely.simplify(plain, 0)
    shape = shapely.union_all(_areas(_outline(outer)))
    cut = [a for h in holes if len(h) > 2 for a in _areas(_outline(h))]
    if cut:
        shape = shapely.difference(shape, shapely.union_all(cut))
    if simplify > 0 and not shape.is_empty:
        shape = shapely.simplify(shape, simplify, preserve_topology=True)
    edge = np.vstack([c.reshape(-1, 2) for c in (outer, *holes)]).astype(np.float64)
    # pixel centres are small integers: on-the-outline tests are exact (intersects = inside or on)
    left_out = edge[~shapely.intersects_xy(shape, edge[:, 0], edge[:, 1])] if not shape.is_empty else edge
    # tolerance 0 drops only the collinear vertices a union leaves
    return shapely.simplify(shapely.make_valid(shapely.union_all([shape, *_pixel_squares(left_out)])), 0)


def _pixel_squares(centres: np.ndarray) -> list[Any]:
    """The unit squares of pixels given by their centres (N×2); squares of diagonal neighbours
    meet at a corner, and none reaches past the slide's edge."""
    import shapely

    if not len(centres):
        return []
    xy = np.unique(centres, axis=0)
    return list(shapely.box(xy[:, 0] - 0.5, xy[:, 1] - 0.5, xy[:, 0] + 0.5, xy[:, 1] + 0.5))


def _rings(shape: Any) -> list[list[np.ndarray]]:
    """Polygons of a shapely geometry as [outer ring, *holes], each ring N×2 with first = last."""
    import shapely

    return [
        [np.asarray(poly.exterior.coords), *(np.asarray(r.coords) for r in poly.interiors)]
        for poly in shapely.get_parts(shape)
        if poly.geom_type == "Polygon" and not poly.is_empty
    ]


def mask_polygons(mask: np.ndarray, simplify: float = SIMPLIFY_PX) -> list[list[np.ndarray]]:
    """Polygons (outer ring, then holes) of a boolean mask, in pixel-centre coordinates; each
    valid by OGC's rules (shapely's ``is_valid``)."""
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
        holes, child = [], h[i][2]
        while child != -1:
            holes.append(contours[child])
            child = h[child][0]
        out += _rings(object_shape(c, holes, simplify))
    return out


def to_level0(rings: list[np.ndarray], offset_xy: tuple[float, float], scale: float, digits: int = 2) -> PolygonCoords:
    """Mask pixel centres → level-0 coordinates: x0 + (i + 0.5) · scale."""
    offset = np.asarray(offset_xy, np.float64)
    return [np.round(offset + (np.asarray(ring, np.float64) + 0.5) * scale, digits).tolist() for ring in rings]


def geometry(polygons: list[PolygonCoords]) -> dict[str, Any]:
    """A GeoJSON Polygon, or a MultiPolygon when an object has several parts."""
    if len(polygons) == 1:
        return {"type": "Polygon", "coordinates": polygons[0]}
    return {"type": "MultiPolygon", "coordinates": polygons}


def feature(
    geom: dict[str, Any],
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
        "geometry": geom,
        "properties": {
            "objectType": object_type,
            "classification": {"name": class_name, "color": [int(c) for c in color_rgb]},
            "measurements": {k: float(v) for k, v in measurements.items() if v is not None and math.isfinite(v)},
        },
    }


def feature_collection(features: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": features}


def _rings_usable(polys: list[Any], width: float, height: float, where: str, problems: list[str]) -> bool:
    """Each ring a closed list of ≥ 4 finite [x, y] inside the slide; False when one is not."""
    ok = True
    for poly in polys:
        if not isinstance(poly, list) or not poly:
            problems.append(f"{where}: a polygon needs at least an outer ring")
            ok = False
            continue
        for ring in poly:
            try:
                arr = np.asarray(ring, dtype=float) if isinstance(ring, list) else np.zeros((0, 2))
            except (TypeError, ValueError):
                arr = np.zeros((0, 2))
            if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 4:
                problems.append(f"{where}: a ring needs ≥ 4 [x, y] positions")
                ok = False
                continue
            if not np.isfinite(arr).all():
                problems.append(f"{where}: coordinates must be finite numbers")
                ok = False
                continue
            if not (arr[0] == arr[-1]).all():
                problems.append(f"{where}: ring not closed (first ≠ last position)")
                ok = False
            if arr[:, 0].min() < 0 or arr[:, 1].min() < 0 or arr[:, 0].max() > width or arr[:, 1].max() > height:
                problems.append(f"{where}: coordinates outside the {width}×{height} slide")
    return ok


def validate(doc: Any, width: float, height: float) -> list[str]:
    """Problems QuPath's import would have with ``doc`` (empty list: none), for a slide of
    ``width`` × ``height`` level-0 pixels. Checked: collection and feature types, Polygon /
    MultiPolygon geometry with closed rings of ≥ 4 finite positions inside the slide, valid by
    OGC's rules (shapely: no crossing or self-touching ring, holes inside their outline, parts
    of a MultiPolygon not overlapping), objectType, classification name and colour, numeric measurements, UUID ids."""
    import shapely
    from shapely.geometry import shape as from_geojson

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
        if _rings_usable(polys, width, height, where, problems):
            reason = shapely.is_valid_reason(from_geojson(geom))
            if reason != "Valid Geometry":  # OGC rules, as JTS (QuPath's geometry library) applies them
                problems.append(f"{where}: not a valid polygon ({reason}): rings may not cross or touch themselves")
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


@dataclass
class Raster:
    """Objects of a GeoJSON drawn back onto a pixel grid.

    Attributes:
        labels: H×W class indices (the class's index in ``classes``; later objects drawn over earlier).
        hits: H×W, how many objects cover each pixel.
        duplicated: objects with more than half of their pixels under another object of their
            class: an object exported twice (``labels`` alone cannot show that; outlines simplified
            by up to a pixel make neighbours share a border pixel, never half of one).
    """

    labels: np.ndarray
    hits: np.ndarray
    duplicated: int


def rasterize(
    doc: dict[str, Any],
    shape_hw: tuple[int, int],
    classes: list[str],
    scale: float = 1.0,
    offset_xy: tuple[float, float] = (0.0, 0.0),
    object_type: str = "detection",
) -> Raster:
    """Fill the polygons of one object type into an H×W image, at ``scale`` level-0 pixels per
    output pixel from ``offset_xy``: to compare the export with the model's own mask."""
    import shapely
    from shapely.geometry import shape as from_geojson

    h, w = shape_hw
    out = np.zeros(shape_hw, np.int32)
    hits = np.zeros(shape_hw, np.int32)
    ox, oy = offset_xy
    drawn: list[tuple[int, slice, slice, np.ndarray]] = []
    for f in doc["features"]:
        if f["properties"]["objectType"] != object_type:
            continue
        name = f["properties"].get("classification", {}).get("name", "")
        label = classes.index(name) if name in classes else len(classes)
        # level-0 → this grid's pixel centres: x = (X − ox) / scale − 0.5
        geom = shapely.transform(from_geojson(f["geometry"]), lambda xy: (xy - [ox, oy]) / scale - 0.5)
        bx0, by0, bx1, by1 = geom.bounds
        x0, y0 = max(int(np.ceil(bx0 - 1e-6)), 0), max(int(np.ceil(by0 - 1e-6)), 0)
        x1, y1 = min(int(np.floor(bx1 + 1e-6)) + 1, w), min(int(np.floor(by1 + 1e-6)) + 1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        xx, yy = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
        shapely.prepare(geom)
        # a pixel is the object's when its centre lies inside or on the outline
        inside = shapely.intersects_xy(geom, xx.ravel(), yy.ravel()).reshape(xx.shape)
        sl = (slice(y0, y1), slice(x0, x1))
        out[sl][inside] = label
        hits[sl] += inside
        drawn.append((label, *sl, inside))
    duplicated = 0
    for label in {d[0] for d in drawn}:
        mine = [d[1:] for d in drawn if d[0] == label]
        same = np.zeros(shape_hw, np.int32)
        for ys, xs, inside in mine:
            same[ys, xs] += inside
        duplicated += sum(bool((same[ys, xs][inside] > 1).mean() > 0.5) for ys, xs, inside in mine if inside.any())
    return Raster(out, hits, duplicated)


@dataclass(frozen=True)
class TileGeometry:
    """Where a tile's pixels are on the slide, and which of them it owns.

    Attributes:
        origin: level-0 (x, y) of the tile's top-left pixel (0, 0 for a lone tile).
        scale: level-0 pixels per tile pixel.
        own: owned cell (x0, y0, x1, y1) in tile pixels; the owned cells of a grid partition the
            slide, and each tile exports only what it predicts inside its own cell.
        neighbours: left, top, right, bottom sides of the owned cell meet another tile's cell.
        grid_xy: the tile's top-left pixel on the slide's grid of model pixels (fragments of
            objects cut by owned cells are joined on that grid).
    """

    origin: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    own: tuple[int, int, int, int] | None = None
    neighbours: tuple[bool, bool, bool, bool] = (False, False, False, False)
    grid_xy: tuple[int, int] = (0, 0)


@dataclass
class Sums:
    """What an object's measurements are computed from; additive, so fragments can be joined."""

    pixels: int
    cam_sum: float
    cam_max: float
    prob_sum: float = 0.0

    def __add__(self, other: Sums) -> Sums:
        return Sums(
            self.pixels + other.pixels,
            self.cam_sum + other.cam_sum,
            max(self.cam_max, other.cam_max),
            self.prob_sum + other.prob_sum,
        )


@dataclass(frozen=True)
class Style:
    """How a tile's objects are named and measured (the same for every tile of a run)."""

    classes: list[str]
    colors: list[str]
    mpp: float | None
    method: str
    threshold: float

    def name(self, kind: str, class_index: int) -> str:
        base = self.classes[class_index]
        return base if kind == "detection" else f"{base} CAM ≥ {self.threshold:g}"

    def measurements(self, kind: str, s: Sums) -> dict[str, float]:
        """QuPath measurements; the area only where the resolution is known (never a made-up 0)."""
        meas: dict[str, float] = {}
        if self.mpp:
            meas["Area µm^2"] = round(s.pixels * self.mpp**2, 3)
        meas[f"{self.method} CAM mean"] = round(s.cam_sum / s.pixels, 4)
        if kind == "detection":
            meas[f"{self.method} CAM max"] = round(s.cam_max, 4)
            meas["Class probability mean"] = round(s.prob_sum / s.pixels, 4)
        return meas


@dataclass
class Fragment:
    """The part of an object inside one tile's owned cell, touching a side shared with another
    tile's cell: joined with the parts next to it across that side by :func:`join_fragments`."""

    kind: str
    class_index: int
    x: int  # top-left of ``pixels`` on the slide's grid of model pixels
    y: int
    pixels: np.ndarray  # h×w bool
    sums: Sums

    def to_json(self) -> dict[str, Any]:
        import base64

        h, w = self.pixels.shape
        bits = base64.b64encode(np.packbits(self.pixels, axis=None).tobytes()).decode()
        return {
            "kind": self.kind,
            "class": self.class_index,
            "x": self.x,
            "y": self.y,
            "h": h,
            "w": w,
            "bits": bits,
            **asdict(self.sums),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Fragment:
        import base64

        h, w = int(d["h"]), int(d["w"])
        flat = np.unpackbits(np.frombuffer(base64.b64decode(d["bits"]), np.uint8), count=h * w)
        sums = Sums(int(d["pixels"]), float(d["cam_sum"]), float(d["cam_max"]), float(d["prob_sum"]))
        return cls(d["kind"], int(d["class"]), int(d["x"]), int(d["y"]), flat.reshape(h, w).astype(bool), sums)


@dataclass
class TileObjects:
    """A tile's whole objects (QuPath features) and the fragments it shares with its neighbours."""

    features: list[dict[str, Any]]
    fragments: list[Fragment]


def _object_features(
    comp: np.ndarray, offset: tuple[float, float], scale: float, kind: str, cls: int, sums: Sums, style: Style, key: str
) -> list[dict[str, Any]]:
    """QuPath features of one connected object whose pixel (0, 0) sits at level-0 ``offset``."""
    from cam_core.output.render import hex_to_rgb

    name, color = style.name(kind, cls), hex_to_rgb(style.colors[cls])
    meas = style.measurements(kind, sums)
    polygons = [to_level0(rings, offset, scale) for rings in mask_polygons(comp)]
    return [feature(geometry(polygons), kind, name, color, meas, f"{key}:0")] if polygons else []


def tile_objects(
    geom: TileGeometry,
    mask: np.ndarray,
    probs: np.ndarray,
    cams: dict[int, np.ndarray],
    style: Style,
    key: str,
) -> TileObjects:
    """QuPath objects of one tile: each predicted nucleus (of the classes in ``cams``) as a
    detection with its area, CAM and probability; each region where the class's CAM reaches
    ``style.threshold`` as an annotation. Used by ``batch`` for slides and by the app for one tile.

    Ownership: a tile exports only its owned cell, so every pixel of a slide is described by one
    tile (the stitched mask is the mosaic of owned cells). An object inside the cell is exported
    whole; one that touches a side shared with a neighbour's cell becomes a :class:`Fragment`,
    joined across the side by :func:`join_fragments`. Every object of the stitched mask is thus
    exported exactly once, whatever its size against the overlap (the earlier rule, "the owner of
    the centre keeps a whole object, else each tile keeps its part", exported an object twice when
    one tile cut it and its neighbour saw it whole).
    """
    from scipy import ndimage

    h, w = mask.shape
    ox0, oy0, ox1, oy1 = geom.own or (0, 0, w, h)
    ox1, oy1 = min(ox1, w), min(oy1, h)
    left, top, right, bottom = geom.neighbours
    inside = np.zeros((h, w), bool)
    inside[oy0:oy1, ox0:ox1] = True
    out = TileObjects([], [])
    for c, cam in cams.items():
        for kind, region in (("detection", mask == c), ("annotation", cam >= style.threshold)):
            labels, _ = ndimage.label(region & inside, structure=EIGHT)
            for i, sl in enumerate(ndimage.find_objects(labels)):
                if sl is None:
                    continue
                ys, xs = sl
                comp = labels[sl] == i + 1
                cam_vals = cam[sl][comp]
                sums = Sums(
                    int(comp.sum()), float(cam_vals.sum()), float(cam_vals.max()), float(probs[c][sl][comp].sum())
                )
                shared = (
                    (left and xs.start == ox0)
                    or (top and ys.start == oy0)
                    or (right and xs.stop == ox1)
                    or (bottom and ys.stop == oy1)
                )
                if shared:
                    gx, gy = geom.grid_xy
                    out.fragments.append(Fragment(kind, c, gx + xs.start, gy + ys.start, comp, sums))
                    continue
                offset = (geom.origin[0] + xs.start * geom.scale, geom.origin[1] + ys.start * geom.scale)
                out.features += _object_features(
                    comp, offset, geom.scale, kind, c, sums, style, f"{key}:{kind[0]}:{c}:{i}"
                )
    return out


def join_fragments(fragments: list[Fragment], scale: float, style: Style, key: str) -> list[dict[str, Any]]:
    """Objects made of fragments from several tiles: fragments of one kind and class that are
    8-adjacent across owned-cell sides are one object, measured from their summed pixels.

    Coordinates: grid pixel (X, Y) is level-0 ((X + 0.5) · scale, (Y + 0.5) · scale).
    """
    from scipy import ndimage

    n = len(fragments)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n:
        box = np.array([[f.x, f.y, f.x + f.pixels.shape[1], f.y + f.pixels.shape[0]] for f in fragments])
        group = np.array([hash((f.kind, f.class_index)) for f in fragments])
        for i, a in enumerate(fragments):
            # candidates: same kind and class, boxes within one pixel of each other
            near = np.nonzero(
                (group[i + 1 :] == group[i])
                & (box[i + 1 :, 0] <= box[i, 2])
                & (box[i + 1 :, 2] >= box[i, 0])
                & (box[i + 1 :, 1] <= box[i, 3])
                & (box[i + 1 :, 3] >= box[i, 1])
            )[0]
            for j in near + i + 1:
                b = fragments[j]
                if (a.kind, a.class_index) != (b.kind, b.class_index) or find(i) == find(int(j)):
                    continue
                x0, y0 = min(a.x, b.x) - 1, min(a.y, b.y) - 1
                x1 = max(a.x + a.pixels.shape[1], b.x + b.pixels.shape[1]) + 1
                y1 = max(a.y + a.pixels.shape[0], b.y + b.pixels.shape[0]) + 1
                ca, cb = np.zeros((y1 - y0, x1 - x0), bool), np.zeros((y1 - y0, x1 - x0), bool)
                ca[a.y - y0 : a.y - y0 + a.pixels.shape[0], a.x - x0 : a.x - x0 + a.pixels.shape[1]] = a.pixels
                cb[b.y - y0 : b.y - y0 + b.pixels.shape[0], b.x - x0 : b.x - x0 + b.pixels.shape[1]] = b.pixels
                if (ndimage.binary_dilation(ca, EIGHT) & cb).any():
                    parent[find(i)] = find(int(j))
    members: dict[int, list[Fragment]] = {}
    for i, f in enumerate(fragments):
        members.setdefault(find(i), []).append(f)
    features: list[dict[str, Any]] = []
    for parts in sorted(members.values(), key=lambda p: min((f.y, f.x, f.kind, f.class_index) for f in p)):
        x0, y0 = min(f.x for f in parts), min(f.y for f in parts)
        x1 = max(f.x + f.pixels.shape[1] for f in parts)
        y1 = max(f.y + f.pixels.shape[0] for f in parts)
        comp = np.zeros((y1 - y0, x1 - x0), bool)
        sums = parts[0].sums
        for k, f in enumerate(parts):
            comp[f.y - y0 : f.y - y0 + f.pixels.shape[0], f.x - x0 : f.x - x0 + f.pixels.shape[1]] |= f.pixels
            sums = sums if k == 0 else sums + f.sums
        first = parts[0]
        features += _object_features(
            comp,
            (x0 * scale, y0 * scale),
            scale,
            first.kind,
            first.class_index,
            sums,
            style,
            f"{key}:joined:{first.kind[0]}:{first.class_index}:{y0}:{x0}",
        )
    return features
