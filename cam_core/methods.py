"""The CAM methods registry: grad-cam's classes with what each one needs.

Methods marked ``from_cache`` are computed by the engine from one captured forward/backward,
with grad-cam's own per-method code (``get_cam_weights`` / ``get_cam_image``). The others need
passes of their own (ScoreCAM, AblationCAM), second-order gradients (ShapleyCAM), a different
target (FinerCAM) or hooks on every bias (FullGrad), and run through grad-cam itself under the
engine's state guard.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_grad_cam as gc

from .errors import unknown


@dataclass(frozen=True)
class MethodInfo:
    """One CAM method and its capabilities."""

    name: str  # grad-cam's class name, the canonical spelling
    cls: type
    family: str
    needs_gradients: bool
    from_cache: bool  # computable from one captured forward + backward
    extra_passes: bool  # runs more forwards than the capture (per channel or per batch)
    slow: bool  # seconds to minutes on a CPU
    eigen_smooth: bool  # the eigen_smooth option changes its output
    aug_smooth: bool  # grad-cam's test-time augmentation applies
    summary: str
    baseline: bool = False
    approximate: bool = False  # our faster approximation of a grad-cam method (not grad-cam's output)
    max_layer_pixels: int | None = None  # refuse larger layers (method needs O((H·W)²) memory)


def _m(cls, family: str, summary: str, name: str | None = None, **flags) -> MethodInfo:
    """A registry entry; flags default to a one-pass gradient method that supports both smoothings."""
    defaults = {
        "needs_gradients": True,
        "from_cache": True,
        "extra_passes": False,
        "slow": False,
        "eigen_smooth": True,
        "aug_smooth": True,
    }
    return MethodInfo(name or cls.__name__, cls, family, summary=summary, **{**defaults, **flags})


_NO_GRAD_EIGEN = {"needs_gradients": False, "eigen_smooth": False}
_OWN_PASSES = {"from_cache": False}

_ALL = [
    _m(gc.GradCAM, "gradient", "channel weights = mean gradient"),
    _m(gc.HiResCAM, "gradient", "gradient × activation, summed over channels (faithful)"),
    _m(gc.GradCAMElementWise, "gradient", "ReLU(gradient × activation) summed"),
    _m(gc.GradCAMPlusPlus, "gradient", "second-order weighting, better for several instances"),
    _m(gc.XGradCAM, "gradient", "activation-normalised gradient weights"),
    _m(gc.LayerCAM, "gradient", "positive gradient × activation, per pixel (fine detail)"),
    _m(gc.EigenCAM, "eigen", "first principal component of the activations (class-agnostic)", **_NO_GRAD_EIGEN),
    _m(gc.EigenGradCAM, "eigen", "first principal component of gradient × activation", eigen_smooth=False),
    _m(
        gc.SegEigenCAM,
        "eigen",
        "principal component of |gradient| × activation, sign-corrected (for segmentation)",
        eigen_smooth=False,
    ),
    _m(
        gc.KPCA_CAM,
        "eigen",
        "kernel PCA of the activations (class-agnostic)",
        slow=True,
        max_layer_pixels=64 * 64,
        **_NO_GRAD_EIGEN,
    ),
    _m(gc.FEM, "activation", "feature explanation: channels active above mean + 2σ (class-agnostic)", **_NO_GRAD_EIGEN),
    _m(
        gc.ScoreCAM,
        "perturbation",
        "each channel masks the input; weight = class score (one forward per channel)",
        needs_gradients=False,
        extra_passes=True,
        slow=True,
        **_OWN_PASSES,
    ),
    _m(
        gc.ScoreCAM,
        "perturbation",
        "APPROXIMATION of ScoreCAM: only the top-k channels by activation energy (k=32)",
        needs_gradients=False,
        extra_passes=True,
        approximate=True,
        eigen_smooth=False,  # our implementation applies neither smoothing
        aug_smooth=False,
        name="ScoreCAM-TopK",
        **_OWN_PASSES,
    ),
    _m(
        gc.AblationCAM,
        "perturbation",
        "weight = score drop when a channel is zeroed (one forward per channel)",
        needs_gradients=False,
        extra_passes=True,
        slow=True,
        **_OWN_PASSES,
    ),
    _m(
        gc.FullGrad,
        "gradient",
        "input and bias gradients of every layer (ignores the chosen layer)",
        slow=True,
        eigen_smooth=False,
        **_OWN_PASSES,
    ),
    _m(gc.ShapleyCAM, "gradient", "gradient and Hessian-vector product (Shapley view of CAM)", **_OWN_PASSES),
    _m(
        gc.FinerCAM,
        "gradient",
        "class score minus similar classes' scores (what separates it)",
        aug_smooth=False,
        **_OWN_PASSES,
    ),
    _m(gc.RandomCAM, "baseline", "random channel weights: a sanity baseline", baseline=True),
]

METHODS: dict[str, MethodInfo] = {m.name.lower(): m for m in _ALL}
DEFAULT_METHOD = "GradCAM"


def get_method(name: str) -> MethodInfo:
    """Look a method up by grad-cam class name, case-insensitively (``KPCA-CAM`` also works).

    Raises:
        UnknownNameError: lists the valid names.
    """
    key = str(name).lower().replace("-", "_").replace("++", "plusplus")
    if key in METHODS:
        return METHODS[key]
    if key.replace("_", "") in {k.replace("_", ""): k for k in METHODS}:
        return METHODS[{k.replace("_", ""): k for k in METHODS}[key.replace("_", "")]]
    raise unknown("method", name, [m.name for m in METHODS.values()])


def resolve_methods(spec: str | list[str] | None) -> list[MethodInfo]:
    """A method argument: a name, a comma list, or a group.

    Groups: ``all`` = every method computed from the one captured pass; ``fast`` = those minus
    the slow ones; ``every`` = all registered methods, including ones that need passes of their
    own (ScoreCAM on a deep layer can take minutes on a CPU).
    """
    if spec is None or spec == "":
        return [METHODS[DEFAULT_METHOD.lower()]]
    names = spec if isinstance(spec, list) else [s.strip() for s in spec.split(",") if s.strip()]
    if names == ["every"]:
        return list(METHODS.values())
    if names == ["all"]:
        return [m for m in METHODS.values() if m.from_cache]
    if names == ["fast"]:
        return [m for m in METHODS.values() if m.from_cache and not m.slow]
    return [get_method(n) for n in names]
