"""The sidebar every page draws: image, model, class, layer, method, target, decision rule."""

from __future__ import annotations

import hashlib

import streamlit as st

from cam_core import layers, methods, models
from cam_core import targets as tg
from cam_core.errors import SegCamError
from cam_core.images import SUPPORTED, load_image
from cam_core.limits import MAX_PIXELS
from cam_core.rules import presets

from . import compute
from .compute import Choices, ImageChoice
from .state import TEACHING_NOTES, bound, sample_names

# The app's target choices: the core's kinds, with a rectangle standing for a user mask.
TARGET_CHOICES = {
    "predicted": tg.TARGET_KINDS["predicted"],
    "class": tg.TARGET_KINDS["class"],
    "rectangle": "rectangle",
}


def _image_sidebar() -> ImageChoice | None:
    st.sidebar.subheader("Image")
    source = bound(st.sidebar.radio, "Source", "sel_source", options=["Sample", "Upload"], horizontal=True)
    if source == "Sample":
        names = sample_names()
        name = bound(
            st.sidebar.selectbox,
            "Sample tile (CoNSeP test split; ink_dot_*: teaching sample)",
            "sel_sample",
            options=names,
        )
        thumbs = [compute.sample(n)[0][::4, ::4] for n in names]
        st.sidebar.image(
            thumbs, width=52, caption=[n.removeprefix("test_").replace("ink_dot_test_", "dot ") for n in names]
        )
        if name in TEACHING_NOTES:
            st.sidebar.info(TEACHING_NOTES[name])
        return compute.sample_choice(name)
    # No extension filter: a PNG saved as .jpg should work, and anything else gets our message
    # naming what the file is, rather than the browser silently refusing it.
    upload = st.sidebar.file_uploader(
        "Upload an H&E tile", key="upload", help=f"{SUPPORTED}; up to {MAX_PIXELS / 1e6:.0f} MP"
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
    choice = ImageChoice(upload.name, sha, image)
    st.session_state["last_upload"] = choice
    return choice


def _model_sidebar() -> models.LoadedModel | None:
    st.sidebar.subheader("Model")
    entries = compute.model_entries()
    usable = [e.name for e in entries if not e.error]
    broken = [e for e in entries if e.error]
    if not usable:
        st.sidebar.error("No model can be loaded; see the Model page.")
        return None
    if st.session_state.get("sel_model") not in usable:
        st.session_state["sel_model"] = usable[0]
    name = bound(st.sidebar.selectbox, "Model", "sel_model", options=usable)
    if broken:
        with st.sidebar.expander(f"{len(broken)} model(s) cannot load"):
            for e in broken:
                st.markdown(f"**{e.name}**: {e.error}")
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
        st.session_state["sel_layer"] = default
        st.session_state["sel_layer_model"] = loaded.name
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


def sidebar() -> Choices | None:
    """Draw the shared sidebar; return the current choices (None when there is nothing to show)."""
    image = _image_sidebar()
    loaded = _model_sidebar()
    if image is None or loaded is None:
        return None
    spec = loaded.spec
    st.sidebar.subheader("Explanation")
    rules = presets(spec.decision_rule)
    rule = rules.get(st.session_state.get("sel_rule"), spec.decision_rule)
    # Class labels carry the predicted area, from the cached prediction when there is one.
    pred = compute.prediction_if_cached(loaded, image, rule)
    area = pred.area_percent() if pred is not None else None
    class_opts: list[str | int] = ["auto", *range(len(spec.classes))]

    def class_label(c: str | int) -> str:
        if c == "auto":
            return "auto: most predicted"
        return spec.classes[int(c)] + (f" — {area[int(c)]:.1f} % predicted" if area is not None else "")

    choice = bound(st.sidebar.selectbox, "Class", "sel_class", options=class_opts, format_func=class_label)
    cls = None if choice == "auto" else int(choice)
    layer = _layer_choice(loaded)

    forward_s = st.session_state.get("forward_s", 0.05)
    offered = [m for m in methods.METHODS.values() if m.tileable or not image.large]
    channels = layers.spatial_layers(loaded)[layer].channels

    def method_label(n: str) -> str:
        info = methods.METHODS[n.lower()]
        if info.fast:
            return n
        if info.from_cache:
            return f"{n} — slow"
        return f"{n} — own passes, ~{max(info.estimate_seconds(channels, forward_s), 1):.0f} s"

    method = bound(
        st.sidebar.selectbox,
        "Method",
        "sel_method",
        options=[m.name for m in offered],
        format_func=method_label,
        help=None if not image.large else "Large image: methods with passes of their own are not offered (tiled).",
    )
    info = methods.METHODS[method.lower()]
    st.sidebar.caption(info.summary)

    target_kind = bound(
        st.sidebar.radio,
        "Target",
        "sel_target",
        options=list(TARGET_CHOICES),
        format_func=TARGET_CHOICES.get,
        help="What the CAM explains: the class's score summed over the predicted pixels, every pixel, or a rectangle.",
    )
    h, w = image.image.array.shape[:2]
    if target_kind == "rectangle":
        x0, y0, x1, y1 = st.session_state["sel_rect"]
        xs = st.sidebar.slider("Rectangle x (fraction of width)", 0.0, 1.0, (x0, x1), 0.01, key="w_rect_x")
        ys = st.sidebar.slider("Rectangle y (fraction of height)", 0.0, 1.0, (y0, y1), 0.01, key="w_rect_y")
        st.session_state["sel_rect"] = (xs[0], ys[0], xs[1], ys[1])
        rect = st.session_state["sel_rect"]
        mask = tg.rectangle_mask((h, w), round(rect[0] * w), round(rect[1] * h), round(rect[2] * w), round(rect[3] * h))
        target = tg.TargetSpec("mask", cls, mask)
    else:
        target = tg.TargetSpec(target_kind, cls)

    with st.sidebar.expander("Mask confidence and smoothing"):
        rule_name = bound(
            st.selectbox,
            "Call a pixel a nucleus when",
            "sel_rule",
            options=list(rules),
            help=f"Model default: {spec.decision_rule.describe()}.",
        )
        eigen = bound(st.checkbox, "eigen_smooth", "sel_eigen_smooth", disabled=not info.eigen_smooth)
    return Choices(image, loaded, cls, layer, info, target, rules[rule_name], bool(eigen) and info.eigen_smooth)
