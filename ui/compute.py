"""The app's computation: process-wide models and caches, captures, slow runs, result bundles.

Everything here is plain Python state of this module (not ``st.cache_resource``), so the
launcher (``ui/serve.py``) can load the model and explain the first sample in a background
thread while the server starts, and the first browser session finds them ready.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cam_core import limits
from cam_core.cache import LRUCache
from cam_core.data import samples
from cam_core.data.images import LoadedImage, load_image
from cam_core.data.truth import Truth
from cam_core.data.truth import summary as truth_summary
from cam_core.engine import targets as tg
from cam_core.engine.capturing import check_fits
from cam_core.engine.methods import MethodInfo
from cam_core.engine.result import CamResult, result_record
from cam_core.errors import Cancelled, SegCamError
from cam_core.gate import JobGate
from cam_core.model import models
from cam_core.model.rules import DecisionRule
from cam_core.output import render
from cam_core.runtime import SERVER_THREADS, configure_threads, spare_cores

log = logging.getLogger("segcam")
# Model passes are logged by cam_core.engine at INFO, page runs by this module: the server's log
# shows every one of them, with the seconds each took.
for _name in ("cam_core", "segcam"):
    if not logging.getLogger(_name).handlers:
        _handler = logging.StreamHandler()
        _handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.getLogger(_name).addHandler(_handler)
        logging.getLogger(_name).setLevel(logging.INFO)

THREADS = configure_threads(SERVER_THREADS)
MAX_MODELS = 2
CAPTURES = LRUCache(max_entries=12, max_bytes=limits.SERVER_CAPTURE_BYTES)  # captures + the kept graph
RESULTS = LRUCache(max_entries=32, max_bytes=256 << 20)  # runs with passes of their own, tiled CAMs
# name -> (the folder and its files' stamp when loaded, the model): a folder whose files change
# (new weights copied over the old, same name) is loaded again on its next use.
_MODELS: dict[str, tuple[tuple[Any, ...], models.LoadedModel]] = {}
_MODELS_LOCK = threading.Lock()
_LOADING: dict[str, threading.Lock] = {}  # one per model name: a load blocks only its own name
_ENTRIES: tuple[float, list[models.ModelEntry]] | None = None
ENTRIES_TTL_S = 30.0
# Every session's heavy jobs (slow methods, trust checks, tiled captures) pass this one gate.
HEAVY = JobGate(limits.HEAVY_JOBS_AT_ONCE)


def _queued(report: Any, what: str) -> Any:
    """A gate's waiting callback drawing the queue place through a progress ``report(frac, text)``."""
    return None if report is None else (lambda place: report(0.0, place.text(what)))


def get_model(name: str) -> models.LoadedModel:
    """One loaded model per name, shared by all sessions (at most MAX_MODELS); every use holds its lock.

    A load (seconds) holds only that name's loading lock: sessions using another model, or this
    one once loaded, never wait behind it (the dict's lock is held for lookups only).
    """
    stamp = _folder_version(name)
    with _MODELS_LOCK:
        if name in _MODELS and _MODELS[name][0] == stamp:
            return _MODELS[name][1]
        loading = _LOADING.setdefault(name, threading.Lock())
    with loading:
        with _MODELS_LOCK:
            if name in _MODELS and _MODELS[name][0] == stamp:  # loaded by another session while this one waited
                return _MODELS[name][1]
        loaded = models.load(name)
        with _MODELS_LOCK:
            _MODELS.pop(name, None)
            while len(_MODELS) >= MAX_MODELS:
                _MODELS.pop(next(iter(_MODELS)))
            _MODELS[name] = (stamp, loaded)
            return loaded


def _folder_version(name: str) -> tuple[Any, ...] | None:
    """The model folder's path and its files' names, sizes and times (None: not found; the load
    then says why)."""
    try:
        _, folder = models.resolve(name)
    except SegCamError:
        return None
    return (str(folder.resolve()), models.folder_stamp(folder))


