"""Explore: predicted mask | CAM heatmap | overlay for one tile, with opacity and threshold.

Start with ``scripts/run_app.sh`` (or ``streamlit run app.py``). On first open a sample tile is
already explained with the default model, class, layer and method.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import streamlit as st

from cam_core import limits
from cam_core.engine import targets as tg
from cam_core.errors import EmptyTargetError
from cam_core.output import figure as fig
from cam_core.output import render
from ui import compute, sidebar, state, views
from ui.clickable import MAX_SENT_SIDE, sources
from ui.text import code, plain


def display_controls() -> fig.Display:
    """Opacity, threshold, colormap, values, mask style: pure rendering (the signed view's shared
    scale may cost a backward per other class, once)."""
    c1, c2, c3, c4, c5 = st.columns([1.2, 1.6, 1, 1, 1.1])
    with c1:
        opacity = state.bound(st.slider, "Heatmap opacity", "opacity", min_value=0.0, max_value=1.0, step=0.05)
        blend = state.bound(
            st.radio,
            "Heatmap weight",
            "blend",
            options=list(render.BLENDS),
            horizontal=True,
            help=" · ".join(f"{k}: {v}" for k, v in render.BLENDS.items()),
        )
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
            options=list(render.SHOW_MODES),
            disabled=mode == "none",
        )
        style = state.bound(
            st.selectbox, "Mask", "mask_style", options=list(fig.MASK_STYLES), format_func=fig.MASK_STYLES.get
        )
    with c5:
        values = state.bound(
            st.radio,
            "Values",
            "values",
            options=list(render.VALUE_VIEWS),
            help=" · ".join(f"{k}: {v}" for k, v in render.VALUE_VIEWS.items()),
        )
    return fig.Display(
        opacity=opacity,
        colormap=cmap,
        threshold_mode=mode,
        threshold_value=value,
        show=show,
        values=values,
        mask_style=style,
        blend=blend,
    )


def show_mask_only(prediction, ch) -> None:
    """The mask (and legend) when there is nothing to explain: the user still sees what the model did."""
    classes, colors = ch.loaded.spec.classes, ch.loaded.spec.colors
    area = prediction.area_percent()
    col1, _ = st.columns([1, 2])
    with col1:
        st.markdown("**Predicted mask**")
        st.image(render.colorize_mask(prediction.mask, colors), width="stretch", alt=views.mask_alt(ch, prediction))
        views.legend(classes, colors, area)


def trust_section(ch, res, cap) -> None:
    """Can I believe this map? Faithfulness against random and the sanity check, on demand."""
    from cam_core import trust

    st.subheader("Can I believe this map?")
    report = compute.trust_if_cached(ch, ch.method, ch.layer, cap)
    if report is None:
        if cap.tiles > 1:
            st.caption(
                "The trust checks run the model dozens of times on the whole image: use a crop of at most "
                f"{limits.LARGE_SIDE}×{limits.LARGE_SIDE}."
            )
            return
        est = compute.trust_estimate(ch, [(ch.method, ch.layer)], cap)
        st.caption(
            "Two checks, explained on *About CAMs*: does the target's score fall when what the map calls important is "
            f"removed (against {trust.RANDOM_SEEDS} random maps and the target mask itself), and does the map change when "
            "the model's weights are randomised?"
        )
        slot = st.empty()
        if not slot.button(f"Check this map (about {max(est, 1):.0f} s)", key="trust_run"):
            return
        slot.empty()
        bar = st.empty()
        try:
            report = compute.run_trust(
                ch,
                [(ch.method, ch.layer)],
                cap,
                {(ch.method.name, ch.layer): res.cam},
                lambda f, t: bar.progress(f, text=t),
            )[0]
            bar.progress(1.0, text="stain evidence: haematoxylin vs eosin")
            compute.stain_evidence(ch, cap, run=True)
            compute.restain_rows(ch, cap, res.cam, run=True)
        except Exception as exc:  # known errors as they are; others logged — the app keeps serving
            st.error(compute.describe_error(exc))
            return
        finally:
            bar.empty()
    _trust_lines(ch, report, cap, res)


def _trust_lines(ch, report, cap, res) -> None:
    """A checked map: the verdict with its reason, both checks, the truth and stain lines, the
    curves and the cascade."""
    from cam_core import trust

    f, s, verdict = report.faithfulness, report.sanity, report.verdict()
    # A failed check is a finding about the map, not an error of the app: warnings, never st.error.
    show = {"believe": st.success, "caution": st.warning, "dont": st.warning}[verdict.level]
    show(
        f"**{verdict.sentence()}**",
        icon={"believe": ":material/verified:", "caution": ":material/warning:", "dont": ":material/block:"}[
            verdict.level
        ],
    )
    st.markdown(f"{f.describe()}  \n{s.describe()}")
    if report.localisation is not None:
        st.markdown(report.localisation.describe())
    stain = compute.stain_evidence(ch, cap, run=False)
    if stain is not None:
        st.markdown(stain.describe())
    restained = compute.restain_rows(ch, cap, res.cam, run=False)
    if restained is not None:
        from cam_core.trust.stain_evidence import describe_restained

        st.markdown(describe_restained(restained))
    st.caption(f"The sanity rule: {trust.SANITY_RULE}")
    with st.expander("Curves and cascade"):
        import pandas as pd

        curves = f.curves
        if curves is not None:
            st.line_chart(
                pd.DataFrame(
                    {"deletion": curves.deletion, "insertion": curves.insertion},
                    index=pd.Index([round(x * 100) for x in curves.fractions], name="% of pixels removed / revealed"),
                ),
                height=220,
            )
        st.dataframe(
            pd.DataFrame(
                {"randomised down to": s.steps}
                | {f"ρ {view}": c.rho for view, c in s.views.items()}
                | {f"SSIM {view}": c.ssim for view, c in s.views.items()}
            ),
            hide_index=True,
        )
        st.caption(
            "Empty ρ: the randomised model's map is constant at that step (it ranks no pixel above another). "
            + " · ".join(f"{view}: {words}" for view, words in trust.SANITY_VIEWS.items())
        )
        st.caption(f"{report.seconds:.1f} s · model {code(ch.loaded.name)} · {cap.device}")
    st.session_state["last_trust"] = report.record()
    st.session_state["last_stain"] = None if stain is None else stain.record()


def main() -> None:
    clock = compute.RunClock()  # the whole run, sidebar included: what the server spends on it
    state.page_setup("Explore")
    row = None
    if st.session_state.get("present", False):
        views.presenter_css()
        row = st.columns([1.5, 2.2, 1, 1, 1.2], vertical_alignment="center")
        with row[0]:
            views.presenter_toggle()
    else:
        st.title("SegCAM Explorer")
        st.caption(
            "Why did the model paint this region? Predicted mask, Class Activation Map and overlay, side by side. "
            "For exploring model behaviour — not for diagnosis."
        )
        views.presenter_toggle()
    status = st.empty()
    status.info("Loading the model and explaining the tile… (the first open after a start takes a few seconds)")
    ch = sidebar.sidebar()
    views.link_notes()
    clock.mark("sidebar")
    if ch is None:
        status.info("Pick a sample tile or upload an image in the sidebar.")
        return
    try:
        explore(ch, status, row, clock)
    finally:
        views.write_link(ch)
        compute.log.info("page run: Explore %s, target %s: %s", ch.image.name, ch.target.kind, clock.line())


def explore(ch, status, row, clock: compute.RunClock) -> None:
    """The page for one choice; ``row`` is the presenter's top row (None when not presenting)."""
    for note in ch.image.image.notes:
        st.info(f"{'Slide region' if ch.image.slide else 'Image converted'}: {plain(note)}")  # names a file
    computed = _compute(ch, status, clock)
    if computed is None:
        return
    res, cap = computed
    classes = ch.loaded.spec.classes
    prediction = cap.prediction
    target = ch.target.with_class(res.class_index)
    region = tg.region(target, prediction.mask, classes) > 0
    if row is None:
        st.markdown(compute.provenance_line(res, cap.seconds["total"], ch.image.name, classes))
        st.markdown(views.target_line(ch, target, region))
        for note in res.notes:
            if not note.startswith("cam_raw equals"):
                st.info(note)
        for note in compute.quality_notes(ch):
            st.warning(f"Input quality: {note}")
        display = display_controls()
    else:
        views.present_view(row[1])
        with row[2].popover("Display"):
            display = display_controls()
    clock.mark("notes")
    v = _view(ch, res, cap, region, display, row)
    clock.mark("drawn")
    display, arrays, drawn, record, arrays_b = v.display, v.arrays, v.drawn, v.record, v.arrays_b
    scale, covered = display.signed_scale, v.covered
    if row is not None:
        views.presenter(record, arrays, ch, res, row, arrays_b)
        return
    st.session_state["last_picture"] = (f"{res.method} @ {res.layer}", drawn.over)
    views.zoom_note(drawn, prediction.mask.shape)
    if arrays_b is not None:
        views.ab_panels(record, arrays, arrays_b)
    else:
        views.remember_panels(drawn, prediction)
        views.show_toast()
        _panels(ch, res, prediction, target, drawn, (scale, covered), display)  # clicks: views.clicked
    clock.mark("sent")
    views.zoom_controls(ch)
    if target.kind in tg.TRUTH_KINDS:
        views.truth_target_view(ch, res, target, region, signed=scale is not None)
    views.truth_section(ch, prediction, res.class_index)
    views.objects_section(ch, prediction, res)
    trust_section(ch, res, cap)

    st.subheader("Downloads")
    views.downloads(ch, res, prediction, arrays, record, arrays_b)


