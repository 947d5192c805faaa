"""H&E stain-space colour perturbation (Tellez et al. 2019).

Used twice, deliberately with the same code: as training augmentation for the built-in model,
and by ``python -m cam_core evaluate --restain`` to measure how a model copes with tiles
stained differently from its training data.

The colour deconvolution matrix is Ruifrok & Johnston's, as in ``skimage.color.rgb2hed``;
it is inlined so the core does not need scikit-image.
"""

from __future__ import annotations

import numpy as np

# Rows: haematoxylin, eosin, DAB optical-density vectors (Ruifrok & Johnston 2001).
RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]],
    dtype=np.float64,
)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)

# Half-widths of the uniform ranges of Tellez et al. 2019 (Med. Image Anal. 58, 101544):
# alpha ~ U(1 - s, 1 + s) scales each stain, beta ~ U(-s, s) shifts it.
TELLEZ_SETTINGS: dict[str, float] = {"hed-light": 0.05, "hed-strong": 0.2}


def rgb_to_hed(rgb: np.ndarray) -> np.ndarray:
    """Stain concentrations (optical density, natural log) of an RGB image in [0, 1].

    Two deliberate differences from ``skimage.color.rgb2hed``: the values are not divided by
    ln(1e-6) ≈ −13.8, so a CoNSeP haematoxylin channel spans about 0–1.4 and Tellez's β of
    ±0.05 / ±0.2 gives the mild / strong re-staining the paper shows (on skimage's scale,
    ±0.2 turns a tile black or white); and negative concentrations are kept, so the round
    trip is exact (clipping them shifts 13 % of a tile's pixels by up to 30 levels).
    """
    rgb = np.maximum(rgb.astype(np.float64), 1e-6)
    return -np.log(rgb) @ HED_FROM_RGB


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hed`, clipped to [0, 1]."""
    return np.clip(np.exp(-(hed @ RGB_FROM_HED)), 0.0, 1.0)


def hed_jitter(image: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Scale and shift each stain channel of a uint8 RGB image.

    Args:
        image: H×W×3 uint8 RGB.
        alpha: three multiplicative factors (H, E, D).
        beta: three additive shifts (H, E, D).

    Returns:
        The re-stained image, H×W×3 uint8.
    """
    hed = rgb_to_hed(image / 255.0)
    hed = hed * np.asarray(alpha)[None, None, :] + np.asarray(beta)[None, None, :]
    return (hed_to_rgb(hed) * 255.0 + 0.5).astype(np.uint8)


def sample_jitter(rng: np.random.Generator, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw (alpha, beta) for one image with the Tellez parameterisation."""
    alpha = rng.uniform(1.0 - sigma, 1.0 + sigma, size=3)
    beta = rng.uniform(-sigma, sigma, size=3)
    return alpha, beta


def restain(image: np.ndarray, setting: str, rng: np.random.Generator) -> np.ndarray:
    """Re-stain one image with a named Tellez setting (``hed-light`` or ``hed-strong``).

    Raises:
        KeyError: the setting is unknown; the message lists the valid ones.
    """
    if setting not in TELLEZ_SETTINGS:
        raise KeyError(f"unknown stain setting {setting!r}; valid settings: {', '.join(TELLEZ_SETTINGS)}")
    alpha, beta = sample_jitter(rng, TELLEZ_SETTINGS[setting])
    return hed_jitter(image, alpha, beta)
