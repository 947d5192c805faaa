"""Generate a corpus of broken and hostile image files, each with what must happen to it.

Run as a script to write the corpus to a folder (``python tests/hostile_corpus.py OUT``); the
tests call :func:`build` into a temporary folder. Each case is either ``ok`` (decodes, possibly
with a note) or ``error`` with a fragment the one-line message must contain.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    name: str
    expect: str  # "ok" or "error"
    needle: str = ""  # error: in the message; ok: in the notes ("" = no note required)


def _tile() -> np.ndarray:
    return np.asarray(Image.open(REPO / "samples/images/test_13_008.png").convert("RGB"))


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height with almost no pixel data: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def build(out: Path) -> list[Case]:
    out.mkdir(parents=True, exist_ok=True)
    tile = _tile()
    pil = Image.fromarray(tile)
    png, jpg = _save(pil, "PNG"), _save(pil, "JPEG", quality=90)
    files: dict[str, bytes] = {}
    cases: list[Case] = []

    def add(name: str, data: bytes, expect: str, needle: str = "") -> None:
        files[name] = data
        cases.append(Case(name, expect, needle))

    add("zero_bytes.png", b"", "error", "empty")
    add("truncated.png", png[: len(png) // 2], "error", "truncated")
    add("truncated.jpg", jpg[: len(jpg) // 3], "error", "truncated")
    add("png_named.jpg", png, "ok")
    add("page.html", b"<!DOCTYPE html><html><body>hello</body></html>", "error", "HTML")
    add("page_named.png", b"<html><body>not an image</body></html>", "error", "HTML")
    add("archive.zip", b"PK\x03\x04" + b"\x00" * 64, "error", "ZIP")
    add("document.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "error", "PDF")
    add(
        "vector.svg",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "error",
        "SVG",
    )
    add("bomb_30000x30000.png", _png_header_only(30000, 30000), "error", "megapixels")
    add("tiny_4x4.png", _save(Image.fromarray(tile[:4, :4]), "PNG"), "error", "at least 8×8")
    add("wide_4096x64.png", _save(Image.fromarray(np.tile(tile[:64], (1, 16, 1))), "PNG"), "ok")
    ok, enc = cv2.imencode(".png", (tile[..., ::-1].astype(np.uint16) * 257))
    assert ok
    add("rgb_16bit.png", enc.tobytes(), "ok", "16-bit")
    grey16 = Image.fromarray(tile[..., 0].astype(np.uint16) * 257)
    add("grey_16bit.tif", _save(grey16, "TIFF"), "ok", "16")
    add("grey_8bit.png", _save(pil.convert("L"), "PNG"), "ok", "greyscale")
    add("cmyk.jpg", _save(pil.convert("CMYK"), "JPEG"), "ok", "CMYK")
    add("palette.png", _save(pil.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "ok", "palette")
    rgba = pil.convert("RGBA")
    rgba.putalpha(200)
    add("rgba.png", _save(rgba, "PNG"), "ok", "transparency")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    add("exif_rotated.jpg", _save(Image.fromarray(tile[:, :200]), "JPEG", exif=exif.tobytes()), "ok", "EXIF")
    frames = [Image.fromarray(tile), Image.fromarray(tile[::-1])]
    add("multipage.tif", _save(frames[0], "TIFF", save_all=True, append_images=frames[1:]), "ok", "first")
    add("animated.gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100), "ok", "first")
    for name, data in files.items():
        (out / name).write_bytes(data)
    return cases


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile_corpus")
    for case in build(target):
        print(f"{case.name:24s} {case.expect:6s} {case.needle}")