def model_entries() -> list[models.ModelEntry]:
    """Built-in and models-folder models, off the request path: the first call lists them (from
    metadata: milliseconds), later calls return the latest list at once and, when it is older
    than ENTRIES_TTL_S, start one background re-scan whose result the next request sees."""
    global _ENTRIES
    with _ENTRIES_LOCK:
        entries = _ENTRIES
    if entries is None:
        return _rescan()
    if time.monotonic() - entries[0] > ENTRIES_TTL_S and _RESCAN.acquire(blocking=False):
        threading.Thread(target=_rescan, args=(True,), name="segcam-model-scan", daemon=True).start()
    return entries[1]


def _rescan(background: bool = False) -> list[models.ModelEntry]:
    global _ENTRIES
    try:
        found = models.discover()
        with _ENTRIES_LOCK:
            _ENTRIES = (time.monotonic(), found)
        return found
    except Exception:  # a background scan must never die silently; the old list stays
        log.exception("model folder scan failed")
        if not background:
            raise
        return []
    finally:
        if background:
            _RESCAN.release()


_ENTRIES_LOCK = threading.Lock()
_RESCAN = threading.Lock()  # held while a background re-scan runs: at most one at a time


def reset_model_entries() -> None:
    """Forget the scanned model list (the next call re-scans the models folder)."""
    global _ENTRIES
    with _ENTRIES_LOCK:
        _ENTRIES = None


def clear_caches() -> None:
    CAPTURES.clear()
    RESULTS.clear()
    TRUST.clear()
    QUALITY.clear()
    PLANTED.clear()


# ---------------------------------------------------------------- images


@dataclass
class ImageChoice:
    name: str
    sha: str
    image: LoadedImage
    truth: Truth | None = None  # the tile's ground truth (samples ship theirs; uploads may add one)
    mpp: float | None = None  # µm per pixel: the samples', the file's metadata or the user's value
    sample: bool = False  # a shipped sample (can travel in a link), not an upload
    slide: dict[str, Any] | None = None  # a slide region: the slide's record and the level-0 box
    origin: tuple[float, float] = (0.0, 0.0)  # level-0 position of the image's top-left pixel
    scale: float = 1.0  # level-0 pixels per image pixel
    slide_path: str | None = None  # where a slide region was read from (server side; not in any record)
    slide_mpp_override: float | None = None
    planted: dict[str, Any] | None = None  # an audit mark planted on another image: mark, seed, that image

    @property
    def large(self) -> bool:
        return limits.is_large(self.image.array.shape)


_SAMPLES: dict[str, tuple[np.ndarray, str]] = {}


def sample(name: str) -> tuple[np.ndarray, str]:
    if name not in _SAMPLES:
        data = samples.file(name).read_bytes()
        _SAMPLES[name] = (load_image(data, name=name).array, hashlib.sha256(data).hexdigest())
    return _SAMPLES[name]


_SAMPLE_TRUTH: dict[tuple[str, tuple[str, ...]], Truth | None] = {}


def sample_truth(name: str, classes: list[str]) -> Truth | None:
    """The sample's shipped mask (None when the sample has none): CoNSeP class indices, scored
    as :func:`cam_core.data.truth.for_model` decides for this model's classes."""
    key = (name, tuple(classes))
    if key not in _SAMPLE_TRUTH:
        truth = samples.truth(name, classes, sample(name)[0].shape[:2])
        _SAMPLE_TRUTH[key] = truth
    return _SAMPLE_TRUTH[key]


def sample_choice(name: str) -> ImageChoice:
    """A sample tile at the samples' resolution (the sidebar attaches its truth for the model)."""
    array, sha = sample(name)
    return ImageChoice(name, sha, LoadedImage(array), mpp=samples.MPP, sample=True)


# ---------------------------------------------------------------- captures


@dataclass
class Choices:
    image: ImageChoice
    loaded: models.LoadedModel
    class_index: int | None
    layer: str
    method: MethodInfo
    target: tg.TargetSpec
    rule: DecisionRule
    eigen_smooth: bool
    ab: tuple[str, str] | None = None  # an A/B view: what B changes and its value


