"""Target layers: dotted ``named_modules()`` names, validated before any hook is placed.

Which modules give spatial (N×C×H×W) outputs is found once per model by a tiny dry forward
with temporary hooks (removed in ``finally``), so a non-spatial layer is refused with a clear
message instead of failing deep inside a CAM method.

Token layers (ViT/DPT-style blocks whose output is B×N×C: a grid of patches, after a few
prefix tokens such as CLS) are offered too: the probe infers their stride and prefix from the
token count, and every capture reshapes them to B×C×(H/s)×(W/s) as grad-cam's
``reshape_transform`` does (:func:`to_grid`), so every method reads an ordinary feature map.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from cam_core.errors import InputError, unknown
from cam_core.model.models import LoadedModel, segmentation_output
from cam_core.model.state import preserved_state


@dataclass(frozen=True)
class LayerInfo:
    name: str
    channels: int
    stride: int  # input size / layer size
    kind: str  # "encoder", "decoder", "pre-head" or ""
    tokens: int | None = None  # a token layer (B×N×C): its prefix tokens (CLS, registers); None: a map

    @property
    def output(self) -> str:
        """What the layer outputs, as a listing shows it."""
        if self.tokens is None:
            return "map"
        return "tokens → grid" + (f" ({self.tokens} prefix dropped)" if self.tokens else "")


MAX_PREFIX_TOKENS = 8  # CLS plus registers, as timm's ViTs have at most
TOKEN_STRIDES = (4, 8, 14, 16, 32)  # patch sizes a token grid may have


def _token_grid(size: int, n: int, given: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """(stride, prefix tokens) of a square probe's B×N×C output, when N is a patch grid plus a
    few prefix tokens; None when it is not. ``given``: segcam.json's ``tokens``, the one grid tried."""
    if given is not None:
        stride, prefix = given
        return given if size % stride == 0 and (size // stride) ** 2 + prefix == n else None
    for stride in TOKEN_STRIDES:
        side, rest = divmod(size, stride)
        if not rest and 0 <= n - side * side <= MAX_PREFIX_TOKENS:
            return stride, n - side * side
    return None


def to_grid(tokens: torch.Tensor, height: int, width: int, stride: int, prefix: int) -> torch.Tensor:
    """B×N×C tokens of an input of ``height``×``width`` → B×C×(height/stride)×(width/stride),
    the prefix tokens dropped: grad-cam's ``reshape_transform`` for ViTs, one rule for both."""
    b, _, c = tokens.shape
    return tokens[:, prefix:, :].reshape(b, height // stride, width // stride, c).permute(0, 3, 1, 2)


def from_grid(grid: torch.Tensor, prefix_tokens: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_grid`: the tokens the model goes on with, built from the grid."""
    b, c = grid.shape[:2]
    return torch.cat([prefix_tokens, grid.permute(0, 2, 3, 1).reshape(b, -1, c)], dim=1)


# module → (stride, prefix) of each token layer found by a probe; weak: dies with its model.
_TOKEN_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_layer(module: torch.nn.Module) -> tuple[int, int] | None:
    """(stride, prefix tokens) when ``module`` is a token layer of an analysed model, else None."""
    return _TOKEN_LAYERS.get(module)


def copy_token_layers(original: torch.nn.Module, twin: torch.nn.Module) -> None:
    """Mark ``twin``'s (a deep copy's) token layers as ``original``'s are."""
    theirs = dict(twin.named_modules())
    for name, module in original.named_modules():
        found = _TOKEN_LAYERS.get(module)
        if found is not None and name in theirs:
            _TOKEN_LAYERS[theirs[name]] = found


def reshape_transform(module: torch.nn.Module, x_shape: tuple[int, ...]) -> Any:
    """The ``reshape_transform`` grad-cam's classes need for ``module`` on an input of
    ``x_shape`` (None for a feature map)."""
    found = token_layer(module)
    if found is None:
        return None
    stride, prefix = found
    h, w = int(x_shape[-2]), int(x_shape[-1])
    return lambda t: to_grid(t, h, w, stride, prefix)


def _probe(model: torch.nn.Module, size: int, device: torch.device) -> tuple[list[tuple[str, tuple]], str | None, str]:
    """Run one no-grad forward; return (name, output shape) in execution order, the pre-head
    layer and the head's name.

    The head is smp's ``segmentation_head`` (a transformers model's wrapper names its classifier so),
    else the deepest module whose output is the model's output (a MONAI UNet's last convolution),
    else none (a forward that computes its output after its last module). The pre-head layer is the
    one whose output the head takes in."""
    order: list[tuple[str, tuple, torch.Tensor]] = []
    inputs: dict[str, Any] = {}
    handles = []

    def hook(m: torch.nn.Module, i: tuple[Any, ...], o: Any, name: str) -> None:
        if isinstance(o, torch.Tensor):
            order.append((name, tuple(o.shape), o))
        if i and name not in inputs:
            inputs[name] = i[0]

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name)))
        with preserved_state(model), torch.no_grad():
            model.eval()
            y = segmentation_output(model(torch.zeros(1, 3, size, size, device=device)))
    finally:
        for h in handles:
            h.remove()
    names = {m: n for n, m in model.named_modules()}
    head = getattr(model, "segmentation_head", None)
    produced = [n for n, _, o in order if o is y] if head is None else []
    if head is not None:
        head_name = names.get(head, "segmentation_head")
    elif produced:
        head_name = max(produced, key=lambda n: n.count("."))
    else:  # the output is computed after the last module (a plain forward): no head to leave out
        head_name = ""
    head_input = inputs.get(head_name) if head_name else None
    pre_head = None
    if isinstance(head_input, torch.Tensor):
        for name, _, out in reversed(order):
            if out is head_input and not _within(name, head_name):
                pre_head = name
                break
    return [(n, s) for n, s, _ in order], pre_head, head_name


def _within(name: str, parent: str) -> bool:
    """``name`` is ``parent`` or one of its submodules (never, for no parent)."""
    return bool(parent) and (name == parent or name.startswith(parent + "."))


# Keyed weakly by the module itself: an id() could be reused by a later model.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _analyse(loaded: LoadedModel) -> tuple[dict[str, LayerInfo], list[str]]:
    key = loaded.model
    if key in _CACHE:
        return _CACHE[key]
    size = max(128, loaded.multiple * 4)  # PAN-style pyramids need ≥ 4 cells at the deepest stage
    with loaded.lock:
        shapes, pre_head, head_name = _probe(loaded.model, size, loaded.device)
    spatial: dict[str, LayerInfo] = {}
    modules = dict(loaded.model.named_modules())
    for name, shape in shapes:
        if name in spatial or _within(name, head_name) or _within(head_name, name):
            continue  # the head, and the modules around it: their output is the logits
        kind = "encoder" if name.startswith("encoder") else "decoder" if name.startswith("decoder") else ""
        if len(shape) == 4 and shape[2] == shape[3]:  # N×C×H×W (not N×H×W×C: the probe is square)
            spatial[name] = LayerInfo(name, shape[1], max(1, size // shape[2]), kind)
        elif len(shape) == 3 and (grid := _token_grid(size, shape[1], loaded.spec.tokens)) is not None:
            spatial[name] = LayerInfo(name, shape[2], grid[0], kind, tokens=grid[1])
            _TOKEN_LAYERS[modules[name]] = grid
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
    if not blocks:  # numbered blocks in a list (DPT's decoder.fusion_blocks.N): the last list run
        numbered = [n for n in order if n in spatial and re.fullmatch(r"decoder\.\w+\.\d+", n)]
        blocks = [n for n in numbered if n.rsplit(".", 1)[0] == numbered[-1].rsplit(".", 1)[0]] if numbered else []
    curated += list(dict.fromkeys(blocks))
    # Token blocks (a ViT's encoder.model.blocks.N): the last of each quarter of the stack.
    tokens = [n for n in order if n in spatial and spatial[n].tokens is not None and re.search(r"\.blocks\.\d+$", n)]
    tokens = list(dict.fromkeys(tokens))
    if tokens:
        curated = [n for n in curated if spatial[n].tokens is None] + [
            tokens[round((q + 1) * len(tokens) / 4) - 1] for q in range(4) if len(tokens) >= 4 or q == 3
        ]
    if not curated:  # no smp names (a factory or transformers model): the last layer at each stride
        last: dict[int, str] = {}
        for name in order:
            if name in spatial:
                last[spatial[name].stride] = name
        curated = [last[s] for s in sorted(last, reverse=True)]
    if pre_head and pre_head not in curated and pre_head in spatial:
        curated.append(pre_head)
    first = {n: i for i, n in reversed(list(enumerate(order)))}
    return sorted(dict.fromkeys(curated), key=lambda n: first.get(n, len(order)))


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
