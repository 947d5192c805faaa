"""Every setting that changes a picture, the panels drawn from them, and the figure for a room.

:class:`Display` is what the viewer chose (panels, opacity, colormap, threshold, values view,
zoom, mask style); it travels in ``result.json``. :func:`panels` draws mask, heatmap, overlay and
the plain tissue from the arrays and a :class:`Display`; :func:`figure_from` lays them out with
titles, the legend of the classes shown, a colour bar with readable ticks and a plain caption.
The app's panels and presenter, the ZIP's ``figure.png``, the CLI's and
``python -m cam_core figure`` (:mod:`cam_core.output.rebuild`) all go through these functions, so
``result.json`` rebuilds the same pixels.
"""

from __future__ import annotations

import collections
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from cam_core.engine import targets as tg
from cam_core.errors import unknown
from cam_core.model.layers import plain_layer
from cam_core.output import render

# What a figure shows, and how the app's switch words it.
VIEWS: dict[str, str] = {
    "three": "mask | heatmap | overlay",
    "tissue": "H&E | overlay",
    "overlay": "overlay only",
    "heatmap": "heatmap only",
    "mask": "mask only",
}
# How the predicted mask is drawn: classes' colours on black, or their outlines on the tissue.
MASK_STYLES: dict[str, str] = {
    "filled": "class colours on black",
    "outlines": "class outlines on the tissue",
}
# The figure's box in CSS pixels (a 1280×720 projector with the sidebar collapsed and one row of
# controls above it) and its pixel density (2: sharp on a slide and on a high-density screen).
FIGURE_BOX = (1120, 570)
FIGURE_DENSITY = 2
# Type sizes in CSS pixels at that box: none under 14, so the back of a room reads them.
TYPE = {"title": 22, "legend": 17, "tick": 16, "caption": 20, "provenance": 15}
# Shown width of a panel in the Explore page's three columns, so scale-bar text stays legible.
PANEL_DISPLAY_PX = 420
_GAP = 14


# The Display fields chosen from a registry: field → (its name in messages, the valid names).
_CHOICES: dict[str, tuple[str, Any]] = {
    "view": ("figure view", VIEWS),
    "colormap": ("colormap", render.COLORMAPS),
    "threshold_mode": ("threshold mode", render.THRESHOLD_MODES),
    "show": ("threshold display", render.SHOW_MODES),
    "values": ("values view", render.VALUE_VIEWS),
    "blend": ("blend", render.BLENDS),
    "mask_style": ("mask style", MASK_STYLES),
}


class Display(BaseModel):
    """Every setting that changes a picture but not the CAM (``result.json``'s ``display``)."""

    model_config = ConfigDict(extra="forbid")

    view: str = Field("three", description="the figure's panels: " + ", ".join(VIEWS))
    opacity: float = Field(0.5, ge=0.0, le=1.0, description="heatmap weight on the overlay")
    colormap: str = Field(render.DEFAULT_COLORMAP, description="the min-max view's colour map")
    threshold_mode: str = Field("none", description="how the overlay's threshold is set")
    threshold_value: float = Field(0.5, description="the absolute level (0–1) or the percentile (0–100)")
    show: str = Field(render.SHOW_MODES[0], description="what a threshold shows on the overlay")
    values: str = Field(next(iter(render.VALUE_VIEWS)), description="min-max map or raw signed map")
    signed_scale: float | None = Field(None, gt=0, description="± scale of the raw signed view, raw CAM units")
    zoom_xyxy: list[int] | None = Field(None, description="the region shown, image pixels [x0, y0, x1, y1)")
    mask_style: str = Field("filled", description="how the mask is drawn: " + ", ".join(MASK_STYLES))
    blend: str = Field(
        render.DEFAULT_BLEND, description="how the heatmap lies on the tissue: " + ", ".join(render.BLENDS)
    )
    outline_target: bool = Field(False, description="the target region is outlined on every panel")

    @field_validator(*_CHOICES)
    @classmethod
    def _choice(cls, v: str, info: ValidationInfo) -> str:
        what, names = _CHOICES[str(info.field_name)]
        return _known(what, v, names)

    @property
    def signed(self) -> bool:
        return self.values in render.SIGNED_SCALES and self.signed_scale is not None

    def level(self, cam: np.ndarray) -> float | None:
        """The overlay's threshold level on the min-max map (none in the signed view)."""
        if self.signed:
            return None
        return render.threshold_level(cam, self.threshold_mode, self.threshold_value)


