"""Session state shared by every page: defaults, widgets bound to state, page setup.

Shared choices are kept in non-widget ``session_state`` keys (``sel_*``) and copied into each
page's widgets, because Streamlit forgets a widget's value when the user switches page.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from cam_core.methods import DEFAULT_METHOD
from cam_core.render import DEFAULT_COLORMAP, VALUE_VIEWS

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "images"
# Tiles with a planted artefact for the teaching model, listed after the real samples, with a note.
TEACHING_SAMPLES = REPO / "samples" / "teaching" / "images"
TEACHING_NOTES: dict[str, str] = {
    "ink_dot_test_13_014": (
        "Teaching sample: a spindle/inflammatory tile with a green ink dot planted on it. Pick the model "
        "consep-unet-marker-teaching to see a model that calls every nucleus epithelial because of the dot "
        "(the built-in model ignores it); then try the encoder layers (stem, s1, s2), where the CAM finds the dot."
    ),
}
FAVICON = REPO / "assets" / "favicon.png"
DEFAULT_SAMPLE = "test_12_002"

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
}

PAGES = [
    ("app.py", "Explore", ":material/biotech:"),
    ("pages/1_Compare.py", "Compare", ":material/grid_view:"),
    ("pages/2_Model.py", "Model", ":material/model_training:"),
    ("pages/3_About.py", "About CAMs", ":material/menu_book:"),
]


def sample_names() -> list[str]:
    """The real sample tiles, then the teaching samples."""
    return sorted(p.stem for p in SAMPLES.glob("*.png")) + sorted(p.stem for p in TEACHING_SAMPLES.glob("*.png"))


def sample_file(name: str) -> Path:
    """Where a sample tile's PNG is (a real sample or a teaching sample)."""
    path = SAMPLES / f"{name}.png"
    return path if path.is_file() else TEACHING_SAMPLES / f"{name}.png"


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


def _sync(key: str, wkey: str) -> None:
    st.session_state[key] = st.session_state[wkey]


def bound(widget: Callable[..., Any], label: str, key: str, wkey: str | None = None, **kwargs: Any) -> Any:
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
