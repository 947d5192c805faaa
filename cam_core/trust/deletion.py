"""Faithfulness: deletion and insertion curves of a map against random maps and the target mask
(see :mod:`cam_core.trust.checks` for the protocol and why grad-cam's own metrics are not used)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from cam_core.engine import cammath
from cam_core.engine import targets as tg
from cam_core.engine.capturing import (
    Prediction,
    Progress,
    forward,
    prepare,
    probabilities,
    target_region,
)
from cam_core.engine.graph import passes as passes_of
from cam_core.engine.passes import default_batch_size
from cam_core.errors import InputError
from cam_core.limits import LARGE_SIDE, is_large
from cam_core.model.models import LoadedModel
from cam_core.model.state import preserved_state
from cam_core.trust.protocol import BLUR_SIGMA, FAITHFULNESS_STEPS, MARGIN, MAX_BATCH, RANDOM_SEEDS

log = logging.getLogger("cam_core.engine")  # every model pass is logged there
# One place for every constant of the checks.


@dataclass
class Faithfulness:
    """Deletion and insertion curves of one map and the single number from them."""

    fractions: list[float]
    deletion: list[float]  # target score after removing the top fraction of pixels
    insertion: list[float]  # target score after revealing the top fraction on the blurred copy

    @property
    def deletion_auc(self) -> float:
        return float(np.trapezoid(self.deletion, self.fractions))

    @property
    def insertion_auc(self) -> float:
        return float(np.trapezoid(self.insertion, self.fractions))

    @property
    def score(self) -> float:
        """Insertion AUC − deletion AUC: −1..1, 0 for a map that ranks pixels no better than chance."""
        return self.insertion_auc - self.deletion_auc


def forwards(maps: int, steps: int = FAITHFULNESS_STEPS) -> int:
    """Model forwards that :func:`faithfulness` runs for this many maps (for estimates)."""
    return 2 + 2 * (steps - 1) * maps


def rank_pixels(cam: np.ndarray, seed: int = 0) -> np.ndarray:
    """Pixel indices from most to least important, ties broken at random (not by position).

    The tie-breaking draw is seeded by ``seed`` and the map itself, so a map ranks the same in
    any company (one generator shared by the maps of a call made a map's score depend on which
    other maps were scored with it: +0.0106 alone, +0.0098 beside another).
    """
    flat = np.asarray(cam, dtype=np.float64).ravel()
    digest = hashlib.sha256(np.ascontiguousarray(cam, dtype=np.float32).tobytes()).digest()
    rng = np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])
    return np.lexsort((rng.random(flat.size), -flat))


def blurred(image: np.ndarray) -> np.ndarray:
    """The reference the perturbations move towards: the image without its structure."""
    return np.asarray(cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA), dtype=image.dtype)


def _class_score(loaded: LoadedModel, logits: torch.Tensor, cls: int, region: torch.Tensor) -> torch.Tensor:
    """Mean probability of the class over the region, one number per image in the batch."""
    h, w = region.shape
    probs = probabilities(logits, loaded.spec.binary)[:, cls, :h, :w]
    return (probs * region).sum(dim=(1, 2)) / region.sum()


def _batched_scores(
    loaded: LoadedModel,
    inputs: Iterator[torch.Tensor],
    total: int,
    cls: int,
    region: torch.Tensor,
    progress: Progress | None,
    label: str,
) -> list[float]:
    """Target scores of a stream of input batches; the model's lock is held one batch at a time."""
    scores: list[float] = []
    for xb in inputs:
        with loaded.lock, preserved_state(loaded.model), torch.no_grad():
            loaded.model.eval()
            logits = forward(loaded.model, xb)
            passes_of(loaded)["forward"] += xb.shape[0]
            log.info("model pass: forward ×%d (trust) %s %s", xb.shape[0], loaded.name, tuple(xb.shape[1:]))
        scores.extend(_class_score(loaded, logits.float(), cls, region).cpu().tolist())
        if progress is not None:
            done = len(scores)  # the time left is the caller's to say, once (the app's Eta, tqdm's line)
            progress(done / total, f"{label}: {done}/{total} perturbed images")
    return scores


