"""CoNSeP (Graham et al., 2019), the data the built-in models and the samples come from: its
classes, the classes its macro Dice averages and its resolution, defined once (the models'
``segcam.json`` files are checked against these by a test)."""

from __future__ import annotations

CLASSES = ["background", "other", "inflammatory", "epithelial", "spindle"]
MACRO_CLASSES = ("inflammatory", "epithelial", "spindle")  # the nucleus types scored in macro Dice
MPP = 0.25  # scanned at 40×, about 0.25 µm per pixel (samples/README.md)
