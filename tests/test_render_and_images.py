"""Pictures and image decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cam_core.data.images import load_image
from cam_core.errors import InputError, UnknownNameError
from cam_core.output import render


def ramp(h=64, w=64):
    return np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1))


def test_heatmap_uses_colormap_ends():
    from matplotlib import colormaps

    heat = render.heatmap(ramp(), "viridis")
    lo = (np.array(colormaps["viridis"](0.0)[:3]) * 255).round()
    hi = (np.array(colormaps["viridis"](1.0)[:3]) * 255).round()
    assert np.abs(heat[0, 0] - lo).max() <= 1
    assert np.abs(heat[0, -1] - hi).max() <= 1
    with pytest.raises(UnknownNameError, match="valid colormaps: viridis"):
        render.heatmap(ramp(), "rainbowish")


def test_overlay_opacity_extremes():
    img = np.full((64, 64, 3), 200, np.uint8)
    cam = ramp()
    assert np.array_equal(render.overlay(img, cam, 0.0), img)
    assert np.array_equal(render.overlay(img, cam, 1.0), render.heatmap(cam))
    half = render.overlay(img, cam, 0.5).astype(int)
    expect = (img.astype(int) + render.heatmap(cam).astype(int)) / 2
    assert np.abs(half - expect).max() <= 1
    with pytest.raises(InputError, match="opacity"):
        render.overlay(img, cam, 1.5)


def test_threshold_modes():
    cam = ramp()
    assert render.threshold_level(cam, "none") is None
    assert render.threshold_level(cam, "absolute", 0.3) == 0.3
    assert abs(render.threshold_level(cam, "percentile", 90) - 0.9) < 0.02
    bimodal = np.concatenate([np.full(1000, 0.2), np.full(1000, 0.8)]).astype(np.float32)
    assert 0.2 < render.otsu(bimodal) <= 0.8
    masked = render.overlay(np.zeros((64, 64, 3), np.uint8), cam, 1.0, level=0.5, show="mask")
    assert masked[:, :30].max() == 0  # below the level: tissue only
    assert masked[:, 40:].max() > 0
    contoured = render.overlay(np.zeros((64, 64, 3), np.uint8), cam, 0.0, level=0.5, show="contour")
    assert (contoured == 255).all(axis=2).sum() == 64  # one-pixel vertical line


def test_mask_colors_and_legend():
    mask = np.array([[0, 1], [2, 1]], np.uint8)
    rgb = render.colorize_mask(mask, ["#000000", "#FF0000", "#00FF00"])
    assert rgb[0, 1].tolist() == [255, 0, 0]
    assert rgb[1, 0].tolist() == [0, 255, 0]
    leg = render.legend(["a", "b"], ["#000000", "#FF0000"])
    assert leg.ndim == 3
    assert (leg == [255, 0, 0]).all(axis=2).any()
    assert render.colorbar().shape[1] > 256


def _png(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_images_conversions(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255
    out = load_image(_png(rgba))
    assert out.array[0, 0].tolist() == [255, 255, 255]  # transparent → white
    assert any("transparency" in n for n in out.notes)
    grey16 = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 256).astype(np.uint16)
    p = tmp_path / "g16.tif"
    Image.fromarray(grey16).save(p)
    out = load_image(p)
    assert out.array.shape == (16, 16, 3)
    assert out.array.max() == 254  # 65280 / 65535 of full scale
    assert any("16" in n for n in out.notes)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html></html>", "HTML"),
        (b"%PDF-1.4 ...", "PDF"),
        (b"PK\x03\x04....", "ZIP"),
        (b'<?xml version="1.0"?><svg xmlns="x"></svg>', "SVG"),
    ],
)
def test_bad_images_named(data, needle):
    with pytest.raises(InputError, match=needle):
        load_image(data, name="x")


def test_truncated_png_named():
    data = _png(np.zeros((64, 64, 3), np.uint8) + 7)
    with pytest.raises(InputError, match=r"truncated or corrupt|not a readable"):
        load_image(data[: len(data) // 2], name="half.png")


def test_decompression_bomb_refused_before_decoding(monkeypatch):
    from cam_core.data import images

    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(InputError, match="megapixels, above"):
        load_image(_png(np.zeros((20, 20, 3), np.uint8)))


def test_lru_cache_bounds_and_shared_values():
    from cam_core.cache import LRUCache

    cache = LRUCache(max_entries=3, max_bytes=250)
    a, b = np.zeros(100, np.uint8), np.zeros(100, np.uint8)
    cache.put("a", a)
    cache.put("a-alias", a)  # the same object under a second key costs nothing more
    assert cache.total_bytes == 100
    cache.put("b", b)
    assert cache.total_bytes == 200
    assert len(cache) == 3
    cache.put("c", np.zeros(100, np.uint8))  # over both bounds: the oldest entries go
    assert len(cache) <= 3
    assert cache.total_bytes <= 250
    assert cache.get("a") is None
    cache.put("huge", np.zeros(1000, np.uint8))  # larger than the whole budget: not kept
    assert cache.get("huge") is None


def test_otsu_is_the_between_class_variance_maximum():
    """render.otsu is OpenCV's Otsu (one Otsu in the project): check it against the definition."""
    from cam_core.output.render import otsu

    rng = np.random.default_rng(3)
    values = np.clip(np.concatenate([rng.normal(0.2, 0.05, 3000), rng.normal(0.7, 0.1, 1500)]), 0, 1)
    q = np.round(values * 255) / 255

    def between(t: float) -> float:
        low, high = q[q <= t], q[q > t]
        if not len(low) or not len(high):
            return 0.0
        return len(low) * len(high) * (low.mean() - high.mean()) ** 2

    best = max((k / 255 for k in range(256)), key=between)
    assert abs(otsu(values.astype(np.float32)) - (best + 0.5 / 255)) < 1e-9


def test_a_progress_line_draws_fractions_and_counts(capsys):
    from cam_core.progress import Line

    with Line("explain") as line:
        line.fraction(0.5, "forward 1 of 2")
    with Line("slide.tif", 10, "tiles") as tiles:
        tiles.count(4, 10, "~3 s left")
    err = capsys.readouterr().err
    assert "explain  50.0%" in err
    assert "forward 1 of 2" in err
    assert "slide.tif: 4/10 tiles" in err


def test_png_is_lossless_for_grey_rgb_and_rgba():
    """``to_png`` writes grey and RGB through OpenCV (one row filter, faster), the rest through
    Pillow; every kind reads back to the same pixels and channel order."""
    rng = np.random.default_rng(0)
    for shape in [(37, 53), (37, 53, 3), (37, 53, 4)]:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        for level in (1, 6):
            back = np.asarray(Image.open(io.BytesIO(render.to_png(a, compress_level=level))))
            assert back.shape == a.shape
            assert (back == a).all(), (shape, level)
