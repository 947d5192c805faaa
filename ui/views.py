"""The Explore page's pictures and sections: panels one can click, outlines, zoom and scale bars,
ground truth, predicted objects, the presenter's figure, downloads and the shareable link.

``app.py`` decides what to compute; this module decides how it is shown.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np
import streamlit as st

from cam_core.data import truth as gt
from cam_core.data.objects import area_um2, mass_share
from cam_core.engine import targets as tg
from cam_core.engine.capturing import Prediction
from cam_core.engine.result import CamResult
from cam_core.output import bundle, render
from cam_core.output import figure as fig
from cam_core.output.figure import Arrays, Panels

from . import compute, state
from .clickable import clickable_image, copy_image_button
from .text import code, plain

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
    extent = f", box x {box[0]}–{box[2]}, y {box[1]}–{box[3]}" if box and target.kind in tg.LOCAL_KINDS else ""
    return f"Target: **{words}**{where} — {n} px{um}{extent} · {fig.resolution_words(ch.image.mpp)}"


def file_stem(ch: compute.Choices, res: CamResult) -> str:
    """Download names that say what they are: image, class, layer, method."""
    raw = f"{ch.image.name.rsplit('.', 1)[0]}_{class_name(ch, res)}_{res.layer}_{res.method}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw)


# ---------------------------------------------------------------- pictures


def zoom_xyxy(shape: tuple[int, ...]) -> list[int] | None:
    """The zoom region in image pixels [x0, y0, x1, y1), None for the whole tile."""
    zoom = tuple(st.session_state.get("zoom", state.FULL_VIEW))
    if zoom == state.FULL_VIEW:
        return None
    h, w = shape[:2]
    return [int(zoom[0] * w), int(zoom[1] * h), int(zoom[2] * w), int(zoom[3] * h)]


def previous_picture(waiting_for: str) -> None:
    """The last overlay this session drew, dimmed and labelled, while a slow method waits for its
    button: the page never goes blank."""
    last = st.session_state.get("last_picture")
    if last is None:
        return
    label, over = last
    dimmed = (over.astype(np.uint16) + 255) // 2
    col, _ = st.columns([1, 2])
    col.image(
        dimmed.astype(np.uint8),
        caption=f"Previous map ({label}), shown dimmed until {waiting_for} has run",
        alt=f"previous overlay, {label}",
    )


def zoom_note(drawn: Panels, shape: tuple[int, ...]) -> None:
    h, w = round(drawn.mask.shape[0] / drawn.scale), round(drawn.mask.shape[1] / drawn.scale)
    if (w, h) != (shape[1], shape[0]):
        x0, y0 = drawn.offset
        st.caption(f"Zoomed to x {x0}–{x0 + w}, y {y0}–{y0 + h} (full resolution); reset it under *Zoom*.")


def panel(rgb: np.ndarray, alt: str, key: str, src: str | None = None) -> tuple[int, int] | None:
    """A panel that reports a click (in the panel's pixels); the click is answered by a callback
    before the next run (``clicked``), with the mapping the panels were drawn with."""
    return clickable_image(rgb, alt, key, title="Click a nucleus to explain that object", on_click=clicked, src=src)


def remember_panels(drawn: Panels, prediction: Prediction) -> None:
    """How the panels on screen map back to the image, for the click callback."""
    st.session_state["_panel_map"] = (drawn.offset, drawn.scale, prediction.mask)


def clicked(px: int, py: int) -> None:
    """A click on a panel (a callback: it runs before the next script run): the predicted object
    under it becomes the target, so that run draws it at once; background is answered by a toast."""
    mapping = st.session_state.get("_panel_map")
    if mapping is None:
        return
    (ox, oy), scale, mask = mapping
    x = min(ox + int(px / scale), mask.shape[1] - 1)
    y = min(oy + int(py / scale), mask.shape[0] - 1)
    if mask[y, x] == 0:
        # a toast shows where the user is looking (a note under the panels would be below the fold)
        st.session_state["_toast"] = f"({x}, {y}) is predicted background: click a coloured object to explain it."
        return
    choose_object((x, y), int(mask[y, x]))


def show_toast() -> None:
    text = st.session_state.pop("_toast", None)
    if text:
        st.toast(text)


def choose_object(point: tuple[int, int], class_index: int) -> None:
    """The predicted object at ``point`` becomes the target: its class in the sidebar's Class box
    and in the link (not a silent switch), a method whose map depends on the region unless the
    user picked one (``state.target_changed``)."""
    st.session_state["sel_point"] = point
    st.session_state["sel_target"] = "point"
    st.session_state["sel_class"] = class_index
    state.target_changed()


def explain_object(point: tuple[int, int], class_index: int) -> None:
    """:func:`choose_object`, then a new run (from inside a run: the objects table)."""
    choose_object(point, class_index)
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
            render.scale_bar(pic, ch.image.mpp, fig.PANEL_DISPLAY_PX),
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
            render.scale_bar(truth_rgb, mpp, fig.PANEL_DISPLAY_PX),
            width="stretch",
            alt=f"ground truth mask {truth.name}",
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
                render.scale_bar(render.outcome_map(codes), mpp, fig.PANEL_DISPLAY_PX),
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

    if ch.image.large and not state.bound(
        st.toggle,
        "List the predicted objects (thousands on a large image: about a second per map)",
        "list_objects",
    ):
        return  # a click on a large image costs one tile and a redraw, not a census of its nuclei
    key = (ch.image.sha, ch.loaded.name, ch.rule.key(), ch.target.key(), res.method, res.layer, res.class_index)
    cached = st.session_state.get("_objects")
    if cached is None or cached[0] != key:  # a 2000² tile has thousands: found once per map, not per rerun
        cached = (key, find_objects(prediction.mask, prediction.probs, np.clip(res.cam, 0, None)))
        st.session_state["_objects"] = cached
    objs = cached[1]
    st.session_state["last_objects"] = [(o.class_index, o.area_px, o.centroid_xy) for o in objs]
    classes = ch.loaded.spec.classes
    mpp = ch.image.mpp
    picked = st.session_state.get("sel_target") == "point" and bool(st.session_state.get("_objects_applied"))
    with st.expander(f"Predicted objects ({len(objs)}) — select a row to explain that object", expanded=picked):
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
            explain_object(tuple(obj.centroid_xy), obj.class_index)


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


def present_view(col: Any) -> None:
    """What the figure shows (its panels), in the presenter's top row."""
    with col:
        state.bound(
            st.selectbox,
            "Show",
            "present_view",
            options=list(fig.VIEWS),
            format_func=fig.VIEWS.get,
            label_visibility="collapsed",
        )


def figure_of(record: dict[str, Any], arrays: Arrays, arrays_b: Arrays | None = None) -> np.ndarray:
    """The figure of this view: the A/B figure when B is drawn, else the record's view."""
    return fig.figure_from(record, arrays) if arrays_b is None else fig.figure_ab(record, arrays, arrays_b)


def show_figure(record: dict[str, Any], arrays: Arrays, arrays_b: Arrays | None = None) -> np.ndarray:
    """The figure of this view shown at its own size (its type is sized for a 1280×720 projector);
    its hash is kept for the tests that rebuild it from the record. Returns the picture."""
    picture = figure_of(record, arrays, arrays_b)
    st.session_state["last_figure_sha"] = hashlib.sha256(picture.tobytes()).hexdigest()
    kind = "A/B figure" if arrays_b is not None else "figure"
    st.image(picture, width=fig.FIGURE_BOX[0], alt=f"{kind}: {fig.words_from(record, arrays.colors).caption}")
    return picture


def ab_panels(record: dict[str, Any], arrays: Arrays, arrays_b: Arrays) -> None:
    """An A/B view on the Explore page: the figure itself (what a link reproduces)."""
    show_figure(record, arrays, arrays_b)


def presenter(
    record: dict[str, Any],
    arrays: Arrays,
    ch: compute.Choices,
    res: CamResult,
    row: list[Any],
    arrays_b: Arrays | None = None,
) -> None:
    """The figure for a room, shown at its own size (its type is sized for a 1280×720 projector)
    and offered as the PNG it is: the pixels ``python -m cam_core figure result.json`` rebuilds.
    Copy and download go in the top row (``row``'s last two columns)."""
    picture = show_figure(record, arrays, arrays_b)
    with row[-2]:
        copy_image_button(picture, "Copy figure", key="copy_figure")
    row[-1].download_button(
        "Download figure", render.to_png(picture), f"{file_stem(ch, res)}_figure.png", "image/png", key="present_figure"
    )


# ---------------------------------------------------------------- downloads and the link


def downloads(
    ch: compute.Choices,
    res: CamResult,
    prediction: Prediction,
    arrays: Arrays,
    record: dict[str, Any],
    arrays_b: Arrays | None = None,
) -> None:
    """The downloads, named after image, class, layer and method. Every file is built only when
    clicked (callables), so a slider move on a large image neither encodes pictures nor traces
    thousands of outlines."""
    import functools

    stem = file_stem(ch, res)

    @functools.cache
    def pictures() -> Panels:  # the plain pictures, drawn when a download asks for them
        return fig.panels(fig.Display.model_validate(record["display"]), arrays, display_width=None)

    pngs: dict[str, Any] = {
        "mask.png": lambda: render.to_png(prediction.mask.astype(np.uint8)),  # class indices: what tools read
        "mask_color.png": lambda: render.to_png(pictures().mask),
        "heatmap.png": lambda: render.to_png(pictures().heat),
        "overlay.png": lambda: render.to_png(pictures().over),
    }

    def geojson() -> bytes:
        return tile_geojson(ch, res, prediction, record)

    def zipped() -> bytes:  # the CLI's files under the CLI's names (cam_core.output.bundle)
        made = {**pngs, "objects.geojson": geojson, "figure.png": figure_png}
        return bundle.to_zip(bundle.files(res, record, made, ch.image.mpp))

    def figure_png() -> bytes:
        return render.to_png(figure_of(record, arrays, arrays_b))

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
        figure_png,
        f"{stem}_figure.png",
        "image/png",
        on_click="ignore",
        help="Mask, map and overlay with titles, class legend, colour bar and a plain caption, for a slide "
        "(rebuilt from result.json by `python -m cam_core figure`)",
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
    for note in st.session_state.pop("view_notes", []):
        st.info(plain(note))  # what the app chose for the user, and why (e.g. a local target's method)


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
        "mask": s.get("mask_style") if s.get("mask_style") != state.DEFAULTS["mask_style"] else None,
        "blend": s.get("blend"),
        **ab_view(s),
    }


def app_link(ch: compute.Choices) -> str:
    """This view's address: the server's as the browser reached it, with the view's parameters."""
    from urllib.parse import urlencode, urlsplit

    url = urlsplit(str(getattr(st.context, "url", "") or ""))
    base = f"{url.scheme}://{url.netloc}{url.path}" if url.netloc else "/"
    return f"{base}?{urlencode(state.link_params(current_view(ch)))}"


def ab_view(s: Any) -> dict[str, Any]:
    """An A/B view's link parameters (nothing when it is off)."""
    what = s.get("ab_what", "none")
    if what == "none":
        return {}
    return {"ab": what, f"b_{what}": s.get(f"ab_{what}")}  # the marker's B has no value: dropped


def write_link(ch: compute.Choices) -> None:
    """Keep the address bar on the current view, so copying it shares exactly this picture."""
    params = state.link_params(current_view(ch))
    if params != dict(st.query_params):
        st.query_params.from_dict(params)
