"""How alike two maps are: Spearman's rank correlation and SSIM (scikit-image's), as the sanity
check compares a trained and a randomised model's maps."""

from __future__ import annotations

from typing import Any

import numpy as np

# One place for every constant of the checks.


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two maps (average ranks for ties).

    Two constant maps that are equal count as identical (1.0: nothing changed). A constant map
    against a varying one has no rank correlation: NaN, never 0.0 — a randomised model whose map
    collapses to zero after ReLU did change the map, but says nothing about what the weights
    contributed (the sanity check reports it as degenerate, not as a pass).
    """
    from scipy.stats import rankdata

    ra, rb = rankdata(a.ravel()), rankdata(b.ravel())
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if ra.std() == rb.std() == 0 and np.allclose(a, b) else float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def rho_text(rho: float) -> str:
    """A ρ as the app writes it: "constant" where there is none (NaN: a constant map)."""
    return "constant" if np.isnan(rho) else f"{rho:+.2f}"


def constant(m: np.ndarray) -> bool:
    """A map with one value everywhere (e.g. all zero after ReLU): it ranks no pixel above another."""
    return bool(np.ptp(m) == 0)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two maps scaled to [0, 1]: scikit-image's, with Wang et al.'s
    Gaussian window (σ = 1.5, population covariance); a map smaller than that window (11 px) is
    compared with the largest odd uniform window that fits."""
    from skimage.metrics import structural_similarity

    def unit(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        span = m.max() - m.min()
        return (m - m.min()) / span if span > 0 else np.zeros_like(m)

    if constant(a) != constant(b):  # a collapsed map has no structure to compare
        return float("nan")
    a, b = unit(a), unit(b)
    if min(a.shape) >= 11:
        kw: dict[str, Any] = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    else:
        kw = {"win_size": max(1, min(a.shape) - (1 - min(a.shape) % 2)), "use_sample_covariance": False}
    return float(structural_similarity(a, b, data_range=1.0, **kw))
