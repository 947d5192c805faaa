"""SegCAM Explorer's core: CAM explanations of segmentation models, without Streamlit.

The public API, in the order data flows::

    data.images.load_image -> model.models.load -> engine.capture -> engine.cam_from_capture -> output.render.*

Names are imported on first use (PEP 562), so ``import cam_core.output.render`` (or
``model.rules``, ``limits``) does not pay for torch, smp and grad-cam. See README.md ("How the engine works").
"""

from __future__ import annotations

from cam_core.lazy import exports

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
    "LoadedImage": "data.images",
    "load_image": "data.images",
    "METHODS": "engine.methods",
    "get_method": "engine.methods",
    "resolve_methods": "engine.methods",
    "LoadedModel": "model.models",
    "load": "model.models",
    "load_folder": "model.models",
    "DecisionRule": "model.rules",
    "TargetSpec": "engine.targets",
}
__all__, __getattr__ = exports(__name__, {name: f".{module}" for name, module in _EXPORTS.items()})
