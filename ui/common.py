"""The Streamlit layer shared by every page: caches, the shared sidebar, and state.

Everything that computes lives in ``cam_core``; here are only widgets, caching and layout.
Shared choices are kept in non-widget ``session_state`` keys (``sel_*``) and copied into each
page's widgets, because Streamlit forgets a widget's value when the user switches page.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from cam_core import engine, layers, methods, models, render, tiling
from cam_core import targets as tg
from cam_core.cache import LRUCache
from cam_core.errors import Cancelled, SegCamError
from cam_core.images import MAX_PIXELS, SUPPORTED, LoadedImage, load_image

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "images"
FAVICON = REPO / "assets" / "favicon.png"
DEFAULT_SAMPLE = "test_12_002"
# Capture every curated layer in one pass up to this size; above it only the chosen layer.
ALL_LAYERS_MAX_PIXELS = 1024 * 1024
log = logging.getLogger("segcam")
# Model passes are logged by cam_core.engine at INFO; the server's log shows every one of them.
if not logging.getLogger("cam_core").handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger("cam_core").addHandler(_handler)
    logging.getLogger("cam_core").setLevel(logging.INFO)

DEFAULTS = {
    "sel_source": "Sample",
    "sel_sample": DEFAULT_SAMPLE,
    "sel_model": None,
    "sel_class": "auto",  # the most predicted nucleus class
    "sel_layer": None,  # None: the model's default layer
    "sel_method": methods.DEFAULT_METHOD,
    "sel_target": "predicted",
    "sel_rect": (0.25, 0.25, 0.75, 0.75),  # fractions of width/height
    "sel_rule": "model default",
    "sel_eigen_smooth": False,
    "opacity": 0.5,
    "thr_mode": "none",
    "thr_abs": 0.5,
    "thr_pct": 80.0,
    "cmap": render.DEFAULT_COLORMAP,
    "show": "mask+contour",
}


PAGES = [
    ("app.py", "Explore", ":material/biotech:"),
    ("pages/1_Compare.py", "Compare", ":material/grid_view:"),
    ("pages/2_Model.py", "Model", ":material/model_training:"),
    ("pages/3_About.py", "About CAMs", ":material/menu_book:"),
]


def page_setup(title: str) -> None:
    """Page config, default state and the navigation (Streamlit's own list is hidden in config.toml)."""
    st.set_page_config(
        page_title=f"{title} · SegCAM Explorer",
        page_icon=str(FAVICON) if FAVICON.is_file() else ":material/biotech:",
        layout="wide",
    )
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    # ?sample=test_8_001 opens that tile (links to share at a lab meeting); read once per session.
    wanted = st.query_params.get("sample")
    if wanted and not st.session_state.get("_query_applied"):
        st.session_state["_query_applied"] = True
        if wanted in sample_names():
            st.session_state["sel_source"], st.session_state["sel_sample"] = "Sample", wanted
    st.sidebar.markdown("### SegCAM Explorer")
    for path, label, icon in PAGES:
        st.sidebar.page_link(path, label=label, icon=icon)


# ---------------------------------------------------------------- caches (process-wide)


@st.cache_resource(max_entries=2, show_spinner="Loading model…")
def get_model(name: str) -> models.LoadedModel:
    """One loaded model per name, shared by all sessions; every use holds ``loaded.lock``."""
    return models.load(name)


@st.cache_resource
def capture_cache() -> LRUCache:
    """Captures (activations + gradients): bounded to 12 entries and 1 GiB for the whole server."""
    return LRUCache(max_entries=12, max_bytes=1 << 30)


@st.cache_resource
def result_cache() -> LRUCache:
    """Results of methods run through grad-cam (ScoreCAM...), so a slider move never reruns them."""
    return LRUCache(max_entries=32, max_bytes=256 << 20)


@st.cache_data(ttl=30, show_spinner=False)
def model_entries() -> list[dict]:
    return [{**e.__dict__, "path": str(e.path)} for e in models.discover()]


# ---------------------------------------------------------------- widgets bound to state


def _sync(key: str, wkey: str) -> None:
    st.session_state[key] = st.session_state[wkey]


def bound(widget, label: str, key: str, wkey: str | None = None, **kwargs):
    """A widget whose value lives in the non-widget key ``key`` and survives page switches."""
    wkey = wkey or f"w_{key}"
    options = kwargs.get("options")
    value = st.session_state.get(key)
    if options is not None and isinstance(value, list):
        value = [v for v in value if v in list(options)]
        st.session_state[key] = value
    elif options is not None and value not in list(options):
        value = next(iter(options), None)
        st.session_state[key] = value
    st.session_state[wkey] = value
    return widget(label, key=wkey, on_change=_sync, args=(key, wkey), **kwargs)


# ---------------------------------------------------------------- image


@dataclass
class ImageChoice:
    name: str
    sha: str
    image: LoadedImage


@st.cache_data(max_entries=16, show_spinner=False)
def _sample(name: str) -> tuple[np.ndarray, str]:
    data = (SAMPLES / f"{name}.png").read_bytes()
    return load_image(data, name=name).array, hashlib.sha256(data).hexdigest()


def sample_names() -> list[str]:
    return sorted(p.stem for p in SAMPLES.glob("*.png"))


def _image_sidebar() -> ImageChoice | None:
    st.sidebar.subheader("Image")
    source = bound(st.sidebar.radio, "Source", "sel_source", options=["Sample", "Upload"], horizontal=True)
    if source == "Sample":
        names = sample_names()
        name = bound(st.sidebar.selectbox, "Sample tile (CoNSeP test split)", "sel_sample", options=names)
        thumbs = [_sample(n)[0][::4, ::4] for n in names]
        st.sidebar.image(thumbs, width=52, caption=[n.removeprefix("test_") for n in names])
        array, sha = _sample(name)
        return ImageChoice(name, sha, LoadedImage(array))
    # No extension filter: a PNG saved as .jpg should work, and anything else gets our message
    # naming what the file is, rather than the browser silently refusing it.
    upload = st.sidebar.file_uploader(
        "Upload an H&E tile", key="upload", help=f"{SUPPORTED}; up to {MAX_PIXELS / 1e6:.0f} MP"
    )
    if upload is None:
        last = st.session_state.get("last_upload")
        if last is None:
            st.sidebar.info("Choose a file, or switch back to a sample.")
            return None
        return last
    data = upload.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    last = st.session_state.get("last_upload")
    if last is not None and last.sha == sha:
        return last
    try:
        image = load_image(data, name=upload.name)
    except SegCamError as exc:
        st.sidebar.error(str(exc))
        st.session_state["upload_error"] = str(exc)
        return None
    st.session_state.pop("upload_error", None)
    choice = ImageChoice(upload.name, sha, image)
    st.session_state["last_upload"] = choice
    return choice


# ---------------------------------------------------------------- model, class, layer, method


@dataclass
class Choices:
    image: ImageChoice
    loaded: models.LoadedModel
    class_index: int | None
    layer: str
    method: methods.MethodInfo
    target: tg.TargetSpec
    rule: dict
    eigen_smooth: bool


def rule_options(loaded: models.LoadedModel) -> dict[str, dict]:
    opts = {"model default": loaded.spec.decision_rule, "argmax": {"type": "argmax"}}
    for t in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        opts[f"P(background) < {t}"] = {"type": "background_below", "threshold": t}
    return opts


def describe_rule(rule: dict) -> str:
    if rule.get("type") == "background_below":
        return f"foreground where P(background) < {rule['threshold']}"
    return "argmax"


def _model_sidebar() -> models.LoadedModel | None:
    st.sidebar.subheader("Model")
    entries = model_entries()
    usable = [e["name"] for e in entries if not e["error"]]
    broken = [e for e in entries if e["error"]]
    if not usable:
        st.sidebar.error("No model can be loaded; see the Model page.")
        return None
    if st.session_state.get("sel_model") not in usable:
        st.session_state["sel_model"] = usable[0]
    name = bound(st.sidebar.selectbox, "Model", "sel_model", options=usable)
    if broken:
        with st.sidebar.expander(f"{len(broken)} model(s) cannot load"):
            for e in broken:
                st.markdown(f"**{e['name']}**: {e['error']}")
    try:
        return get_model(name)
    except SegCamError as exc:
        st.sidebar.error(str(exc))
        return None


def estimate_seconds(info: methods.MethodInfo, loaded: models.LoadedModel, layer: str, forward_s: float) -> float:
    """Rough time of a method run through grad-cam, from the measured forward time."""
    if not info.extra_passes:
        return 3 * forward_s
    channels = layers.spatial_layers(loaded)[layer].channels
    return forward_s * (1 + channels)


def sidebar() -> Choices | None:
    """Draw the shared sidebar; return the current choices (None when there is nothing to show)."""
    image = _image_sidebar()
    loaded = _model_sidebar()
    if image is None or loaded is None:
        return None
    spec = loaded.spec
    st.sidebar.subheader("Explanation")
    # Class labels carry the predicted area, from the cached prediction when there is one.
    pred = prediction_if_cached(loaded, image)
    area = pred.area_percent() if pred is not None else None
    class_opts = ["auto", *range(len(spec.classes))]

    def class_label(c):
        if c == "auto":
            return "auto: most predicted"
        return f"{spec.classes[c]}" + (f" — {area[c]:.1f} % predicted" if area is not None else "")

    choice = bound(st.sidebar.selectbox, "Class", "sel_class", options=class_opts, format_func=class_label)
    cls = None if choice == "auto" else int(choice)

    curated = layers.curated_layers(loaded)
    default = layers.default_layer(loaded)
    if st.session_state.get("sel_layer") not in layers.spatial_layers(loaded):
        st.session_state["sel_layer"] = default
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

    forward_s = st.session_state.get("forward_s", 0.5)
    method_names = [m.name for m in methods.METHODS.values()]

    def method_label(n):
        info = methods.METHODS[n.lower()]
        if info.from_cache and not info.slow:
            return n
        return f"{n} — slow, ~{estimate_seconds(info, loaded, layer, forward_s):.0f} s"

    method = bound(st.sidebar.selectbox, "Method", "sel_method", options=method_names, format_func=method_label)
    info = methods.METHODS[method.lower()]
    st.sidebar.caption(info.summary)

    target_kind = bound(
        st.sidebar.radio,
        "Target",
        "sel_target",
        options=["predicted", "class", "rectangle"],
        format_func={"predicted": "predicted region", "class": "whole class", "rectangle": "rectangle"}.get,
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
        rules = rule_options(loaded)
        rule_name = bound(
            st.selectbox,
            "Call a pixel a nucleus when",
            "sel_rule",
            options=list(rules),
            help=f"Model default: {describe_rule(spec.decision_rule)}.",
        )
        eigen = bound(st.checkbox, "eigen_smooth", "sel_eigen_smooth", disabled=not info.eigen_smooth)
    return Choices(image, loaded, cls, layer, info, target, rules[rule_name], bool(eigen) and info.eigen_smooth)


# ---------------------------------------------------------------- computation (cached)


def _layers_to_capture(loaded: models.LoadedModel, image: ImageChoice, layer: str) -> list[str]:
    h, w = image.image.array.shape[:2]
    if h * w > ALL_LAYERS_MAX_PIXELS:
        return [layer]
    curated = layers.curated_layers(loaded)
    return curated if layer in curated else [*curated, layer]


def _pred_key(loaded, image, rule) -> tuple:
    return ("pred", loaded.name, image.sha, json.dumps(rule, sort_keys=True))


def prediction_if_cached(loaded: models.LoadedModel, image: ImageChoice) -> engine.Prediction | None:
    rule = rule_options(loaded).get(st.session_state.get("sel_rule"), loaded.spec.decision_rule)
    return capture_cache().get(_pred_key(loaded, image, rule))


def get_capture(ch: Choices, layers_needed: list[str] | None = None) -> engine.Capture:
    """The one-pass capture for (model, image, target, rule): computed once, then from the cache."""
    cache = capture_cache()
    wanted = layers_needed or _layers_to_capture(ch.loaded, ch.image, ch.layer)
    key = ("cap", ch.loaded.name, ch.image.sha, ch.target.key(), json.dumps(ch.rule, sort_keys=True))
    cap = cache.get(key)
    if cap is not None and all(name in cap.activations for name in wanted):
        return cap
    rule_key = json.dumps(ch.rule, sort_keys=True)
    base_key = ("base", ch.loaded.name, ch.image.sha, rule_key)
    base = cache.get(base_key)
    if base is not None and all(name in base.activations for name in wanted):
        # Same image, another class or region: one backward through the kept graph.
        with st.spinner("Computing gradients for the new target (one backward)…"):
            cap = engine.recapture(ch.loaded, base, ch.target, ch.image.image.array)
    else:
        h, w = ch.image.image.array.shape[:2]
        with st.spinner("Running the model (one forward + one backward)…"):
            cap = engine.capture(
                ch.loaded,
                ch.image.image.array,
                ch.target,
                wanted,
                rule=ch.rule,
                keep_graph=h * w <= ALL_LAYERS_MAX_PIXELS,
            )
    cache.put(key, cap)
    cache.put(base_key, cap)
    if ch.target.class_index is None:  # remember the automatic class under its resolved key too
        resolved = tg.TargetSpec(ch.target.kind, cap.target.class_index, ch.target.mask)
        cache.put(("cap", ch.loaded.name, ch.image.sha, resolved.key(), json.dumps(ch.rule, sort_keys=True)), cap)
    cache.put(_pred_key(ch.loaded, ch.image, ch.rule), cap.prediction)
    st.session_state["forward_s"] = cap.seconds["forward"]
    return cap


def slow_result_key(ch: Choices, info: methods.MethodInfo, layer: str, class_index: int) -> tuple:
    target = tg.TargetSpec(ch.target.kind, class_index, ch.target.mask)
    return (
        "slow",
        ch.loaded.name,
        ch.image.sha,
        target.key(),
        json.dumps(ch.rule, sort_keys=True),
        info.name,
        layer,
        ch.eigen_smooth,
    )


def run_slow(ch: Choices, info: methods.MethodInfo, layer: str, cap: engine.Capture) -> engine.CamResult | None:
    """Run a method through grad-cam with a progress bar; any click cancels it (Streamlit reruns)."""
    bar = st.progress(0.0, text=f"{info.name}: starting…")
    started = time.perf_counter()

    def progress(frac: float, msg: str) -> None:
        elapsed = time.perf_counter() - started
        eta = elapsed / frac - elapsed if frac > 0 else math.nan
        bar.progress(frac, text=f"{msg} · {elapsed:.0f} s elapsed, ~{eta:.0f} s left — click anywhere to cancel")

    target = tg.TargetSpec(ch.target.kind, cap.target.class_index, ch.target.mask)
    try:
        res = engine.run_method(
            ch.loaded,
            ch.image.image.array,
            target,
            info,
            layer,
            eigen_smooth=ch.eigen_smooth,
            progress=progress,
            prediction=cap.prediction,
        )
    except Cancelled:
        bar.empty()
        st.warning(f"{info.name} cancelled.")
        return None
    bar.empty()
    result_cache().put(slow_result_key(ch, info, layer, cap.target.class_index), res)
    return res


def cam_for(ch: Choices, info: methods.MethodInfo, layer: str, cap: engine.Capture) -> engine.CamResult | None:
    """A CAM from the capture (fast methods) or from the slow-result cache (None: not run yet)."""
    if info.from_cache:
        return engine.cam_from_capture(cap, info, layer, ch.eigen_smooth)
    return result_cache().get(slow_result_key(ch, info, layer, cap.target.class_index))


def show_error(exc: BaseException) -> None:
    """Known errors as they are; anything else logged with its stack and shown short."""
    if isinstance(exc, SegCamError):
        st.error(str(exc))
    else:
        log.exception("unexpected error")
        st.error(f"Something went wrong ({type(exc).__name__}: {exc}). The app is still running; try another setting.")


def provenance_line(res: engine.CamResult, seconds: float, image_name: str, classes: list[str]) -> str:
    """What produced the picture: method, layer, class and target, model, image, device, time."""
    cls = classes[res.class_index]
    target = tg.describe(res.target, cls)
    cost = f"{res.seconds * 1000:.0f} ms from the cached pass" if res.from_cache else f"{res.seconds:.1f} s"
    return (
        f"**{res.method}** on `{res.layer}` · class **{cls}** ({target}) · model `{res.model}` · "
        f"image `{image_name}` · {res.device} · pass {seconds:.2f} s, CAM {cost}"
    )


def is_large(image: ImageChoice) -> bool:
    h, w = image.image.array.shape[:2]
    return h * w > tiling.TILE_ABOVE_PIXELS


def tiled_result(ch: Choices) -> tuple[engine.Prediction, engine.CamResult]:
    """Large images: the chosen method and layer through overlapping tiles (cached)."""
    key = (
        "tiled",
        ch.loaded.name,
        ch.image.sha,
        ch.target.key(),
        json.dumps(ch.rule, sort_keys=True),
        ch.method.name,
        ch.layer,
    )
    hit = result_cache().get(key)
    if hit is not None:
        return hit
    bar = st.progress(0.0, text="Large image: tiled inference…")
    pred, (res,) = tiling.explain_tiled(
        ch.loaded,
        ch.image.image.array,
        ch.target,
        ch.layer,
        [ch.method],
        eigen_smooth=ch.eigen_smooth,
        progress=lambda f, m: bar.progress(f, text=f"Large image: {m}"),
    )
    bar.empty()
    result_cache().put(key, (pred, res))
    return pred, res


def zip_bundle(res: engine.CamResult, mask_png: bytes, extra: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in (("cam.npy", res.cam), ("cam_raw.npy", res.cam_raw)):
            b = io.BytesIO()
            np.save(b, arr.astype(np.float32))
            zf.writestr(name, b.getvalue())
        zf.writestr("mask.png", mask_png)
        zf.writestr("result.json", json.dumps({**res.provenance(), **extra}, indent=1))
    return buf.getvalue()