@dataclasses.dataclass
class _View:
    """What one run draws: the settings, the arrays, the panels, the record, and B's arrays."""

    display: fig.Display
    arrays: fig.Arrays
    drawn: fig.Panels
    record: dict
    arrays_b: fig.Arrays | None
    covered: list


def _view(ch, res, cap, region, display: fig.Display, row) -> _View:
    """The picture's settings completed (signed scale, zoom, outline, view), its panels and its
    record (with B's for an A/B view); what the page then shows is the caller's."""
    display, arrays, record, covered = _side(
        ch,
        res,
        cap,
        region,
        display.model_copy(
            update={
                "zoom_xyxy": views.zoom_xyxy(cap.prediction.mask.shape),
                "view": st.session_state["present_view"] if row is not None else next(iter(fig.VIEWS)),
            }
        ),
        app_link=views.app_link(ch),
    )
    drawn = fig.panels(display, arrays, max_side=MAX_SENT_SIDE)  # a large image: drawn at the size it is sent
    arrays_b = None
    if ch.ab is not None:
        side_b = _b_side(ch, display, res.class_index)
        if side_b is not None:
            record_b, arrays_b = side_b
            record = {**record, "compare_kind": ch.ab[0], "compare_with": record_b}
    st.session_state["last_record"] = record
    st.session_state["last_render"] = {
        "opacity": display.opacity,
        "level": record["threshold"]["level"],
        "cmap": display.colormap,
        "overlay_sum": int(drawn.over.sum()),
        "signed_scale": display.signed_scale,
        "target_pixels": int(region.sum()),
        "outlined": display.outline_target,
    }
    return _View(display, arrays, drawn, record, arrays_b, covered)


