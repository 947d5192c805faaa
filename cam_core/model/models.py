"""Load segmentation models: built-in names, a models folder, or a path, never via pickle.

A model folder is one of the kinds of :mod:`cam_core.model.kinds` — most often what
``segmentation_models_pytorch``'s ``model.save_pretrained(dir)`` writes (``config.json`` +
``model.safetensors``) — plus an optional ``segcam.json``::

    {
      "classes": ["background", "nucleus"],          # one name per output channel
      "colors": ["#000000", "#e69f00"],              # optional, hex, one per class
      "preprocessing": {"mean": [...], "std": [...]},# optional, on RGB scaled to [0, 1]
      "default_layer": "decoder.blocks.2",           # optional
      "decision_rule": {"type": "argmax"}            # or {"type": "background_below", "threshold": 0.9}
    }

Without ``preprocessing`` an image is scaled to [0, 1] and normalised with the ImageNet
mean/std (smp's convention for its encoders). A model with one output channel is a binary
sigmoid model and gets the classes ``[background, foreground]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cam_core import settings
from cam_core.errors import ModelLoadError, unknown
from cam_core.model import kinds
from cam_core.model.rules import ARGMAX, DecisionRule
from cam_core.model.state import preserved_state
from cam_core.paths import REPO_ROOT

MODELS_ROOT = REPO_ROOT / "models"
REGISTRY_FILE = MODELS_ROOT / "registry.json"
DEFAULT_MODELS_DIR = MODELS_ROOT / "user"
MODELS_DIR_ENV = settings.env_name("models_dir")
SPEC_FILE = "segcam.json"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Okabe–Ito: distinguishable with the common colour-vision deficiencies.
OKABE_ITO = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"]
HEX_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")  # .pt/.pth/.ckpt: read as state dicts only (checkpoints)


@dataclass
class ModelSpec:
    """What the explorer needs to know about a model beyond its weights."""

    classes: list[str]
    colors: list[str]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    default_layer: str | None = None
    decision_rule: DecisionRule = ARGMAX
    binary: bool = False
    description: str = ""
    mpp: float | None = None  # microns per pixel the model was trained at (segcam.json "microns_per_pixel")
    tokens: tuple[int, int] | None = None  # segcam.json "tokens": (stride, prefix) of every B×N×C layer
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)  # one object per loaded model: compared and hashed by identity
class LoadedModel:
    """A model ready for inference on one device, with the lock every caller must hold.

    It carries no engine state: the kept graph and the pass counters live in
    :mod:`cam_core.engine.graph`, keyed by this object."""

    name: str
    path: Path
    model: torch.nn.Module
    spec: ModelSpec
    device: torch.device
    multiple: int
    weights_sha256: str = ""  # of the weights file as loaded
    loaded_from: str = ""  # which file, and how (model.safetensors, or a checkpoint read as a state dict)
    kind: str = ""  # the folder's kind (cam_core.model.kinds.KINDS)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.spec.classes)


@dataclass
class ModelEntry:
    """A model that can be offered to the user, or the reason it cannot."""

    name: str
    path: Path
    source: str  # "built-in" or "models folder"
    classes: list[str] = field(default_factory=list)
    description: str = ""
    error: str | None = None
    kind: str = ""  # the folder's kind, once recognised


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def models_dir(override: str | Path | None = None) -> Path:
    """The user models folder: explicit override, then ``$SEGCAM_MODELS_DIR``, then ``models/user``."""
    if override:
        return Path(override)
    return settings.current().models_dir or DEFAULT_MODELS_DIR


def builtin_registry() -> dict[str, dict[str, Any]]:
    """Built-in models, keyed by name (the first one is the default)."""
    data = json.loads(REGISTRY_FILE.read_text())
    return {name: {**info, "path": MODELS_ROOT / info["path"]} for name, info in data["models"].items()}


def presets() -> dict[str, dict[str, Any]]:
    """Built-in models' preset views (registry.json ``preset``: a sample, layer, method and the
    A/B view that show what the model does), keyed by model name."""
    return {name: info["preset"] for name, info in builtin_registry().items() if "preset" in info}


def default_model_name() -> str:
    return next(iter(builtin_registry()))


def _shown(path: Path) -> str:
    """A file as messages show it: folder and name, never the server's absolute path."""
    return f"{path.parent.name}/{path.name}"


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            f"{what} {_shown(path)} is not valid JSON ({exc.msg}, line {exc.lineno}); fix or remove it"
        ) from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{what} {_shown(path)} must hold a JSON object")
    return data


