"""The sidebar every page draws: image, model, class, layer, method, target, decision rule."""

from __future__ import annotations

import dataclasses
import hashlib

import streamlit as st

from cam_core import engine
from cam_core.data import samples
from cam_core.data.images import MPP_RANGE, SUPPORTED, load_image
from cam_core.data.masks import MASK_KINDS
from cam_core.data.truth import load_truth
from cam_core.engine import methods
from cam_core.engine import targets as tg
from cam_core.errors import SegCamError
from cam_core.limits import MAX_PIXELS
from cam_core.model import layers, models
from cam_core.model.rules import DecisionRule, presets
from cam_core.output import figure as fig
from cam_core.trust.audit import AUDIT_MARKERS

from . import compute, state
from .clickable import clickable_image
from .compute import Choices, ImageChoice
from .state import TARGET_CHOICES, TEACHING_NOTES, bound, link_note, note_fallback
from .text import plain


def _image_sidebar() -> ImageChoice | None:
    st.sidebar.subheader("Image")
    sources = ["Sample", "Upload"] + (["Slide region"] if st.session_state.get("slide_region") else [])
    source = bound(st.sidebar.radio, "Source", "sel_source", options=sources, horizontal=True)
    if source == "Slide region":
        region: ImageChoice = st.session_state["slide_region"]
        st.sidebar.caption(f"{plain(region.name)} — choose another on the Slide page.")
        return region
    if source == "Sample":
        names = samples.names()
        name = bound(
            st.sidebar.selectbox,
            "Sample tile (CoNSeP test split; ink_dot_*: teaching sample)",
            "sel_sample",
            options=names,
        )
        _thumbnails(names)
        if name in TEACHING_NOTES:
            st.sidebar.info(TEACHING_NOTES[name])
        for model, preset in models.presets().items():
            if preset["sample"] == name:
                st.sidebar.button(
                    preset["label"],
                    key=f"preset_{model}",
                    type="primary",
                    on_click=state.apply_preset,
                    args=(model, preset),
                    help=f"{model}, {preset['method']} @ {preset['layer']}, with and without the marker: {preset['why']}",
                )
        return compute.sample_choice(name)
    # No extension filter: a PNG saved as .jpg should work, and anything else gets our message
    # naming what the file is, rather than the browser silently refusing it.
    upload = st.sidebar.file_uploader(
        "Upload an H&E tile", key="upload", help=f"{SUPPORTED}; up to {MAX_PIXELS / 1e6:.0f} MP"
    )
    st.sidebar.file_uploader(
        "Ground-truth mask (optional)",
        key="upload_truth",
        help="A PNG of the same size: pixel value = class index of the model (255 = not scored), or a binary "
        "mask (0 = background, non-zero = nucleus) compared as any nucleus.",
    )
    st.sidebar.radio(
        "Mask values are",
        list(MASK_KINDS),
        key="truth_kind",
        horizontal=True,
        format_func=lambda k: {"auto": "auto", "index": "class indices", "binary": "binary"}[k],
        help="; ".join(f"{k}: {v}" for k, v in MASK_KINDS.items()),
    )
    if upload is None:
        last = st.session_state.get("last_upload")
        if last is None:
            st.sidebar.info("Choose a file, or switch back to a sample.")
        return last
    data = upload.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    last = st.session_state.get("last_upload")
    if last is not None and last.sha == sha:
        return last
    try:
        image = load_image(data, name=upload.name)
    except SegCamError as exc:
        st.sidebar.error(str(exc))  # shown once, beside the uploader
        st.session_state["upload_error"] = str(exc)
        return None
    st.session_state.pop("upload_error", None)
    choice = ImageChoice(upload.name, sha, image, mpp=image.mpp)
    st.session_state["last_upload"] = choice
    return choice


