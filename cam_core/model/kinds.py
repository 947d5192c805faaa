"""The kinds of model folder the explorer loads, in one registry keyed by name.

Each kind says how a folder of it is recognised (from its ``config.json`` and ``segcam.json``,
never from the weights), how its module is built without weights, which module the weights file
describes and what the folder holds (the README's table and every "what would work" message are
made from :data:`KINDS`). The weights are read afterwards by :mod:`cam_core.model.models`, the
same way for every kind: ``model.safetensors``, or a state-dict checkpoint read with
``torch.load(weights_only=True)`` (:mod:`cam_core.model.checkpoints`).

No kind runs code from the models folder: a factory names a function of an *installed* package
and is refused when that package lies in the folder or beside it; a transformers folder is built
from its config by the library's own classes (never ``trust_remote_code``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cam_core.errors import ModelLoadError

SPEC_FILE = "segcam.json"
TRANSFORMERS_PIN = "transformers==5.24.0"  # requirements-extras.txt; optional: ~150 MB, ~3 s to import


@dataclass(frozen=True)
class Kind:
    """One kind of model folder."""

    name: str
    files: str  # the folder's contents, as the README table and the error messages show them
    described_by: str  # the file that describes the architecture (what weights must match)
    recognise: Callable[[dict[str, Any], dict[str, Any]], bool]  # (config.json, segcam.json) -> is it
    build: Callable[[Path, dict[str, Any], dict[str, Any], list[Path]], torch.nn.Module]  # without weights
    # (folder, config.json, segcam.json, the folders no code may come from: the model's, the models folder)
    weights_of: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m  # the module the weights describe
    defaults: Callable[[Path, dict[str, Any]], dict[str, Any]] = field(default=lambda folder, config: {})
    # segcam.json fields the folder's own files give when segcam.json does not (classes, preprocessing)
    load: Callable[[Path, dict[str, Any], dict[str, Any], list[Path]], torch.nn.Module] | None = None
    # a library that loads its own folders (renaming keys as it saved them): module with weights, checked


def _smp_archs() -> dict[str, type]:
    import segmentation_models_pytorch as smp

    return {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}


def _smp(arch: str, config: dict[str, Any], where: str, folder: Path) -> torch.nn.Module:
    archs = _smp_archs()
    if arch not in archs:
        raise ModelLoadError(f"{folder.name}: {where} {arch!r} is not an smp architecture ({', '.join(archs)})")
    try:
        return archs[arch](**{**config, "encoder_weights": None})  # never download: weights come from the folder
    except Exception as exc:
        raise ModelLoadError(f"{folder.name}: {where.split()[0]} does not build a {arch} ({exc})") from None


def _build_smp_folder(folder: Path, config: dict[str, Any], spec: dict[str, Any], roots: list[Path]) -> torch.nn.Module:
    config = dict(config)
    return _smp(str(config.pop("_model_class", "")), config, "config.json _model_class", folder)


def _build_smp_checkpoint(
    folder: Path, config: dict[str, Any], spec: dict[str, Any], roots: list[Path]
) -> torch.nn.Module:
    arch = dict(spec["architecture"])
    return _smp(str(arch.pop("arch", "")), arch, f"{SPEC_FILE} architecture.arch", folder)


def _inside(path: str | None, roots: list[Path]) -> bool:
    if not path:
        return False
    p = Path(path).resolve()
    return any(p == r or p.is_relative_to(r) for r in roots)


def factory_function(folder: Path, target: str, roots: list[Path]) -> Callable[..., Any]:
    """The function ``"package.module:function"`` names, from an installed package only.

    Raises:
        ModelLoadError: the form is wrong, the package is not installed, or it lies in one of
            ``roots`` (the model's folder, the models folder): its code would run when the model
            is listed, and whoever may drop a model there could make the server run anything.
    """
    module_name, _, fn_name = target.partition(":")
    if not module_name or not fn_name or not all(p.isidentifier() for p in [*module_name.split("."), fn_name]):
        raise ModelLoadError(f'{folder.name}: {SPEC_FILE} factory must be "package.module:function", got {target!r}')
    roots = [r.resolve() for r in roots]
    parts = module_name.split(".")
    for depth in range(1, len(parts) + 1):  # each package before its children: none of its code has run yet
        name = ".".join(parts[:depth])
        try:
            found = importlib.util.find_spec(name)  # imports only the parents, already checked
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise ModelLoadError(
                f"{folder.name}: factory package {name!r} is not installed where the server runs (pip install it there)"
            )
        if _inside(found.origin, roots) or any(_inside(p, roots) for p in found.submodule_search_locations or []):
            raise ModelLoadError(
                f"{folder.name}: factory {target!r} is refused: {name!r} lies in the models folder, and code there "
                "would run when the model is listed; install it as a package (pip install) and name it from there"
            )
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"{folder.name}: factory {target!r} cannot be imported ({exc})") from None
    if not callable(fn):
        raise ModelLoadError(f"{folder.name}: factory {target!r} is not a function")
    return fn


def _build_factory(folder: Path, config: dict[str, Any], spec: dict[str, Any], roots: list[Path]) -> torch.nn.Module:
    fn = factory_function(folder, str(spec["factory"]), roots)
    kwargs = spec.get("kwargs") or {}
    try:
        module = fn(**kwargs)
    except Exception as exc:
        raise ModelLoadError(
            f"{folder.name}: factory {spec['factory']!r} failed with kwargs {kwargs} ({exc})"
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(
            f"{folder.name}: factory {spec['factory']!r} returned a {type(module).__name__}, not a module"
        )
    return module


class LogitsAtInput(torch.nn.Module):
    """A transformers segmentation model as the explorer calls one: an image batch in, class logits
    at the input's size out. Its logits (1/4 of the input for SegFormer) are upsampled bilinearly
    without aligned corners, as the image processor's ``post_process_semantic_segmentation`` does."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def segmentation_head(self) -> torch.nn.Module | None:
        """The classifier (the last convolution), as smp names its head: the class count and the
        layer list's pre-head layer come from it."""
        convs = [m for m in self.model.modules() if isinstance(m, torch.nn.Conv2d)]
        return convs[-1] if convs else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(pixel_values=x).logits
        return torch.nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _transformers(folder: Path) -> Any:
    try:
        import transformers
    except ImportError:
        raise ModelLoadError(
            f"{folder.name}: a transformers model folder needs the optional package: pip install {TRANSFORMERS_PIN} "
            "(or requirements-extras.txt; the Docker image: build it with --build-arg EXTRAS=1)"
        ) from None
    return transformers


def _build_transformers(
    folder: Path, config: dict[str, Any], spec: dict[str, Any], roots: list[Path]
) -> torch.nn.Module:
    """The model without weights (from its config.json)."""
    transformers = _transformers(folder)
    try:
        hf_config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        model = transformers.AutoModelForSemanticSegmentation.from_config(hf_config)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ModelLoadError(
            f"{folder.name}: config.json model_type {config.get('model_type')!r} is not a transformers "
            f"semantic-segmentation model ({str(exc).splitlines()[0][:160]})"
        ) from None
    return LogitsAtInput(model)


def _load_transformers(
    folder: Path, config: dict[str, Any], spec: dict[str, Any], roots: list[Path]
) -> torch.nn.Module:
    """The model with its weights, by transformers' own loader: it renames the keys it saved
    (SegFormer's ``linear_c`` → ``linear_projections`` in 5.x), which a plain state dict would miss.
    ``model.safetensors`` only (``pytorch_model.bin`` is a pickle), local files only, no remote code.

    Raises:
        ModelLoadError: no model.safetensors, or the weights do not fit config.json (the keys named).
    """
    transformers = _transformers(folder)
    if not (folder / "model.safetensors").is_file():
        raise ModelLoadError(
            f"{folder.name}: no model.safetensors (a pytorch_model.bin is a pickle and is never loaded; "
            "save_pretrained writes model.safetensors)"
        )
    _build_transformers(folder, config, spec, roots)  # the config's own error first
    auto = transformers.AutoModelForSemanticSegmentation
    transformers.logging.disable_progress_bar()
    try:
        model, info = auto.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, output_loading_info=True, trust_remote_code=False
        )
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"{folder.name}: weights do not match config.json ({str(exc).splitlines()[0][:200]})"
        ) from None
    parts = [
        f"{len(keys)} {what} ({', '.join(sorted(map(str, keys))[:3])})"
        for what, keys in (("missing", info.get("missing_keys")), ("unexpected", info.get("unexpected_keys")))
        if keys
    ]
    if info.get("mismatched_keys"):
        parts.append(f"{len(info['mismatched_keys'])} of wrong shape (e.g. {info['mismatched_keys'][0]})")
    if parts:
        raise ModelLoadError(f"{folder.name}: weights do not match config.json: " + "; ".join(parts))
    model.eval()
    # transformers installs its output-capturing hooks on a model's first forward, for good: run it
    # now, so they belong to the model as loaded (every pass restores the hooks it found, and would
    # otherwise remove them, leaving SegFormer's decoder without its hidden states).
    with torch.no_grad():
        model(pixel_values=torch.zeros(1, 3, 64, 64))
    return LogitsAtInput(model)


