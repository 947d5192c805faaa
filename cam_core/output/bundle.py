"""The files of one explained map, written by one module for the CLI's folders and the app's ZIP.

A result is the same files under the same names wherever it comes from, so a script that reads a
CLI folder reads an unzipped app download too. :data:`FILES` names each file and what it holds;
:func:`files` makes them (pictures from :mod:`cam_core.output.render`, arrays, ``result.json``).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cam_core.engine.result import CamResult

# Every file a result may hold, in the order they are written; the descriptions are the README's.
FILES = {
    "mask.png": "the predicted mask, pixel value = class index (what other tools read)",
    "mask_color.png": "the mask in the classes' colours, with a µm scale bar when the resolution is known",
    "heatmap.png": "the CAM on its colour map",
    "overlay.png": "the CAM over the image, at the chosen opacity and threshold",
    "heatmap_signed.png": "the raw map before ReLU on a diverging map centred on 0 (± signed_scale of result.json)",
    "truth_compare.png": "prediction against the ground truth, when one was given",
    "figure.png": "mask, map and overlay with titles, class legend, colour bar and a plain caption (rebuilt "
    "from result.json alone by `python -m cam_core figure`)",
    "objects.geojson": "the tile's objects for QuPath (app downloads)",
    "cam.npy": "float32 H×W, normalised exactly as grad-cam returns it",
    "cam_raw.npy": "float32 H×W, before ReLU and normalisation",
    "result.json": "what produced it: model, class, layer, method, target, rule, device, times, versions",
}
# A file is given as its bytes, or as a function making them (encoded only when written).
Content = bytes | Callable[[], bytes]


def npy(array: np.ndarray) -> bytes:
    """A CAM array as .npy bytes, float32 (what every reader expects)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, np.float32))
    return buf.getvalue()


def signed_picture(res: CamResult, scale: float, mpp: float | None = None) -> bytes:
    """``heatmap_signed.png``: the raw map at ± ``scale`` (the record's ``signed_scale``)."""
    from cam_core.output import render

    return render.to_png(render.scale_bar(render.signed_heatmap(res.cam_raw, scale), mpp))


def files(
    res: CamResult, record: dict[str, Any], pictures: dict[str, Content], mpp: float | None = None
) -> dict[str, Content]:
    """All files of one result: the given pictures, the raw signed picture, the two arrays and
    ``result.json``, in :data:`FILES` order. The signed picture is drawn at the record's
    ``signed_scale`` (the app's scale shared over classes when its view chose one), else at the
    map's own, which the record then states.

    Raises:
        KeyError: a picture name that :data:`FILES` does not declare.
    """
    unknown = set(pictures) - set(FILES)
    if unknown:
        raise KeyError(f"undeclared result files {sorted(unknown)}; declared: {', '.join(FILES)}")
    out: dict[str, Content] = dict(pictures)
    if "heatmap_signed.png" not in out:
        if record.get("signed_scale") is None:  # no shared scale chosen: the map's own
            from cam_core.output import render

            scale = float(render.signed_scale([res.cam_raw]))
            record = {**record, "signed_scale": scale, "signed_scale_classes": [record["class"]]}
        scale = float(record["signed_scale"])
        out["heatmap_signed.png"] = lambda: signed_picture(res, scale, mpp)
    out["cam.npy"] = lambda: npy(res.cam)
    out["cam_raw.npy"] = lambda: npy(res.cam_raw)
    out["result.json"] = json.dumps(record, indent=1).encode()
    return {name: out[name] for name in FILES if name in out}


def _bytes(content: Content) -> bytes:
    return content() if callable(content) else content


def write_folder(folder: Path, contents: dict[str, Content]) -> None:
    """Each file into ``folder``, atomically (a reader never sees half a file)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in contents.items():
        tmp = folder / f".{name}.tmp{os.getpid()}"
        tmp.write_bytes(_bytes(content))
        os.replace(tmp, folder / name)


def to_zip(contents: dict[str, Content]) -> bytes:
    """The files as one ZIP (the app's download)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in contents.items():
            zf.writestr(name, _bytes(content))
    return buf.getvalue()
