"""The Explore page's pictures and sections: panels one can click, outlines, zoom and scale bars,
ground truth, predicted objects, the presenter's figure, downloads and the shareable link.

``app.py`` decides what to compute; this module decides how it is shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from cam_core.data import truth as gt
from cam_core.data.objects import area_um2, mass_share
from cam_core.engine import targets as tg
from cam_core.engine.capturing import Prediction
from cam_core.engine.result import CamResult
from cam_core.output import bundle, render

from . import compute, state
from .clickable import clickable_image, copy_image_button
from .text import code, plain

# Target kinds whose region is drawn as an outline on every panel (a local question).
OUTLINED_KINDS = ("mask", "point", "fn", "fp")
# Shown width of a panel in the three-column layout, so scale-bar text stays legible.
PANEL_DISPLAY_PX = 420

TRUTH_TARGET_NOTE = {
    "fn": (
        "Missed pixels (false negatives) as the target: the map shows what raises the class's score at the pixels "
        "the model failed to call it. A gradient map is global, so it can look like the map of the found pixels "
        "(it shows where the class's evidence is anywhere); read how much of it falls on the outlined missed "
        "region, and switch Values to 'raw signed': blue is evidence that argued against the class there."
    ),
    "fp": (
        "False positives as the target: the map shows what drove the class's score at the pixels the model called "
        "the class and the truth does not — a stain artefact, a look-alike nucleus, or a truth that missed it."
    ),
}


@dataclass
class Pictures:
    """The three panels (and the colour bar) of one view; ``offset`` maps a zoomed panel's pixels
    back to the image's."""

    mask: np.ndarray
    heat: np.ndarray
    over: np.ndarray
    bar: np.ndarray
    offset: tuple[int, int] = (0, 0)


# ---------------------------------------------------------------- words


def class_name(ch: compute.Choices, res: CamResult) -> str:
    return ch.loaded.spec.classes[res.class_index]


def mask_alt(ch: compute.Choices, prediction: Prediction) -> str:
    area = prediction.area_percent()
    shares = ", ".join(f"{c} {a:.1f} %" for c, a in zip(ch.loaded.spec.classes, area))
    return f"predicted mask of {ch.image.name} by {ch.loaded.name}: {shares}"


def heat_alt(ch: compute.Choices, res: CamResult, target: tg.TargetSpec) -> str:
    return (
        f"cam heatmap: {res.method} for class {class_name(ch, res)} at layer {res.layer}, "
        f"target {target.describe(ch.loaded.spec.classes)}"
    )


def overlay_alt(ch: compute.Choices, res: CamResult, opacity: float, level: float | None) -> str:
    thr = "" if level is None else f", threshold {level:.2f}"
    return (
        f"overlay: {res.method} heatmap of class {class_name(ch, res)} at layer {res.layer} on the tissue, "
        f"opacity {opacity:.2f}{thr}"
    )


def legend(classes: list[str], colors: list[str], area: np.ndarray) -> None:
    """The class legend as a picture and as text (screen readers, copy and paste)."""
    labels = [f"{c}: {a:.1f} %" for c, a in zip(classes, area)]
    st.image(render.legend(classes, colors, labels), alt="legend: " + "; ".join(labels))
    st.caption("Predicted area — " + " · ".join(f"{plain(c)} ({color})" for c, color in zip(labels, colors)))


def target_line(ch: compute.Choices, target: tg.TargetSpec, region: np.ndarray) -> str:
    """The target in words with its size, so a picture says exactly what was explained."""
    n = int(region.sum())
    words = state.TARGET_CHOICES.get(target.kind, tg.TARGET_KINDS[target.kind])
    where = f" at ({target.point[0]}, {target.point[1]})" if target.point is not None else ""
    box = tg.box_of(region)
    area = area_um2(n, ch.image.mpp)
    um = f", {area:.1f} µm²" if area is not None else ""
    extent = f", box x {box[0]}–{box[2]}, y {box[1]}–{box[3]}" if box and target.kind in OUTLINED_KINDS else ""
    return f"Target: **{words}**{where} — {n} px{um}{extent}"