def _spec_error(folder: Path, what: str) -> ModelLoadError:
    return ModelLoadError(f"{folder.name}: {SPEC_FILE} {what}")


def read_spec(folder: Path, out_channels: int) -> ModelSpec:
    """Read ``segcam.json`` (optional): its schema (:mod:`cam_core.model.spec_file`), then its fit
    to the model (one class name and colour per output channel, a decision rule that exists).

    A wrong field is a ``ModelLoadError`` naming the field and the valid form, raised here at
    load time, so a broken file never reaches the mask, the renderer or the model list.
    """
    from cam_core.model import spec_file

    binary = out_channels == 1
    n_classes = 2 if binary else out_channels
    config, data = _folder_files(folder)
    with contextlib.suppress(ModelLoadError):  # no kind: the caller's architecture error says so
        data = {**kinds.kind_of(folder, config, data).defaults(folder, config), **data}
    try:
        parsed = spec_file.parse(data)
    except ValueError as exc:
        raise _spec_error(folder, str(exc)) from None
    classes = parsed.classes or (
        ["background", "foreground"] if binary else [f"class {i}" for i in range(out_channels)]
    )
    if len(classes) != n_classes:
        raise ModelLoadError(
            f"{folder.name}: {SPEC_FILE} names {len(classes)} classes "
            f"but the model has {out_channels} output channel(s); give {n_classes} class names"
            + (" (a 1-channel sigmoid model has [background, foreground])" if binary else "")
        )
    colors = parsed.colors or (OKABE_ITO * (n_classes // len(OKABE_ITO) + 1))[:n_classes]
    if len(colors) != n_classes:
        raise _spec_error(folder, f"has {len(colors)} colours for {n_classes} classes")
    prep = parsed.preprocessing
    rule = parsed.decision_rule or ARGMAX
    mpp = parsed.microns_per_pixel
    return ModelSpec(
        classes=[str(c) for c in classes],
        colors=[str(c) for c in colors],
        mean=IMAGENET_MEAN if prep.mean is None else (float(prep.mean[0]), float(prep.mean[1]), float(prep.mean[2])),
        std=IMAGENET_STD if prep.std is None else (float(prep.std[0]), float(prep.std[1]), float(prep.std[2])),
        default_layer=parsed.default_layer,
        decision_rule=rule,
        binary=binary,
        description=parsed.description,
        mpp=None if mpp is None else float(mpp),
        tokens=None if parsed.tokens is None else (parsed.tokens.stride, parsed.tokens.prefix),
        extra={k: v for k, v in data.items() if k not in {"classes", "colors", "preprocessing", "decision_rule"}},
    )


MODEL_FILES = ("config.json", "model.safetensors", SPEC_FILE, "preprocessor_config.json")  # what the server reads


def check_readable(folder: Path) -> None:
    """Every file of the folder the server reads is readable by the user it runs as.

    A server in a container runs as its own user: a folder mounted from a host whose files are
    mode 0600 (safetensors' ``save_file``, and so smp's ``save_pretrained``, writes them so) cannot
    be read there, and the libraries then report it as a missing file with the server's path.

    Raises:
        ModelLoadError: names the folder and the file, the user, and the command that fixes it.
    """
    if not os.access(folder, os.R_OK | os.X_OK):
        unreadable = "the folder itself"
    else:
        names = [n for n in MODEL_FILES if (folder / n).is_file() and not os.access(folder / n, os.R_OK)]
        if not names:
            return
        unreadable = ", ".join(names)
    uid = os.getuid() if hasattr(os, "getuid") else "this user"
    raise ModelLoadError(
        f"{folder.name}: permission denied reading {unreadable}: the server runs as uid {uid}; make the "
        f"folder readable (e.g. `chmod -R a+rX {folder.name}` on the host)"
    )


def _folder_files(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """config.json and segcam.json as dicts ({} where absent): what a folder's kind is read from."""
    config_path, spec_path = folder / "config.json", folder / SPEC_FILE
    config = _read_json(config_path, "model config") if config_path.is_file() else {}
    spec = _read_json(spec_path, "class file") if spec_path.is_file() else {}
    return config, spec


def kind_of(folder: Path) -> kinds.Kind:
    """The folder's kind (:data:`cam_core.model.kinds.KINDS`)."""
    return kinds.kind_of(folder, *_folder_files(folder))


def _build_architecture(folder: Path, device: str | None = None) -> torch.nn.Module:
    """The folder's module, without weights (``device="meta"``: shapes only, no memory and no
    initialisation: how the model list checks a folder)."""
    check_readable(folder)
    config, spec = _folder_files(folder)
    kind = kinds.kind_of(folder, config, spec)
    if device is None:
        return kind.build(folder, config, spec, code_roots(folder))
    with torch.device(device):
        return kind.build(folder, config, spec, code_roots(folder))


def code_roots(folder: Path) -> list[Path]:
    """Folders no model code may come from: the model's own, and the models folder (anyone who
    may drop a model there could otherwise make the server run what they like)."""
    return [folder, models_dir()]


def _weights_file(folder: Path) -> Path:
    """model.safetensors, else the folder's state-dict checkpoint (:mod:`cam_core.model.checkpoints`)."""
    from cam_core.model import checkpoints

    weights = folder / "model.safetensors"
    if weights.is_file():
        return weights
    spec = _read_json(folder / SPEC_FILE, "class file") if (folder / SPEC_FILE).is_file() else {}
    named = spec.get("weights") if isinstance(spec.get("weights"), str) else None
    found = checkpoints.find(folder, named)
    if found is not None:
        return found
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    hint = (
        f" Found {', '.join(pickles)}: pickled objects are never loaded because unpickling can run code;"
        " save the weights where you trust them with torch.save(model.state_dict(), 'model.pth')"
        " or model.save_pretrained(dir)."
        if pickles
        else " Add model.safetensors (model.save_pretrained(dir)) or a state-dict checkpoint (model.pth)."
    )
    raise ModelLoadError(f"{folder.name}: no model.safetensors and no .pth/.pt/.ckpt checkpoint.{hint}")


def _state(folder: Path, own: set[str]) -> tuple[dict[str, Any], str, str]:
    """The weights' tensors, the SHA-256 of their file and how they were read; a checkpoint's keys
    are fitted to the architecture's (``own``) by stripping a training wrapper's prefix."""
    from cam_core.model import checkpoints

    weights = _weights_file(folder)
    if weights.suffix == ".safetensors":
        import hashlib

        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            data = weights.read_bytes()
            return load(data), hashlib.sha256(data).hexdigest(), "model.safetensors"
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"{folder.name}: model.safetensors is unreadable ({exc})") from None
    state, sha = checkpoints.read_state_dict(weights)
    state, prefix = checkpoints.fit_keys(state, own)
    how = (
        f"{weights.name} (state dict, torch.load weights_only"
        + (f", prefix {prefix!r} stripped" if prefix else "")
        + ")"
    )
    return state, sha, how


def _check_shapes(folder: Path, own: dict[str, tuple[int, ...]], theirs: dict[str, tuple[int, ...]]) -> None:
    """The one rule for weights fitting an architecture: the same names with the same shapes."""
    missing = sorted(set(own) - set(theirs))
    extra = sorted(set(theirs) - set(own))
    bad = [k for k in own.keys() & theirs.keys() if own[k] != theirs[k]]
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_some(missing)})")
        if extra:
            parts.append(f"{len(extra)} unexpected ({_some(extra)})")
        if bad:
            k = sorted(bad)[0]
            parts.append(f"{len(bad)} of wrong shape (e.g. {k}: {theirs[k]} vs {own[k]})")
        source = kind_of(folder).described_by
        raise ModelLoadError(f"{folder.name}: weights do not match {source}: " + "; ".join(parts))


