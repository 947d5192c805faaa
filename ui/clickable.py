"""A picture that reports where it was clicked, in the picture's own pixels.

``st.image`` returns no click; Streamlit's ``st.components.v2`` inline component does, with no
package to install and no iframe. The picture is mounted in the page's DOM (not a shadow root),
so it keeps its ``alt`` text for screen readers and browser tests find it as any ``<img>``.
AppTest does not run components: tests set the point through session state or the URL.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st

from cam_core.output import render

# Larger pictures are sent downscaled: a click is mapped back to full-resolution pixels.
MAX_SENT_SIDE = 1400

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


def data_url(rgb: np.ndarray) -> str:
    """The picture as a PNG data URL, downscaled to at most MAX_SENT_SIDE a side."""
    import cv2

    h, w = rgb.shape[:2]
    k = MAX_SENT_SIDE / max(h, w)
    if k < 1:
        rgb = cv2.resize(rgb, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    # zlib level 1: lossless like 6, a third of the time on a large image's three panels
    return "data:image/png;base64," + base64.b64encode(render.to_png(rgb, compress_level=1)).decode("ascii")


def clickable_image(
    rgb: np.ndarray, alt: str, key: str, title: str = "", on_click: Callable[[int, int], None] | None = None
) -> tuple[int, int] | None:
    """Draw ``rgb``; return (x, y) in its pixels when the user has just clicked it, else None.

    ``on_click(x, y)`` runs before the next script run (a callback), so the run that follows a
    click can already draw its answer instead of first redrawing the view that was clicked."""
    h, w = rgb.shape[:2]

    def clicked() -> None:
        click = (st.session_state.get(key) or {}).get("click")
        if on_click is not None and isinstance(click, dict) and "x" in click and "y" in click:
            on_click(int(click["x"]), int(click["y"]))

    result = _component()(
        data={"src": data_url(rgb), "alt": alt, "title": title or alt, "width": w, "height": h},
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
    _COPY(data={"src": data_url(rgb), "label": label}, key=key, on_copied_change=lambda: None)