def b_choices(ch: Choices, class_index: int) -> Choices:
    """The B side of an A/B view: A's choices with one thing changed (cam_core.output.figure.AB_KINDS),
    explaining A's class (``class_index``: A's resolved class; by name for another model)."""
    from cam_core.engine.methods import get_method
    from cam_core.model import layers

    assert ch.ab is not None
    what, value = ch.ab
    ch = dataclasses.replace(ch, class_index=class_index, target=ch.target.with_class(class_index))
    if what == "method":
        return dataclasses.replace(ch, method=get_method(value), ab=None)
    if what == "layer":
        return dataclasses.replace(ch, layer=value, ab=None)
    if what == "mark":
        return dataclasses.replace(ch, image=planted_choice(ch.loaded, ch.image, value, ch.rule)[0], ab=None)
    if what == "marker":
        twin = sample_choice(value)
        return dataclasses.replace(
            ch, image=dataclasses.replace(twin, truth=sample_truth(value, ch.loaded.spec.classes)), ab=None
        )
    loaded = get_model(value)  # another model: its own layer when A's is not one of its layers, its class by name
    layer = ch.layer if ch.layer in layers.spatial_layers(loaded) else layers.default_layer(loaded)
    cls = ch.class_index
    if cls is not None:
        name = ch.loaded.spec.classes[cls]
        cls = loaded.spec.classes.index(name) if name in loaded.spec.classes else None
    return dataclasses.replace(
        ch,
        loaded=loaded,
        layer=layer,
        class_index=cls,
        target=ch.target.with_class(cls),
        rule=loaded.spec.decision_rule,
        ab=None,
    )


PLANTED = LRUCache(max_entries=8, max_bytes=64 << 20)  # images with an audit mark planted (A/B "mark")


def planted_choice(
    loaded: models.LoadedModel, image: ImageChoice, mark: str, rule: DecisionRule
) -> tuple[ImageChoice, np.ndarray, np.ndarray]:
    """``image`` with an audit mark planted (cam_core.trust.audit), as the B side of an A/B view,
    the mark's footprint and the audit's control (the mask predicted by ``rule`` with the footprint
    only blurred); made once per image, model, mark and rule (the mark placed off the model's nuclei)."""
    from cam_core import engine
    from cam_core.trust import audit

    key = (image.sha, loaded.name, mark, rule.key())
    found = PLANTED.get(key)
    if found is None:
        array, foot = audit.planted(loaded, image.image.array, mark)
        info = {"mark": mark, "seed": audit.APP_SEED, "on": {"name": image.name, "sha256": image.sha}}
        found = (
            ImageChoice(
                f"{image.name} + {mark}",
                audit.planted_sha256(array),
                LoadedImage(array),
                mpp=image.mpp,
                planted=info,
            ),
            foot,
            engine.predict(loaded, audit.neutral_patch(image.image.array, foot), rule).mask,
        )
        PLANTED.put(key, found)
    return found


def layers_to_capture(loaded: models.LoadedModel, image: ImageChoice, layer: str) -> list[str]:
    """Every curated layer in one pass on a normal image; only the chosen one when tiled."""
    from cam_core.model import layers

    if image.large:
        return [layer]
    curated = layers.curated_layers(loaded)
    return curated if layer in curated else [*curated, layer]


def _pred_key(loaded: models.LoadedModel, image: ImageChoice, rule: DecisionRule) -> tuple[str, ...]:
    return ("pred", loaded.name, image.sha, rule.key())


def prediction_if_cached(loaded: models.LoadedModel, image: ImageChoice, rule: DecisionRule) -> Any:
    return CAPTURES.get(_pred_key(loaded, image, rule))


def _keep_graph_budget(loaded: models.LoadedModel) -> None:
    """Count the kept autograd graph in the capture cache's byte budget; drop it if it cannot fit."""
    from cam_core.engine.graph import drop_graph, kept

    graph = kept(loaded)
    key = ("graph", loaded.name)
    if graph is None:
        CAPTURES.release(key)
        return
    if graph.nbytes > CAPTURES.max_bytes // 2:
        log.info("kept graph of %s is %d MB, over half the cache budget: dropped", loaded.name, graph.nbytes >> 20)
        drop_graph(loaded)
        CAPTURES.release(key)
        return
    CAPTURES.reserve(key, graph.nbytes)


