"""Target layers: dotted ``named_modules()`` names, validated before any hook is placed.

Which modules give spatial (N×C×H×W) outputs is found once per model by a tiny dry forward
with temporary hooks (removed in ``finally``), so a non-spatial layer is refused with a clear
message instead of failing deep inside a CAM method.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from cam_core.errors import InputError, unknown
from cam_core.model.models import LoadedModel
from cam_core.model.state import preserved_state


@dataclass(frozen=True)
class LayerInfo:
    name: str
    channels: int
    stride: int  # input size / layer size
    kind: str  # "encoder", "decoder", "pre-head" or ""


def _probe(model: torch.nn.Module, size: int, device: torch.device) -> tuple[list[tuple[str, tuple]], str | None]:
    """Run one no-grad forward; return (name, output shape) in execution order and the pre-head layer."""
    order: list[tuple[str, tuple, torch.Tensor]] = []
    handles = []
    head_input: list[torch.Tensor] = []
    try:
        for name, module in model.named_modules():
            if not name:
                continue
            handles.append(
                module.register_forward_hook(
                    lambda m, i, o, name=name: (
                        order.append((name, tuple(o.shape), o)) if isinstance(o, torch.Tensor) else None
                    )
                )
            )
        head = getattr(model, "segmentation_head", None)
        if head is not None:
            handles.append(head.register_forward_pre_hook(lambda m, i: head_input.append(i[0])))
        with preserved_state(model), torch.no_grad():
            model.eval()
            model(torch.zeros(1, 3, size, size, device=device))
    finally:
        for h in handles:
            h.remove()
    pre_head = None
    if head_input:
        for name, _, out in reversed(order):
            if out is head_input[0] and not name.startswith("segmentation_head"):
                pre_head = name
                break
    return [(n, s) for n, s, _ in order], pre_head


# Keyed weakly by the module itself: an id() could be reused by a later model.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _analyse(loaded: LoadedModel) -> tuple[dict[str, LayerInfo], list[str]]:
    key = loaded.model
    if key in _CACHE:
        return _CACHE[key]
    size = max(128, loaded.multiple * 4)  # PAN-style pyramids need ≥ 4 cells at the deepest stage
    with loaded.lock:
        shapes, pre_head = _probe(loaded.model, size, loaded.device)
    spatial: dict[str, LayerInfo] = {}
    for name, shape in shapes:
        if len(shape) == 4 and name not in spatial and not name.startswith("segmentation_head"):
            kind = "encoder" if name.startswith("encoder") else "decoder" if name.startswith("decoder") else ""
            spatial[name] = LayerInfo(name, shape[1], max(1, size // shape[2]), kind)
    curated = _curate(spatial, [n for n, _ in shapes], pre_head)
    if pre_head and pre_head in spatial:
        spatial[pre_head] = LayerInfo(pre_head, spatial[pre_head].channels, spatial[pre_head].stride, "pre-head")
    _CACHE[key] = (spatial, curated)
    return spatial, curated


def _curate(spatial: dict[str, LayerInfo], order: list[str], pre_head: str | None) -> list[str]:
    """Encoder stages (last module at each stride), decoder blocks, then the pre-head layer."""
    curated: list[str] = []
    # Encoder: the last direct child (depth 2, e.g. encoder.layer3) at each stride.
    last_at_stride: dict[int, str] = {}
    for name in order:
        info = spatial.get(name)
        if info and name.startswith("encoder.") and name.count(".") <= 2:
            parent_depth = name.count(".")
            if parent_depth == 1 or name.split(".")[1] in ("features", "blocks", "stages", "model"):
                last_at_stride[info.stride] = name
    curated += [last_at_stride[s] for s in sorted(last_at_stride) if s > 1]
    # Decoder: numbered blocks if present, else direct children with spatial outputs.
    blocks = [n for n in spatial if n.startswith("decoder.blocks.") and n.count(".") == 2]
    if not blocks:
        blocks = [n for n in spatial if n.startswith("decoder.") and n.count(".") == 1]
    curated += blocks
    if pre_head and pre_head not in curated and pre_head in spatial:
        curated.append(pre_head)
    return list(dict.fromkeys(curated))


def plain_layer(name: str) -> str:
    """A layer's name for a caption: ``decoder.blocks.2`` → "decoder block 2",
    ``encoder.model.s1`` → "encoder s1"; a name without a known shape stays as it is."""
    parts = name.split(".")
    if len(parts) == 3 and parts[0] in ("encoder", "decoder") and parts[1] in ("blocks", "stages", "layers"):
        return f"{parts[0]} {parts[1].rstrip('s')} {parts[2]}"
    if len(parts) == 3 and parts[0] == "encoder" and parts[1] in ("model", "features"):
        return f"encoder {parts[2]}"
    if len(parts) == 2 and parts[0] in ("encoder", "decoder"):
        return f"{parts[0]} {parts[1]}"
    return name


def spatial_layers(loaded: LoadedModel) -> dict[str, LayerInfo]:
    """Every module with a 4-D output, in execution order."""
    return _analyse(loaded)[0]


def curated_layers(loaded: LoadedModel) -> list[str]:
    """A short list for menus: encoder stages, decoder blocks, the last layer before the head."""
    return _analyse(loaded)[1]


def default_layer(loaded: LoadedModel) -> str:
    """The model's configured default, else the deepest decoder block before the head."""
    spec_default = loaded.spec.default_layer
    if spec_default and spec_default in spatial_layers(loaded):
        return spec_default
    curated = curated_layers(loaded)
    decoder = [n for n in curated if n.startswith("decoder")]
    return (decoder or curated)[-1]


