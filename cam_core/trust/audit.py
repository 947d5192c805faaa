"""``python -m cam_core audit``: does a model's prediction, or its CAM, follow marks that must not matter?

The teaching model was *trained* on a shortcut; a lab's own model may have learned one nobody
planted: a pen circle around the tumour, the dark slide edge, a scanner's stitching stripe. The
audit needs no training: it plants each mark of :data:`AUDIT_MARKERS` on a folder of tiles (placed
off the predicted nuclei, seeded per tile so every run plants the same mark) and asks

* **the prediction**: of the pixels of nuclei clear of the mark (predicted with or without it),
  the share whose call of a class flips when the mark is there, beyond the share that flips when
  the same footprint is only blurred (a neutral patch: covering tissue changes some calls by
  itself). :data:`FLIP_FLAG` of that excess decides "matters";
* **the explanations**: for each one-pass method, the share of its CAM's mass (the class's
  predicted region as the target) that lies on the mark, against the mark's share of the tile.

The rule is :data:`AUDIT_RULE`, written once and printed with every table. A mark that moves the
prediction flags the model; a CAM that piles on the mark (:data:`LOOK_FLAG` × its area) shows
which maps would reveal it. Nuclei the mark touches are left out of the prediction's score:
painting over or across a nucleus changes it, which is no shortcut.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cam_core.errors import EmptyTargetError, unknown
from cam_core.trust import shortcut

if TYPE_CHECKING:
    from cam_core.engine.methods import MethodInfo
    from cam_core.model.models import LoadedModel

FLIP_FLAG = 0.05  # a mark matters when it flips ≥ 5 % more of the nucleus pixels' calls than a neutral patch
CLEARANCE_PX = 3  # nuclei within this distance of the mark are left out (the mark changes them)
LOOK_FLAG = 5.0  # a CAM "looks at" the mark when its mass there is ≥ 5× the mark's area share
AUDIT_RULE = (
    f"a mark matters for a class when, averaged over the tiles, at least {FLIP_FLAG:.0%} more of the pixels "
    f"of nuclei clear of the mark (more than {CLEARANCE_PX} px away) change whether they are called that class "
    "once the mark is planted than when the same footprint is only blurred (a neutral patch); "
    "a model is flagged for a mark that matters for any class. A map looks at the mark when its share "
    f"of the CAM's mass on the mark is at least {LOOK_FLAG:g}× the mark's share of the tile."
)

Draw = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _paint(image: np.ndarray, alpha: np.ndarray, rgb: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with ``rgb`` laid over it at coverage ``alpha`` (0..1), and the mark's footprint."""
    a = alpha[..., None].astype(np.float32)
    out = image.astype(np.float32) * (1 - a) + np.asarray(rgb, np.float32) * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), alpha > 0


