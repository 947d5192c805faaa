"""State-dict checkpoints (``torch.save(model.state_dict(), "best.pth")``, a Lightning ``.ckpt``), read
without running code.

A training script's checkpoint is a pickle. Unpickling can run any code the file names, so it is
read only with ``torch.load(weights_only=True)`` (PyTorch's own recommendation), which rebuilds
tensors, numbers, strings and containers and refuses every other object before it is created: a
file that holds anything else is refused with a message that says how to save a loadable one. The
architecture comes from the folder's ``segcam.json`` (``"architecture"``), never from the file.

Lightning saves the module's weights under ``state_dict`` with the attribute's name in front
(``model.encoder…``); ``torch.nn.DataParallel`` adds ``module.``. The prefix that makes the keys
the architecture's is stripped and said.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import torch

from cam_core.errors import ModelLoadError

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")
KNOWN_PREFIXES = ("model.", "module.", "net.", "network.", "segmenter.")  # Lightning attributes, DataParallel


def find(folder: Path, named: str | None = None) -> Path | None:
    """The folder's checkpoint: ``named`` (segcam.json's ``"weights"``), else its one
    ``.pth``/``.pt``/``.ckpt`` file; None when there is none."""
    if named:
        path = folder / named
        if not path.is_file():
            raise ModelLoadError(f"{folder.name}: segcam.json names weights {named!r}, which is not in the folder")
        return path
    found = sorted(p for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
    if len(found) > 1:
        raise ModelLoadError(
            f"{folder.name}: {len(found)} checkpoints ({', '.join(p.name for p in found)}); "
            'name the one to load in segcam.json ("weights": "best.ckpt")'
        )
    return found[0] if found else None


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a state-dict checkpoint (a Lightning checkpoint's ``state_dict``) and the
    SHA-256 of the file's bytes.

    Raises:
        ModelLoadError: the file holds objects other than tensors and containers (refused before
            any is created), is no checkpoint, or holds no tensors.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(
            f"{path.parent.name}/{path.name} cannot be read ({exc.strerror or exc}); make it readable by the server "
            f"(e.g. `chmod a+r {path.name}`)"
        ) from None
    try:
        obj: Any = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{path.parent.name}/{path.name} is refused: it holds more than tensors ({reason}), and unpickling "
            "other objects can run code. Save the weights alone where you trust the file: "
            "torch.save(model.state_dict(), 'model.pth'), or python -m cam_core convert"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # a Lightning checkpoint
    if not isinstance(obj, dict):
        raise ModelLoadError(
            f"{path.parent.name}/{path.name} is a {type(obj).__name__}, not a state dict; save model.state_dict()"
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelLoadError(f"{path.parent.name}/{path.name} holds no tensors; save model.state_dict()")
    return tensors, hashlib.sha256(data).hexdigest()


def fit_keys(state: dict[str, torch.Tensor], own: set[str]) -> tuple[dict[str, torch.Tensor], str]:
    """The state with the prefix stripped that makes most of its keys the architecture's
    (``""`` when none does better), and that prefix."""
    firsts = {k.split(".", 1)[0] + "." for k in state if "." in k}
    best, best_prefix = state, ""
    best_hits = len(own & set(state))
    for prefix in dict.fromkeys([*KNOWN_PREFIXES, *sorted(firsts)]):
        stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        hits = len(own & set(stripped))
        if hits > best_hits:
            best, best_prefix, best_hits = stripped, prefix, hits
    return best, best_prefix