def compare_layers(loaded: LoadedModel) -> list[str]:
    """The Compare grid's default rows: deepest encoder stage, the default layer, the pre-head layer."""
    curated = curated_layers(loaded)
    encoder = [n for n in curated if n.startswith("encoder")]
    return list(dict.fromkeys([encoder[-1] if encoder else curated[0], default_layer(loaded), curated[-1]]))


def resolve_layers(loaded: LoadedModel, spec: str | list[str] | None) -> list[str]:
    """Turn a layer argument into names: a name, a comma list, ``all`` (the curated list),
    ``compare`` (the Compare grid's rows) or None (the default layer).

    Raises:
        UnknownNameError: a name is not a module of the model.
        InputError: the module exists but its output is not an N×C×H×W feature map.
    """
    if spec is None or spec == "" or spec == "default":
        return [default_layer(loaded)]
    names = spec if isinstance(spec, list) else [s.strip() for s in spec.split(",") if s.strip()]
    if names == ["all"]:
        return curated_layers(loaded)
    if names == ["compare"]:
        return compare_layers(loaded)
    spatial = spatial_layers(loaded)
    modules = dict(loaded.model.named_modules())
    for name in names:
        if name not in modules or not name:
            raise unknown(
                "layer",
                name,
                curated_layers(loaded),
                f" (curated; any of the {len(spatial)} spatial layers from `python -m cam_core layers --all` also works)",
            )
        if name not in spatial:
            raise InputError(
                f"layer {name!r} does not output a spatial feature map (N×C×H×W), so it has no CAM; "
                f"pick one of: {', '.join(curated_layers(loaded))}"
            )
    return names


def map_bytes(loaded: LoadedModel, shape: tuple[int, int], names: list[str]) -> int:
    """Memory of the layers' activation + gradient maps (float32) for an image of ``shape`` (H, W),
    padded to the model's multiple as a capture pads it."""
    spatial = spatial_layers(loaded)
    m = loaded.multiple
    ph, pw = -(-shape[0] // m) * m, -(-shape[1] // m) * m
    return sum(2 * 4 * spatial[n].channels * (ph // spatial[n].stride) * (pw // spatial[n].stride) for n in names)
