"""Session state shared by every page: defaults, widgets bound to state, page setup.

Shared choices are kept in non-widget ``session_state`` keys (``sel_*``) and copied into each
page's widgets, because Streamlit forgets a widget's value when the user switches page.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import streamlit as st

from cam_core.data import samples
from cam_core.engine import targets as tg
from cam_core.engine.methods import DEFAULT_METHOD, LOCAL_METHOD, METHODS
from cam_core.output.figure import AB_KINDS, MASK_STYLES, VIEWS
from cam_core.output.render import (
    BLENDS,
    COLORMAPS,
    DEFAULT_BLEND,
    DEFAULT_COLORMAP,
    SHOW_MODES,
    THRESHOLD_MODES,
    VALUE_VIEWS,
)
from cam_core.paths import REPO_ROOT, SAMPLES_DIR, TEACHING_SAMPLES_DIR
from cam_core.trust.audit import AUDIT_MARKERS

REPO = REPO_ROOT
SAMPLES = SAMPLES_DIR
TEACHING_SAMPLES = TEACHING_SAMPLES_DIR  # listed after the real samples, with a note
TEACHING_NOTES: dict[str, str] = {
    "ink_dot_test_13_014": (
        "Teaching sample: a spindle/inflammatory tile with a green ink dot planted on it. **Show the shortcut** "
        "(below) opens the model consep-unet-marker-teaching, which calls every nucleus epithelial because of the "
        "dot, at the layer and method that find the dot, beside the same tissue without it (the built-in model "
        "ignores the dot)."
    ),
}
FAVICON = REPO / "assets" / "favicon.png"
DEFAULT_SAMPLE = "test_12_002"

# The app's target choices: the core's kinds, with a rectangle standing for a user mask. The
# truth kinds are offered only when the image has a ground truth.
TARGET_CHOICES: dict[str, str] = {
    "predicted": tg.TARGET_KINDS["predicted"],
    "class": tg.TARGET_KINDS["class"],
    "rectangle": "rectangle",
    "point": tg.TARGET_KINDS["point"],
    **{k: tg.TARGET_KINDS[k] for k in tg.TRUTH_KINDS},
}
FULL_VIEW = (0.0, 0.0, 1.0, 1.0)  # zoom box as fractions x0, y0, x1, y1: the whole tile
DEFAULTS: dict[str, Any] = {
    "sel_source": "Sample",
    "sel_sample": DEFAULT_SAMPLE,
    "sel_model": None,
    "sel_class": "auto",  # the most predicted nucleus class
    "sel_layer": None,  # None: the model's default layer
    "sel_layer_model": None,  # the model sel_layer was chosen for
    "sel_method": DEFAULT_METHOD,
    "sel_target": "predicted",
    "sel_rect": (0.25, 0.25, 0.75, 0.75),  # fractions of width/height
    "sel_point": None,  # (x, y) in image pixels: the clicked object
    "sel_rule": "model default",
    "sel_eigen_smooth": False,
    "opacity": 0.5,
    "thr_mode": "none",
    "thr_abs": 0.5,
    "thr_pct": 80.0,
    "cmap": DEFAULT_COLORMAP,
    "show": "mask+contour",
    "values": next(iter(VALUE_VIEWS)),
    "cmp_order": False,
    "present": False,
    "present_view": next(iter(VIEWS)),
    "mask_style": next(iter(MASK_STYLES)),
    "blend": DEFAULT_BLEND,
    "list_objects": False,  # the objects table of a large image, on request
    "ab_what": "none",  # an A/B view: what B changes (cam_core.output.figure.AB_KINDS)
    "ab_method": LOCAL_METHOD,  # B's default method: the local one, beside a whole-image Grad-CAM
    "ab_layer": None,
    "ab_model": None,
    "ab_mark": next(iter(AUDIT_MARKERS)),  # the mark B plants (the shortcut audit's)
    "zoom": FULL_VIEW,
    "slide_side": 512,
    "slide_whole": False,  # the Slide page's overview: the tissue's neighbourhood, not the whole slide  # region side on the Slide page, in pixels at the model's resolution
    "upload_mpp": 0.0,  # µm/px the user gives an upload without metadata (0: unknown)
}

# Navigation: plain names (an icon's ligature would be read out as a word by screen readers).
PAGES = [
    ("app.py", "Explore"),
    ("pages/1_Compare.py", "Compare"),
    ("pages/2_Model.py", "Model"),
    ("pages/3_About.py", "About CAMs"),
    ("pages/4_Slide.py", "Slide"),
]


def page_setup(title: str) -> None:
    """Page config, default state and the navigation (Streamlit's own list is hidden in config.toml)."""
    presenting = st.session_state.get("present") or st.query_params.get("present") == "1"
    st.set_page_config(
        page_title=f"{title} · SegCAM Explorer",
        page_icon=str(FAVICON) if FAVICON.is_file() else ":material/biotech:",
        layout="wide",
        initial_sidebar_state="collapsed" if presenting else "auto",
    )
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    if not st.session_state.get("_query_applied"):  # a shared link: read once per session
        st.session_state["_query_applied"] = True
        apply_link(dict(st.query_params))
    st.sidebar.markdown("### SegCAM Explorer")
    for path, label in PAGES:
        st.sidebar.page_link(path, label=label)


# ---------------------------------------------------------------- links that reproduce a view
#
# Every choice that changes the picture lives in the URL (written by the Explore page as the user
# works). Reading a link validates what it can here; model, layer and class are checked by the
# sidebar against the loaded model (``requested``/``note_fallback``). Nothing unknown is switched
# silently: each becomes a note on the page.


def _floats(text: str, n: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in text.split(","))
    if len(values) != n:
        raise ValueError(text)
    return values


def _fraction(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise ValueError(text)
    return v


def _percentile(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):  # nan and inf pass min/max clamps and failed later, outside any handler
        raise ValueError(text)
    return min(max(v, 0.0), 99.9)


def _choice(options: Any) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in list(options):
            raise ValueError(text)
        return text

    return parse


def _rect(text: str) -> tuple[float, ...]:
    r = _floats(text, 4)
    if not all(0.0 <= v <= 1.0 for v in r):
        raise ValueError(text)
    return r


def _point(text: str) -> tuple[int, int]:
    x, y = (int(v) for v in text.split(","))
    if x < 0 or y < 0:
        raise ValueError(text)
    return x, y


def _box(text: str) -> tuple[int, ...]:
    box = tuple(int(v) for v in text.split(","))
    if len(box) != 4 or min(box) < 0 or box[2] == 0 or box[3] == 0:
        raise ValueError(text)
    return box


def _method(text: str) -> str:
    if text.lower() not in METHODS:
        raise ValueError(text)
    return METHODS[text.lower()].name


def _methods(text: str) -> list[str]:
    return [_method(v) for v in text.split(",") if v]


# URL parameter → (session-state key, parser, what would work). Model, layer and class are
# resolved against the model by the sidebar.
LINK_PARAMS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "sample": ("sel_sample", _choice(samples.names()), "a sample tile name"),
    "model": ("sel_model", str, "a model name"),
    "class": ("sel_class", str, "a class name or auto"),
    "layer": ("sel_layer", str, "a layer name"),
    "method": ("sel_method", _method, "a method name"),
    "target": ("sel_target", _choice(TARGET_CHOICES), ", ".join(TARGET_CHOICES)),
    "rect": ("sel_rect", _rect, "x0,y0,x1,y1 as fractions"),
    "point": ("sel_point", _point, "x,y in pixels"),
    "rule": ("sel_rule", str, "a decision rule name"),
    "eigen": ("sel_eigen_smooth", lambda t: {"1": True, "0": False}[t], "0 or 1"),
    "opacity": ("opacity", _fraction, "a number in 0–1"),
    "thr": ("thr_mode", _choice(THRESHOLD_MODES), ", ".join(THRESHOLD_MODES)),
    "thr_abs": ("thr_abs", _fraction, "a number in 0–1"),
    "thr_pct": ("thr_pct", _percentile, "a percentile in 0–99.9"),
    "cmap": ("cmap", _choice(COLORMAPS), ", ".join(COLORMAPS)),
    "show": ("show", _choice(SHOW_MODES), ", ".join(SHOW_MODES)),
    "values": ("values", _choice(VALUE_VIEWS), ", ".join(VALUE_VIEWS)),
    "present": ("present", lambda t: {"1": True, "0": False}[t], "0 or 1"),
    "view": ("present_view", _choice(VIEWS), ", ".join(VIEWS)),
    "mask": ("mask_style", _choice(MASK_STYLES), ", ".join(MASK_STYLES)),
    "blend": ("blend", _choice(BLENDS), ", ".join(BLENDS)),
    "ab": ("ab_what", _choice(["none", *AB_KINDS]), ", ".join(AB_KINDS)),
    "b_method": ("ab_method", _method, "a method name"),
    "b_layer": ("ab_layer", str, "a layer name"),
    "b_model": ("ab_model", str, "a model name"),
    "b_mark": ("ab_mark", _choice(AUDIT_MARKERS), ", ".join(AUDIT_MARKERS)),
    "zoom": ("zoom", _rect, "x0,y0,x1,y1 as fractions"),
    "slide": ("link_slide", str, "a slide in the slides folder"),
    "methods": ("cmp_methods", _methods, "method names, comma-separated"),
    "layers": ("cmp_layers", lambda t: [v for v in t.split(",") if v], "layer names, comma-separated"),
    "order": ("cmp_order", lambda t: {"1": True, "0": False}[t], "0 or 1"),
    "region": ("link_region", _box, "x,y,w,h in level-0 pixels"),
}
# Resolved by the sidebar against the model: what the link asked for, to report a fallback.
CHECKED_LATER = ("sel_model", "sel_layer", "sel_class", "sel_rule")


def apply_link(params: dict[str, str]) -> None:
    """Put a link's choices into session state; each value that cannot be used becomes a note."""
    requested: dict[str, Any] = st.session_state.setdefault("link_requested", {})
    if "slide" in params and "region" in params:
        requested["slide_region"] = True  # the sidebar reads the region once the model is known
    if params.get("image") == "upload":
        link_note(
            "This link was made on an uploaded image, which cannot travel in a link: the sample tile is shown. "
            "Ask for the results ZIP (Downloads), or upload the same image."
        )
    for name, text in params.items():
        if name not in LINK_PARAMS:
            if name != "image":
                link_note(f"The link's '{name}' is not a setting of this app; it was ignored.")
            continue
        key, parse, valid = LINK_PARAMS[name]
        try:
            value = parse(text)
        except (ValueError, KeyError):
            link_note(f"The link asks for {name}={text!r}, which is not valid ({valid}); the default is used.")
            continue
        st.session_state[key] = value
        if key in CHECKED_LATER:
            requested[key] = value
    if "sample" in params and params.get("image") != "upload":
        st.session_state["sel_source"] = "Sample"
    if "layer" in params:  # the layer was chosen for the link's model (the default one when it names none)
        from cam_core.model.models import default_model_name

        st.session_state["sel_layer_model"] = st.session_state.get("sel_model") or default_model_name()
    s = st.session_state
    automatic = LOCAL_METHOD if _core_kind(s.get("sel_target")) in tg.LOCAL_KINDS else DEFAULT_METHOD
    if "method" in params and s.get("sel_method") != automatic:  # the link's author picked it
        method_chosen()


def apply_preset(model: str, preset: dict[str, Any]) -> None:
    """A model's preset view (models/registry.json ``preset``): its sample, layer and method, and
    the A/B view it names, in one click."""
    s = st.session_state
    s.update(
        sel_source="Sample",
        sel_sample=preset["sample"],
        sel_model=model,
        sel_layer=preset["layer"],
        sel_layer_model=model,
        sel_method=preset["method"],
        sel_target="predicted",
        ab_what=preset.get("compare", "none"),
    )
    method_chosen()


def method_chosen() -> None:
    """The user (or a link) picked the method: a local target no longer switches it."""
    st.session_state["sel_method_user"] = True


def target_changed() -> None:
    """A local question (a click, an object, a rectangle, missed pixels) gets a method whose map
    depends on the region (``LOCAL_METHOD``) unless the user picked the method; back on a whole-
    class question, the switch is undone. The sidebar, the page and the link show the method used."""
    s = st.session_state
    local = _core_kind(s.get("sel_target")) in tg.LOCAL_KINDS
    current = METHODS[str(s.get("sel_method", DEFAULT_METHOD)).lower()]
    if s.get("sel_method_user"):
        return
    if local and not current.local:
        s["sel_method"] = LOCAL_METHOD
        s["sel_method_switched"] = current.name
        s.setdefault("view_notes", []).append(
            f"Explained with {LOCAL_METHOD} because the question is local (one object or region). {current.name} weights its channels by gradients "
            f"averaged over the whole image, so its map of one nucleus is nearly the whole class's map; "
            f"{LOCAL_METHOD} multiplies gradient and activation at each pixel. Pick a method in the sidebar to keep it."
        )
    elif not local and s.get("sel_method_switched"):
        s["sel_method"] = s.pop("sel_method_switched")


def _core_kind(app_kind: Any) -> str:
    """The app's target choice as the core's kind (the app's rectangle is a core mask)."""
    return "mask" if app_kind == "rectangle" else str(app_kind)


def link_note(text: str) -> None:
    """A visible note about a setting that could not be used as asked (shown once on the page)."""
    notes = st.session_state.setdefault("link_notes", [])
    if text not in notes:
        notes.append(text)


def note_fallback(key: str, shown: Any, label: str) -> None:
    """The sidebar could not use what a link asked for (another model, layer or class): say so once."""
    requested = st.session_state.get("link_requested", {})
    if key in requested and requested.pop(key) != shown:
        link_note(f"The link asks for {label}, which is not available here; showing {shown!r} instead.")


def link_params(view: dict[str, Any]) -> dict[str, str]:
    """The URL parameters of the current view (the inverse of ``apply_link``)."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "1" if v else "0"
        if isinstance(v, (tuple, list)):
            return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    return {k: fmt(v) for k, v in view.items() if v is not None}


def _sync(key: str, wkey: str, then: Callable[[], None] | None = None) -> None:
    st.session_state[key] = st.session_state[wkey]
    if then is not None:
        then()


def bound(
    widget: Callable[..., Any],
    label: str,
    key: str,
    wkey: str | None = None,
    then: Callable[[], None] | None = None,
    **kwargs: Any,
) -> Any:
    """A widget whose value lives in the non-widget key ``key`` and survives page switches;
    ``then`` runs after the user changes it."""
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
    return widget(label, key=wkey, on_change=_sync, args=(key, wkey, then), **kwargs)
