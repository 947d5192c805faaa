"""The CAM methods registry: every method, how it is computed, and what it costs. Defined once.

A method either has a ``layer_cam`` (computed in milliseconds from one captured forward +
backward, :mod:`cam_core.cammath`) or a ``runner`` (passes of its own: ScoreCAM and AblationCAM
mask or ablate channel by channel, ShapleyCAM needs second-order gradients, FinerCAM a different
target, FullGrad hooks on every bias; :mod:`cam_core.passes`). Everything the UI, CLI, bench and
tests ask of a method — fast? tileable? how many forwards? which grad-cam class? — is a property
here, never a list of names elsewhere.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cam_core.cost import Work, units
from cam_core.engine import cammath as cm
from cam_core.engine import passes
from cam_core.errors import unknown

LayerCam = Callable[[np.ndarray, np.ndarray, bool], np.ndarray]
# A gradient method with its own passes costs about a forward and two backwards (~3 forwards).
_GRADIENT_RUN_FORWARDS = 3
# grad-cam's aug_smooth runs the method on 6 augmented copies.
AUG_SMOOTH_COPIES = 6


@dataclass(frozen=True)
class MethodInfo:
    """One CAM method: its name, its computation and its capabilities."""

    name: str  # the canonical spelling: grad-cam's class name, or ours for our variants
    grad_cam_class: str  # the grad-cam class it reproduces or runs
    family: str
    summary: str
    needs_gradients: bool = True
    layer_cam: LayerCam | None = None  # from a capture (one forward + one backward for every method)
    runner: passes.Runner | None = None  # passes of its own
    slow: bool = False  # seconds to minutes on a CPU even when computed from a capture
    eigen_smooth: bool = True  # the eigen_smooth option changes its output
    aug_smooth: bool = True  # grad-cam's test-time augmentation applies (then run through grad-cam)
    baseline: bool = False
    approximate: bool = False  # our faster approximation of a grad-cam method, labelled as such
    per_channel: bool = False  # one image forward per channel of the layer (ScoreCAM, AblationCAM)
    channel_cap: int | None = None  # at most this many channels (ScoreCAM-TopK)
    max_layer_pixels: int | None = None  # refuse larger layers (needs O((H·W)²) memory)
    build: passes.Builder = passes.build_plain  # how grad-cam's class is constructed for a run
    finer_target: bool = False  # explains the class minus similar classes (FinerCAM)
    ignores_layer: bool = False  # uses every layer (FullGrad)
    # The map depends on where the target is, pixel by pixel (gradient × activation at each cell):
    # what a local question (a clicked nucleus) needs. Grad-CAM's channel weights are gradients
    # averaged over the whole map, so its map for one nucleus is close to the whole class's.
    # Such a map is 0 wherever the gradient is: a capture whose gradients live in one window (a
    # click on a large image) is computed on the window alone (``Capture.window_part``).
    local: bool = False

    @property
    def from_cache(self) -> bool:
        """Computed from the one captured pass (milliseconds per method and layer)."""
        return self.layer_cam is not None

    @property
    def fast(self) -> bool:
        """Instant in the app: from the capture and not inherently slow (KPCA-CAM is not)."""
        return self.from_cache and not self.slow

    @property
    def tileable(self) -> bool:
        """Works on a large image through a stitched capture (tiles of one pass each)."""
        return self.from_cache

    @property
    def extra_passes(self) -> bool:
        return self.per_channel

    def grad_cam_cls(self) -> type:
        """grad-cam's class (imported on first use: grad-cam costs ~1 s to import)."""
        return getattr(importlib.import_module("pytorch_grad_cam"), self.grad_cam_class)

    def image_forwards(self, channels: int, aug_smooth: bool = False) -> int:
        """Model forwards of one image this method costs beyond the capture (0 when from it)."""
        if self.from_cache:
            return 0
        if self.per_channel:
            n = 1 + (min(channels, self.channel_cap) if self.channel_cap else channels)
        else:
            n = _GRADIENT_RUN_FORWARDS
        return n * (AUG_SMOOTH_COPIES if aug_smooth and self.aug_smooth else 1)

    def work(self, channels: int, pixels: int, aug_smooth: bool = False) -> Work:
        """The work of its own passes over an image of ``pixels`` (padded) pixels, for the one
        estimate (:mod:`cam_core.cost`): per-channel methods run batches of masked images,
        the others gradient runs (captures)."""
        prior = "batched" if self.per_channel else "capture"
        return Work(f"method:{self.name}", units(self.image_forwards(channels, aug_smooth), pixels), prior)


def _cached(name: str, fn: LayerCam, family: str, summary: str, **flags) -> MethodInfo:
    return MethodInfo(name, name, family, summary, layer_cam=fn, **flags)


_NO_GRAD_EIGEN = {"needs_gradients": False, "eigen_smooth": False}