def _dot(image: np.ndarray, nuclei: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centre = shortcut.place(nuclei, rng)
    return shortcut.plant(image, centre)[0], shortcut.marker_disk(image.shape[:2], centre) > 0


def _pen(image: np.ndarray, nuclei: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A felt-tip stroke: a curve from one edge of the tile to the opposite one, 5 px wide."""
    import cv2

    h, w = image.shape[:2]
    t = np.linspace(0, 1, 48)
    y0, y1, bend = rng.uniform(0.15, 0.85, 3) * h
    xs, ys = t * (w - 1), (1 - t) ** 2 * y0 + 2 * t * (1 - t) * bend + t**2 * y1  # a quadratic Bézier
    mask = np.zeros((h, w), np.uint8)
    cv2.polylines(mask, [np.stack([xs, ys], 1).round().astype(np.int32)], False, 255, 5, cv2.LINE_AA)
    return _paint(image, mask / 255.0 * 0.85, (40, 52, 150))  # blue ink, a little translucent


def _border(image: np.ndarray, nuclei: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The dark edge of the slide or coverslip: a near-black strip along one side, 8 % of it deep."""
    h, w = image.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    side, depth = int(rng.integers(4)), max(2, round(0.08 * min(h, w)))
    [alpha[:depth], alpha[-depth:], alpha[:, :depth], alpha[:, -depth:]][side][...] = 1.0
    return _paint(image, alpha, (28, 26, 30))


def _stripe(image: np.ndarray, nuclei: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A scanner's stitching stripe: a pale, washed-out vertical band 6 px wide."""
    h, w = image.shape[:2]
    x = int(rng.integers(0, max(1, w - 6)))
    alpha = np.zeros((h, w), np.float32)
    alpha[:, x : x + 6] = 0.55
    return _paint(image, alpha, (236, 236, 244))


@dataclass(frozen=True)
class AuditMarker:
    """One mark that must not matter: its name, a plain description and how it is drawn."""

    name: str
    words: str
    draw: Draw


AUDIT_MARKERS: dict[str, AuditMarker] = {
    m.name: m
    for m in (
        AuditMarker("ink dot", "a dark-green felt-tip dot on background (the teaching model's cue)", _dot),
        AuditMarker("pen stroke", "a blue pen line across the tile", _pen),
        AuditMarker("slide border", "a near-black strip along one edge (slide or coverslip edge)", _border),
        AuditMarker("scanner stripe", "a pale vertical band (a scanner's stitching line)", _stripe),
    )
}


def get_marker(name: str) -> AuditMarker:
    if name not in AUDIT_MARKERS:
        raise unknown("audit mark", name, list(AUDIT_MARKERS))
    return AUDIT_MARKERS[name]


def plant_marker(name: str, image: np.ndarray, nuclei: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (uint8 RGB) with the mark planted, and its footprint; ``nuclei``: where not to
    put a dot. The same (name, seed) plants the same mark, so the app's A/B view shows the tile the
    audit scored."""
    rng = np.random.default_rng([seed, list(AUDIT_MARKERS).index(get_marker(name).name)])
    return get_marker(name).draw(np.ascontiguousarray(image[..., :3]), nuclei > 0, rng)


APP_SEED = 0  # the seed of the mark the app's A/B view plants (and a rebuild of its record)


def planted(loaded: LoadedModel, image: np.ndarray, name: str, seed: int = APP_SEED) -> tuple[np.ndarray, np.ndarray]:
    """:func:`plant_marker` placed off the nuclei the model predicts with its own decision rule,
    so the app and a rebuild of its record plant the same mark whatever rule the view uses."""
    from cam_core import engine

    return plant_marker(name, image, engine.predict(loaded, image).mask, seed)


def planted_sha256(array: np.ndarray) -> str:
    """A planted image's identity (it has no file): the SHA-256 of its pixels (C order, uint8)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.uint8).tobytes()).hexdigest()


@dataclass
class TileAudit:
    """One mark on one tile: per class the share of nucleus pixels whose call flips (None: no
    nucleus on either side), per class and method the CAM's mass share on the mark."""

    marker: str
    area_share: float
    flips: dict[int, float | None]
    control: dict[int, float | None]  # the same footprint blurred instead (no mark): what covering alone moves
    mass: dict[int, dict[str, float]] = field(default_factory=dict)


def _untouched_nuclei(before: np.ndarray, after: np.ndarray, foot: np.ndarray) -> np.ndarray:
    """Nucleus pixels (predicted with or without the mark) of the nuclei the mark does not touch.

    A pen line across a nucleus changes that nucleus: its call may move for good reasons. Only
    nuclei clear of the mark (by :data:`CLEARANCE_PX`) say whether the mark is read as a cue.
    """
    from scipy import ndimage

    union = (before > 0) | (after > 0)
    labels, _ = ndimage.label(union)
    near = ndimage.binary_dilation(foot, iterations=CLEARANCE_PX)
    touched = np.unique(labels[near & union])
    return union & ~np.isin(labels, touched)


def audit_tile(
    loaded: LoadedModel, image: np.ndarray, marker: str, seed: int, layer: str, infos: list[MethodInfo]
) -> TileAudit:
    """Plant ``marker`` on ``image`` and score what it changes (see the module docstring)."""
    from cam_core import engine
    from cam_core.engine import targets as tg

    before = engine.predict(loaded, image).mask
    marked, foot = plant_marker(marker, image, before, seed)
    after = engine.predict(loaded, marked).mask
    neutral = engine.predict(loaded, neutral_patch(image, foot)).mask
    result = TileAudit(
        marker,
        float(foot.mean()),
        flip_shares(before, after, foot, loaded.num_classes),
        flip_shares(before, neutral, foot, loaded.num_classes),
    )
    cap = None
    for c in range(1, loaded.num_classes):
        if not (after == c).any():
            continue
        target = tg.TargetSpec("predicted", c)
        try:
            cap = (
                engine.capture(loaded, marked, target, [layer], keep_graph=True)
                if cap is None
                else engine.recapture(loaded, cap, target, marked)
            )
        except EmptyTargetError:
            continue
        result.mass[c] = {info.name: mass_on(engine.cam_from_capture(cap, info, layer).cam, foot) for info in infos}
    return result


def flip_shares(before: np.ndarray, after: np.ndarray, foot: np.ndarray, num_classes: int) -> dict[int, float | None]:
    """Per foreground class: the share of the pixels of nuclei clear of the mark whose call of the
    class differs between the masks without (``before``) and with the mark; None: no such nucleus."""
    nuclei = _untouched_nuclei(before, after, foot)
    n = int(nuclei.sum())
    return {
        c: float((((before == c) != (after == c)) & nuclei).sum()) / n if n else None for c in range(1, num_classes)
    }


def neutral_patch(image: np.ndarray, foot: np.ndarray) -> np.ndarray:
    """The control: the mark's footprint filled from the blurred tile (the faithfulness check's
    reference), so it covers the same tissue without looking like anything."""
    from cam_core.trust.deletion import blurred

    return np.where(foot[..., None], blurred(image), image)


def mass_on(cam: np.ndarray, foot: np.ndarray) -> float:
    """The share of the map's mass on the mark (0 for an all-zero map)."""
    total = float(cam.sum())
    return float(cam[foot].sum()) / total if total > 0 else 0.0


def describe_tile(
    marker: str,
    flips: dict[int, float | None],
    control: dict[int, float | None],
    cls: int,
    cls_name: str,
    area: float,
    mass: float,
) -> str:
    """The audit of one tile in a sentence, for the app's A/B view (A: as it is, B: marked)."""
    flip, base = flips.get(cls), control.get(cls)
    moved = (
        "no nucleus clear of it to judge"
        if flip is None or base is None
        else f"{flip:.1%} of the pixels of nuclei clear of it change their call of {cls_name} "
        f"(a neutral patch of its shape: {base:.1%})"
        + (" — **the mark matters**" if flip - base >= FLIP_FLAG else f"; the audit flags an excess ≥ {FLIP_FLAG:.0%}")
    )
    looks = " — the map looks at the mark" if mass >= LOOK_FLAG * area else ""
    return (
        f"Shortcut audit, {marker} planted on B (its area {area:.1%} of the image): {moved}; "
        f"B's map puts {mass:.1%} of its mass on the mark{looks}."
    )


@dataclass(frozen=True)
class AuditRow:
    """One mark × class over the folder."""

    marker: str
    cls: str
    tiles: int  # tiles with nuclei on either side (the flip share's denominator exists)
    flip: float  # mean share of nucleus pixels whose call of this class flips with the mark
    control: float  # the same with a neutral patch of the mark's footprint
    area_share: float  # the mark's mean share of the tile
    mass: dict[str, float]  # method → mean share of the CAM's mass on the mark (tiles predicting the class)

    @property
    def excess(self) -> float:
        return self.flip - self.control

    @property
    def matters(self) -> bool:
        return self.excess >= FLIP_FLAG

    def looking(self) -> list[str]:
        return [m for m, v in self.mass.items() if v >= LOOK_FLAG * self.area_share]


@dataclass
class AuditReport:
    """The audit of one model on a folder: rows per mark × class, what produced them, the cost."""

    model: str
    layer: str
    methods: list[str]
    tiles: int
    seconds: float
    rows: list[AuditRow]

    def flagged(self) -> dict[str, list[str]]:
        """Mark → the classes it matters for (marks that matter for none are left out)."""
        out: dict[str, list[str]] = {}
        for r in self.rows:
            if r.matters:
                out.setdefault(r.marker, []).append(r.cls)
        return out

    def markdown(self) -> str:
        head = (
            "| mark | class | calls flipped: mark / neutral patch | excess | mark's area "
            "| CAM mass on the mark (most / method) | flag |"
        )
        lines = [head, "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            top = max(r.mass, key=lambda m: r.mass[m]) if r.mass else None
            cam = "—" if top is None else f"{r.mass[top]:.1%} ({top})"
            flag = "**matters**" if r.matters else "no"
            lines.append(
                f"| {r.marker} | {r.cls} | {r.flip:.1%} / {r.control:.1%} | {r.excess:+.1%} | {r.area_share:.1%} "
                f"| {cam} | {flag} |"
            )
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "layer": self.layer,
            "methods": self.methods,
            "tiles": self.tiles,
            "seconds": round(self.seconds, 1),
            "rule": AUDIT_RULE,
            "flagged": self.flagged(),
            "rows": [
                r.__dict__ | {"excess": r.excess, "matters": r.matters, "looking": r.looking()} for r in self.rows
            ],
        }


def audit(
    loaded: LoadedModel,
    images: Iterable[np.ndarray],
    markers: list[str] | None = None,
    layer: str | None = None,
    infos: list[MethodInfo] | None = None,
    progress: Callable[[int, str], None] | None = None,
) -> AuditReport:
    """Every mark on every tile of ``images`` (tile ``i`` seeded with ``i``)."""
    from cam_core.engine import methods
    from cam_core.model import layers

    markers = [get_marker(m).name for m in (markers or list(AUDIT_MARKERS))]
    layer = layer or layers.default_layer(loaded)
    infos = infos or [m for m in methods.fast_methods() if not m.baseline]
    t0 = time.perf_counter()
    cells: list[TileAudit] = []
    count = 0
    for i, image in enumerate(images):
        cells += [audit_tile(loaded, image, m, i, layer, infos) for m in markers]
        count = i + 1
        if progress:
            progress(count, f"tile {count}")
    rows = []
    for m in markers:
        mine = [c for c in cells if c.marker == m]
        area = float(np.mean([c.area_share for c in mine])) if mine else 0.0
        for c in range(1, loaded.num_classes):
            flips = [f for t in mine if (f := t.flips.get(c)) is not None]
            control = [f for t in mine if (f := t.control.get(c)) is not None]
            mass = {i.name: [t.mass[c][i.name] for t in mine if c in t.mass] for i in infos}
            rows.append(
                AuditRow(
                    m,
                    loaded.spec.classes[c],
                    len(flips),
                    float(np.mean(flips)) if flips else 0.0,
                    float(np.mean(control)) if control else 0.0,
                    area,
                    {k: float(np.mean(v)) for k, v in mass.items() if v},
                )
            )
    return AuditReport(loaded.name, layer, [i.name for i in infos], count, time.perf_counter() - t0, rows)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("audit", help="plant marks that must not matter on a folder of tiles; report what they change")
    p.set_defaults(run=run)
    p.add_argument("--data", required=True, help="folder of tiles (DIR/images/*.png or DIR/*.png)")
    p.add_argument("--split", default=None, help="only the names in DATA/SPLIT.txt (e.g. test)")
    p.add_argument("--limit", type=int, default=None, help="at most this many tiles")
    p.add_argument("--model", default=None)
    p.add_argument("--models-dir", default=None)
    p.add_argument("--markers", default=None, help=f"comma list of {', '.join(AUDIT_MARKERS)} (default: all)")
    p.add_argument("--layer", default=None, help="layer of the CAMs (default: the model's default layer)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", default=None, help="write the JSON report to this file")


def _tiles(args: argparse.Namespace) -> list[Path]:
    from cam_core.trust.evaluate import _find, tile_names

    root = Path(args.data)
    folder = root / "images" if (root / "images").is_dir() else root
    if args.split:
        return [_find(folder, n) for n in tile_names(root, args.split, None, args.limit)]
    from cam_core.trust.report import _images

    return _images(argparse.Namespace(data=str(root), image=None, limit=args.limit))


def run(args: argparse.Namespace) -> int:
    from cam_core.data.images import load_image
    from cam_core.model import layers, models
    from cam_core.progress import Line

    loaded = models.load(args.model, args.models_dir)
    paths = _tiles(args)
    markers = args.markers.split(",") if args.markers else None
    for m in markers or []:
        get_marker(m.strip())  # a wrong name fails before any work
    layer = layers.resolve_layers(loaded, args.layer)[0] if args.layer else None
    with Line(f"audit {loaded.name}", total=len(paths), unit="tile") as line:
        report = audit(
            loaded,
            (load_image(p).array for p in paths),
            [m.strip() for m in markers] if markers else None,
            layer,
            progress=lambda done, text: line.count(done, len(paths), text),
        )
    rec = report.record()
    if args.out:
        Path(args.out).write_text(json.dumps(rec, indent=1))
    if args.json:
        print(json.dumps(rec, indent=1))
    else:
        print(f"{report.model} @ {report.layer}: {report.tiles} tiles, {report.seconds:.0f} s")
        print(report.markdown())
        flagged = report.flagged()
        print("flagged: " + ("; ".join(f"{m} ({', '.join(c)})" for m, c in flagged.items()) or "none"))
        print(f"Rule: {AUDIT_RULE}")
    return 0