def _some(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f", … {len(keys) - n} more" if len(keys) > n else "")


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _load_weights(folder: Path, model: torch.nn.Module) -> tuple[str, str]:
    """Load the weights; returns the SHA-256 of the bytes loaded (what ``result.json`` names, so a
    record says which weights drew it even if the file changes later) and how they were read."""
    model = kind_of(folder).weights_of(model)
    own = _shapes(model)
    state, sha, how = _state(folder, set(own))
    _check_shapes(folder, own, {k: tuple(v.shape) for k, v in state.items()})
    model.load_state_dict(state, strict=True)
    return sha, how


def _header_shapes(folder: Path, own: set[str]) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes: from model.safetensors' header only (no tensor is read), or from a
    checkpoint's state dict (read, safely) with its prefix fitted to ``own``."""
    from safetensors import SafetensorError, safe_open

    weights = _weights_file(folder)
    if weights.suffix != ".safetensors":
        state, _, _ = _state(folder, own)
        return {k: tuple(v.shape) for k, v in state.items()}
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder.name}: model.safetensors is unreadable ({exc})") from None


def output_head(model: torch.nn.Module) -> torch.nn.Module | None:
    """The module that turns features into class logits: smp's ``segmentation_head`` (which a
    transformers wrapper names too), else the model's last convolution: where the class count is
    read when a forward cannot give it."""
    head = getattr(model, "segmentation_head", None)
    if head is not None:
        return head
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-1] if convs else None


