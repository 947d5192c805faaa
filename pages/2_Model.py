"""Model: the model card, classes, candidate layers, and how to add your own model."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

from cam_core.model import layers, models
from cam_core.output import render
from cam_core.trust import report as trust_report
from cam_core.trust.protocol import SANITY_RULE
from ui import compute, sidebar, state
from ui.text import card as card_markdown
from ui.text import code, plain


def trust_table(loaded) -> None:
    """The model's measured trust report (``trust.json`` beside its weights) and the suggestion from it."""
    report = trust_report.load_report(loaded.path)
    st.markdown("**Which map to believe** (measured: `python -m cam_core trust --data DIR`)")
    if report is None:
        st.caption(
            "No trust report for this model yet. Run `python -m cam_core trust --data TILES --layer compare "
            f"--method fast --out {trust_report.REPORT_FILE}` and put the file beside the weights."
        )
        return
    best = trust_report.suggest(report)
    if best is not None:
        st.success(
            f"Suggested by measurement: **{best['method']}** on `{best['layer']}` — faithfulness "
            f"{best['faithfulness']:+.3f} against random {best['random_faithfulness']:+.3f}, passes sanity on "
            f"{best['sanity_pass_rate'] * 100:.0f} % of {best['tiles']} tiles."
        )
        if st.button("Use this method and layer", key="use_suggestion"):
            st.session_state["sel_method"] = best["method"]
            st.session_state["sel_layer"] = best["layer"]
            st.session_state["sel_layer_model"] = loaded.name
            st.toast(f"Explore now uses {best['method']} on {best['layer']}.")
    else:
        st.warning("No method × layer both beats random and passes sanity on most tiles of the report.")
    st.dataframe(
        [
            {
                "method": r["method"],
                "layer": r["layer"],
                "faithfulness": r["faithfulness"],
                "random": r["random_faithfulness"],
                "target mask": r["target_mask_faithfulness"],
                "beats random": f"{r['beats_random_rate'] * 100:.0f} %",
                "sanity ρ raw (median)": r["sanity_raw_rho_median"],
                "sanity ρ |raw| (median)": r["sanity_abs_rho_median"],
                "sanity ρ shown (median)": r["sanity_rho_median"],
                "shown map constant": f"{r['sanity_collapsed_rate'] * 100:.0f} %",
                "sanity pass": f"{r['sanity_pass_rate'] * 100:.0f} %",
                "believe": f"{r['believe_rate'] * 100:.0f} %",
                "s / map": r["seconds"],
            }
            for r in sorted(report["results"], key=lambda r: -r["faithfulness"])
        ],
        hide_index=True,
        width="stretch",
    )
    st.caption(
        f"{plain(report.get('tiles'))} tiles of {code(Path(str(report.get('data', ''))).name)}, "
        f"target {plain(report.get('target'))}, measured {plain(report.get('measured'))} on "
        f"{plain(report.get('device'))} in {plain(report.get('seconds'))} s."  # a folder's file: text
        f" Sanity rule: {SANITY_RULE}"
    )
    st.session_state["model_trust_suggestion"] = best


def main() -> None:
    state.page_setup("Model")
    ch = sidebar.sidebar()
    loaded = ch.loaded if ch else None
    st.title("Model")
    if loaded is None:
        st.info("No model loaded; see the list below.")
    else:
        spec = loaded.spec
        st.subheader(plain(loaded.name))
        # The folder's name only: the server's file-system layout is not every visitor's business.
        st.caption(
            f"folder {code(loaded.path.name)} · kind: {plain(loaded.kind or 'smp folder')} · "
            f"weights {plain(loaded.loaded_from or 'model.safetensors')} · "
            f"on {loaded.device} · decision rule: {plain(spec.decision_rule.describe())}"
        )
        if spec.description:
            st.markdown(plain(spec.description))
        c1, c2 = st.columns([1, 2])
        with c1:
            st.markdown("**Classes**")
            st.image(render.legend(spec.classes, spec.colors, size=16), alt="classes")
        with c2:
            st.markdown("**Candidate layers** (curated; the app's layer list)")
            info = layers.spatial_layers(loaded)
            default = layers.default_layer(loaded)
            rows = [
                {
                    "layer": n,
                    "channels": info[n].channels,
                    "resolution": f"1/{info[n].stride}",
                    "output": info[n].output,
                    "part": info[n].kind,
                    "default": "✓" if n == default else "",
                }
                for n in layers.curated_layers(loaded)
            ]
            st.dataframe(rows, hide_index=True, width="stretch")
            st.caption(f"{len(info)} spatial layers in all (sidebar → All layers).")
        trust_table(loaded)
        card = loaded.path / "MODEL_CARD.md"
        if card.is_file():
            st.markdown("---")
            st.markdown(card_markdown(card.read_text()))  # formatted, but no link or image
    st.markdown("---")
    st.subheader("Models available")
    for e in compute.model_entries():
        status = ", ".join(plain(c) for c in e.classes) if not e.error else f":red[cannot load: {plain(e.error)}]"
        kind = f", {e.kind}" if e.kind else ""
        st.markdown(f"- **{plain(e.name)}** ({e.source}{kind}): {status}")  # names and classes come from folders
    st.subheader("Add your own model")
    from cam_core.model.kinds import KINDS

    st.markdown(
        "A model folder is one of these kinds (check one with `python -m cam_core models --check DIR`):\n"
        + "\n".join(f"- **{k.name}**: {plain(k.files)}" for k in KINDS.values())
        + f"""

Optionally add `segcam.json` with `classes`, `colors`, `preprocessing` (`mean`, `std` on RGB in [0, 1]),
`default_layer` and `decision_rule`. Without it: the folder's own class names and normalisation where it
has them (a transformers folder), else ImageNet mean/std and generic class names. Copy the folder into the
server's models folder (`models/user` in the app's folder unless the server sets `{models.MODELS_DIR_ENV}`;
with Docker, mount it at `/models` with `-v`). It appears here within 30 s.

Checkpoints (`.pth`, `.pt`, `.ckpt`) are read as state dicts only (`torch.load(weights_only=True)`): a
file holding other pickled objects is refused, because unpickling can run code.
"""
    )


main()
