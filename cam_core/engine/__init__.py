"""The engine: hooks, captures and the kept graph, grad-cam's formulas, methods with passes of
their own, targets, tiling. Its façade (:mod:`.facade`) is this package's API, so
``cam_core.engine.capture`` / ``explain`` / ``cam_from_capture`` read as before; names load on
first use, so importing one part does not import them all.

Imports run one way: ``cam_core.model`` and ``cam_core.data`` below, never ``trust``, ``wsi``,
``output`` or ``cli`` above."""

from __future__ import annotations

from cam_core.lazy import exports

__all__, __getattr__ = exports(
    __name__,
    dict.fromkeys(
        (
            "CamResult",
            "Capture",
            "FAST_SCORECAM_K",
            "GRAD_CAM_SVD_MAX_PIXELS",
            "Prediction",
            "cam_from_capture",
            "capture",
            "drop_graph",
            "explain",
            "predict",
            "prepare",
            "recapture",
            "run_method",
            "score_function",
        ),
        ".facade",
    ),
)