def _thumbnails(names: list[str]) -> None:
    """The samples as a sheet of thumbnails; clicking one selects it (the select box does too)."""
    from cam_core.output.render import contact_sheet

    per_row = 4
    labels = [n.removeprefix("test_").replace("ink_dot_test_", "dot ") for n in names]
    sheet, row = contact_sheet([compute.sample(n)[0] for n in names], labels, per_row)
    with st.sidebar:
        point = clickable_image(
            sheet, "sample tiles: " + ", ".join(names), key="thumbs", title="Click a tile to open it"
        )
    if point is None:
        return
    index = (point[1] // row) * per_row + point[0] // (sheet.shape[1] // per_row)
    if index < len(names) and names[index] != st.session_state.get("sel_sample"):
        st.session_state["sel_sample"] = names[index]
        st.rerun()


def _linked_slide_region(loaded: models.LoadedModel) -> ImageChoice | None:
    """A link to a slide region (``slide=NAME&region=x,y,w,h``): read it once, at this model's
    resolution, from the slides folder; what cannot be read becomes a note."""
    from cam_core.wsi import slides

    if not st.session_state.get("link_requested", {}).pop("slide_region", None):
        return None
    name, box = st.session_state.pop("link_slide", None), st.session_state.pop("link_region", None)
    path = slides.slides_dir() / str(name)
    if "/" in str(name) or not path.is_file():
        link_note(f"The link's slide {name!r} is not in this server's slides folder; the sample tile is shown.")
        return None
    if loaded.spec.mpp is None:
        link_note(f"{loaded.name} does not declare its resolution, so the linked slide region cannot be read.")
        return None
    try:
        choice = compute.slide_region_choice(str(path), None, tuple(box), loaded.spec.mpp)
    except SegCamError as exc:
        link_note(f"The linked slide region cannot be read: {exc}")
        return None
    st.session_state["slide_region"], st.session_state["sel_source"] = choice, "Slide region"
    return choice


def _slide_region_for(image: ImageChoice, loaded: models.LoadedModel) -> ImageChoice:
    """A slide region follows the model: read again at its resolution when it differs."""
    mpp = loaded.spec.mpp
    if image.slide is None or image.slide_path is None or mpp is None or image.mpp == mpp:
        return image
    try:
        box = tuple(image.slide["region_level0_xywh"])
        again = compute.slide_region_choice(image.slide_path, image.slide_mpp_override, box, mpp)
    except SegCamError as exc:
        link_note(f"The slide region cannot be read at {loaded.name}'s {mpp:g} µm/px: {exc}")
        return image
    st.session_state["slide_region"] = again
    st.sidebar.caption(f"Region read again at {mpp:g} µm/px, the resolution {plain(loaded.name)} was trained at.")
    return again


def _with_truth_and_resolution(image: ImageChoice, loaded: models.LoadedModel) -> ImageChoice:
    """Attach the ground truth (sample's own, or the uploaded mask) and the resolution."""
    classes = loaded.spec.classes
    if image.sample:
        return dataclasses.replace(image, truth=compute.sample_truth(image.name, classes))
    if image.slide is not None:  # a slide region: read at the model's resolution, no truth
        return image
    mpp = image.image.mpp
    if mpp is None:
        given = st.sidebar.number_input(
            "Resolution (µm per pixel; 0 = unknown)",
            min_value=0.0,
            max_value=MPP_RANGE[1],
            step=0.01,
            key="upload_mpp",
            help="Not in the file's metadata. CoNSeP and most 40× scans: about 0.25. Used for scale bars and areas.",
        )
        mpp = given if given and given >= MPP_RANGE[0] else None
    truth = None
    mask_file = st.session_state.get("upload_truth")
    if mask_file is not None:
        try:
            truth = load_truth(
                mask_file.getvalue(),
                classes,
                image.image.array.shape[:2],
                name=mask_file.name,
                kind=st.session_state.get("truth_kind", "auto"),
            )
        except SegCamError as exc:
            st.sidebar.error(str(exc))  # the image is still explained; only the comparison is missing
    return dataclasses.replace(image, truth=truth, mpp=mpp)


def _model_sidebar() -> models.LoadedModel | None:
    st.sidebar.subheader("Model")
    entries = compute.model_entries()
    usable = [e.name for e in entries if not e.error]
    broken = [e for e in entries if e.error]
    if not usable:
        st.sidebar.error("No model can be loaded; see the Model page.")
        return None
    if st.session_state.get("sel_model") not in usable:
        note_fallback("sel_model", usable[0], f"model {st.session_state.get('sel_model')!r}")
        st.session_state["sel_model"] = usable[0]
    wanted = st.session_state.get("sel_model")
    name = bound(st.sidebar.selectbox, "Model", "sel_model", options=usable)
    note_fallback("sel_model", name, f"model {wanted!r}")
    if broken:
        with st.sidebar.expander(f"{len(broken)} model(s) cannot load"):
            for e in broken:
                st.markdown(f"**{plain(e.name)}**: {plain(e.error)}")
    try:
        return compute.get_model(name)
    except SegCamError as exc:
        st.sidebar.error(str(exc))
        return None


def _layer_choice(loaded: models.LoadedModel) -> str:
    curated = layers.curated_layers(loaded)
    default = layers.default_layer(loaded)
    # Another model: its own default layer, not the previous model's choice (even when it exists here).
    if st.session_state.get("sel_layer_model") != loaded.name or st.session_state.get(
        "sel_layer"
    ) not in layers.spatial_layers(loaded):
        note_fallback("sel_layer", default, f"layer {st.session_state.get('sel_layer')!r}")
        st.session_state["sel_layer"] = default
        st.session_state["sel_layer_model"] = loaded.name
    st.session_state.get("link_requested", {}).pop("sel_layer", None)  # it was usable
    current = st.session_state["sel_layer"]
    opts = curated if current in curated else [*curated, current]
    layer = bound(
        st.sidebar.selectbox,
        "Layer",
        "sel_layer",
        options=opts,
        format_func=lambda n: f"{n} (default)" if n == default else n,
        help="Curated: encoder stages, decoder blocks, the last layer before the head.",
    )
    with st.sidebar.expander("All layers"):
        every = list(layers.spatial_layers(loaded))
        bound(st.selectbox, "Any spatial layer", "sel_layer", wkey="w_sel_layer_all", options=every)
    return st.session_state["sel_layer"] or layer


def _class_choice(loaded: models.LoadedModel, image: ImageChoice, rule: DecisionRule) -> int | None:
    """The class (None: automatic), its labels carrying the predicted area when the prediction is
    cached; a class named by a link that the model lacks falls back to automatic, with a note."""
    spec = loaded.spec
    # Class labels carry the predicted area, from the cached prediction when there is one.
    pred = compute.prediction_if_cached(loaded, image, rule)
    area = pred.area_percent() if pred is not None else None
    class_opts: list[str | int] = ["auto", *range(len(spec.classes))]
    asked = st.session_state.get("sel_class")
    if isinstance(asked, str) and asked != "auto":  # a link names the class
        try:
            st.session_state["sel_class"] = tg.class_index(asked, spec.classes)
        except SegCamError:
            st.session_state["sel_class"] = "auto"
            link_note(f"The link asks for class {asked!r}, which {loaded.name} does not have; showing 'auto'.")

    def class_label(c: str | int) -> str:
        if c == "auto":
            return "auto: most predicted"
        return spec.classes[int(c)] + (f" — {area[int(c)]:.1f} % predicted" if area is not None else "")

    choice = bound(st.sidebar.selectbox, "Class", "sel_class", options=class_opts, format_func=class_label)
    cls = None if choice == "auto" else int(choice)
    return cls


def _method_choice(loaded: models.LoadedModel, image: ImageChoice, layer: str) -> methods.MethodInfo:
    """The method, slow ones labelled with their estimate at this layer (large images: one-pass only)."""
    offered = [m for m in methods.METHODS.values() if m.tileable or not image.large]

    def method_label(n: str) -> str:
        info = methods.METHODS[n.lower()]
        if info.fast:
            return n
        if info.from_cache:
            return f"{n} — slow"
        work = engine.method_work(loaded, image.image.array.shape, info, layer)  # the page's own estimate
        return f"{n} — own passes, ~{max(work.seconds(loaded.name), 1):.0f} s"

    method = bound(
        st.sidebar.selectbox,
        "Method",
        "sel_method",
        then=state.method_chosen,
        options=[m.name for m in offered],
        format_func=method_label,
        help=None if not image.large else "Large image: methods with passes of their own are not offered (tiled).",
    )
    info = methods.METHODS[method.lower()]
    st.sidebar.caption(info.summary)

    return info


def _target_choice(image: ImageChoice, cls: int | None) -> tg.TargetSpec:
    """What the CAM explains; truth targets only offered when the image has a ground truth."""
    offered_targets = [k for k in TARGET_CHOICES if k not in tg.TRUTH_KINDS or image.truth is not None]
    if st.session_state.get("sel_target") not in offered_targets and st.session_state.get("sel_target"):
        link_note(
            f"Target '{TARGET_CHOICES.get(st.session_state['sel_target'], st.session_state['sel_target'])}' needs a "
            "ground truth, which this image does not have; showing the predicted region."
        )
    target_kind = bound(
        st.sidebar.radio,
        "Target",
        "sel_target",
        then=state.target_changed,
        options=offered_targets,
        format_func=TARGET_CHOICES.get,
        help="What the CAM explains: the class's score summed over the predicted pixels, every pixel, a rectangle, "
        "the object you click, or (with a ground truth) the pixels the model missed or wrongly called the class.",
    )
    h, w = image.image.array.shape[:2]
    if target_kind == "point":
        target = _point_target(cls, h, w)
    elif target_kind in tg.TRUTH_KINDS:
        target = tg.TargetSpec(target_kind, cls, truth=image.truth)
    elif target_kind == "rectangle":
        x0, y0, x1, y1 = st.session_state["sel_rect"]
        xs = st.sidebar.slider("Rectangle x (fraction of width)", 0.0, 1.0, (x0, x1), 0.01, key="w_rect_x")
        ys = st.sidebar.slider("Rectangle y (fraction of height)", 0.0, 1.0, (y0, y1), 0.01, key="w_rect_y")
        st.session_state["sel_rect"] = (xs[0], ys[0], xs[1], ys[1])
        rect = st.session_state["sel_rect"]
        mask = tg.rectangle_mask((h, w), round(rect[0] * w), round(rect[1] * h), round(rect[2] * w), round(rect[3] * h))
        target = tg.TargetSpec("mask", cls, mask)
    else:
        target = tg.TargetSpec(target_kind, cls)

    return target


def sidebar() -> Choices | None:
    """Draw the shared sidebar; return the current choices (None when there is nothing to show)."""
    image = _image_sidebar()
    loaded = _model_sidebar()
    if image is None or loaded is None:
        return None
    image = _linked_slide_region(loaded) or image
    image = _slide_region_for(image, loaded)
    image = _with_truth_and_resolution(image, loaded)
    spec = loaded.spec
    st.sidebar.subheader("Explanation")
    rules = presets(spec.decision_rule)
    rule = rules.get(st.session_state.get("sel_rule"), spec.decision_rule)
    cls = _class_choice(loaded, image, rule)
    layer = _layer_choice(loaded)
    info = _method_choice(loaded, image, layer)
    target = _target_choice(image, cls)

    ab = _ab_choice(loaded, image, layer, info)
    with st.sidebar.expander("Mask confidence and smoothing"):
        rule_name = bound(
            st.selectbox,
            "Call a pixel a nucleus when",
            "sel_rule",
            options=list(rules),
            help=f"Model default: {spec.decision_rule.describe()}.",
        )
        eigen = bound(st.checkbox, "eigen_smooth", "sel_eigen_smooth", disabled=not info.eigen_smooth)
    eigen_on = bool(eigen) and info.eigen_smooth
    return Choices(image, loaded, cls, layer, info, target, rules[rule_name], eigen_on, ab)


def _ab_choice(
    loaded: models.LoadedModel, image: ImageChoice, layer: str, info: methods.MethodInfo
) -> tuple[str, str] | None:
    """An A/B view: what B changes and its value (another method, layer or model; the marker's
    removal on a teaching tile). None when off."""
    twin = samples.clean_twin(image.name) if image.sample else None
    others = {
        "method": [m.name for m in methods.METHODS.values() if m.fast and m.name != info.name],
        "layer": [n for n in layers.curated_layers(loaded) if n != layer],
        "model": [e.name for e in compute.model_entries() if not e.error and e.name != loaded.name],
        "marker": [twin] if twin else [],
        "mark": [] if image.large else list(AUDIT_MARKERS),  # the shortcut audit's marks, planted on B
    }
    offered = ["none", *(k for k in fig.AB_KINDS if others[k])]
    with st.sidebar.expander("A/B: two views side by side", expanded=st.session_state.get("ab_what") != "none"):
        what = bound(
            st.selectbox,
            "B changes",
            "ab_what",
            options=offered,
            format_func=lambda k: "nothing (off)" if k == "none" else fig.AB_KINDS[k],
        )
        if what == "none":
            return None
        if what == "marker":
            st.caption(f"B: {plain(twin)}, the same tissue without the marker.")
            return what, str(twin)
        if what == "mark":
            value = bound(st.selectbox, "Mark planted on B", "ab_mark", options=others[what])
            st.caption(f"B: the same image with {AUDIT_MARKERS[value].words}; it must not matter.")
            return what, str(value)
        value = bound(st.selectbox, f"B's {what}", f"ab_{what}", options=others[what])
        return what, str(value)


def _point_target(cls: int | None, h: int, w: int) -> tg.TargetSpec:
    """The clicked object; the point can be typed too. No point yet: the predicted region."""
    from cam_core.data.objects import check_point

    point = st.session_state.get("sel_point")
    try:
        if point is not None:
            check_point(int(point[0]), int(point[1]), (h, w))
    except SegCamError as exc:  # e.g. a link's point on another image
        link_note(f"{exc}; the predicted region is shown — click a nucleus instead.")
        point = st.session_state["sel_point"] = None
    px, py = point if point is not None else (w // 2, h // 2)
    st.session_state["w_point_x"], st.session_state["w_point_y"] = int(px), int(py)

    def typed() -> None:
        st.session_state["sel_point"] = (int(st.session_state["w_point_x"]), int(st.session_state["w_point_y"]))

    c1, c2 = st.sidebar.columns(2)
    c1.number_input("x (px)", 0, w - 1, key="w_point_x", on_change=typed)
    c2.number_input("y (px)", 0, h - 1, key="w_point_y", on_change=typed)
    if point is None:
        st.sidebar.info("Click a nucleus on the mask, heatmap or overlay, or pick one in the objects table.")
        return tg.TargetSpec("predicted", cls)
    # The object is the predicted component under the point: its class, whatever the class box says.
    return tg.TargetSpec("point", None, point=(int(point[0]), int(point[1])))