def get_capture(ch: Choices, layers_needed: list[str] | None = None, spinner: Any = None) -> Any:
    """The capture for (model, image, target, rule): computed once, then from the cache.

    Large images get a stitched (tiled) capture of the layers asked for; normal ones one pass
    over every curated layer with its graph kept, so another class costs one backward.
    """
    from cam_core import engine
    from cam_core.engine import tiling

    wanted = layers_needed or layers_to_capture(ch.loaded, ch.image, ch.layer)
    rule_key = ch.rule.key()
    key = ("cap", ch.loaded.name, ch.image.sha, ch.target.key(), rule_key)
    cap = CAPTURES.get(key)
    if cap is not None and all(name in cap.activations for name in wanted):
        return cap
    base_key = ("base", ch.loaded.name, ch.image.sha, rule_key)
    base = CAPTURES.get(base_key)
    check_fits(
        ch.loaded, ch.image.image.array.shape[:2], wanted, limits.REQUEST_CAPTURE_BYTES, "one request on this server"
    )
    if ch.image.large:
        with HEAVY.slot(_queued(spinner, "tiled capture")):
            t0 = time.perf_counter()
            if base is not None and all(name in base.activations for name in wanted):
                # another target: the mask and activations are the image's; only the tiles the new
                # region touches run (a click on one nucleus: one tile, not the whole image)
                with spare_cores():  # a click waits on it: the idle cores help
                    cap = tiling.recapture_tiled(ch.loaded, base, ch.image.image.array, ch.target, progress=spinner)
            else:
                cap = tiling.capture_tiled(
                    ch.loaded, ch.image.image.array, ch.target, wanted, rule=ch.rule, progress=spinner
                )
                tiling.work(ch.image.image.array.shape[:2], ch.loaded.multiple).done(
                    ch.loaded.name, time.perf_counter() - t0
                )
    elif base is not None and all(name in base.activations for name in wanted):
        cap = engine.recapture(ch.loaded, base, ch.target, ch.image.image.array)  # one backward, or a full pass
    else:
        cap = engine.capture(ch.loaded, ch.image.image.array, ch.target, wanted, rule=ch.rule, keep_graph=True)
    if not ch.image.large:
        _keep_graph_budget(ch.loaded)
    if base is None or not ch.image.large:
        CAPTURES.put(base_key, cap)
    CAPTURES.put(key, cap)
    if ch.target.class_index is None:  # remember the automatic class under its resolved key too
        resolved = ch.target.with_class(cap.target.class_index)
        CAPTURES.put(("cap", ch.loaded.name, ch.image.sha, resolved.key(), rule_key), cap)
    CAPTURES.put(_pred_key(ch.loaded, ch.image, ch.rule), cap.prediction)
    return cap


def slow_result_key(ch: Choices, info: MethodInfo, layer: str, class_index: int) -> tuple[Any, ...]:
    target = ch.target.with_class(class_index)
    return ("slow", ch.loaded.name, ch.image.sha, target.key(), ch.rule.key(), info.name, layer, ch.eigen_smooth)


def cam_for(ch: Choices, info: MethodInfo, layer: str, cap: Any) -> CamResult | None:
    """A CAM from the capture (one-pass methods) or from the slow-result cache (None: not run yet)."""
    from cam_core import engine

    if info.from_cache:
        return engine.cam_from_capture(cap, info, layer, ch.eigen_smooth)
    return RESULTS.get(slow_result_key(ch, info, layer, cap.target.class_index))


class RunClock:
    """Where a page run's seconds go, phase by phase (the server log's page-run line): what a
    slow click spent on the model, the map, drawing and sending its pictures, and the rest."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.parts: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        """The time since the last mark belongs to ``phase``."""
        now = time.perf_counter()
        self.parts[phase] = self.parts.get(phase, 0.0) + now - self.last
        self.last = now

    def line(self) -> str:
        """'1.050 s (sidebar 0.090, capture 0.540, …, rest 0.010)'."""
        self.mark("rest")
        return f"{self.last - self.start:.3f} s ({', '.join(f'{k} {v:.3f}' for k, v in self.parts.items())})"


class Eta:
    """Progress text with one time left: the estimate's until a fifth of the work is done (early
    steps are poor guides: the first batch warms caches, the last ones are smaller), then the
    measured rate's."""

    def __init__(self, label: str, estimate_s: float):
        self.label, self.estimate_s, self.started = label, estimate_s, time.perf_counter()

    def text(self, frac: float, msg: str) -> str:
        elapsed = time.perf_counter() - self.started
        left = max(self.estimate_s - elapsed, 1.0) if frac < 0.2 else elapsed / frac - elapsed
        shown = f"about {left:.0f} s left" if left >= 1 else "finishing"
        return f"{msg} · {elapsed:.0f} s elapsed, {shown} — click anywhere to cancel"


