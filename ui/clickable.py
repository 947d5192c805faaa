"""A picture that reports where it was clicked, in the picture's own pixels.

``st.image`` returns no click; Streamlit's ``st.components.v2`` inline component does, with no
package to install and no iframe. The picture is mounted in the page's DOM (not a shadow root),
so it keeps its ``alt`` text for screen readers and browser tests find it as any ``<img>``.
AppTest does not run components: tests set the point through session state or the URL.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import streamlit as st

from cam_core.output import render
from cam_core.output.figure import PANEL_DISPLAY_PX

# Larger pictures are sent downscaled: a click is mapped back to full-resolution pixels. Twice the
# panel's display width (PANEL_DISPLAY_PX) is one picture pixel per screen pixel on a 2× display;
# 1024 (2.4×) cost a click on a 2000² upload 0.1 s more in drawing and encoding, 1400 twice as
# much. A zoom shows full resolution.
MAX_SENT_SIDE = 2 * PANEL_DISPLAY_PX
# Encoded pictures kept by content (a slider that changes the overlay re-encodes only the overlay):
# at most this many, ≤ ~1 MB each.
_PNGS_KEPT = 12

_JS = """
export default function (component) {
  const { data, setTriggerValue, parentElement } = component;
  let img = parentElement.querySelector("img.segcam-click");
  if (!img) {
    img = document.createElement("img");
    img.className = "segcam-click";
    img.style.width = "100%";
    img.style.display = "block";
    img.style.cursor = "crosshair";
    parentElement.appendChild(img);
  }
  if (img.getAttribute("src") !== data.src) img.setAttribute("src", data.src);
  img.alt = data.alt;
  img.title = data.title;
  img.dataset.width = data.width;
  img.dataset.height = data.height;
  img.onclick = (e) => {
    const r = img.getBoundingClientRect();
    const x = Math.min(data.width - 1, Math.max(0, Math.floor(((e.clientX - r.left) / r.width) * data.width)));
    const y = Math.min(data.height - 1, Math.max(0, Math.floor(((e.clientY - r.top) / r.height) * data.height)));
    setTriggerValue("click", { x: x, y: y });
  };
}
"""

_COMPONENT: Any = None


def _component() -> Any:
    global _COMPONENT
    if _COMPONENT is None:
        _COMPONENT = st.components.v2.component("segcam.click_image", js=_JS, isolate_styles=False)
    return _COMPONENT


def _png(rgb: np.ndarray) -> bytes:
    import cv2

    h, w = rgb.shape[:2]
    k = MAX_SENT_SIDE / max(h, w)
    if k < 1:
        rgb = cv2.resize(rgb, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    # zlib level 1: lossless like 6, a third of the time on a large image's three panels
    return render.to_png(rgb, compress_level=1)


_PNGS: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
_PNGS_LOCK = threading.Lock()


def _digest(rgb: np.ndarray) -> bytes:
    a = np.ascontiguousarray(rgb)
    return hashlib.blake2b(a.data, digest_size=16, person=repr((a.shape, a.dtype.str)).encode()[:16]).digest()


def _pngs(pictures: list[np.ndarray]) -> list[bytes]:
    """Each picture as PNG, downscaled to at most MAX_SENT_SIDE a side; the ones not encoded
    lately are encoded side by side (zlib runs outside the GIL: 0.12 → 0.08 s for a large
    image's three panels here), the others come from a small cache keyed by their pixels."""
    keys = [_digest(p) for p in pictures]
    with _PNGS_LOCK:
        found = {k: _PNGS[k] for k in keys if k in _PNGS}
    missing = {k: p for k, p in zip(keys, pictures) if k not in found}
    if len(missing) > 1:
        with ThreadPoolExecutor(max_workers=len(missing)) as pool:
            found |= dict(zip(missing, pool.map(_png, missing.values())))
    else:
        found |= {k: _png(p) for k, p in missing.items()}
    with _PNGS_LOCK:
        for k in keys:
            _PNGS[k] = found[k]
            _PNGS.move_to_end(k)
        while len(_PNGS) > _PNGS_KEPT:
            _PNGS.popitem(last=False)
    return [found[k] for k in keys]


def sources(pictures: list[np.ndarray], keys: list[str]) -> list[str]:
    """The address each picture is loaded from: a media file of the server, as ``st.image``'s
    (the page's message stays small: no base64 in JSON, 50 ms less per large-image click here),
    or a data URL where no server runs. ``keys``: the elements showing them (one file each)."""
    from streamlit import runtime

    media = runtime.get_instance().media_file_mgr if runtime.exists() else None
    return [
        media.add(png, "image/png", f"segcam.{key}")
        if media is not None
        else "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        for png, key in zip(_pngs(pictures), keys)
    ]


def clickable_image(
    rgb: np.ndarray,
    alt: str,
    key: str,
    title: str = "",
    on_click: Callable[[int, int], None] | None = None,
    src: str | None = None,
) -> tuple[int, int] | None:
    """Draw ``rgb``; return (x, y) in its pixels when the user has just clicked it, else None.

    ``on_click(x, y)`` runs before the next script run (a callback), so the run that follows a
    click can already draw its answer instead of first redrawing the view that was clicked.
    ``src``: its address from :func:`sources`, when several pictures were encoded together."""
    h, w = rgb.shape[:2]

    def clicked() -> None:
        click = (st.session_state.get(key) or {}).get("click")
        if on_click is not None and isinstance(click, dict) and "x" in click and "y" in click:
            on_click(int(click["x"]), int(click["y"]))

    result = _component()(
        data={"src": src or sources([rgb], [key])[0], "alt": alt, "title": title or alt, "width": w, "height": h},
        key=key,
        on_click_change=clicked,
    )
    click = getattr(result, "click", None)
    if isinstance(click, dict) and "x" in click and "y" in click:
        return int(click["x"]), int(click["y"])
    return None


_COPY_JS = """
export default function (component) {
  const { data, setTriggerValue, parentElement } = component;
  let button = parentElement.querySelector("button.segcam-copy");
  if (!button) {
    button = document.createElement("button");
    button.className = "segcam-copy";
    button.type = "button";
    button.style.cssText = "padding:0.4rem 0.8rem;border:1px solid rgba(49,51,63,0.2);border-radius:0.5rem;" +
      "background:white;cursor:pointer;font:inherit;";
    parentElement.appendChild(button);
  }
  button.textContent = data.label;
  button.dataset.src = data.src;
  button.onclick = async () => {
    try {
      const blob = await (await fetch(button.dataset.src)).blob();
      await navigator.clipboard.write([new ClipboardItem({ "image/png": blob })]);
      button.textContent = data.label + " ✓ copied";
      setTriggerValue("copied", true);
    } catch (err) {
      button.textContent = data.label + " — not allowed here: use the download";
      setTriggerValue("copied", false);
    }
  };
}
"""

_COPY: Any = None


def copy_image_button(rgb: np.ndarray, label: str, key: str) -> None:
    """A button that puts the picture on the clipboard as PNG (to paste into a slide); the
    browser may refuse (not a secure origin, no permission): the button says so."""
    global _COPY
    if _COPY is None:
        _COPY = st.components.v2.component("segcam.copy_image", js=_COPY_JS, isolate_styles=False)
    _COPY(data={"src": sources([rgb], [key])[0], "label": label}, key=key, on_copied_change=lambda: None)
