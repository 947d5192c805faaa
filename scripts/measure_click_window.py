"""How a clicked nucleus of a large image is best explained: from the grid tile(s) that hold it
(the app until 2026-12-02) or from one window centred on it with ``context`` px around it
(``tiling.local_window``), against the untiled image's own map (one 2000² forward with its graph
kept, a backward per nucleus: what no server can afford per click, and the truth here). A
1024² pass centred on the nucleus is shown too.

For each nucleus (every class, drawn at random from the built-in model's mask of the browser
test's 2000² upload): the HiResCAM map on the layer grid from each path, its L1 distance to the
reference's (divided by the reference's mass), Pearson r, and the seconds of its passes on the
server's one thread.

    .venv/bin/python scripts/measure_click_window.py [--nuclei 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cam_core import grid
from cam_core.engine import capturing, tiling
from cam_core.engine import targets as tg
from cam_core.model import models
from cam_core.paths import REPO_ROOT

LAYER = "decoder.blocks.2"
CONTEXTS = (112, 144, 176, 208)


def upload() -> np.ndarray:
    """The browser test's 2000² upload: a sample tile mirrored out to 2000²."""
    tile = np.asarray(Image.open(REPO_ROOT / "samples/images/test_12_002.png").convert("RGB"))
    return np.ascontiguousarray(np.pad(tile, ((0, 1744), (0, 1744), (0, 0)), mode="symmetric")[:2000, :2000])


def hires(grads: np.ndarray, acts: np.ndarray) -> np.ndarray:
    return np.maximum((grads * acts).sum(axis=1)[0], 0)


def window_map(loaded, image, region, cls, box, shape):
    """HiResCAM of one pass over ``box``, on the image-sized layer grid; and its seconds."""
    y0, x0, y1, x1 = box
    t = time.perf_counter()
    cap = capturing.capture(
        loaded, np.ascontiguousarray(image[y0:y1, x0:x1]), tg.TargetSpec("mask", cls, region[y0:y1, x0:x1]), [LAYER]
    )
    seconds = time.perf_counter() - t
    out = np.zeros(shape, np.float32)
    m = hires(cap.gradients[LAYER], cap.activations[LAYER])
    s = cap.padded_shape[0] // m.shape[0]
    out[y0 // s : y0 // s + m.shape[0], x0 // s : x0 // s + m.shape[1]] = m[: shape[0] - y0 // s, : shape[1] - x0 // s]
    return out, seconds, (x1 - x0, y1 - y0)


def centred(region: np.ndarray, side: int) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(region)
    y0 = int(np.clip(round((ys.mean() - side / 2) / 32) * 32, 0, region.shape[0] - side))
    x0 = int(np.clip(round((xs.mean() - side / 2) / 32) * 32, 0, region.shape[1] - side))
    return y0, x0, y0 + side, x0 + side


def nuclei(mask: np.ndarray, n: int) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(0)
    found = []
    for cls in range(1, int(mask.max()) + 1):
        labels, _ = ndimage.label(mask == cls, structure=np.ones((3, 3)))
        for i, sl in enumerate(ndimage.find_objects(labels), start=1):
            cy, cx = (sl[0].start + sl[0].stop) / 2, (sl[1].start + sl[1].stop) / 2
            if 520 < cy < 1480 and 520 < cx < 1480 and (labels[sl] == i).sum() >= 30:
                found.append((cls, labels, i))
    picks = rng.choice(len(found), min(n, len(found)), replace=False)
    return [(found[p][0], found[p][1] == found[p][2]) for p in picks]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nuclei", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    loaded = models.load(None)
    image = upload()
    base = tiling.capture_tiled(loaded, image, tg.TargetSpec("predicted", None), [LAYER])
    shape = base.activations[LAYER].shape[-2:]
    boxes = [c.box for c in grid.grid(2000, 2000, tiling.DEFAULT_TILE, tiling.DEFAULT_OVERLAP, align=loaded.multiple)]
    weights = tiling.partition(boxes, (2000, 2000), tiling.DEFAULT_OVERLAP)
    rows: dict[str, list[tuple[float, float, float]]] = {}
    sizes: dict[str, list[tuple[int, int]]] = {}
    picked = nuclei(base.prediction.mask, args.nuclei)
    whole = capturing.capture(loaded, image, tg.TargetSpec("predicted", None), [LAYER], keep_graph=True)
    refs = []  # every backward through the whole image's graph first: any other capture frees it
    for cls, region in picked:
        untiled = capturing.recapture(loaded, whole, tg.TargetSpec("mask", cls, region), image)
        refs.append(hires(untiled.gradients[LAYER], untiled.activations[LAYER]))
    del whole, untiled
    for k, ((cls, region), ref) in enumerate(zip(picked, refs)):
        t = time.perf_counter()
        steps = tiling._Steps(None, len(boxes))
        grads, _ = tiling._backward_tiles(
            loaded,
            image,
            tg.TargetSpec("mask", cls, region),
            region.astype(np.float32),
            [LAYER],
            boxes,
            weights,
            base.activations,
            base.rule,
            steps,
        )
        paths = {"grid tile(s)": (hires(grads[LAYER], base.activations[LAYER]), time.perf_counter() - t, None)}
        for ctx in CONTEXTS:
            paths[f"window, context {ctx}"] = window_map(
                loaded, image, region, cls, tiling.local_window(region, loaded.multiple, ctx), shape
            )
        paths["1024² centred"] = window_map(loaded, image, region, cls, centred(region, 1024), shape)
        for name, (m, seconds, size) in paths.items():
            truth = ref
            err = float(np.abs(m - truth).sum() / truth.sum())
            r = float(np.corrcoef(m.ravel(), truth.ravel())[0, 1])
            rows.setdefault(name, []).append((err, r, seconds))
            if size:
                sizes.setdefault(name, []).append(size)
        print(f"nucleus {k + 1}: class {cls}, {int(region.sum())} px", file=sys.stderr)
    print(f"{len(rows['grid tile(s)'])} nuclei of a 2000² upload, HiResCAM @ {LAYER}, against the untiled image's map")
    print(f"{'path':28s} {'L1 median':>9s} {'L1 p90':>7s} {'r median':>8s} {'r min':>6s} {'s median':>8s}  window")
    for name, v in rows.items():
        a = np.array(v)
        side = sizes.get(name)
        win = f"{int(np.median([w for w, _ in side]))}×{int(np.median([h for _, h in side]))} median" if side else ""
        print(
            f"{name:28s} {np.median(a[:, 0]):9.3f} {np.percentile(a[:, 0], 90):7.3f} {np.median(a[:, 1]):8.3f} "
            f"{a[:, 1].min():6.3f} {np.median(a[:, 2]):8.3f}  {win}"
        )


if __name__ == "__main__":
    main()