def _known(what: str, value: str, names: Any) -> str:
    if value not in names:
        raise unknown(what, value, list(names))
    return value


@dataclass
class Arrays:
    """What a picture is drawn from: the tile, the prediction, the map and the target region."""

    image: np.ndarray  # H×W×3 uint8
    mask: np.ndarray  # H×W class indices
    cam: np.ndarray  # H×W in [0, 1]
    cam_raw: np.ndarray  # H×W, before ReLU
    region: np.ndarray  # H×W bool: the target's pixels
    colors: list[str]
    mpp: float | None = None


@dataclass
class Panels:
    """The panels of one view, cropped to its zoom; ``offset`` maps a panel's pixels back to the
    image's (a click); ``bar`` is the small colour bar shown under the Explore page's heatmap."""

    mask: np.ndarray
    heat: np.ndarray
    over: np.ndarray
    tissue: np.ndarray
    bar: np.ndarray
    offset: tuple[int, int] = (0, 0)
    level: float | None = None
    scale: float = 1.0  # shown pixels per image pixel (< 1: a large region drawn at the size it is shown)


def zoom_box(zoom: list[int] | None, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The zoom region clipped to the image, at least 16 px a side (the whole image when None)."""
    h, w = shape[:2]
    if zoom is None:
        return 0, 0, w, h
    x0, y0 = max(0, min(int(zoom[0]), w - 16)), max(0, min(int(zoom[1]), h - 16))
    return x0, y0, min(max(int(zoom[2]), x0 + 16), w), min(max(int(zoom[3]), y0 + 16), h)


def mask_picture(mask: np.ndarray, colors: list[str], image: np.ndarray, style: str) -> np.ndarray:
    """The predicted mask: classes' colours on black, or each class's outline on the tissue."""
    if style == "filled":
        return render.colorize_mask(mask, colors)
    out = image.copy()
    for c in range(1, len(colors)):
        region = mask == c
        if region.any():
            out[render.contour(region)] = render.hex_to_rgb(colors[c])
    return out


def panels(
    display: Display, a: Arrays, display_width: int | None = PANEL_DISPLAY_PX, max_side: int | None = None
) -> Panels:
    """Mask, heatmap, overlay and the plain tissue for ``display``: the min-max map on its colour
    map, or the raw signed map at ± ``signed_scale``; the target outlined when asked, cropped to
    the zoom, with a µm scale bar sized for ``display_width`` (None: the plain pictures, whole,
    without outline or scale bar, as the app's PNG downloads hold them).

    ``max_side``: a zoomed region larger than this is drawn at this size (what a browser is sent
    anyway), so a large image's redraw costs its shown pixels, not its full resolution; the
    threshold is the full map's, and ``Panels.scale`` maps the shown pixels back."""
    if max_side is not None and display_width is not None:
        x0, y0, x1, y1 = zoom_box(display.zoom_xyxy, a.image.shape)
        k = max_side / max(x1 - x0, y1 - y0)
        if k < 1:
            return _panels_shown(display, a, display_width, (x0, y0, x1, y1), k)
    level = display.level(a.cam)
    if display.signed:
        scale = float(display.signed_scale or 1.0)
        unit = render.signed_unit(a.cam_raw, scale)
        heat = render.heatmap(unit, render.SIGNED_COLORMAP)
        distance = np.abs(unit - 0.5) * 2  # no evidence either way: untinted
        over = render.overlay(
            a.image, unit, display.opacity, render.SIGNED_COLORMAP, blend=display.blend, weight=distance
        )
        bar = render.signed_colorbar(scale)
    else:
        heat = render.heatmap(a.cam, display.colormap)
        over = render.overlay(
            a.image, a.cam, display.opacity, display.colormap, level, display.show, blend=display.blend
        )
        bar = render.colorbar(display.colormap)
    mask = mask_picture(a.mask, a.colors, a.image, display.mask_style)
    if display_width is None:
        return Panels(mask, heat, over, a.image, bar, (0, 0), level)
    x0, y0, x1, y1 = zoom_box(display.zoom_xyxy, a.image.shape)
    outline = display.outline_target and bool(a.region.any())

    def one(rgb: np.ndarray) -> np.ndarray:
        if outline:
            rgb = render.outline(rgb, a.region)
        return render.scale_bar(rgb[y0:y1, x0:x1], a.mpp, display_width)

    tissue = one(a.image) if display.view == "tissue" else a.image[y0:y1, x0:x1]  # drawn only for its view
    return Panels(one(mask), one(heat), one(over), tissue, bar, (x0, y0), level)


# A large image's tissue and mask, downscaled to the size sent, for the next clicks on it (they
# change the map, not these: 20 of a click's 120 ms of drawing on a 2000² upload). Keyed by the
# array's identity, checked through a weak reference; read-only, so no caller can draw on them.
_SHRUNK: collections.OrderedDict[tuple, tuple[weakref.ref, np.ndarray]] = collections.OrderedDict()
_SHRUNK_LOCK = threading.Lock()
_SHRUNK_KEPT = 8


def _shrunk(x: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int], interpolation: int) -> np.ndarray:
    """``x`` cropped to ``box`` and resized to ``size``, from the cache when ``x`` is the same array."""
    import cv2

    key = (id(x), x.shape, box, size, interpolation)
    with _SHRUNK_LOCK:
        hit = _SHRUNK.get(key)
    if hit is not None and hit[0]() is x:
        return hit[1]
    x0, y0, x1, y1 = box
    out = cv2.resize(np.ascontiguousarray(x[y0:y1, x0:x1]), size, interpolation=interpolation)
    out.setflags(write=False)
    with _SHRUNK_LOCK:
        _SHRUNK[key] = (weakref.ref(x), out)
        while len(_SHRUNK) > _SHRUNK_KEPT:
            _SHRUNK.popitem(last=False)
    return out


def _panels_shown(display: Display, a: Arrays, display_width: int, box: tuple[int, int, int, int], k: float) -> Panels:
    """:func:`panels` of the zoomed region downscaled by ``k`` (< 1), the full map's threshold kept."""
    import cv2

    x0, y0, x1, y1 = box
    size = (max(1, round((x1 - x0) * k)), max(1, round((y1 - y0) * k)))

    def area(x: np.ndarray) -> np.ndarray:
        return cv2.resize(np.ascontiguousarray(x[y0:y1, x0:x1]), size, interpolation=cv2.INTER_AREA)

    def nearest(x: np.ndarray) -> np.ndarray:
        return cv2.resize(np.ascontiguousarray(x[y0:y1, x0:x1]), size, interpolation=cv2.INTER_NEAREST)

    level = display.level(a.cam)
    fixed: dict[str, Any] = {"zoom_xyxy": None}
    if level is not None:
        fixed |= {"threshold_mode": "absolute", "threshold_value": level}
    shown = Arrays(
        _shrunk(a.image, box, size, cv2.INTER_AREA),
        _shrunk(a.mask, box, size, cv2.INTER_NEAREST),
        area(a.cam),
        area(a.cam_raw),
        nearest(a.region.astype(np.uint8)).astype(bool),
        a.colors,
        None if not a.mpp else a.mpp / k,
    )
    p = panels(display.model_copy(update=fixed), shown, display_width)
    p.offset, p.scale, p.level = (x0, y0), k, level
    return p


@dataclass
class Words:
    """The figure's text: a plain sentence, panel titles, the legend and what produced it."""

    caption: str
    heat_title: str
    legend: list[tuple[str, str]]  # (label, colour) of each class shown
    provenance: str
    bar_label: str
    legend_b: list[tuple[str, str]] | None = None  # an A/B view's B legend, when its mask is shown


def resolution_words(mpp: float | None) -> str:
    """A resolution as a microscopist reads it: µm per pixel and the objective it corresponds to
    (≈ 10 µm / mpp: 0.25 µm/px is a 40× scan)."""
    if not mpp:
        return "resolution unknown"
    return f"{mpp:g} µm/px (≈{10 / mpp:.0f}× objective)"


def words_from(record: dict[str, Any], colors: list[str]) -> Words:
    """The figure's words from ``result.json`` alone (so a rebuild writes the same)."""
    cls, d = record["class"], Display.model_validate(record["display"])
    question = tg.QUESTIONS[record["target"]].format(cls=cls)
    area = record["predicted_area_percent"]
    legend = [(f"{name} {pct:.1f} %", colors[i]) for i, (name, pct) in enumerate(area.items()) if pct > 0]
    level = record["threshold"].get("level")
    thr = "no threshold" if level is None else f"CAM ≥ {level:.2f} shown"
    if level is not None and d.threshold_mode == "percentile":
        thr = f"top {100 - d.threshold_value:g} % of the map shown (CAM ≥ {level:.2f})"
    elif level is not None and d.threshold_mode == "otsu":
        thr = f"CAM ≥ {level:.2f} shown (Otsu)"
    image = record["image"].get("name") or record["image"].get("path", "image")
    provenance = (
        f"Model {record['model']} · layer {record['layer']} · image {image} · target {record['target_description']}"
        f" ({record.get('target_pixels') or 0} px) · {resolution_words(record['image'].get('microns_per_pixel'))}"
        f" · opacity {d.opacity:.2f}, {thr} · {record['device']}"
        " · SegCAM Explorer"
    )
    if d.signed:
        bar_label = "raw CAM before ReLU: blue argued against the class, red for it"
    else:
        bar_label = "CAM, scaled 0–1 over the image (low → high)"
    return Words(
        caption=f"{question} — {record['method']}, {plain_layer(record['layer'])}",
        heat_title=f"{record['method']} — {cls}",
        legend=legend,
        provenance=provenance,
        bar_label=bar_label,
    )


def figure_from(record: dict[str, Any], a: Arrays) -> np.ndarray:
    """The figure of a result: its :class:`Display` and words from ``record``, pixels from ``a``."""
    display = Display.model_validate(record["display"])
    return compose(display, panels(display, a), words_from(record, a.colors))


# What an A/B view compares: two conditions on one figure, one link.
AB_KINDS: dict[str, str] = {
    "method": "two methods",
    "layer": "two layers",
    "model": "two models",
    "marker": "with / without the marker",
    "mark": "without / with a planted mark (shortcut audit)",
}
# A/B kinds whose two sides may predict different masks: the figure shows both masks too.
MASKS_DIFFER = ("model", "marker", "mark")


def _image_name(record: dict[str, Any]) -> str:
    """A record's image as one side of an A/B view names it: its name, or its file's."""
    return record["image"].get("name") or Path(str(record["image"].get("path", ""))).name


def _side(record: dict[str, Any], kind: str, letter: str) -> str:
    """A panel title for one side of an A/B view: what differs between the sides."""
    image = _image_name(record)
    label = {
        "method": record["method"],
        "layer": plain_layer(record["layer"]),
        "model": record["model"],
        "marker": "with marker" if letter == "A" else "no marker",
        "mark": "as it is"
        if letter == "A"
        else f"{(record['image'].get('planted') or {}).get('mark', 'mark')} planted",
    }.get(kind, f"{record['method']}, {plain_layer(record['layer'])}")
    return f"{letter} — {label}" if kind != "model" else f"{letter} — {label} ({image})"


def _condition(record: dict[str, Any]) -> str:
    """One side of an A/B view in words: method, layer, model, image and target."""
    image = _image_name(record)
    return f"{record['method']}, {record['layer']} · {record['model']} · {image} · {record['target_description']}"


def figure_ab(record: dict[str, Any], a: Arrays, b: Arrays) -> np.ndarray:
    """Two conditions side by side (``record`` is A's, with B's record in ``compare_with``): the
    overlays titled by what differs, and the masks too when the prediction may differ (another
    model, the marker removed); one colour bar (both maps are scaled the same way); a caption."""
    rb = record["compare_with"]
    kind = str(record.get("compare_kind"))
    da, db = Display.model_validate(record["display"]), Display.model_validate(rb["display"])
    pa, pb = panels(da, a), panels(db, b)
    wa = words_from(record, a.colors)
    words = Words(
        caption=f"A/B, {AB_KINDS.get(kind, 'two views')}: {wa.caption}",
        heat_title="",
        legend=wa.legend,
        provenance=f"A: {_condition(record)} — B: {_condition(rb)} · SegCAM Explorer",
        bar_label=wa.bar_label,
    )
    ta, tb = _side(record, kind, "A"), _side(rb, kind, "B")
    if rb["target"] != record["target"]:
        words.caption += f" (B: {tg.TARGET_KINDS[rb['target']]}, as B predicts no {record['class']} there)"
    chosen = [(ta, pa.over, "bar"), (tb, pb.over, "")]
    if kind in MASKS_DIFFER:
        legend_b = words_from(rb, b.colors).legend
        chosen = [
            (f"{ta[:1]} — mask", pa.mask, "legend"),
            (ta, pa.over, "bar"),
            (f"{tb[:1]} — mask", pb.mask, "legend_b"),
            (tb, pb.over, ""),
        ]
        words.legend_b = legend_b
    return _compose_row(da, [(t, _same_size(rgb, pa.over), k) for t, rgb, k in chosen], words)


def _same_size(rgb: np.ndarray, like: np.ndarray) -> np.ndarray:
    """B's picture at A's size (the marker's twin may be another size)."""
    if rgb.shape == like.shape:
        return rgb
    import cv2

    return cv2.resize(rgb, (like.shape[1], like.shape[0]), interpolation=cv2.INTER_AREA)


def _px(v: float) -> int:
    return round(v * FIGURE_DENSITY)


def _bar(display: Display, width: int, words: Words) -> np.ndarray:
    """The figure's colour bar: five labelled ticks at tick size, its meaning below."""
    if display.signed:
        s = float(display.signed_scale or 1.0)
        cmap = render.SIGNED_COLORMAP
        ticks = tuple(
            (f, t)
            for f, t in zip((0, 0.25, 0.5, 0.75, 1), (f"−{s:.3g}", f"−{s / 2:.3g}", "0", f"+{s / 2:.3g}", f"+{s:.3g}"))
        )
    else:
        cmap = display.colormap
        ticks = tuple((f, f"{f:g}") for f in (0, 0.25, 0.5, 0.75, 1))
    bar = render.colorbar(cmap, width, _px(16), ticks, font_px=_px(TYPE["tick"]), pad=_px(4))
    label = _text_block([words.bar_label], _px(TYPE["tick"]), bar.shape[1], (60, 60, 60))
    return np.concatenate([bar, label], axis=0)


def _text_block(lines: list[str], size: int, width: int, color: tuple[int, int, int]) -> np.ndarray:
    """Wrapped text on white, ``width`` wide."""
    font = render.font(size)
    wrapped = [w for line in lines for w in render.wrap(line, font, width)]
    step = round(size * 1.3)
    img = Image.new("RGB", (width, step * len(wrapped) + size // 4), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(wrapped):
        draw.text((0, i * step), line, fill=color, font=font)
    return np.asarray(img)


def _legend(entries: list[tuple[str, str]], width: int) -> np.ndarray:
    """Swatches and labels, flowing left to right within ``width``."""
    size = _px(TYPE["legend"])
    font = render.font(size)
    row, x, y = round(size * 1.5), 0, 0
    places = []
    for label, color in entries:
        w = size + size // 2 + int(font.getlength(label)) + size
        if x and x + w > width:
            x, y = 0, y + row
        places.append((x, y, label, color))
        x += w
    img = Image.new("RGB", (width, y + row), "white")
    draw = ImageDraw.Draw(img)
    for x, y, label, color in places:
        draw.rectangle([x, y + 2, x + size, y + 2 + size], fill=render.hex_to_rgb(color), outline=(60, 60, 60))
        draw.text((x + size + size // 2, y), label, fill=(20, 20, 20), font=font)
    return np.asarray(img)


def _chosen(display: Display, p: Panels, words: Words) -> list[tuple[str, np.ndarray, str]]:
    """(title, picture, kind) of each panel of the view; kind says what key goes under it."""
    every = {
        "mask": ("Predicted mask", p.mask, "legend"),
        "heatmap": (words.heat_title, p.heat, "bar"),
        "overlay": ("Overlay", p.over, "bar"),
        "tissue": ("H&E", p.tissue, ""),
    }
    layout = {"three": ["mask", "heatmap", "overlay"], "tissue": ["tissue", "overlay"]}
    return [every[k] for k in layout.get(display.view, [display.view])]


def compose(display: Display, p: Panels, words: Words) -> np.ndarray:
    """The figure for a room, :data:`FIGURE_BOX` CSS pixels at :data:`FIGURE_DENSITY`: panels
    as large as the box allows (one panel fills its height, the text beside it), each titled,
    the class legend under the mask, the colour bar under the map, the plain caption and what
    produced it; no type under 14 CSS px."""
    return _compose_row(display, _chosen(display, p, words), words)


def _compose_row(display: Display, chosen: list[tuple[str, np.ndarray, str]], words: Words) -> np.ndarray:
    """Panels in a row with their keys below, then the caption and provenance (one panel: beside)."""
    width, height, gap = _px(FIGURE_BOX[0]), _px(FIGURE_BOX[1]), _px(_GAP)
    title_h = round(_px(TYPE["title"]) * 1.45)
    aspect = chosen[0][1].shape[0] / chosen[0][1].shape[1]
    if len(chosen) == 1:
        return _compose_side(display, chosen[0], words, (width, height, gap, title_h, aspect))
    n = len(chosen)
    cell = (width - (n + 1) * gap) // n
    keys = _keys(display, chosen, words, cell)
    text = _text_block([words.caption], _px(TYPE["caption"]), width - 2 * gap, (0, 0, 0))
    prov = _text_block([words.provenance], _px(TYPE["provenance"]), width - 2 * gap, (70, 70, 70))
    key_h = max((k.shape[0] for k in keys if k is not None), default=0)
    fixed = gap + title_h + gap // 2 + key_h + gap + text.shape[0] + prov.shape[0] + gap
    pw = int(min(cell, (height - fixed) / aspect))
    ph = round(pw * aspect)
    keys = _keys(display, chosen, words, pw)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    left = (width - (n * pw + (n - 1) * gap)) // 2
    for i, ((title, rgb, _), key) in enumerate(zip(chosen, keys)):
        x = left + i * (pw + gap)
        draw.text((x, gap), _fit_text(title, pw), fill=(0, 0, 0), font=render.font(_px(TYPE["title"])))
        canvas.paste(Image.fromarray(_fit(rgb, pw, ph)), (x, gap + title_h))
        if key is not None:
            canvas.paste(Image.fromarray(key), (x, gap + title_h + ph + gap // 2))
    y = gap + title_h + ph + gap // 2 + key_h + gap
    canvas.paste(Image.fromarray(text), (gap, y))
    canvas.paste(Image.fromarray(prov), (gap, y + text.shape[0]))
    return np.asarray(canvas)


def _keys(display: Display, chosen: list[tuple[str, np.ndarray, str]], words: Words, w: int) -> list[np.ndarray | None]:
    """The key under each panel: the legend under the mask, the colour bar under the first map."""
    out: list[np.ndarray | None] = []
    bar_done = False
    for _, _, kind in chosen:
        if kind == "legend":
            out.append(_legend(words.legend, w))
        elif kind == "legend_b":
            out.append(_legend(words.legend_b or [], w))
        elif kind == "bar" and not bar_done:
            out.append(_bar(display, w - _px(40), words))
            bar_done = True
        else:
            out.append(None)
    return out


def _compose_side(display: Display, one: tuple[str, np.ndarray, str], words: Words, geo: tuple) -> np.ndarray:
    """One panel filling the box's height; caption, key and provenance in a column beside it."""
    width, height, gap, title_h, aspect = geo
    title, rgb, kind = one
    ph = height - 2 * gap - title_h
    pw = min(round(ph / aspect), int(width * 0.62))
    ph = round(pw * aspect)
    col_x = gap + pw + 2 * gap
    col_w = width - col_x - gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, gap), title, fill=(0, 0, 0), font=render.font(_px(TYPE["title"])))
    canvas.paste(Image.fromarray(_fit(rgb, pw, ph)), (gap, gap + title_h))
    blocks = [_text_block([words.caption], _px(TYPE["caption"]), col_w, (0, 0, 0))]
    blocks.append(_legend(words.legend, col_w) if kind == "legend" else _bar(display, min(col_w, _px(420)), words))
    blocks.append(_text_block([words.provenance], _px(TYPE["provenance"]), col_w, (70, 70, 70)))
    y = gap + title_h
    for block in blocks:
        canvas.paste(Image.fromarray(block), (col_x, y))
        y += block.shape[0] + gap
    return np.asarray(canvas)


def _fit_text(text: str, width: int) -> str:
    """A title cut (with an ellipsis) to ``width`` pixels at title size: titles never overlap."""
    face = render.font(_px(TYPE["title"]))
    if face.getlength(text) <= width:
        return text
    while text and face.getlength(text + "…") > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _fit(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    """A panel at (w, h): nearest when enlarging (pixels stay sharp), area when shrinking."""
    import cv2

    interp = cv2.INTER_NEAREST if w >= rgb.shape[1] else cv2.INTER_AREA
    return cv2.resize(rgb, (w, h), interpolation=interp)
