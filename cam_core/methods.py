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
    max_layer_pixels: int | None = None  # refuse larger layers (method needs O((H·W)²) memory)


def _m(cls, family, grads, cache, extra, slow, eigen, aug, summary, **kw) -> MethodInfo:
    return MethodInfo(cls.__name__, cls, family, grads, cache, extra, slow, eigen, aug, summary, **kw)


_ALL = [
    _m(gc.GradCAM, "gradient", True, True, False, False, True, True, "channel weights = mean gradient"),
    _m(
        gc.HiResCAM,
        "gradient",
        True,
        True,
        False,
        False,
        True,
        True,
        "gradient × activation, summed over channels (faithful)",
    ),
    _m(gc.GradCAMElementWise, "gradient", True, True, False, False, True, True, "ReLU(gradient × activation) summed"),
    _m(
        gc.GradCAMPlusPlus,
        "gradient",
        True,
        True,
        False,
        False,
        True,
        True,
        "second-order weighting, better for several instances",
    ),
    _m(gc.XGradCAM, "gradient", True, True, False, False, True, True, "activation-normalised gradient weights"),
    _m(
        gc.LayerCAM,
        "gradient",
        True,
        True,
        False,
        False,
        True,
        True,
        "positive gradient × activation, per pixel (fine detail)",
    ),
    _m(
        gc.EigenCAM,
        "eigen",
        False,
        True,
        False,
        False,
        False,
        True,
        "first principal component of the activations (class-agnostic)",
    ),
    _m(
        gc.EigenGradCAM,
        "eigen",
        True,
        True,
        False,
        False,
        False,
        True,
        "first principal component of gradient × activation",
    ),
    _m(
        gc.SegEigenCAM,
        "eigen",
        True,
        True,
        False,
        False,
        False,
        True,
        "principal component of |gradient| × activation, sign-corrected (for segmentation)",
    ),
    _m(
        gc.KPCA_CAM,
        "eigen",
        False,
        True,
        False,
        True,
        False,
        True,
        "kernel PCA of the activations (class-agnostic)",
        max_layer_pixels=64 * 64,
    ),
    _m(
        gc.FEM,
        "activation",
        False,
        True,
        False,
        False,
        False,
        True,
        "feature explanation: channels active above mean + 2σ (class-agnostic)",
    ),
    _m(
        gc.ScoreCAM,
        "perturbation",
        False,
        False,
        True,
        True,
        True,
        True,
        "each channel masks the input; weight = class score (one forward per channel)",
    ),
    _m(
        gc.AblationCAM,
        "perturbation",
        False,
        False,
        True,
        True,
        True,
        True,
        "weight = score drop when a channel is zeroed (one forward per channel)",
    ),
    _m(
        gc.FullGrad,
        "gradient",
        True,
        False,
        False,
        True,
        False,
        True,
        "input and bias gradients of every layer (ignores the chosen layer)",
    ),
    _m(
        gc.ShapleyCAM,
        "gradient",
        True,
        False,
        False,
        False,
        True,
        True,
        "gradient and Hessian-vector product (Shapley view of CAM)",
    ),
    _m(
        gc.FinerCAM,
        "gradient",
        True,
        False,
        False,
        False,
        True,
        False,
        "class score minus similar classes' scores (what separates it)",
    ),
    _m(
        gc.RandomCAM,
        "baseline",
        True,
        True,
        False,
        False,
        True,
        True,
        "random channel weights: a sanity baseline",
        baseline=True,
    ),
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