def _side(ch, res, cap, region, display: fig.Display, app_link: str | None = None):
    """One side of a view (A, or B of an A/B view): its settings completed with the signed scale
    and the outline, the arrays its pictures are drawn from, its record and the classes that set
    the signed scale."""
    scale, covered = compute.view_scale(ch, display.values, cap, res)
    target = ch.target.with_class(res.class_index)
    display = display.model_copy(update={"signed_scale": scale, "outline_target": target.kind in tg.LOCAL_KINDS})
    arrays = fig.Arrays(
        ch.image.image.array, cap.prediction.mask, res.cam, res.cam_raw, region, ch.loaded.spec.colors, ch.image.mpp
    )
    record = compute.record_for(
        ch,
        res,
        cap,
        {"mode": display.threshold_mode, "level": display.level(res.cam)},
        signed_scale=scale,
        region=region,
        signed_scale_classes=covered,
        display=display.model_dump(),
        app_link=app_link,
    )
    return display, arrays, record, covered


def _b_side(ch, display: fig.Display, class_index: int):
    """The B side of an A/B view: its map (one-pass methods only: from its own cached capture),
    its arrays and its record; None, with a note, when B cannot be drawn."""
    chb = compute.b_choices(ch, class_index)
    try:
        try:
            cap = compute.get_capture(chb)
        except EmptyTargetError:  # e.g. the class is predicted nowhere without the marker: its whole-class map
            chb = dataclasses.replace(chb, target=tg.TargetSpec("class", chb.class_index))
            cap = compute.get_capture(chb)
        res = compute.cam_for(chb, chb.method, chb.layer, cap)
        target = chb.target.with_class(res.class_index)
        region = tg.region(target, cap.prediction.mask, chb.loaded.spec.classes) > 0
    except Exception as exc:  # known errors as they are; others logged — A is still shown
        st.warning(f"B ({plain(ch.ab[1])}) cannot be drawn: {compute.describe_error(exc)}")
        return None
    _, arrays, record, _ = _side(chb, res, cap, region, display)
    if ch.ab[0] == "mark":
        _audit_line(ch, chb, res, cap)
    return record, arrays


