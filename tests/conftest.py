"""Tiny in-code smp models: fast, deterministic, no downloads."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# One thread: the suite shares this 2-core machine with CI steps and background training.
torch.set_num_threads(1)
sys.path.insert(0, str(REPO))

from cam_core.model.models import OKABE_ITO, LoadedModel, ModelSpec, load_folder  # noqa: E402

CLASSES = ["background", "alpha", "beta"]
# Debian's Chromium (Playwright cannot download browsers here) and the flags it needs in a sandbox.
CHROMIUM = os.environ.get("SEGCAM_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def tiny_unet(classes: int = 3, seed: int = 0) -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    model = smp.Unet("resnet18", encoder_weights=None, decoder_channels=(32, 16, 16, 8, 8), classes=classes)
    # Random BN statistics so eval-mode outputs are not trivially uniform.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def wrap(model: torch.nn.Module, classes: list[str] | None = None, name: str = "tiny") -> LoadedModel:
    from cam_core.model.models import out_channels, working_multiple

    out = out_channels(model)
    classes = classes or (
        ["background", "foreground"] if out == 1 else CLASSES[:out] + [f"c{i}" for i in range(len(CLASSES), out)]
    )
    spec = ModelSpec(classes=classes, colors=OKABE_ITO[: len(classes)], binary=out == 1)
    # as a load finds it: resnet18's stride 32, as real
    return LoadedModel(name, Path("."), model, spec, torch.device("cpu"), working_multiple(model))


@pytest.fixture
def tiny():
    return wrap(tiny_unet())


@pytest.fixture
def image64():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)


@pytest.fixture
def tiny_folder(tmp_path):
    """A folder written by save_pretrained, as a user would drop into the models folder."""
    folder = tmp_path / "models" / "tiny_unet"
    tiny_unet().save_pretrained(str(folder))
    (folder / "segcam.json").write_text('{"classes": ["background", "alpha", "beta"]}')
    return folder


def explain_args(image, model, *extra: str, cls: str = "1") -> list[str]:
    """CLI argv for `explain` of one class (as the target) on one image with one model."""
    return ["explain", str(image), "--model", str(model), "--class", cls, "--target", "class", *extra]


def load_tiny_folder(folder):
    return load_folder(folder, device=torch.device("cpu"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the item, so fixtures can keep screenshots of failures."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
