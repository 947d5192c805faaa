"""About: what a CAM is and how to read one, in plain words."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

from cam_core import trust
from cam_core.engine import methods
from ui import sidebar, state

state.page_setup("About")
sidebar.sidebar()  # the shared choices stay visible and editable on every page
st.title("Reading a Class Activation Map")
st.markdown(
    f"""
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

**Can I believe this map?** Every map looks convincing; two checks under the panels (*Check this
map*) and on the Compare page tell a faithful map from a pretty one.
- *Faithfulness.* Remove the pixels the map calls most important, 5 % at a time, by taking them from
  a blurred copy of the tile, and watch the class's probability over the target fall (*deletion*);
  reveal them one step at a time on the blurred copy and watch it rise (*insertion*). The score is
  the area under insertion minus the area under deletion: near 0 means the map ranks pixels no better
  than chance. It is shown next to the same score for {trust.RANDOM_SEEDS} random maps (RandomCAM at the same
  layer) and for **the target mask itself used as a map**. In segmentation that second reference
  matters: a map that merely copies "the region you asked about" already scores well, so a map must
  beat the mask to show anything the mask does not. Ties (most of a map is exactly 0 after ReLU)
  are ordered at random, not by position.
- *Sanity* (Adebayo et al., NeurIPS 2018). Re-draw the model's weights from the output head down
  through the decoder and the encoder — on a private copy; the shared model is never touched — and
  explain the same pixels again. A map that hardly changes (rank correlation |ρ| ≥ {trust.SANITY_MAX_RHO}) does not
  depend on what the model learned: it shows the image or the target mask. Gradient × activation
  maps of a region's score (HiResCAM, GradCAM-ElementWise at decoder layers) often fail for that
  reason: the gradient of a sum over a region is large inside the region whatever the weights.
- *Their limits.* Removing pixels creates images the model never saw, blurred or not, so a score
  mixes the map's quality with the model's reaction to blur. Both checks are about *this* tile and
  target; a method that passes here can fail elsewhere (the Model page shows a report over many
  tiles). Passing says the map depends on the model and ranks pixels usefully — not that the model
  is right.

**Raw signed values.** *Values → raw signed* shows the map before ReLU and rescaling, centred on 0:
red argues for the class, blue against it, on one scale shared by every class of this tile, so "the
model is more sure about epithelium than about spindle cells here" becomes visible.

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