def _audit_line(ch, chb, res_b, cap_b) -> None:
    """The shortcut audit of this image (an A/B view that plants a mark): what the mark moves in
    the prediction, and how much of B's map lies on it (cam_core.trust.audit's rule)."""
    from cam_core.trust import audit

    mark = ch.ab[1]
    _, foot, neutral = compute.planted_choice(ch.loaded, ch.image, mark, ch.rule)  # A, B and control: one rule
    before = compute.get_capture(ch).prediction.mask
    flips = audit.flip_shares(before, cap_b.prediction.mask, foot, ch.loaded.num_classes)
    control = audit.flip_shares(before, neutral, foot, ch.loaded.num_classes)
    cls = res_b.class_index
    words = audit.describe_tile(
        mark, flips, control, cls, ch.loaded.spec.classes[cls], float(foot.mean()), audit.mass_on(res_b.cam, foot)
    )
    st.markdown(words)
    st.caption(f"The audit's rule: {audit.AUDIT_RULE} Over a folder: `python -m cam_core audit --data DIR`.")


def _compute(ch, status, clock: compute.RunClock):
    """The capture and the map, with a progress bar; a method with passes of its own waits for its
    button. None when there is nothing to draw (a message says why; the mask alone when the
    target is empty)."""
    res = cap = None
    bar = st.empty()
    try:
        if ch.image.large:
            h, w = ch.image.image.array.shape[:2]
            st.info(
                f"{w}×{h} is a large image: it is explained in overlapping tiles stitched into one map, "
                f"normalised once over the whole image (about {max(compute.tiled_estimate(ch), 1):.0f} s the first "
                "time on this server)."
            )
        cap = compute.get_capture(ch, spinner=lambda f, m: bar.progress(f, text=f"Large image: {m}"))
        clock.mark("capture")
        res = compute.cam_for(ch, ch.method, ch.layer, cap)
        clock.mark("map")
        if res is None:
            est = compute.estimate_seconds(ch, ch.method, ch.layer)
            st.warning(f"{ch.method.name} runs the model many times (about {max(est, 1):.0f} s here).")
            views.previous_picture(ch.method.name)
            if st.button(f"Run {ch.method.name}", type="primary"):
                res = compute.run_slow(ch, ch.method, ch.layer, cap, lambda f, t: bar.progress(f, text=t))
                if res is None:
                    st.warning(f"{ch.method.name} cancelled.")
    except EmptyTargetError as exc:
        status.info(str(exc))
        if exc.prediction is not None:
            show_mask_only(exc.prediction, ch)
            views.truth_section(ch, exc.prediction, None)
        return None
    except Exception as exc:  # known errors as they are; others logged — the app keeps serving
        status.error(compute.describe_error(exc))
        return None
    finally:
        bar.empty()
    status.empty()
    return None if res is None or cap is None else (res, cap)


def _panels(ch, res, prediction, target, drawn, signed, display) -> list:
    """The three panels side by side, each clickable; returns their clicks."""
    (scale, covered), level = signed, drawn.level
    cmap, opacity = display.colormap, display.opacity
    classes, colors = ch.loaded.spec.classes, ch.loaded.spec.colors
    keys = ["click_mask", "click_heat", "click_over"]
    srcs = sources([drawn.mask, drawn.heat, drawn.over], keys)  # encoded side by side
    col1, col2, col3 = st.columns(3)
    clicked = []
    with col1:
        st.markdown("**Predicted mask**")
        clicked.append(views.panel(drawn.mask, views.mask_alt(ch, prediction), keys[0], srcs[0]))
        views.legend(classes, colors, prediction.area_percent())
    with col2:
        st.markdown(f"**CAM heatmap** — {plain(classes[res.class_index])}")
        clicked.append(views.panel(drawn.heat, views.heat_alt(ch, res, target), keys[1], srcs[1]))
        if scale is not None:
            st.image(drawn.bar, alt=f"colour bar: raw CAM from −{scale:.3g} (blue, against) to +{scale:.3g} (red, for)")
            across = (
                f"One scale (±{scale:.3g}) for {', '.join(covered)} on this image, so magnitudes compare across classes"
                if len(covered) > 1
                else f"Scaled to this map's own ±{scale:.3g}"
            )
            st.caption(
                "Raw CAM before ReLU, in the method's own units: red argues for the class, blue against it. "
                f"{across}; the threshold applies to the min-max view."
            )
        else:
            st.image(drawn.bar, alt=f"colour bar: {cmap}, CAM 0 (low) to 1 (high)")
            st.caption("CAM, 0 (low) to 1 (high), min-max normalised over the image, as grad-cam does")
    with col3:
        thr = "" if level is None else f", threshold {level:.2f}"
        st.markdown(f"**Overlay** — opacity {opacity:.2f}{thr}")
        clicked.append(views.panel(drawn.over, views.overlay_alt(ch, res, opacity, level), keys[2], srcs[2]))
        if level is not None:
            st.caption(f"{(res.cam >= level).mean() * 100:.1f} % of the tile is at or above the threshold")
    return clicked


main()
