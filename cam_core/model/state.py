"""Leave a model exactly as found: training flags, requires_grad, .grad, submodules, hooks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


def hook_count(model: torch.nn.Module) -> int:
    """Forward and backward hooks on any module of the model (0 when nothing leaked)."""
    return sum(len(getattr(m, d, {})) for m in model.modules() for d in _HOOK_DICTS[:7])


@contextlib.contextmanager
def preserved_state(model: torch.nn.Module) -> Iterator[None]:
    """Restore training flags, ``requires_grad``, ``.grad``, submodules and hooks on exit.

    grad-cam calls ``model.eval()``, accumulates ``.grad`` with ``loss.backward()``, and its
    AblationCAM swaps a layer for an ``AblationLayer`` that stays in the model if it raises.
    """
    modules = list(model.modules())
    training = [m.training for m in modules]
    children = [dict(m._modules) for m in modules]
    hooks = [{d: set(getattr(m, d, {}).keys()) for d in _HOOK_DICTS} for m in modules]
    params = list(model.parameters())
    requires = [p.requires_grad for p in params]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    try:
        yield
    finally:
        for m, kids in zip(modules, children):
            m._modules.clear()
            m._modules.update(kids)
        for m, flag, before in zip(modules, training, hooks):
            m.training = flag
            for d, keys in before.items():
                registry = getattr(m, d, None)
                if registry is not None:
                    for k in [k for k in registry if k not in keys]:
                        del registry[k]
        for p, req, g in zip(params, requires, grads):
            p.requires_grad_(req)
            p.grad = g
