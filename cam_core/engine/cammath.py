"""CAM math on captured arrays: grad-cam's formulas, re-stated in numpy so the fast path needs
no grad-cam import (1.1–1.4 s of a cold start here), and pinned to grad-cam's own output by
``tests/test_engine_equivalence.py`` (every method, several layers, with and without
``eigen_smooth``).

Each function takes activations and gradients of one layer (1×C×h×w float32, as grad-cam's
hooks give them) and returns the un-normalised map (1×h×w). Expressions keep grad-cam's order
of operations, so float32 rounding matches too. Eigen projections use a thin SVD: grad-cam's
``np.linalg.svd(full_matrices=True)`` allocates an (h·w)² matrix it never uses (512 GiB at
512²); the first right singular vector is the same either way.
"""

from __future__ import annotations

import cv2
import numpy as np


def first_component(batch: np.ndarray, sign_correction: bool = False) -> np.ndarray:
    """grad-cam's ``get_2d_projection`` (and the sign-corrected variant) with a thin SVD."""
    batch = batch.copy()
    batch[np.isnan(batch)] = 0
    out = []
    for act in batch:
        flat = act.reshape(act.shape[0], -1).transpose()
        flat = flat - flat.mean(axis=0)
        _, _, vt = np.linalg.svd(flat, full_matrices=False)
        proj = (flat @ vt[0, :]).reshape(act.shape[1:])
        if sign_correction and abs(proj.min()) > abs(proj.max()):
            proj = -proj
        out.append(proj)
    return np.asarray(out, dtype=np.float32)


def weighted(weights: np.ndarray, acts: np.ndarray, eigen_smooth: bool) -> np.ndarray:
    """``BaseCAM.get_cam_image``: channel weights times activations, summed or projected."""
    w = weights[:, :, None, None] * acts
    return first_component(w) if eigen_smooth else w.sum(axis=1)


def elementwise(products: np.ndarray, eigen_smooth: bool) -> np.ndarray:
    """Per-pixel products (HiResCAM, LayerCAM...), summed over channels or projected."""
    return first_component(products) if eigen_smooth else products.sum(axis=1)


def gradcam(acts: np.ndarray, grads: np.ndarray, eigen_smooth: bool) -> np.ndarray:
    return weighted(np.mean(grads, axis=(2, 3)), acts, eigen_smooth)


def hirescam(acts: np.ndarray, grads: np.ndarray, eigen_smooth: bool) -> np.ndarray:
    return elementwise(grads * acts, eigen_smooth)


def gradcam_elementwise(acts: np.ndarray, grads: np.ndarray, eigen_smooth: bool) -> np.ndarray:
    return elementwise(np.maximum(grads * acts, 0), eigen_smooth)


def gradcam_plusplus(acts: np.ndarray, grads: np.ndarray, eigen_smooth: bool) -> np.ndarray:
    grads_power_2 = grads**2
    grads_power_3 = grads_power_2 * grads
    sum_activations = np.sum(acts, axis=(2, 3))[:, :, None, None]
    aij = grads_power_2 / (2 * grads_power_2 + sum_activations * grads_power_3 + 0.000001)
    aij = np.where(grads != 0, aij, 0)
    weights = np.sum(np.maximum(grads, 0) * aij, axis=(2, 3))
    return weighted(weights, acts, eigen_smooth)


def xgradcam(acts: np.ndarray, grads: np.ndarray, eigen_smooth: bool) -> np.ndarray:
    sum_activations = np.sum(acts, axis=(2, 3))[:, :, None, None]
    weights = (grads * acts / (sum_activations + 1e-7)).sum(axis=(2, 3))
    return weighted(weights, acts, eigen_smooth)


def layercam(acts: np.ndarray, grads: np.ndarray, eigen_smooth: bool) -> np.ndarray:
    return elementwise(np.maximum(grads, 0) * acts, eigen_smooth)


def eigencam(acts: np.ndarray, grads: np.ndarray, eigen_smooth: bool) -> np.ndarray:
    return first_component(acts)