def out_channels(model: torch.nn.Module) -> int:
    """The model's classes: its output's channels, from a small forward when it has no smp
    ``segmentation_head`` (a factory's last convolution may sit anywhere in its module tree), else
    from the head's last convolution."""
    if getattr(model, "segmentation_head", None) is None:
        try:
            device = next(model.parameters()).device
            with torch.no_grad(), preserved_state(model):
                model.eval()
                out = segmentation_output(model(torch.zeros(1, 3, 64, 64, device=device)))
            if out.dim() == 4:
                return int(out.shape[1])
        except Exception:  # the convolution rule below
            pass
    head = output_head(model)
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)] if head is not None else []
    if not convs:
        raise ModelLoadError("cannot find the model's output convolution to count its classes")
    return int(convs[-1].out_channels)


def load_folder(folder: str | Path, name: str | None = None, device: torch.device | None = None) -> LoadedModel:
    """Load a ``save_pretrained`` folder (plus optional ``segcam.json``) onto a device.

    Raises:
        ModelLoadError: a file is missing or broken; the message says which and what would work.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {str(folder)!r} does not exist")
    kind = kind_of(folder)
    if kind.load is not None:  # the library's own loader (it checks the keys)
        check_readable(folder)
        model = kind.load(folder, *_folder_files(folder), code_roots(folder))
        sha, how = _sha256(folder / "model.safetensors"), f"model.safetensors ({kind.name}' own loader)"
    else:
        model = _build_architecture(folder)
        sha, how = _load_weights(folder, model)
    spec = read_spec(folder, out_channels(model))
    model.eval()
    device = device or default_device()
    # No process-wide switches here (TF32, threads): loading a model must not change how every
    # other model and library in the process computes.
    model.to(device)
    multiple = working_multiple(model, device)
    _channels_last_if_same(model, device, multiple)
    return LoadedModel(
        name or folder.name,
        folder,
        model,
        spec,
        device,
        multiple,
        weights_sha256=sha,
        loaded_from=how,
        kind=kind.name,
    )


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def working_multiple(model: torch.nn.Module, device: torch.device | str = "cpu") -> int:
    """The multiple an input's sides are padded to: the encoder's stride (32 where it does not
    say), doubled while a small input of odd multiples (3m × 5m) fails, as DPT's decoder does
    at its ViT's stride 16 (its 1/32 branch needs an even patch grid)."""
    start = int(getattr(getattr(model, "encoder", None), "output_stride", 32) or 32)
    multiple = start
    while multiple <= 128:
        try:
            with torch.no_grad(), preserved_state(model):
                model.eval()
                model(torch.zeros(1, 3, 3 * multiple, 5 * multiple, device=device))
            return multiple
        except Exception:  # a shape error of this size: the next multiple
            multiple *= 2
    return start


