"""The engine: hooks, captures and the kept graph, grad-cam's formulas, methods with passes of
their own, targets, tiling. Its façade (:mod:`.facade`) is this package's API, so
``cam_core.engine.capture`` / ``explain`` / ``cam_from_capture`` read as before; names load on
first use, so importing one part does not import them all.

Imports run one way: ``cam_core.model`` and ``cam_core.data`` below, never ``trust``, ``wsi``,
``output`` or ``cli`` above."""

from __future__ import annotations

from cam_core.lazy import exports

# Each public name, by the module that defines it (the façade's functions and their types).
__all__, __getattr__ = exports(
    __name__,
    {
        "cam_from_capture": ".facade",
        "explain": ".facade",
        "method_work": ".facade",
        "run_method": ".facade",
        "GRAD_CAM_SVD_MAX_PIXELS": ".facade",
        "Capture": ".capturing",
        "Prediction": ".capturing",
        "capture": ".capturing",
        "predict": ".capturing",
        "prepare": ".capturing",
        "recapture": ".capturing",
        "score_function": ".capturing",
        "drop_graph": ".graph",
        "FAST_SCORECAM_K": ".passes",
        "CamResult": ".result",
        "versions": ".result",
    },
)
