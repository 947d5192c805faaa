"""SegCAM Explorer's core: CAM explanations of segmentation models, without Streamlit.

The public API, in the order data flows::

    images.load_image -> models.load -> engine.capture -> engine.cam_from_capture -> render.*

See README.md ("How the engine works").
"""

from .engine import (
    CamResult,
    Capture,
    Prediction,
    cam_from_capture,
    capture,
    explain,
    predict,
    run_method,
)
from .errors import (
    EmptyTargetError,
    InputError,
    ModelLoadError,
    SegCamError,
    UnknownNameError,
)
from .images import LoadedImage, load_image
from .methods import METHODS, get_method, resolve_methods
from .models import LoadedModel, load, load_folder
from .targets import TargetSpec

__all__ = [
    "METHODS",
    "CamResult",
    "Capture",
    "EmptyTargetError",
    "InputError",
    "LoadedImage",
    "LoadedModel",
    "ModelLoadError",
    "Prediction",
    "SegCamError",
    "TargetSpec",
    "UnknownNameError",
    "cam_from_capture",
    "capture",
    "explain",
    "get_method",
    "load",
    "load_folder",
    "load_image",
    "predict",
    "resolve_methods",
    "run_method",
]