def segmentation_output(out: torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
    """smp models built with ``aux_params`` return (mask logits, class logits)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _channels_last_if_same(model: torch.nn.Module, device: torch.device, multiple: int) -> None:
    """Keep the weights channels-last when the model gives the same output that way: oneDNN's
    convolutions then run ~28 % faster on this CPU (a 512² forward of the built-in model: 0.144 →
    0.103 s), for every pass (captures, tiles, trust checks). A model whose layers reshape
    with ``view`` (some transformers) fails or differs on the probe and stays as it was."""
    probe = torch.linspace(-1, 1, 3 * (2 * multiple) ** 2, device=device).reshape(1, 3, 2 * multiple, 2 * multiple)
    try:
        with torch.no_grad():
            before = segmentation_output(model(probe))
            model.to(memory_format=torch.channels_last)
            after = segmentation_output(model(probe))
        if before.shape == after.shape and torch.allclose(before, after, rtol=1e-4, atol=1e-4):
            return
    except Exception:  # any failure of the probe: the model is left in its own layout
        pass
    model.to(memory_format=torch.contiguous_format)


def discover(models_folder: str | Path | None = None) -> list[ModelEntry]:
    """Built-in models, then every sub-folder of the models folder; broken ones carry ``error``.

    A folder is checked from its metadata (:func:`_entry`), once per version of its files: a
    re-scan (the app's, in the background) reads only file sizes and times for folders it has
    checked before.
    """
    found = [
        (name, Path(info["path"]), "built-in", info.get("description", "")) for name, info in builtin_registry().items()
    ]
    root = models_dir(models_folder)
    if root.is_dir():
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found.append((sub.name, sub, "models folder", ""))
    entries = []
    with _CHECKED_LOCK:
        for name, path, source, description in found:
            key, stamp = (name, str(path.resolve()), source), folder_stamp(path)
            hit = _CHECKED.get(key)
            if hit is None or hit[0] != stamp:
                hit = (stamp, _entry(name, path, source, description))
            _CHECKED[key] = hit
            entries.append(dataclasses.replace(hit[1], classes=list(hit[1].classes)))
        for stale in set(_CHECKED) - {(n, str(p.resolve()), s) for n, p, s, _ in found}:
            del _CHECKED[stale]  # bounded by the folders that exist
    return entries


_CHECKED: dict[tuple[str, str, str], tuple[tuple[Any, ...], ModelEntry]] = {}
_CHECKED_LOCK = threading.Lock()


def folder_stamp(path: Path) -> tuple[Any, ...]:
    """Name, size and modification time of every file in a model folder."""
    try:
        return tuple(sorted((p.name, st.st_size, st.st_mtime_ns) for p in path.iterdir() if (st := p.stat())))
    except OSError as exc:
        return (f"unreadable: {exc}",)


def _skeleton(folder: Path) -> torch.nn.Module:
    """The folder's architecture with shapes only (``meta`` tensors), built for real when its
    construction reads tensor values (Segformer's MiT, some factories): a broken folder's error
    then comes from the real build."""
    try:
        return _build_architecture(folder, device="meta")
    except Exception:
        return _build_architecture(folder)


def _checked_skeleton(folder: Path) -> tuple[torch.nn.Module | None, ModelLoadError | None]:
    """The folder's module and how its weights fit it, as the model list checks them: shapes only
    (``meta``) against the weights' header, or the library's own loader for a kind that has one
    (which reads the weights). The mismatch is returned, not raised, so a check can go on to
    segcam.json.

    Raises:
        ModelLoadError: no module can be built (the architecture, the factory, a missing file).
    """
    kind = kind_of(folder)
    if kind.load is not None:
        check_readable(folder)
        try:
            return kind.load(folder, *_folder_files(folder), code_roots(folder)), None
        except ModelLoadError as exc:
            if ": weights do not match " not in str(exc):
                raise
            return None, exc
    skeleton = _skeleton(folder)
    own = _shapes(kind.weights_of(skeleton))
    try:
        _check_shapes(folder, own, _header_shapes(folder, set(own)))
    except ModelLoadError as exc:
        return skeleton, exc
    return skeleton, None


def _entry(name: str, path: Path, source: str, description: str) -> ModelEntry:
    """A folder checked from its metadata: config.json built with shapes only (``meta`` tensors),
    the weights' header against those shapes, segcam.json against the classes. Nothing is
    allocated or read beyond headers, so a listing costs milliseconds whatever the model's size;
    the weights are read when the model is chosen (:func:`load`)."""
    entry = ModelEntry(name, path, source, description=description)
    try:
        entry.kind = kind_of(path).name
        skeleton, mismatch = _checked_skeleton(path)
        if mismatch is not None:
            raise mismatch
        assert skeleton is not None
        spec = read_spec(path, out_channels(skeleton))
        entry.classes = spec.classes
        entry.description = entry.description or spec.description
    except ModelLoadError as exc:
        entry.error = str(exc)
    except Exception as exc:  # one broken folder must never break the list for everyone
        entry.error = f"{name}: cannot be loaded ({type(exc).__name__}: {exc})"
    return entry


def check(folder: str | Path) -> list[str]:
    """Every problem of a model folder, one line each (empty: it loads), checked from metadata as
    the model list does: the architecture, the weights file, their keys and shapes, segcam.json."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder.name}: not a folder"]
    problems: list[str] = []
    try:
        skeleton, mismatch = _checked_skeleton(folder)
    except ModelLoadError as exc:
        return [str(exc)]
    if mismatch is not None:
        head, _, parts = str(mismatch).partition(": weights do not match ")
        if not parts:
            problems.append(str(mismatch))
        else:  # one line per kind of mismatch
            source, _, kinds_ = parts.partition(": ")
            problems += [f"{head}: weights do not match {source}: {k}" for k in kinds_.split("; ")]
    if skeleton is not None:
        try:
            read_spec(folder, out_channels(skeleton))
        except ModelLoadError as exc:
            problems.append(str(exc))
    return problems


def resolve(name_or_path: str | None, models_folder: str | Path | None = None) -> tuple[str, Path]:
    """Map a model argument (built-in name, models-folder name or path) to (name, folder)."""
    if not name_or_path:
        name_or_path = default_model_name()
    builtin = builtin_registry()
    if name_or_path in builtin:
        return name_or_path, Path(builtin[name_or_path]["path"])
    user = models_dir(models_folder) / name_or_path
    if user.is_dir():
        return name_or_path, user
    path = Path(name_or_path)
    if path.is_dir():
        return path.name, path
    valid = list(builtin)
    root = models_dir(models_folder)
    if root.is_dir():
        valid += sorted(p.name for p in root.iterdir() if p.is_dir())
    raise unknown("model", name_or_path, valid, " (or the path of a save_pretrained folder)")


def load(
    name_or_path: str | None = None, models_folder: str | Path | None = None, device: torch.device | None = None
) -> LoadedModel:
    """Load a model by built-in name, models-folder name or folder path."""
    name, folder = resolve(name_or_path, models_folder)
    return load_folder(folder, name=name, device=device)


def preprocess(image: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    """RGB uint8 H×W×3 → normalised 1×3×H×W float tensor (on the CPU)."""
    x = (image.astype(np.float32) / 255.0 - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def padded_pixels(shape: tuple[int, ...], multiple: int) -> int:
    """Pixels of an H×W image once padded to the model's multiple (what one pass computes over)."""
    return (-(-int(shape[0]) // multiple) * multiple) * (-(-int(shape[1]) // multiple) * multiple)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad the bottom/right to a multiple of the encoder stride; return the original size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)