def figure_caption(ch: compute.Choices, res: CamResult, target: tg.TargetSpec, level: float | None) -> str:
    thr = "none" if level is None else f"{level:.2f}"
    where = f" at {target.point}" if target.point is not None else ""
    return (
        f"{res.method} · class {class_name(ch, res)} · layer {res.layer} · target: "
        f"{tg.TARGET_KINDS[target.kind]}{where} · threshold {thr} · model {res.model} · image {ch.image.name} · "
        f"{res.device} · SegCAM Explorer"
    )


def file_stem(ch: compute.Choices, res: CamResult) -> str:
    """Download names that say what they are: image, class, layer, method."""
    raw = f"{ch.image.name.rsplit('.', 1)[0]}_{class_name(ch, res)}_{res.layer}_{res.method}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw)


# ---------------------------------------------------------------- pictures


def zoom_box(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The zoom region in image pixels (x0, y0, x1, y1), at least 16 px a side."""
    h, w = shape[:2]
    fx0, fy0, fx1, fy1 = st.session_state.get("zoom", state.FULL_VIEW)
    x0, x1 = int(fx0 * w), max(int(fx1 * w), int(fx0 * w) + 16)
    y0, y1 = int(fy0 * h), max(int(fy1 * h), int(fy0 * h) + 16)
    return max(0, min(x0, w - 16)), max(0, min(y0, h - 16)), min(x1, w), min(y1, h)


def decorate(p: Pictures, ch: compute.Choices, target: tg.TargetSpec, region: np.ndarray) -> Pictures:
    """Outline a local target on every panel, crop to the zoom, add the µm scale bar."""
    x0, y0, x1, y1 = zoom_box(p.mask.shape)
    zoomed = (x1 - x0, y1 - y0) != (p.mask.shape[1], p.mask.shape[0])

    def one(rgb: np.ndarray) -> np.ndarray:
        if target.kind in OUTLINED_KINDS and region.any():
            rgb = render.outline(rgb, region)
        rgb = rgb[y0:y1, x0:x1]
        return render.scale_bar(rgb, ch.image.mpp, PANEL_DISPLAY_PX)

    out = Pictures(one(p.mask), one(p.heat), one(p.over), p.bar, (x0, y0))
    if zoomed:
        st.caption(f"Zoomed to x {x0}–{x1}, y {y0}–{y1} (full resolution); reset it under *Zoom*.")
    return out


def panel(rgb: np.ndarray, alt: str, key: str) -> tuple[int, int] | None:
    """A panel that reports a click (in the panel's pixels)."""
    return clickable_image(rgb, alt, key, title="Click a nucleus to explain that object")


def on_click(point: tuple[int, int] | None, ch: compute.Choices, prediction: Prediction, drawn: Pictures) -> None:
    """A click on a panel: the predicted object under it becomes the target."""
    if point is None:
        return
    x, y = point[0] + drawn.offset[0], point[1] + drawn.offset[1]
    if prediction.mask[y, x] == 0:
        st.info(f"({x}, {y}) is predicted background; click a coloured object to explain it.")
        return
    if st.session_state.get("sel_target") == "point" and tuple(st.session_state.get("sel_point") or ()) == (x, y):
        return
    st.session_state["sel_point"] = (x, y)
    st.session_state["sel_target"] = "point"
    st.rerun()


def zoom_controls(ch: compute.Choices) -> None:
    h, w = ch.image.image.array.shape[:2]
    with st.expander("Zoom"):
        fx0, fy0, fx1, fy1 = st.session_state.get("zoom", state.FULL_VIEW)
        xs = st.slider("x (fraction of width)", 0.0, 1.0, (fx0, fx1), 0.01, key="w_zoom_x")
        ys = st.slider("y (fraction of height)", 0.0, 1.0, (fy0, fy1), 0.01, key="w_zoom_y")
        st.caption(f"{w}×{h} px image; the panels show the region at full resolution.")
        new = (xs[0], ys[0], xs[1], ys[1])
        if st.button("Whole tile", key="zoom_reset"):
            new = state.FULL_VIEW
            st.session_state.pop("w_zoom_x", None)
            st.session_state.pop("w_zoom_y", None)
        if new != tuple(st.session_state.get("zoom", state.FULL_VIEW)):
            st.session_state["zoom"] = new
            st.rerun()


# ---------------------------------------------------------------- ground truth and objects


def truth_target_view(
    ch: compute.Choices, res: CamResult, target: tg.TargetSpec, region: np.ndarray, signed: bool
) -> None:
    """How to read a missed-pixel / false-positive map, with its raw signed map beside the note:
    for missed pixels, blue is the evidence that argued against the class there."""
    c1, c2 = st.columns([2, 1])
    c1.info(TRUTH_TARGET_NOTE[target.kind])
    share = mass_share(res.cam, region)
    c1.caption(
        f"{100 * share:.1f} % of this map's mass lies on the outlined region, which is {100 * region.mean():.1f} % "
        "of the tile (on the sample tiles GradCAM's missed-pixel map is almost the map of the found pixels, "
        "HiResCAM's sits on the missed region — see the README)."
    )
    if signed:
        return  # the panels already show the raw signed map
    scale = render.signed_scale([res.cam_raw])
    pic = render.outline(render.signed_heatmap(res.cam_raw, scale), region)
    with c2:
        st.image(
            render.scale_bar(pic, ch.image.mpp, PANEL_DISPLAY_PX),
            width="stretch",
            alt=f"raw signed {res.method} map of the {tg.TARGET_KINDS[target.kind]} target: red for "
            f"{class_name(ch, res)}, blue against",
        )
        st.image(render.signed_colorbar(scale), alt=f"colour bar: raw CAM from −{scale:.3g} to +{scale:.3g}")
        st.caption("Raw signed map (before ReLU): red argued for the class, blue against it.")


def truth_section(ch: compute.Choices, prediction: Prediction, class_index: int | None) -> None:
    """The truth beside the prediction, TP/FP/FN maps and Dice per class for this tile."""
    truth = ch.image.truth
    if truth is None:
        if not ch.image.sample:
            st.caption("Add a ground-truth mask in the sidebar to see where the model is wrong.")
        return
    classes, colors = ch.loaded.spec.classes, ch.loaded.spec.colors
    st.subheader("Ground truth")
    kind = "binary (nucleus vs background)" if truth.binary else "class indices"
    st.caption(f"{code(truth.name)} ({kind}).")
    if truth.note:
        st.info(truth.note)
    mpp = ch.image.mpp
    c1, c2, c3 = st.columns(3)
    with c1:
        st.markdown("**Truth**")
        truth_rgb = (
            render.colorize_mask(truth.labels, ["#000000", "#FFFFFF"])
            if truth.binary
            else render.colorize_mask(truth.labels, colors)
        )
        st.image(
            render.scale_bar(truth_rgb, mpp, PANEL_DISPLAY_PX), width="stretch", alt=f"ground truth mask {truth.name}"
        )
    scopes: list[tuple[str, int | None]] = []
    if class_index is not None and not truth.binary:
        scopes.append((classes[class_index], class_index))
    scopes.append((gt.ANY_NUCLEUS, None))
    for col, (label, idx) in zip((c2, c3), scopes):
        codes = gt.compare(prediction.mask, truth, idx)
        n = gt.counts(codes)
        with col:
            st.markdown(f"**Errors — {label}**")
            st.image(
                render.scale_bar(render.outcome_map(codes), mpp, PANEL_DISPLAY_PX),
                width="stretch",
                alt=f"true and false positives and false negatives for {label}: "
                + ", ".join(f"{k} {v} px" for k, v in n.items()),
            )
            st.caption(" · ".join(f"{k}: {v} px" for k, v in n.items()))
    st.caption(
        "Grey: true positive · vermilion: false positive (predicted, not in the truth) · "
        "sky blue: false negative (in the truth, missed) · black: background in both."
    )
    import pandas as pd

    dice = gt.dice(prediction.mask, truth, classes)
    st.session_state["last_dice"] = dice
    st.dataframe(
        pd.DataFrame(
            {"class": list(dice), "Dice on this tile": [("—" if v is None else f"{v:.3f}") for v in dice.values()]}
        ),
        hide_index=True,
    )


def objects_section(ch: compute.Choices, prediction: Prediction, res: CamResult) -> None:
    """Every predicted object, to pick one from the keyboard (the same target as a click)."""
    from cam_core.data.objects import find_objects

    objs = find_objects(prediction.mask, prediction.probs, np.clip(res.cam, 0, None))
    st.session_state["last_objects"] = [(o.class_index, o.area_px, o.centroid_xy) for o in objs]
    classes = ch.loaded.spec.classes
    mpp = ch.image.mpp
    with st.expander(f"Predicted objects ({len(objs)}) — select a row to explain that object"):
        if not objs:
            st.caption("The model predicts no object here.")
            return
        import pandas as pd

        df = pd.DataFrame(
            {
                "object": [o.id for o in objs],
                "class": [classes[o.class_index] for o in objs],
                "area px": [o.area_px for o in objs],
                "area µm²": [None if mpp is None else round(o.area_um2(mpp) or 0, 1) for o in objs],
                "mean P(class)": [round(o.mean_probability, 3) for o in objs],
                f"share of the {res.method} map %": [
                    None if o.cam_share is None else round(100 * o.cam_share, 2) for o in objs
                ],
                "x": [o.centroid_xy[0] for o in objs],
                "y": [o.centroid_xy[1] for o in objs],
            }
        )
        event = st.dataframe(df, hide_index=True, on_select="rerun", selection_mode="single-row", key="objects_table")
        rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
        if rows and rows != st.session_state.get("_objects_applied"):
            st.session_state["_objects_applied"] = rows
            obj = objs[rows[0]]
            st.session_state["sel_point"] = obj.centroid_xy
            st.session_state["sel_target"] = "point"
            st.rerun()


# ---------------------------------------------------------------- presenter


def presenter_css() -> None:
    """Larger type and no spare margins: a projector at 1280×720 shows the figure whole."""
    st.markdown(
        """<style>
        .block-container {padding-top: 2.6rem; padding-bottom: 0; max-width: 100%;}
        .stMarkdown p, .stCaption, label, .stRadio label p {font-size: 1.15rem !important;}
        </style>""",
        unsafe_allow_html=True,
    )


def presenter_toggle() -> bool:
    return bool(
        state.bound(
            st.toggle,
            "Presentation mode",
            "present",
            help="One picture with titles, colour bar and caption inside, sized for a 1280×720 projector.",
        )
    )


def presenter(drawn: Pictures, ch: compute.Choices, res: CamResult, caption: str) -> None:
    """The figure for a slide: panels with titles inside, the colour bar and what produced it."""
    view = state.bound(
        st.radio,
        "Show",
        "present_view",
        options=list(state.PRESENT_VIEWS),
        format_func=state.PRESENT_VIEWS.get,
        horizontal=True,
        label_visibility="collapsed",
    )
    fig = figure(drawn, ch, res, caption, view)
    h, w = fig.shape[:2]
    width = int(min(1500, 450 * w / h))  # under 720 px of screen with the toolbar and controls
    st.image(fig, width=width, alt=f"figure: {caption}")
    c1, c2, _ = st.columns([1, 1, 2])
    with c1:
        copy_image_button(fig, "Copy figure", key="copy_figure")
    c2.download_button(
        "Download this figure (PNG for a slide)",
        render.to_png(fig),
        f"{file_stem(ch, res)}_figure.png",
        "image/png",
        key="present_figure",
    )


def figure(drawn: Pictures, ch: compute.Choices, res: CamResult, caption: str, view: str = "three") -> np.ndarray:
    panels = {
        "mask": ("Predicted mask", drawn.mask),
        "heatmap": (f"{res.method} — {class_name(ch, res)}", drawn.heat),
        "overlay": ("Overlay", drawn.over),
    }
    chosen = list(panels.values()) if view == "three" else [panels[view]]
    bar = drawn.bar if view != "mask" else None
    return render.figure(chosen, caption, bar, panel_px=512)


# ---------------------------------------------------------------- downloads and the link


def downloads(
    ch: compute.Choices,
    res: CamResult,
    prediction: Prediction,
    pictures: Pictures,
    drawn: Pictures,
    caption: str,
    record: dict[str, Any],
) -> None:
    """The downloads, named after image, class, layer and method. The pictures encode on every
    run (fast); the GeoJSON, figure and ZIP are built only when clicked (callables), so a slider
    move on a large image does not trace thousands of outlines."""
    stem = file_stem(ch, res)
    pngs: dict[str, Any] = {
        "mask.png": lambda: render.to_png(prediction.mask.astype(np.uint8)),  # class indices: what tools read
        "mask_color.png": lambda: render.to_png(pictures.mask),
        "heatmap.png": lambda: render.to_png(pictures.heat),
        "overlay.png": lambda: render.to_png(pictures.over),
    }

    def geojson() -> bytes:
        return tile_geojson(ch, res, prediction, record)

    def zipped() -> bytes:  # the CLI's files under the CLI's names (cam_core.output.bundle)
        return bundle.to_zip(bundle.files(res, record, {**pngs, "objects.geojson": geojson}, ch.image.mpp))

    helps = {
        "mask.png": "Pixel value = class index ("
        + ", ".join(f"{i} {c}" for i, c in enumerate(ch.loaded.spec.classes))
        + ")",
        "mask_color.png": "The coloured mask as shown",
    }
    d = st.columns(7)
    for col, (name, make) in zip(d, pngs.items()):
        col.download_button(name, make, f"{stem}_{name}", "image/png", help=helps.get(name), on_click="ignore")
    d[4].download_button(
        "objects.geojson",
        geojson,
        f"{stem}_objects.geojson",
        "application/geo+json",
        on_click="ignore",
        help="QuPath (File → Import objects): nuclei as detections with area, CAM and probability, CAM regions as "
        "annotations" + (", in slide coordinates" if ch.image.slide else ", in tile pixel coordinates"),
    )
    d[5].download_button(
        "figure.png",
        lambda: render.to_png(figure(drawn, ch, res, caption)),
        f"{stem}_figure.png",
        "image/png",
        on_click="ignore",
        help="Three panels with titles, colour bar and caption: for a slide",
    )
    d[6].download_button("results.zip", zipped, f"{stem}_results.zip", "application/zip", on_click="ignore")
    if not ch.image.sample and not ch.image.slide:
        st.caption("An uploaded image cannot travel in a link: share the results ZIP (or the image) with the link.")


def tile_geojson(ch: compute.Choices, res: CamResult, prediction: Prediction, record: dict[str, Any]) -> bytes:
    """The tile's objects for QuPath, with the explained class's CAM; slide coordinates for a
    slide region (its origin and scale), else tile pixels."""
    import json

    from cam_core.wsi import geojson as gj

    level = record.get("threshold", {}).get("level")
    spec = ch.loaded.spec
    objects = gj.tile_objects(
        gj.TileGeometry(ch.image.origin, ch.image.scale),
        prediction.mask,
        prediction.probs,
        {res.class_index: res.cam},
        gj.Style(spec.classes, spec.colors, ch.image.mpp, res.method, 0.5 if level is None else float(level)),
        f"{ch.image.sha}:{res.method}:{res.layer}:{res.class_index}",
    )
    return json.dumps(gj.feature_collection(objects.features), allow_nan=False).encode()


def link_notes() -> None:
    """Notes about settings a link asked for and could not get: shown once, never silent."""
    for note in st.session_state.pop("link_notes", []):
        st.warning(plain(note))  # notes quote what the link said: text, never markdown


def current_view(ch: compute.Choices) -> dict[str, Any]:
    s = st.session_state
    target = s.get("sel_target")
    mode = s.get("thr_mode")
    present = bool(s.get("present"))
    return {
        "sample": ch.image.name if ch.image.sample else None,
        "image": None if ch.image.sample or ch.image.slide else "upload",
        "slide": ch.image.slide["name"] if ch.image.slide else None,
        "region": ch.image.slide["region_level0_xywh"] if ch.image.slide else None,
        "model": ch.loaded.name,
        "class": "auto" if ch.class_index is None else ch.loaded.spec.classes[ch.class_index],
        "layer": ch.layer,
        "method": ch.method.name,
        "target": target,
        "rect": s.get("sel_rect") if target == "rectangle" else None,
        "point": s.get("sel_point") if target == "point" else None,
        "rule": None if s.get("sel_rule") == "model default" else s.get("sel_rule"),
        "eigen": True if ch.eigen_smooth else None,
        "opacity": s.get("opacity"),
        "thr": mode,
        "thr_abs": s.get("thr_abs") if mode == "absolute" else None,
        "thr_pct": s.get("thr_pct") if mode == "percentile" else None,
        "cmap": s.get("cmap"),
        "show": s.get("show") if mode != "none" else None,
        "values": s.get("values"),
        "zoom": None if tuple(s.get("zoom", state.FULL_VIEW)) == state.FULL_VIEW else s.get("zoom"),
        "present": True if present else None,
        "view": s.get("present_view") if present else None,
    }


def write_link(ch: compute.Choices) -> None:
    """Keep the address bar on the current view, so copying it shares exactly this picture."""
    params = state.link_params(current_view(ch))
    if params != dict(st.query_params):
        st.query_params.from_dict(params)
