"""SegCAM Explorer's core: CAM explanations of segmentation models, without Streamlit.

The public API, in the order data flows::

    images.load_image -> models.load -> engine.capture -> engine.cam_from_capture -> render.*

Names are imported on first use (PEP 562), so ``import cam_core.render`` (or ``rules``,
``limits``) does not pay for torch, smp and grad-cam. See README.md ("How the engine works").
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CamResult": "engine",
    "Capture": "engine",
    "Prediction": "engine",
    "cam_from_capture": "engine",
    "capture": "engine",
    "explain": "engine",
    "predict": "engine",
    "run_method": "engine",
    "EmptyTargetError": "errors",
    "InputError": "errors",
    "ModelLoadError": "errors",
    "NothingPredictedError": "errors",
    "SegCamError": "errors",
    "UnknownNameError": "errors",
    "LoadedImage": "images",
    "load_image": "images",
    "METHODS": "methods",
    "get_method": "methods",
    "resolve_methods": "methods",
    "LoadedModel": "models",
    "load": "models",
    "load_folder": "models",
    "DecisionRule": "rules",
    "TargetSpec": "targets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'cam_core' has no attribute {name!r}")