def faithfulness(
    loaded: LoadedModel,
    image: np.ndarray,
    target: tg.TargetSpec,
    prediction: Prediction,
    maps: dict[str, np.ndarray],
    *,
    steps: int = FAITHFULNESS_STEPS,
    seed: int = 0,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Faithfulness]:
    """Deletion/insertion faithfulness of several maps of one target, batched through the model.

    Args:
        target: the target the maps explain (class resolved or automatic); its region is built on
            ``prediction``'s mask, as for the CAM itself.
        maps: name → H×W map (any scale; only the order of the pixels matters).
        progress: called with (fraction, text); may raise :class:`Cancelled`.

    Returns:
        name → curves; 2 + 2·(steps − 1) model forwards per map plus 2 shared.
    """
    if is_large(image.shape[:2]):
        raise InputError(
            "faithfulness runs dozens of forwards of the whole image; explain a region of at most "
            f"{LARGE_SIDE}×{LARGE_SIDE} pixels (crop the image or use a rectangle target on a crop)"
        )
    target, reg = target_region(loaded, target, prediction)
    assert target.class_index is not None
    h, w = image.shape[:2]
    for name, m in maps.items():
        if m.shape != (h, w):
            raise InputError(f"map {name!r} is {m.shape[1]}×{m.shape[0]}; the image is {w}×{h}")
    x_orig, _ = prepare(loaded, image)
    x_blur, _ = prepare(loaded, blurred(image))
    region = torch.from_numpy(reg).to(loaded.device)
    fractions = [i / steps for i in range(steps + 1)]
    counts = [round(f * h * w) for f in fractions]
    orders = {name: rank_pixels(m, seed) for name, m in maps.items()}
    # Every (map, kind, step) with 0 < step < steps; the two ends are the same for every map.
    jobs = [(name, kind, i) for name in maps for kind in ("deletion", "insertion") for i in range(1, steps)]
    bs = min(MAX_BATCH, batch_size or default_batch_size(loaded.device, int(x_orig.shape[-1] * x_orig.shape[-2])))

    def batches() -> Iterator[torch.Tensor]:
        yield torch.cat([x_orig, x_blur])
        for start in range(0, len(jobs), bs):
            chunk = []
            for name, kind, i in jobs[start : start + bs]:
                sel = np.zeros(h * w, dtype=bool)
                sel[orders[name][: counts[i]]] = True
                top = torch.zeros(x_orig.shape[-2:], dtype=torch.bool)
                top[:h, :w] = torch.from_numpy(sel.reshape(h, w))
                top = top.to(loaded.device)
                # deletion: the top pixels come from the blurred copy; insertion: only they are real
                chunk.append(
                    torch.where(top, x_blur, x_orig) if kind == "deletion" else torch.where(top, x_orig, x_blur)
                )
            yield torch.cat(chunk)

    scores = _batched_scores(loaded, batches(), 2 + len(jobs), target.class_index, region, progress, "faithfulness")
    s_orig, s_blur = scores[0], scores[1]
    by_job = dict(zip(jobs, scores[2:]))
    out = {}
    for name in maps:
        deletion = [s_orig] + [by_job[(name, "deletion", i)] for i in range(1, steps)] + [s_blur]
        insertion = [s_blur] + [by_job[(name, "insertion", i)] for i in range(1, steps)] + [s_orig]
        out[name] = Faithfulness(fractions, deletion, insertion)
    return out


def random_maps(
    activations: np.ndarray, size_hw: tuple[int, int], padded_hw: tuple[int, int], seeds: int = RANDOM_SEEDS
) -> list[np.ndarray]:
    """grad-cam's ``RandomCAM`` (random channel weights in [−1, 1)) on a captured layer.

    Seeded by the activations themselves: reproducible for an image and layer, and independent
    draws from one image to the next, so a report over many tiles does not inherit one unlucky draw.
    """
    h, w = size_hw
    digest = int.from_bytes(hashlib.sha256(np.ascontiguousarray(activations, dtype=np.float32).tobytes()).digest()[:8])
    out = []
    for seed in range(seeds):
        weights = np.random.default_rng([digest, seed]).uniform(-1, 1, size=activations.shape[:2])
        raw = cammath.weighted(weights, activations, False)
        out.append(cammath.visible(cammath.normalise(raw, (padded_hw[1], padded_hw[0]))[0], (h, w)))
    return out


@dataclass
class FaithfulnessVerdict:
    """A map's faithfulness next to its two references."""

    score: float
    random: float  # mean over RandomCAM seeds at the same layer
    random_sd: float
    target_map: float  # the target region used as a map
    curves: Faithfulness | None = None

    @property
    def above_random(self) -> float:
        return self.score - self.random

    @property
    def beats_random(self) -> bool:
        """Above the random maps' mean by more than their spread (random maps vary a lot)."""
        return self.score > self.random + max(MARGIN, self.random_sd)

    @property
    def beats_target(self) -> bool:
        return self.score > self.target_map + MARGIN

    def describe(self) -> str:
        """The verdict in words (Markdown), as the app shows it."""

        def beats(yes: bool) -> str:
            return "beats" if yes else "does **not** beat"

        return (
            f"**Faithfulness** {self.score:+.3f} — {beats(self.beats_random)} random maps "
            f"({self.random:+.3f} ± {self.random_sd:.3f}) and {beats(self.beats_target)} the target mask used "
            f"as a map ({self.target_map:+.3f})."
        )