def estimate_seconds(ch: Choices, info: MethodInfo, layer: str) -> float:
    """The one estimate the app shows for a method (sidebar label, warning, progress): cam_core.cost."""
    from cam_core import engine

    return float(engine.method_work(ch.loaded, ch.image.image.array.shape, info, layer).seconds(ch.loaded.name))


def tiled_estimate(ch: Choices) -> float:
    """The one estimate of a large image's tiled capture (cam_core.cost)."""
    from cam_core.engine import tiling

    return float(tiling.work(ch.image.image.array.shape[:2], ch.loaded.multiple).seconds(ch.loaded.name))


def run_slow(ch: Choices, info: MethodInfo, layer: str, cap: Any, report: Any) -> CamResult | None:
    """Run a method with passes of its own; ``report(frac, text)`` draws progress. Cancelled → None.
    Its measured time teaches the next estimate of the method (cam_core.cost)."""
    from cam_core import engine

    target = ch.target.with_class(cap.target.class_index)
    work = engine.method_work(ch.loaded, ch.image.image.array.shape, info, layer)
    try:
        with HEAVY.slot(_queued(report, info.name)):
            eta = Eta(info.name, work.seconds(ch.loaded.name))  # the clock starts with the run, not the wait
            report(0.0, eta.text(0.0, f"{info.name}: starting"))
            res = engine.run_method(
                ch.loaded,
                ch.image.image.array,
                target,
                info,
                layer,
                eigen_smooth=ch.eigen_smooth,
                progress=lambda f, m: report(f, eta.text(f, m)),
                prediction=cap.prediction,
                rule=ch.rule,
            )
            work.done(ch.loaded.name, time.perf_counter() - eta.started)
    except Cancelled:
        return None
    RESULTS.put(slow_result_key(ch, info, layer, cap.target.class_index), res)
    return res


def record_for(
    ch: Choices,
    res: CamResult,
    cap: Any,
    threshold: dict[str, Any],
    signed_scale: float | None,
    region: np.ndarray,
    signed_scale_classes: list[str] | None = None,
    display: dict[str, Any] | None = None,
    app_link: str | None = None,
) -> dict[str, Any]:
    """The app's result.json: the same schema as the CLI's (cam_core.engine.result).

    Args:
        region: the target's boolean region (the page has built it for the outline and target line).
        display: every setting that changes the picture (``Display.model_dump()``).
        app_link: this view's address in the app.
    """
    from cam_core.engine.methods import get_method

    classes = ch.loaded.spec.classes
    target = ch.target.with_class(res.class_index)
    h, w = ch.image.image.array.shape[:2]
    checked = trust_if_cached(ch, get_method(res.method), res.layer, cap)
    truth = ch.image.truth
    return result_record(
        res,
        classes=classes,
        target_description=target.describe(classes),
        rule=cap.prediction.rule.to_json(),
        image={
            "name": ch.image.name,
            "sha256": ch.image.sha,
            "size_hw": [h, w],
            "microns_per_pixel": ch.image.mpp,
            "notes": ch.image.image.notes,
            **({"slide": ch.image.slide} if ch.image.slide else {}),
            **({"planted": ch.image.planted} if ch.image.planted else {}),
        },
        area_percent=cap.prediction.area_percent(),
        target_box=tg.box_of(region),
        target_pixels=int(region.sum()),
        target_point=list(target.point) if target.point is not None else None,
        target_written=target.written(),
        truth=None if truth is None else truth_summary(cap.prediction.mask, truth, classes, res.class_index),
        threshold=threshold,
        pass_seconds=cap.seconds,
        tiles=cap.tiles,
        trust=checked.record() if checked is not None else None,
        signed_scale=signed_scale,
        signed_scale_classes=signed_scale_classes,
        display=display,
        model_sha256=ch.loaded.weights_sha256,
        app_link=app_link,
    )