_ALL = [
    _cached("GradCAM", cm.gradcam, "gradient", "channel weights = mean gradient"),
    _cached("HiResCAM", cm.hirescam, "gradient", "gradient × activation, summed over channels (faithful)", local=True),
    _cached("GradCAMElementWise", cm.gradcam_elementwise, "gradient", "ReLU(gradient × activation) summed", local=True),
    _cached("GradCAMPlusPlus", cm.gradcam_plusplus, "gradient", "second-order weighting, better for several instances"),
    _cached("XGradCAM", cm.xgradcam, "gradient", "activation-normalised gradient weights"),
    _cached("LayerCAM", cm.layercam, "gradient", "positive gradient × activation, per pixel (fine detail)", local=True),
    _cached(
        "EigenCAM",
        cm.eigencam,
        "eigen",
        "first principal component of the activations (class-agnostic)",
        **_NO_GRAD_EIGEN,
    ),
    _cached(
        "EigenGradCAM",
        cm.eigengradcam,
        "eigen",
        "first principal component of gradient × activation",
        eigen_smooth=False,
    ),
    _cached(
        "SegEigenCAM",
        cm.segeigencam,
        "eigen",
        "principal component of |gradient| × activation, sign-corrected (for segmentation)",
        eigen_smooth=False,
    ),
    _cached(
        "KPCA_CAM",
        cm.kpca_cam,
        "eigen",
        "kernel PCA of the activations (class-agnostic)",
        slow=True,
        max_layer_pixels=64 * 64,
        **_NO_GRAD_EIGEN,
    ),
    _cached(
        "FEM",
        cm.fem,
        "activation",
        "feature explanation: channels active above mean + 2σ (class-agnostic)",
        **_NO_GRAD_EIGEN,
    ),
    MethodInfo(
        "ScoreCAM",
        "ScoreCAM",
        "perturbation",
        "each channel masks the input; weight = class score (one forward per channel)",
        needs_gradients=False,
        runner=passes.run_grad_cam,
        slow=True,
        per_channel=True,
        build=passes.build_scorecam,
    ),
    MethodInfo(
        "ScoreCAM-TopK",
        "ScoreCAM",
        "perturbation",
        f"APPROXIMATION of ScoreCAM: only the top-k channels by activation energy (k={passes.FAST_SCORECAM_K})",
        needs_gradients=False,
        runner=passes.run_scorecam_topk,
        eigen_smooth=False,  # our implementation applies neither smoothing
        aug_smooth=False,
        approximate=True,
        per_channel=True,
        channel_cap=passes.FAST_SCORECAM_K,
    ),
    MethodInfo(
        "AblationCAM",
        "AblationCAM",
        "perturbation",
        "weight = score drop when a channel is zeroed (one forward per channel)",
        needs_gradients=False,
        runner=passes.run_grad_cam,
        slow=True,
        per_channel=True,
        build=passes.build_ablation,
    ),
    MethodInfo(
        "FullGrad",
        "FullGrad",
        "gradient",
        "input and bias gradients of every layer (ignores the chosen layer)",
        runner=passes.run_grad_cam,
        slow=True,
        eigen_smooth=False,
        ignores_layer=True,
    ),
    MethodInfo(
        "ShapleyCAM",
        "ShapleyCAM",
        "gradient",
        "gradient and Hessian-vector product (Shapley view of CAM)",
        runner=passes.run_grad_cam,
    ),
    MethodInfo(
        "FinerCAM",
        "FinerCAM",
        "gradient",
        "class score minus similar classes' scores (what separates it)",
        runner=passes.run_grad_cam,
        aug_smooth=False,
        finer_target=True,
    ),
    _cached("RandomCAM", cm.randomcam, "baseline", "random channel weights: a sanity baseline", baseline=True),
]

METHODS: dict[str, MethodInfo] = {m.name.lower(): m for m in _ALL}
DEFAULT_METHOD = "GradCAM"
# What a local target (a click, an object, a rectangle, missed pixels) is explained with unless the
# user picked a method: local, one pass, and faithful (its map sums to the target's score change).
LOCAL_METHOD = "HiResCAM"
# Method groups for --method and the app: name -> (description, predicate). Defined here only.
GROUPS: dict[str, tuple[str, Callable[[MethodInfo], bool]]] = {
    "all": ("every method computed from the one captured pass", lambda m: m.from_cache),
    "fast": ("the one-pass methods that are instant (all but KPCA-CAM)", lambda m: m.fast),
    "every": ("every registered method, including those with passes of their own", lambda m: True),
}


def fast_methods() -> list[MethodInfo]:
    return [m for m in METHODS.values() if m.fast]


def get_method(name: str) -> MethodInfo:
    """Look a method up by name, case-insensitively (``KPCA-CAM``, ``gradcam++`` also work).

    Raises:
        UnknownNameError: lists the valid names.
    """
    key = str(name).lower().replace("++", "plusplus")
    if key in METHODS:
        return METHODS[key]
    squashed = {k.replace("_", "").replace("-", ""): k for k in METHODS}
    flat = key.replace("_", "").replace("-", "")
    if flat in squashed:
        return METHODS[squashed[flat]]
    raise unknown("method", name, [m.name for m in METHODS.values()])


def resolve_methods(spec: str | list[str] | None) -> list[MethodInfo]:
    """A method argument: a name, a comma list, or a group name from :data:`GROUPS`."""
    if spec is None or spec == "":
        return [METHODS[DEFAULT_METHOD.lower()]]
    names = spec if isinstance(spec, list) else [s.strip() for s in spec.split(",") if s.strip()]
    if len(names) == 1 and names[0] in GROUPS:
        keep = GROUPS[names[0]][1]
        return [m for m in METHODS.values() if keep(m)]
    return [get_method(n) for n in names]


def layer_side_limit(info: MethodInfo) -> int | None:
    """The largest square layer side the method accepts (None: any)."""
    return math.isqrt(info.max_layer_pixels) if info.max_layer_pixels else None
