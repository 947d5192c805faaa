"""Compare: a grid of CAMs (methods × layers) for the current image and class, from one pass."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

from cam_core import limits
from cam_core.engine import methods
from cam_core.engine.result import SOURCES
from cam_core.errors import SegCamError
from cam_core.model import layers
from cam_core.output import render
from ui import compute, sidebar, state
from ui.text import breakable, code, plain

# What a cell's badges mean, shown above the grid (the rules are cam_core.trust's).
BADGES = {
    "faithful ✓": "removing what the map calls important lowers the score more than random maps and the target mask do",
    "faithful ~": "more faithful than random maps, but no more than the target region itself",
    "faithful ✗": "no more faithful than random maps",
    "sanity ✓": "the map changes when the model's weights are randomised",
    "sanity ✗": "the map survives randomised weights: it shows the image, not what the model learned",
    "sanity ?": "the randomised model's map is constant: the check cannot judge it",
}


def badge(report) -> str:
    """A cell's trust in a few characters: faithfulness against random, and the sanity verdict."""
    if report is None:
        return ""
    f, s = report.faithfulness, report.sanity
    mark = "✓" if f.beats_random and f.beats_target else "~" if f.beats_random else "✗"
    sane = {"pass": "✓", "fail": "✗", "degenerate": "?"}[s.verdict]
    return (
        f" · faithful {mark} {f.score:+.2f} (random {f.random:+.2f}) · sanity {sane} |raw| ρ {s.views['|raw|'].text()}"
    )


def column_order(grid, chosen_layers, reports) -> list:
    """Methods as columns, the same order in every row; by faithfulness when asked: a method whose
    map fails sanity at any checked layer never comes before one that passes (``rank_key``)."""

    def key(info):
        checked = [reports[(info.name, la)] for la in chosen_layers if reports.get((info.name, la)) is not None]
        if not checked:
            return (2, 0.0)
        keys = [r.rank_key() for r in checked]
        return (int(any(k[0] for k in keys)), sum(k[1] for k in keys) / len(keys))

    return sorted(grid, key=key)


def main() -> None:
    state.page_setup("Compare")
    st.title("Compare methods and layers")
    ch = sidebar.sidebar()
    if ch is None:
        st.info("Pick a sample tile or upload an image in the sidebar.")
        return
    chosen_methods, chosen_layers, cmap, chosen_slow, run_slow = _controls(ch)
    if (not chosen_methods and not chosen_slow) or not chosen_layers:
        st.info("Choose at least one method and one layer.")
        return
    if ch.image.large:
        st.info("Large image: each layer is a stitched capture of overlapping tiles (one tiled pass per layer set).")
    bar = st.empty()
    try:
        cap = compute.get_capture(
            ch,
            list(dict.fromkeys([*chosen_layers, ch.layer])),
            spinner=lambda f, m: bar.progress(f, text=f"Large image: {m}"),
        )
    except Exception as exc:  # known errors as they are; others logged — the app keeps serving
        st.error(compute.describe_error(exc))
        return
    finally:
        bar.empty()
    classes = ch.loaded.spec.classes
    st.markdown(
        f"Class **{plain(classes[cap.target.class_index])}** · {plain(cap.target.describe(classes))} · "
        f"model {code(ch.loaded.name)} · "
        f"{cap.device} · one pass {cap.seconds['total']:.2f} s, every cell's time {SOURCES['cache']} unless it says "
        "otherwise · every cell min-max normalised to 0–1, same colour scale"
    )
    st.image(render.colorbar(cmap), alt="colour bar")
    grid = [methods.METHODS[n.lower()] for n in chosen_methods + chosen_slow]
    # First every cell's CAM (from the pass, the slow-result cache, or a slow run when asked) ...
    results = _cells(ch, grid, chosen_layers, cap, run_slow)
    # ... then, on demand, the trust checks of every computed cell, to rank or badge them.
    reports, order = _trust(ch, grid, chosen_layers, cap, results)
    _suggestion(ch, [r for r in reports.values() if r is not None])
    cells, rows = _rows(ch, grid, chosen_layers, results, reports, order, cmap)
    write_link(ch, chosen_methods, chosen_layers)
    st.session_state["compare_rows"] = rows
    st.session_state["compare_badges"] = {f"{m}@{la}": badge(r) for (m, la), r in reports.items() if r is not None}
    st.session_state["compare_cells"] = cells


def _controls(ch) -> tuple[list[str], list[str], str, list[str], bool]:
    """Methods, layers, colour map and the opt-in slow methods (remembered per session; layers
    the model does not have are reset to its Compare rows)."""
    loaded = ch.loaded
    fast = [m.name for m in methods.fast_methods()]
    # Large images are explained from a stitched capture: only tileable methods apply.
    slow = [m.name for m in methods.METHODS.values() if not m.fast and (m.tileable or not ch.image.large)]
    st.session_state.setdefault("cmp_methods", fast)
    st.session_state.setdefault("cmp_layers", layers.compare_layers(loaded))
    every_layer = list(layers.spatial_layers(loaded))
    if not set(st.session_state["cmp_layers"]) <= set(every_layer):
        st.session_state["cmp_layers"] = layers.compare_layers(loaded)
    c1, c2, c3 = st.columns([2, 2, 1])
    with c1:
        chosen_methods = state.bound(st.multiselect, "Methods (one model pass)", "cmp_methods", options=fast)
    with c2:
        chosen_layers = state.bound(st.multiselect, "Layers", "cmp_layers", options=every_layer)
    with c3:
        cmap = state.bound(st.selectbox, "Colormap", "cmap", options=list(render.COLORMAPS))
    with st.expander("Slow methods (opt-in: they run the model many times)"):
        st.session_state.setdefault("cmp_slow", [])
        chosen_slow = state.bound(st.multiselect, "Add slow methods", "cmp_slow", options=slow)
        run_slow = st.button("Run the selected slow methods", disabled=not chosen_slow)
    return chosen_methods, chosen_layers, cmap, chosen_slow, run_slow


