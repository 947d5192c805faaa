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


# tiny_unet's architecture as segcam.json's "architecture" says it (a state-dict checkpoint's folder)
TINY_UNET_ARCH = {"arch": "Unet", "encoder_name": "resnet18", "decoder_channels": [32, 16, 16, 8, 8], "classes": 3}


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


# ---------------------------------------------------------------- #24: one folder of each kind

LAB_PACKAGE = '''"""A lab's own model code, installed as a package (a stand-in for one on PyPI)."""
import torch
from torch import nn


class TinyUNet(nn.Module):
    def __init__(self, classes=3, width=8):
        super().__init__()
        block = lambda i, o, s=1: nn.Sequential(nn.Conv2d(i, o, 3, s, 1), nn.BatchNorm2d(o), nn.ReLU())
        self.stem, self.down1, self.down2 = block(3, width), block(width, 2 * width, 2), block(2 * width, 4 * width, 2)
        self.up1, self.up2 = block(6 * width, 2 * width), block(3 * width, width)
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        a = self.stem(x)
        b = self.down1(a)
        c = self.down2(b)
        u = self.up1(torch.cat([nn.functional.interpolate(c, scale_factor=2.0), b], 1))
        u = self.up2(torch.cat([nn.functional.interpolate(u, scale_factor=2.0), a], 1))
        return self.head(u)


def build(classes=3, width=8):
    torch.manual_seed(0)
    return TinyUNet(classes, width).eval()
'''

# A 2-D MONAI UNet through the factory, as a lab that trains with MONAI would write it.
MONAI_UNET = {
    "factory": "monai.networks.nets:UNet",
    "kwargs": {"spatial_dims": 2, "in_channels": 3, "out_channels": 3, "channels": [8, 16, 32], "strides": [2, 2]},
}


def install_lab_package(site: Path) -> str:
    """Write the lab package under ``site`` (the caller puts it on sys.path); its factory's name."""
    (site / "segcam_lab_models").mkdir(parents=True, exist_ok=True)
    (site / "segcam_lab_models" / "__init__.py").write_text(LAB_PACKAGE)
    return "segcam_lab_models:build"


@pytest.fixture
def lab_site(tmp_path, monkeypatch):
    """The lab package, installed (on sys.path, outside every models folder)."""
    site = tmp_path / "site"
    install_lab_package(site)
    monkeypatch.syspath_prepend(str(site))
    return site


def tiny_dpt(classes: int = 3) -> torch.nn.Module:
    """smp's DPT on a 12-block ViT (patch 16, 32 dims): its blocks output 1 CLS + a patch grid."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    return smp.DPT(
        encoder_name="tu-vit_tiny_patch16_224",
        encoder_weights=None,
        classes=classes,
        dynamic_img_size=True,
        decoder_intermediate_channels=(16, 32, 64, 64),
        decoder_fusion_channels=16,
        embed_dim=32,
        num_heads=2,
    ).eval()


def tiny_segformer(classes: int = 3) -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    return smp.Segformer("mit_b0", encoder_weights=None, classes=classes, decoder_segmentation_channels=32).eval()


def tiny_hf_segformer(classes: list[str] = CLASSES) -> torch.nn.Module:
    """A randomly initialised transformers SegFormer, built from a config here (no hub)."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    config = SegformerConfig(
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 24, 32],
        num_attention_heads=[1, 1, 2, 2],
        decoder_hidden_size=16,
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={c: i for i, c in enumerate(classes)},
    )
    return SegformerForSemanticSegmentation(config).eval()


def write_model_folder(kind: str, folder: Path) -> Path:
    """A model folder of ``kind`` as a user would drop it into the models folder (the factory kinds
    need their package importable: the lab package's site on sys.path, or MONAI installed)."""
    import json

    from safetensors.torch import save_file

    from cam_core.model.kinds import SPEC_FILE

    folder.mkdir(parents=True, exist_ok=True)
    spec: dict = {"classes": CLASSES}
    if kind == "state dict":
        torch.save(tiny_unet(seed=4).state_dict(), folder / "best.pth")
        spec["architecture"] = TINY_UNET_ARCH
    elif kind == "lightning":
        state = {f"model.{k}": v for k, v in tiny_unet(seed=2).state_dict().items()}
        torch.save({"state_dict": state, "epoch": 3}, folder / "epoch=3.ckpt")
        spec["architecture"] = TINY_UNET_ARCH
    elif kind == "smp segformer":
        tiny_segformer().save_pretrained(str(folder))
    elif kind == "token layers (DPT)":
        tiny_dpt().save_pretrained(str(folder))
    elif kind == "transformers":
        tiny_hf_segformer().save_pretrained(str(folder))
        prep = {"image_processor_type": "SegformerImageProcessor", "do_normalize": True, "do_rescale": True}
        prep |= {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "size": {"height": 512, "width": 512}}
        (folder / "preprocessor_config.json").write_text(json.dumps(prep))
        spec = {}  # the class names come from config.json's id2label
    elif kind == "factory (lab package)":
        import importlib

        module = importlib.import_module("segcam_lab_models")
        torch.save(module.build().state_dict(), folder / "model.pth")
        spec |= {"factory": "segcam_lab_models:build", "kwargs": {"classes": 3}}
    elif kind == "factory (MONAI)":
        from monai.networks.nets import UNet

        torch.manual_seed(0)
        kwargs = dict(MONAI_UNET["kwargs"])
        save_file(UNet(**kwargs).state_dict(), str(folder / "model.safetensors"))
        spec |= MONAI_UNET
    else:
        raise ValueError(kind)
    if spec:
        (folder / SPEC_FILE).write_text(json.dumps(spec))
    return folder


# Each folder write_model_folder writes, and its kind (cam_core.model.kinds.KINDS).
MODEL_KINDS = {
    "state dict": "smp checkpoint",
    "lightning": "smp checkpoint",
    "smp segformer": "smp folder",
    "token layers (DPT)": "smp folder",
    "transformers": "transformers",
    "factory (lab package)": "factory",
    "factory (MONAI)": "factory",
}
