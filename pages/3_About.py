"""About: what a CAM is and how to read one, in plain words."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

from cam_core import methods
from ui import sidebar, state

state.page_setup("About")
sidebar.sidebar()  # the shared choices stay visible and editable on every page
st.title("Reading a Class Activation Map")
st.markdown(
    """
**What it is.** A segmentation model paints every pixel with a class. A Class Activation Map (CAM)
is a heat map over the same tile that shows which parts of the *image* pushed the model towards one
class, seen from one layer inside the network. Bright = strong evidence for the class; dark = little.

**Why it matters.** A model can score well for the wrong reason: it may have learned to look at a
scanner mark, a pen line, the slide border, a stain batch or a tissue type that happened to go with a
label. If the CAM for "epithelial" lights up the lumen or the glass rather than the nuclei, do not
trust the prediction, however good the metrics.

**What you are looking at.**
- *Predicted mask*: the model's class per pixel, with the legend and each class's share of the tile.
- *CAM heatmap*: evidence for the chosen class, 0 to 1 (each map is rescaled so its maximum is 1 —
  compare shapes, not absolute brightness, between maps).
- *Overlay*: the heatmap on the tissue. **Opacity** only changes how much you see of each; the
  **threshold** hides (or outlines) everything below a level: *absolute* (a CAM value), *percentile*
  (keep the top part of the map) or *Otsu* (an automatic split between low and high).

**Target.** "Predicted region" explains the class's score over the pixels the model gave that class
(why *these* nuclei); "whole class" over every pixel (what drives the score anywhere); "rectangle" over
a region you choose.

**Layers.** Deep encoder layers see large context at coarse resolution (blurry maps, more "why");
decoder layers near the output are sharp but closer to the answer itself (more "where").

**Method families.**
- *Gradient* (GradCAM, HiResCAM, GradCAM++, XGradCAM, LayerCAM, ...): weight the layer's features by
  how much the class score changes with them. One model pass serves all of them.
- *Eigen / activation* (EigenCAM, KPCA-CAM, FEM): the dominant pattern of the features, independent of
  the class — useful to see what the layer "sees" at all.
- *Perturbation* (ScoreCAM, AblationCAM): mask or remove each feature channel and measure the effect
  on the score. Closer to cause and effect, but one model run per channel: slow.
- *RandomCAM*: random weights — a baseline. If a method's map looks like RandomCAM's, it tells you little.

**Limits.** A CAM is a coarse, layer-dependent summary, not a proof. Different methods disagree;
maps are normalised per image, so brightness is not comparable across tiles; high CAM does not mean
high confidence; and a CAM shows correlation inside the model, not biology. Not for diagnosis.
"""
)
st.subheader("Methods available")
st.dataframe(
    [
        {
            "method": m.name,
            "family": m.family,
            "one pass": "✓" if m.from_cache else "",
            "slow": "✓" if m.slow else "",
            "what it does": m.summary,
        }
        for m in methods.METHODS.values()
    ],
    hide_index=True,
    width="stretch",
)