def _transformers_defaults(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Class names from config.json's ``id2label``; mean and std from preprocessor_config.json
    (images scaled to [0, 1] first, as its ``rescale_factor`` of 1/255 does). Its ``size`` is not
    used: the explorer explains an image at its own resolution."""
    out: dict[str, Any] = {}
    labels = config.get("id2label")
    if isinstance(labels, dict) and labels:
        with contextlib.suppress(ValueError, TypeError):
            out["classes"] = [str(labels[k]) for k in sorted(labels, key=int)]
    prep_path = folder / "preprocessor_config.json"
    if prep_path.is_file():
        try:
            prep = json.loads(prep_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{folder.name}: preprocessor_config.json is unreadable ({exc})") from None
        if prep.get("do_normalize", True) and "image_mean" in prep and "image_std" in prep:
            out["preprocessing"] = {"mean": prep["image_mean"], "std": prep["image_std"]}
    return out


KINDS: dict[str, Kind] = {
    "smp folder": Kind(
        "smp folder",
        "config.json + model.safetensors (smp's model.save_pretrained(dir)), optional segcam.json",
        "config.json",
        lambda config, spec: "_model_class" in config,
        _build_smp_folder,
    ),
    "smp checkpoint": Kind(
        "smp checkpoint",
        'model.pth / .pt / .ckpt (a state dict, or Lightning\'s) + segcam.json with "architecture": '
        '{"arch": "Unet", "encoder_name": "resnet34", "classes": 5}',
        f"{SPEC_FILE}'s architecture",
        lambda config, spec: not config and isinstance(spec.get("architecture"), dict),
        _build_smp_checkpoint,
    ),
    "factory": Kind(
        "factory",
        'model.safetensors or model.pth + segcam.json with "factory": "package.module:function" and "kwargs": {…} '
        "(an installed package)",
        f"{SPEC_FILE}'s factory",
        lambda config, spec: not config and isinstance(spec.get("factory"), str),
        _build_factory,
    ),
    "transformers": Kind(
        "transformers",
        "config.json (with model_type) + model.safetensors (+ preprocessor_config.json), as a transformers "
        f"segmentation model's save_pretrained writes; needs {TRANSFORMERS_PIN}",
        "config.json",
        lambda config, spec: "model_type" in config and "_model_class" not in config,
        _build_transformers,
        weights_of=lambda m: m.get_submodule("model"),
        defaults=_transformers_defaults,
        load=_load_transformers,
    ),
}


def kind_of(folder: Path, config: dict[str, Any], spec: dict[str, Any]) -> Kind:
    """The folder's kind.

    Raises:
        ModelLoadError: no kind fits; the message lists what each kind's folder holds.
    """
    for kind in KINDS.values():
        if kind.recognise(config, spec):
            return kind
    what = "; ".join(f"{k.name}: {k.files}" for k in KINDS.values())
    got = (
        "config.json without _model_class or model_type"
        if config
        else f"no config.json and no architecture or factory in {SPEC_FILE}"
    )
    raise ModelLoadError(f"{folder.name}: not a model folder ({got}). A model folder is one of — {what}")