QUALITY = LRUCache(max_entries=64, max_bytes=1 << 20)  # input-quality notes per image and model (text)


def quality_notes(ch: Choices) -> list[str]:
    """The tile's input-quality notes (stain against the model's training range, ink, border),
    computed once per image and model (cam_core.data.quality)."""
    from cam_core.data import quality

    key = (ch.image.sha, ch.loaded.name)
    notes = QUALITY.get(key)
    if notes is None:
        notes = quality.notes(ch.image.image.array, quality.stain_range_for(ch.loaded.path))
        QUALITY.put(key, notes)
    return notes


def describe_error(exc: BaseException) -> str:
    """Known errors as they are; anything else logged with its stack under an id and shown by
    its kind and that id only: an unexpected error's text can hold server paths and internals."""
    if isinstance(exc, SegCamError):
        return str(exc)
    import uuid

    error_id = uuid.uuid4().hex[:8]
    log.error("unexpected error %s", error_id, exc_info=exc)
    return (
        f"Something went wrong ({type(exc).__name__}, error id {error_id}; the server's log has the details). "
        "The app is still running; try another setting."
    )


def provenance_line(res: CamResult, pass_seconds: float, image_name: str, classes: list[str]) -> str:
    """What produced the picture: method, layer, class and target, model, image, device, time."""
    from .text import code, plain

    cls = classes[res.class_index]
    target = tg.describe(res.target, cls)
    # class names come from a model's segcam.json and image names from an upload: text, not markdown
    return (
        f"**{res.method}** on {code(res.layer)} · class **{plain(cls)}** ({plain(target)}) · "
        f"model {code(res.model)} · image {code(image_name)} · {res.device} · pass {pass_seconds:.2f} s, "
        f"CAM {res.cost()}"
    )


def warm_up(sample_name: str) -> None:
    """Load the default model and explain a sample with the default settings, filling the caches
    a first session reads (called by the launcher in a background thread)."""
    from cam_core import engine
    from cam_core.engine import methods
    from cam_core.model import layers

    t0 = time.perf_counter()
    loaded = get_model(models.default_model_name())
    image = sample_choice(sample_name)
    layer = layers.default_layer(loaded)
    ch = Choices(
        image,
        loaded,
        None,
        layer,
        methods.METHODS[methods.DEFAULT_METHOD.lower()],
        tg.TargetSpec("predicted", None),
        loaded.spec.decision_rule,
        False,
    )
    cap = get_capture(ch)
    cam_for(ch, ch.method, layer, cap)
    # a second, warm forward: the first of a process is cold, and estimates start from this rate;
    # grad-cam is imported now (seconds), not by the first session's first slow method
    engine.capture(loaded, image.image.array, tg.TargetSpec("predicted", None), [layer])
    import pytorch_grad_cam  # noqa: F401

    model_entries()
    # What is alive now (torch, Streamlit, the model: ~570k objects) lives as long as the server:
    # moved out of the collector's view, a full collection takes ~0 s instead of 0.35 s here, and
    # Streamlit runs one after every script run (runner.postScriptGC) — 0.35 s on each click and
    # slider move. Garbage of these objects is still freed by reference counting.
    gc.freeze()
    log.info("warm-up done in %.1f s (model, layers, first capture)", time.perf_counter() - t0)


# ---------------------------------------------------------------- raw signed view


def view_scale(ch: Choices, values: str, cap: Any, res: CamResult) -> tuple[float | None, list[str]]:
    """The ± scale of a signed values view and the classes that set it (None for the min-max view):
    shared over the image's classes, or the map's own (``render.SIGNED_SCALES``)."""
    how = render.SIGNED_SCALES.get(values)
    if how is None:
        return None, []
    if how == "own":
        return float(render.signed_scale([res.cam_raw])), [ch.loaded.spec.classes[res.class_index]]
    return signed_scale(ch, ch.method, ch.layer, cap, res)