def eigengradcam(acts: np.ndarray, grads: np.ndarray, eigen_smooth: bool) -> np.ndarray:
    return first_component(grads * acts)


def segeigencam(acts: np.ndarray, grads: np.ndarray, eigen_smooth: bool) -> np.ndarray:
    return first_component(np.abs(grads) * acts, sign_correction=True)


def fem(acts: np.ndarray, grads: np.ndarray, eigen_smooth: bool, k: int = 2) -> np.ndarray:
    means = np.mean(acts, axis=(2, 3))
    stds = np.std(acts, axis=(2, 3))
    th = (means + k * stds).reshape((*means.shape, 1, 1))
    weights = (acts > th).mean(axis=(2, 3))
    return (weights.reshape((*means.shape, 1, 1)) * acts).sum(axis=1)


def kpca_cam(acts: np.ndarray, grads: np.ndarray, eigen_smooth: bool) -> np.ndarray:
    """grad-cam's own kernel-PCA projection (sigmoid kernel); imported only when used."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

    return get_2d_projection_kernel(acts, "sigmoid", None)


def random_seed(acts: np.ndarray) -> int:
    """RandomCAM's seed: a digest of the activations, so a map is reproducible for an image and
    layer and never depends on (or moves) numpy's global generator, which other code shares."""
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(acts, dtype=np.float32).tobytes()).digest()
    return int.from_bytes(digest[:4], "little")


def randomcam(acts: np.ndarray, grads: np.ndarray, eigen_smooth: bool) -> np.ndarray:
    """Random channel weights in [-1, 1), grad-cam's draw (``np.random.uniform``) from a
    generator of its own: equal to grad-cam's output after ``np.random.seed(random_seed(acts))``."""
    weights = np.random.RandomState(random_seed(acts)).uniform(-1, 1, size=(grads.shape[0], grads.shape[1]))
    return weighted(weights, acts, eigen_smooth)


def scale(cam: np.ndarray, size_wh: tuple[int, int] | None = None) -> np.ndarray:
    """grad-cam's ``scale_cam_image``: min-max each map to [0, 1], then resize (bilinear).

    The same numbers with one new array instead of two: an image-sized map (16 MB at 2000²) is
    scaled three times per view."""
    result = []
    for img in cam:
        low = np.min(img)
        img = img / (1e-7 + np.max(img)) if low == 0 else np.subtract(img, low)  # x - 0 is x
        if low != 0:
            np.divide(img, 1e-7 + np.max(img), out=img)
        if size_wh is not None:
            img = cv2.resize(np.asarray(img, dtype=np.float32), size_wh)
        result.append(img)
    if len(result) == 1 and result[0].dtype == np.float32:
        return result[0][None]  # np.asarray would copy the one map again
    return np.asarray(result, dtype=np.float32)


def normalise(raw: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """grad-cam's output for one layer: ReLU, min-max + resize, then ``aggregate_multi_layers``
    (ReLU, mean over the one layer, min-max again — the second normalisation is grad-cam's, kept
    so our numbers equal its numbers)."""
    scaled = scale(np.maximum(raw, 0), size_wh)
    # grad-cam's np.mean(np.maximum(scaled[:, None], 0), axis=1) is the identity here (one layer;
    # a min-max map resized bilinearly is ≥ 0): skipped, 2 × 16 MB less at 2000²
    return scale(scaled)


def visible(cam: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A normalised map of the padded input, cropped to the image and min-max normalised again
    over the image alone (the reflect padding must not set the colour bar's 0 or 1: EigenCAM on
    a 200×140 crop peaked at 0.848 on the visible pixels otherwise).

    Min-max is affine, so this equals grad-cam's own output cropped and normalised the same way.
    """
    h, w = hw
    return scale(np.asarray(cam, dtype=np.float32)[None, :h, :w])[0]


def raw_full(raw: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """The un-normalised map resized to the (padded) input, for ``cam_raw.npy``."""
    return np.asarray(cv2.resize(np.asarray(raw[0], dtype=np.float32), size_wh, interpolation=cv2.INTER_LINEAR))
