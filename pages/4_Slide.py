"""Slide: open a whole-slide image, find the tissue, choose a region, explain it on Explore."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import streamlit as st

from cam_core import limits, settings
from cam_core.errors import SegCamError
from cam_core.model import models
from cam_core.output import render
from cam_core.wsi import slides
from cam_core.wsi.viewport import Viewport, region_at
from ui import compute, state
from ui.clickable import clickable_image
from ui.text import code, plain

REGION_SIDES = (256, 512, 1024, 2048)  # region side in pixels at the model's resolution
UPLOADS = Path(tempfile.gettempdir()) / "segcam_slides"


def slide_source() -> str | None:
    """A slide from the slides folder, or a small uploaded one (kept in this session's own folder)."""
    folder = slides.slides_dir()
    found = slides.list_slides(folder)
    names = [p.name for p in found]
    c1, c2 = st.columns([1, 1])
    with c1:
        if names:
            name = state.bound(st.selectbox, f"Slides in the slides folder ({len(names)})", "slide_name", options=names)
        else:
            st.info(
                f"No slides in the slides folder ({slides.SLIDES_DIR_ENV} or `slides/`; in Docker the `/slides` volume). "
                "Upload one, or make a demo slide: `python -m cam_core make-slide slides/demo.tif`."
            )
            name = None
    with c2:
        up = st.file_uploader("…or upload a small slide", key="slide_upload", help="SVS, NDPI, SCN, BIF, tiled TIFF")
    if up is not None:
        folder = st.session_state.get("slide_upload_dir")
        if folder is None or not Path(folder).is_dir():
            folder = str(slides.upload_folder(UPLOADS, limits.SLIDE_UPLOAD_MAX_AGE_S))
            st.session_state["slide_upload_dir"] = folder
        path = slides.store_upload(Path(folder), up.getvalue(), Path(up.name).suffix, up.name)
        slides.prune_uploads(Path(folder), keep=path)
        slides.prune_all_uploads(UPLOADS, keep=path)
        return str(path)
    return str(folder / name) if name else None


def _header(info, override) -> bool:
    """The slide's identity line and notes; its resolution asked for when the slide lacks it.
    False until the resolution is known."""
    w0, h0 = info.size_wh
    mpp = f"{info.mpp:g} µm/px" if info.mpp else "resolution unknown"
    power = f" · {info.objective_power:g}×" if info.objective_power else ""
    # the file's name and its properties are the slide's say, shown as text
    st.markdown(
        f"**{plain(info.name)}** · {w0}×{h0} px · {info.level_count} levels · {mpp}{power} · {plain(info.vendor)}"
    )
    for note in info.notes:
        st.warning(plain(note))
    if info.mpp is None or override:
        st.number_input(
            "Resolution of this slide (µm per pixel)",
            min_value=0.0,
            max_value=slides.MPP_RANGE[1],
            step=0.01,
            key="slide_mpp",
            help="Not in the slide's metadata: 0.25 for a 40× scan, 0.5 for 20×. Needed to read regions at the "
            "model's resolution.",
        )
        if info.mpp is None:
            return False
    return True


def _overview(info, picture, tissue, port, whole, region) -> None:
    """The overview with the tissue outlined, the batch heat map if there is one, and the region's
    box; a click centres the region there."""
    import cv2

    x, y, side0 = region
    w0, h0 = info.size_wh
    if whole:
        here = tissue
    else:  # the thumbnail's tissue mask over the view (smooth; not re-detected around every nucleus)
        crop = port.crop(tissue, (w0, h0)).astype(np.uint8)
        here = cv2.resize(crop, (picture.shape[1], picture.shape[0]), interpolation=cv2.INTER_NEAREST)
    picture = render.outline(picture, here.astype(bool), "#00A000")
    heat = _batch_heat(info.name)
    show_heat = heat is not None and st.toggle("Batch heat map over the overview", key="slide_heat")
    if show_heat and heat is not None:
        hm = cv2.resize(port.crop(heat, (w0, h0)), (picture.shape[1], picture.shape[0]), interpolation=cv2.INTER_LINEAR)
        picture = render.overlay(picture, np.clip(hm, 0, 1), 0.5)
    box = np.zeros(picture.shape[:2], bool)
    bx0, by0, bx1, by1 = port.to_picture(x, y, side0, side0)
    box[max(by0, 0) : max(by1, 0), max(bx0, 0) : max(bx1, 0)] = True
    picture = render.scale_bar(render.outline(picture, box, "#FF00FF"), info.mpp / port.k)
    click = clickable_image(
        picture,
        f"overview of {info.name}: tissue outlined in green, the region in magenta",
        key="slide_click",
        title="Click to centre the region here",
    )
    if click is not None:
        st.session_state["slide_center"] = port.to_level0(click[0], click[1])
        st.rerun()


def _batch_outputs(info) -> None:
    """The GeoJSON of a batch run over this slide (read only when downloaded), and how to make one."""
    geo = batch_dir() / Path(info.name).stem / f"{Path(info.name).stem}.geojson"
    if geo.is_file():
        st.download_button(  # read only when clicked: a slide's GeoJSON can be hundreds of MB
            f"{plain(geo.name)} (QuPath: File → Import objects)",
            geo.read_bytes,
            geo.name,
            "application/geo+json",
            on_click="ignore",
        )
    st.caption(
        "Whole slides and cohorts: `python -m cam_core batch SLIDE|DIR --out OUT` (Dask; see the README). "
        # the folder's name only: the server's file-system layout is not every visitor's business
        f"Its overview heat map and GeoJSON show here when OUT is the server's batch folder "
        f"({code(batch_dir().name)}, `${settings.env_name('batch_dir')}` or `batch_out/` beside the app)."
    )


def main() -> None:
    state.page_setup("Slide")
    st.title("Slide")
    st.caption(
        "A whole-slide image: its overview with the tissue outlined, a region chosen by a click or by "
        "coordinates, read at the model's resolution and explained on Explore with every control."
    )
    path = slide_source()
    if path is None:
        return
    try:
        loaded = compute.get_model(st.session_state.get("sel_model") or models.default_model_name())
    except SegCamError as exc:
        st.error(f"{exc} — choose another model in the sidebar of the Explore page.")
        return
    model_mpp = loaded.spec.mpp
    override = st.session_state.get("slide_mpp") or None
    try:
        info, thumb, tissue = compute.slide_overview(path, override)
    except SegCamError as exc:
        st.error(str(exc))
        return
    if not _header(info, override):
        return
    w0, h0 = info.size_wh
    if model_mpp is None:
        st.error(f"{loaded.name} does not declare microns_per_pixel in its segcam.json; add it to explain slides.")
        return
    side = state.bound(
        st.select_slider,
        "Region size (pixels at the model's resolution)",
        "slide_side",
        options=list(REGION_SIDES),
    )
    scale = model_mpp / info.mpp
    side0 = min(round(side * scale), w0, h0)  # level-0 pixels
    # The overview: the tissue's neighbourhood read at ~1024 px (the whole slide is mostly glass).
    whole = state.bound(st.toggle, "Whole slide in the overview", "slide_whole")
    view = (0, 0, w0, h0) if whole else slides.tissue_box(tissue, w0 / thumb.shape[1], (w0, h0))
    try:
        picture = thumb if whole else compute.slide_view(path, override, view)
    except SegCamError as exc:
        st.error(str(exc))
        return
    port = Viewport(view, picture.shape[1])
    center = st.session_state.get("slide_center") or _tissue_centre(tissue, thumb.shape[1] / w0)
    x, y = region_at(center, side0, (w0, h0))
    st.session_state["w_slide_x"], st.session_state["w_slide_y"] = x, y

    def typed() -> None:
        st.session_state["slide_center"] = (
            int(st.session_state["w_slide_x"]) + side0 // 2,
            int(st.session_state["w_slide_y"]) + side0 // 2,
        )

    col_pic, col_ctl = st.columns([3, 1])
    with col_pic:
        _overview(info, picture, tissue, port, whole, (x, y, side0))
    with col_ctl:
        st.number_input("x (level-0 px)", 0, max(w0 - side0, 0), key="w_slide_x", on_change=typed)
        st.number_input("y (level-0 px)", 0, max(h0 - side0, 0), key="w_slide_y", on_change=typed)
        st.caption(
            f"{side0}×{side0} level-0 px = {side0 * info.mpp:.0f} µm square, read at {model_mpp:g} µm/px "
            f"({side}×{side} px for the model)."
        )
        if st.button("Explain this region", type="primary", key="slide_explain"):
            try:
                choice = compute.slide_region_choice(path, override, (x, y, side0, side0), model_mpp)
            except SegCamError as exc:
                st.error(str(exc))
                return
            st.session_state["slide_region"] = choice
            st.session_state["sel_source"] = "Slide region"
            st.switch_page("app.py")
    _batch_outputs(info)


def batch_dir() -> Path:
    return settings.current().batch_dir


def _batch_heat(slide_name: str) -> np.ndarray | None:
    """The stitched low-resolution CAM of a batch run over this slide, if there is one; a damaged
    file (an interrupted run before outputs were written atomically) is a one-line note."""
    path = batch_dir() / Path(slide_name).stem / "cam_lowres.npy"
    if not path.is_file():
        return None
    try:
        heat = np.load(path, allow_pickle=False)
        if heat.ndim != 2:
            raise ValueError(f"{heat.ndim} dimensions")
        return heat
    except (OSError, ValueError, EOFError):
        st.caption(
            f"The batch output for {plain(slide_name)} is damaged (cam_lowres.npy cannot be read); "
            "run `batch` again into the same folder to repair it."
        )
        return None


def _tissue_centre(tissue: np.ndarray, k: float) -> tuple[int, int]:
    ys, xs = np.nonzero(tissue)
    if not len(xs):
        return int(tissue.shape[1] / 2 / k), int(tissue.shape[0] / 2 / k)
    i = len(xs) // 2
    return int(xs[i] / k), int(ys[i] / k)


main()
