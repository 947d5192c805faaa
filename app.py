"""Explore: predicted mask | CAM heatmap | overlay for one tile, with opacity and threshold.

Start with ``scripts/run_app.sh`` (or ``streamlit run app.py``). On first open a sample tile is
already explained with the default model, class, layer and method.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import streamlit as st

from cam_core import render
from cam_core.errors import EmptyTargetError
from ui import compute, sidebar, state


def display_controls(cam: np.ndarray) -> tuple[float, float | None, str, str]:
    """Opacity, threshold, colormap: pure rendering, never a model pass."""
    c1, c2, c3, c4 = st.columns([1.2, 1.6, 1, 1])
    with c1:
        opacity = state.bound(st.slider, "Heatmap opacity", "opacity", min_value=0.0, max_value=1.0, step=0.05)
    with c2:
        mode = state.bound(
            st.radio,
            "Threshold",
            "thr_mode",
            options=list(render.THRESHOLD_MODES),
            horizontal=True,
            help="absolute: CAM ≥ value; percentile: keep the top of the CAM; otsu: automatic split",
        )
        if mode == "absolute":
            value = state.bound(st.slider, "CAM level", "thr_abs", min_value=0.0, max_value=1.0, step=0.01)
        elif mode == "percentile":
            value = state.bound(st.slider, "Percentile", "thr_pct", min_value=0.0, max_value=99.9, step=0.5)
        else:
            value = 0.5
    with c3:
        cmap = state.bound(
            st.selectbox,
            "Colormap",
            "cmap",
            options=list(render.COLORMAPS),
            help="viridis and cividis are colour-blind safe",
        )
    with c4:
        show = state.bound(
            st.selectbox,
            "Threshold shows",
            "show",
            options=["mask+contour", "mask", "contour"],
            disabled=mode == "none",
        )
    level = render.threshold_level(cam, mode, value)
    return opacity, level, cmap, show


def show_mask_only(prediction, ch) -> None:
    """The mask (and legend) when there is nothing to explain: the user still sees what the model did."""
    classes, colors = ch.loaded.spec.classes, ch.loaded.spec.colors
    area = prediction.area_percent()
    col1, _ = st.columns([1, 2])
    with col1:
        st.markdown("**Predicted mask**")
        st.image(render.colorize_mask(prediction.mask, colors), width="stretch", alt="predicted mask")
        st.image(render.legend(classes, colors, [f"{c}: {a:.1f} %" for c, a in zip(classes, area)]), alt="legend")


def main() -> None:
    state.page_setup("Explore")
    st.title("SegCAM Explorer")
    st.caption(
        "Why did the model paint this region? Predicted mask, Class Activation Map and overlay, side by side. "
        "For exploring model behaviour — not for diagnosis."
    )
    status = st.empty()
    status.info("Loading the model and explaining the tile… (the first open after a start takes a few seconds)")
    ch = sidebar.sidebar()
    if ch is None:
        status.info("Pick a sample tile or upload an image in the sidebar.")
        return
    for note in ch.image.image.notes:
        st.info(f"Image converted: {note}")
    classes, colors = ch.loaded.spec.classes, ch.loaded.spec.colors
    res = cap = None
    bar = st.empty()
    try:
        if ch.image.large:
            h, w = ch.image.image.array.shape[:2]
            st.info(
                f"{w}×{h} is a large image: it is explained in overlapping tiles stitched into one map, "
                "normalised once over the whole image."
            )
        cap = compute.get_capture(ch, spinner=lambda f, m: bar.progress(f, text=f"Large image: {m}"))
        st.session_state["forward_s"] = cap.seconds["forward"] / cap.tiles
        res = compute.cam_for(ch, ch.method, ch.layer, cap)
        if res is None:
            est = compute.estimate_seconds(ch, ch.method, ch.layer, st.session_state["forward_s"])
            st.warning(f"{ch.method.name} runs the model many times (about {max(est, 1):.0f} s here).")
            if st.button(f"Run {ch.method.name}", type="primary"):
                res = compute.run_slow(
                    ch, ch.method, ch.layer, cap, lambda f, t: bar.progress(f, text=t), estimate_s=est
                )
                if res is None:
                    st.warning(f"{ch.method.name} cancelled.")
    except EmptyTargetError as exc:
        status.info(str(exc))
        if exc.prediction is not None:
            show_mask_only(exc.prediction, ch)
        return
    except Exception as exc:  # known errors as they are; others logged — the app keeps serving
        status.error(compute.describe_error(exc))
        return
    finally:
        bar.empty()
    status.empty()
    if res is None or cap is None:
        return
    prediction = cap.prediction
    st.markdown(compute.provenance_line(res, cap.seconds["total"], ch.image.name, classes))
    for note in res.notes:
        if not note.startswith("cam_raw equals"):
            st.info(note)

    image = ch.image.image.array
    opacity, level, cmap, show = display_controls(res.cam)
    mask_rgb = render.colorize_mask(prediction.mask, colors)
    heat = render.heatmap(res.cam, cmap)
    over = render.overlay(image, res.cam, opacity, cmap, level, show)
    area = prediction.area_percent()
    col1, col2, col3 = st.columns(3)
    with col1:
        st.markdown("**Predicted mask**")
        st.image(mask_rgb, width="stretch", alt="predicted mask")
        st.image(render.legend(classes, colors, [f"{c}: {a:.1f} %" for c, a in zip(classes, area)]), alt="legend")
    with col2:
        st.markdown(f"**CAM heatmap** — {classes[res.class_index]}")
        st.image(heat, width="stretch", alt="cam heatmap")
        st.image(render.colorbar(cmap), alt="colour bar")
        st.caption("CAM, 0 (low) to 1 (high), min-max normalised as grad-cam returns it")
    with col3:
        thr = "" if level is None else f", threshold {level:.2f}"
        st.markdown(f"**Overlay** — opacity {opacity:.2f}{thr}")
        st.image(over, width="stretch", alt="overlay")
        if level is not None:
            st.caption(f"{(res.cam >= level).mean() * 100:.1f} % of the tile is at or above the threshold")
    st.session_state["last_render"] = {"opacity": opacity, "level": level, "cmap": cmap, "overlay_sum": int(over.sum())}

    st.subheader("Downloads")
    mask_png = render.to_png(mask_rgb)
    d = st.columns(4)
    d[0].download_button("mask.png", mask_png, "mask.png", "image/png")
    d[1].download_button("heatmap.png", render.to_png(heat), "heatmap.png", "image/png")
    d[2].download_button("overlay.png", render.to_png(over), "overlay.png", "image/png")
    record = compute.record_for(ch, res, cap, {"mode": st.session_state.get("thr_mode", "none"), "level": level})
    st.session_state["last_record"] = record
    d[3].download_button(
        "results.zip", compute.zip_bundle(res, mask_png, record), "segcam_result.zip", "application/zip"
    )


main()
