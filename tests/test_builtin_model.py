"""The shipped model: loads, is small, and still segments the sample tiles as measured.

The floors sit below the figures `python -m cam_core evaluate --data samples` printed for the
shipped weights (see models/consep_unet_regnetx004/MODEL_CARD.md), so broken or swapped weights
fail while harmless numeric drift does not.
"""

from __future__ import annotations

import json

from conftest import REPO

from cam_core import cli, engine, layers, models
from cam_core.methods import METHODS
from cam_core.targets import TargetSpec

FOLDER = REPO / "models" / "consep_unet_regnetx004"
NUCLEI_FLOOR = 0.70  # measured 0.774 on 2026-11-27
MACRO_FLOOR = 0.50  # measured 0.610


def test_weights_are_small_safetensors():
    assert (FOLDER / "model.safetensors").stat().st_size <= 25 * 10**6
    assert not list(FOLDER.glob("*.pt*"))
    spec = json.loads((FOLDER / "segcam.json").read_text())
    assert spec["classes"] == ["background", "other", "inflammatory", "epithelial", "spindle"]
    assert spec["magnification"] == "40x"


def test_default_model_and_layer():
    loaded = models.load()
    assert loaded.name == models.default_model_name() == "consep-unet-regnetx004"
    assert layers.default_layer(loaded) == loaded.spec.default_layer
    assert loaded.spec.default_layer in layers.curated_layers(loaded)


def test_sample_tiles_quality_floor(capsys):
    rc = cli.main(
        ["evaluate", "--data", str(REPO / "samples"), "--json", "--macro-classes", "inflammatory,epithelial,spindle"]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nuclei_dice"] >= NUCLEI_FLOOR, out["nuclei_dice"]
    assert out["macro_dice"] >= MACRO_FLOOR, out["macro_dice"]


def test_every_present_class_gets_a_cam():
    from cam_core.images import load_image

    loaded = models.load()
    for path in sorted((REPO / "samples/images").glob("*.png")):
        image = load_image(path).array
        pred = engine.predict(loaded, image)
        present = [c for c in range(1, loaded.num_classes) if (pred.mask == c).sum() >= 20]
        for c in present:
            cap = engine.capture(loaded, image, TargetSpec("predicted", c), [loaded.spec.default_layer])
            cam = engine.cam_from_capture(cap, METHODS["gradcam"], loaded.spec.default_layer).cam
            assert cam.max() > 0.99, (path.name, c)
            # The explanation of a class concentrates on the class's own pixels more than elsewhere.
            assert cam[pred.mask == c].mean() > cam[pred.mask == 0].mean(), (path.name, c)