def signed_scale(ch: Choices, info: MethodInfo, layer: str, cap: Any, res: CamResult) -> tuple[float, list[str]]:
    """One symmetric scale for the raw map of every class of this image (same method, layer, target
    kind and rule), so magnitudes compare across classes; each other class costs one backward
    (cached). Methods with passes of their own use the classes already run.

    Returns:
        The scale and the classes it covers.
    """

    from cam_core.errors import EmptyTargetError

    classes = ch.loaded.spec.classes
    raws, covered = [res.cam_raw], [classes[res.class_index]]
    for c in range(1, len(classes)):
        if c == res.class_index:
            continue
        other = dataclasses.replace(ch, class_index=c, target=ch.target.with_class(c))
        try:
            if info.from_cache:
                r = cam_for(other, info, layer, get_capture(other))
            else:
                r = RESULTS.get(slow_result_key(other, info, layer, c))
        except EmptyTargetError:  # predicted nowhere: no region for this class
            continue
        if r is not None:
            raws.append(r.cam_raw)
            covered.append(classes[c])
    return render.signed_scale(raws), covered


# ---------------------------------------------------------------- trust


TRUST = LRUCache(max_entries=256, max_bytes=64 << 20)  # trust reports and reference curves (small)


def _trust_base(ch: Choices, cap: Any) -> tuple[Any, ...]:
    target = ch.target.with_class(cap.target.class_index)
    return (ch.loaded.name, ch.image.sha, target.key(), ch.rule.key())


def _trust_key(ch: Choices, info: MethodInfo, layer: str, cap: Any) -> tuple[Any, ...]:
    return ("report", *_trust_base(ch, cap), info.name, layer, ch.eigen_smooth)


def trust_if_cached(ch: Choices, info: MethodInfo, layer: str, cap: Any) -> Any:
    """The trust report of this map, if it was checked already."""
    return TRUST.get(_trust_key(ch, info, layer, cap))


def stain_evidence(ch: Choices, cap: Any, run: bool) -> Any:
    """How much of the target's evidence is haematoxylin vs eosin (one per image, target and rule,
    whatever the method): from the cache, or computed when ``run`` (the check's own run: a few
    seconds, never on a plain re-run)."""
    from cam_core.trust.stain_evidence import stain_evidence as measure

    target = ch.target.with_class(cap.target.class_index)
    return _cached_check(
        ("stain", *_trust_base(ch, cap)),
        run,
        lambda: measure(ch.loaded, ch.image.image.array, target, ch.rule, prediction=cap.prediction),
    )


def restain_rows(ch: Choices, cap: Any, cam: Any, run: bool) -> Any:
    """The current map under the Tellez re-stainings, next to the prediction's Dice (one-pass
    methods; per map): from the cache, or computed when ``run`` (the check's own run)."""
    from cam_core.trust.stain_evidence import restain_stability

    if not ch.method.from_cache:
        return None
    target = ch.target.with_class(cap.target.class_index)
    return _cached_check(
        ("restain", *_trust_key(ch, ch.method, ch.layer, cap)),
        run,
        lambda: restain_stability(
            ch.loaded, ch.image.image.array, target, ch.method, ch.layer, cam, ch.rule, prediction=cap.prediction
        ),
    )


def _cached_check(key: tuple[Any, ...], run: bool, measure: Callable[[], Any]) -> Any:
    """A check's result from the trust cache, or measured in a heavy slot when ``run`` (the
    check's own run: never on a plain re-run); None when neither."""
    found = TRUST.get(key)
    if found is None and run:
        with HEAVY.slot(None):
            found = measure()
        TRUST.put(key, found)
    return found


def trust_work(ch: Choices, cells: list[tuple[MethodInfo, str]], cap: Any) -> Any:
    """The work of checking these maps (cam_core.trust.work): its references already computed for
    this image are not counted again."""
    from cam_core import trust

    refs = TRUST.get(("refs", *_trust_base(ch, cap))) or {}
    cascade = all(info.from_cache for info, _ in cells)
    pixels = models.padded_pixels(ch.image.image.array.shape, ch.loaded.multiple)
    return trust.work(ch.loaded.model, [la for _, la in cells], len(cells), refs, cascade, pixels)


def trust_estimate(ch: Choices, cells: list[tuple[MethodInfo, str]], cap: Any) -> float:
    """The one estimate of a trust check (Explore's button, Compare's batch): cam_core.cost."""
    return float(trust_work(ch, cells, cap).seconds(ch.loaded.name))