def _cells(ch, grid, chosen_layers, cap, run_slow) -> dict[tuple[str, str], object]:
    """Each cell's CAM, or the error that stopped it, or None (a slow method not run yet)."""
    results: dict[tuple[str, str], object] = {}
    for layer in chosen_layers:
        for info in grid:
            try:
                res = compute.cam_for(ch, info, layer, cap)
                if res is None and run_slow:
                    progress = st.empty()
                    res = compute.run_slow(ch, info, layer, cap, lambda f, t, p=progress: p.progress(f, text=t))
                    progress.empty()
            except SegCamError as exc:
                res = exc
            results[(info.name, layer)] = res
    return results


def _trust(ch, grid, chosen_layers, cap, results) -> tuple[dict, bool]:
    """The trust reports of the computed cells (cached ones, and the others when the button is
    pressed), and whether rows are ordered by faithfulness."""
    done = [(info, layer) for layer in chosen_layers for info in grid if hasattr(results[(info.name, layer)], "cam")]
    reports = {(i.name, la): compute.trust_if_cached(ch, i, la, cap) for i, la in done}
    missing = [(i, la) for i, la in done if reports[(i.name, la)] is None]
    t1, t2 = st.columns([2, 1])
    with t2:
        order = state.bound(
            st.toggle,
            "Order the methods by faithfulness",
            "cmp_order",
            help="Columns ranked by the mean faithfulness over the checked layers; a method that fails sanity at "
            "any layer never comes before one that passes.",
        )
    with t1:
        if missing and cap.tiles == 1:
            est = compute.trust_estimate(ch, missing, cap)
            if st.button(
                f"Check {len(missing)} cell(s): faithfulness and sanity (about {max(est, 1):.0f} s)", key="cmp_trust"
            ):
                bar = st.empty()
                try:
                    cams = {(i.name, la): results[(i.name, la)].cam for i, la in missing}
                    checked = compute.run_trust(ch, missing, cap, cams, lambda f, t: bar.progress(f, text=t))
                    reports.update({(r.method, r.layer): r for r in checked})
                except Exception as exc:  # known errors as they are; others logged — the app keeps serving
                    st.error(compute.describe_error(exc))
                finally:
                    bar.empty()
        elif cap.tiles > 1:
            st.caption(f"Trust checks run on images up to {limits.LARGE_SIDE}×{limits.LARGE_SIDE}.")
    return reports, order


def _suggestion(ch, checked) -> None:
    """The checked cell to believe most on this tile (cam_core.trust.suggest_for_tile), with a
    button that makes it Explore's method and layer."""
    from cam_core import trust

    best = trust.suggest_for_tile(checked) if checked else None
    st.session_state["compare_suggestion"] = None if best is None else f"{best.method}@{best.layer}"
    if not checked:
        return
    if best is None:
        st.warning(f"Of the {len(checked)} checked cell(s), none can be believed on this tile.")
        return
    st.success(
        f"Suggested for this tile: **{best.method}** on `{best.layer}` — {best.verdict().sentence()}",
        icon=":material/recommend:",
    )
    if st.button("Use this method and layer in Explore", key="cmp_use_suggestion"):
        st.session_state["sel_method"] = best.method
        st.session_state["sel_layer"] = best.layer
        st.session_state["sel_layer_model"] = ch.loaded.name
        st.toast(f"Explore now uses {best.method} on {best.layer}.")


def _rows(ch, grid, chosen_layers, results, reports, order, cmap) -> tuple[int, dict[str, list[str]]]:
    """The grid: a row per layer, a column per method, aligned in every row; returns the cells
    drawn and each row's method order."""
    image = ch.image.image.array
    columns = column_order(grid, chosen_layers, reports) if order else list(grid)
    if any(r is not None for r in reports.values()):
        st.caption(" · ".join(f"**{k}**: {v}" for k, v in BADGES.items()))
    # A layer's name above its row (whole, copyable), not in a column of its own: the methods'
    # columns keep the width, and every row has the same columns, so they line up.
    head = st.columns(len(columns))
    for col, info in zip(head, columns):
        col.markdown(f"**{breakable(info.name)}**")
    cells = 0
    rows: dict[str, list[str]] = {}
    for layer in chosen_layers:
        rows[layer] = [i.name for i in columns]
        st.markdown(f"Layer {code(layer)}")
        cols = st.columns(len(columns))
        for col, info in zip(cols, columns):
            with col:
                res = results[(info.name, layer)]
                if isinstance(res, SegCamError):
                    st.caption(f"{info.name}: {plain(res)}")
                    continue
                if res is None:
                    st.caption(f"{info.name}: not run yet")
                    continue
                over = render.overlay(image, res.cam, 0.6, cmap)
                st.image(
                    over,
                    caption=f"{res.cost(source=False)}{badge(reports.get((info.name, layer)))}",
                    width="stretch",
                    alt=f"cam {info.name} {layer}",
                )
                cells += 1
    return cells, rows


def write_link(ch, chosen_methods, chosen_layers) -> None:
    """The address bar keeps this grid (the sidebar's view plus methods, layers and order)."""
    from ui import views

    view = {**views.current_view(ch), "methods": chosen_methods, "layers": chosen_layers}
    view["order"] = True if st.session_state.get("cmp_order") else None
    params = state.link_params(view)
    if params != dict(st.query_params):
        st.query_params.from_dict(params)


main()