def run_trust(ch: Choices, cells: list[tuple[MethodInfo, str]], cap: Any, cams: dict, report: Any) -> list[Any]:
    """Faithfulness and sanity of these (method, layer) maps; ``report(frac, text)`` draws progress.

    Reference curves (RandomCAM at each layer, the target mask) are kept per image, target and
    rule, so checking a second method at the same layer costs only its own forwards.
    """
    from cam_core import trust

    base = _trust_base(ch, cap)
    refs = TRUST.get(("refs", *base)) or {}
    layers_ = list(dict.fromkeys(la for _, la in cells))
    infos = list(dict.fromkeys(info for info, _ in cells))
    work = trust_work(ch, cells, cap)
    with HEAVY.slot(_queued(report, "trust check")):
        eta = Eta("trust", work.seconds(ch.loaded.name))  # measured from the start of the run, not of the wait
        reports = trust.trust(
            ch.loaded,
            ch.image.image.array,
            ch.target.with_class(cap.target.class_index),
            layers_,
            infos,
            cap=cap,
            cams=cams,
            cascade=all(i.from_cache for i in infos),
            eigen_smooth=ch.eigen_smooth,
            progress=lambda f, m: report(f, eta.text(f, m)),
            references=refs,
            truth=ch.image.truth,
        )
        work.done(ch.loaded.name, time.perf_counter() - eta.started)
    TRUST.put(("refs", *base), refs)
    by_key = {(r.method, r.layer): r for r in reports}
    for info, layer in cells:
        TRUST.put(_trust_key(ch, info, layer, cap), by_key[(info.name, layer)])
    return [by_key[(info.name, layer)] for info, layer in cells]


# ---------------------------------------------------------------- slides

SLIDE_THUMBS = LRUCache(max_entries=8, max_bytes=64 << 20)


def slide_overview(path: str, mpp_override: float | None) -> tuple[Any, np.ndarray, np.ndarray]:
    """A slide's info, thumbnail and tissue mask (cached by path, modification time and resolution)."""
    from pathlib import Path

    from cam_core.wsi import slides

    p = Path(path)
    key = (str(p), p.stat().st_mtime_ns, mpp_override)
    hit = SLIDE_THUMBS.get(key)
    if hit is None:
        with slides.Slide(p, mpp_override) as slide:
            thumb = slide.thumbnail()
            hit = (slide.info, thumb, slides.tissue_mask(thumb))
        SLIDE_THUMBS.put(key, hit)
    return hit


def slide_view(path: str, mpp_override: float | None, box: tuple[int, int, int, int], side: int = 1024) -> np.ndarray:
    """A level-0 box of a slide as a picture about ``side`` pixels wide (from the nearest level)."""
    from cam_core.wsi import slides

    key = ("view", path, mpp_override, box, side)
    hit = SLIDE_THUMBS.get(key)
    if hit is None:
        with slides.Slide(path, mpp_override) as slide:
            hit = slide.overview(box, side)
        SLIDE_THUMBS.put(key, hit)
    return hit


def slide_region_choice(
    path: str, mpp_override: float | None, box: tuple[int, int, int, int], model_mpp: float
) -> ImageChoice:
    """A region of a slide, read at the model's resolution, as an image the pages explain."""
    from cam_core.wsi import slides

    x, y, w, h = box
    with slides.Slide(path, mpp_override) as slide:
        array = slide.read_region(x, y, w, h, model_mpp)
        info = slide.info
    notes = [slides.region_note((x, y, w, h), info.name, model_mpp), *info.notes]
    # The pixels read are the region's identity: the same box read at another slide resolution
    # (a typed µm/px) or for another model's µm/px is another image, with its own captures.
    sha = hashlib.sha256(f"{array.shape}".encode() + np.ascontiguousarray(array).tobytes()).hexdigest()
    return ImageChoice(
        f"{info.name} ({x},{y}) {w}×{h}",
        sha,
        LoadedImage(array, notes, "RGB", model_mpp),
        mpp=model_mpp,
        slide={**info.record(), "region_level0_xywh": [x, y, w, h]},
        origin=(float(x), float(y)),
        scale=w / array.shape[1],
        slide_path=str(path),
        slide_mpp_override=mpp_override,
    )
