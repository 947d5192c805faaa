"""Whole-slide images through OpenSlide: open, resolution, thumbnail, tissue, regions.

Pathologists work on slides (Aperio .svs, Hamamatsu .ndpi, MIRAX .mrxs, generic pyramidal TIFF,
tens of thousands of pixels a side). Nothing here reads a whole level: every view (thumbnail,
overview, region) is read from the pyramid level nearest the resolution it needs, block by block
when large, each block resampled as it arrives, so memory follows what is shown, not the slide
(a slide without a pyramid included; :data:`cam_core.limits.SLIDE_SCAN_MAX_PIXELS` bounds the
time). OpenSlide is imported only when a slide is opened.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cam_core import limits, settings
from cam_core.errors import InputError

SLIDES_DIR_ENV = settings.env_name("slides_dir")
# File kinds OpenSlide reads (the slides folder lists these).
SLIDE_ONLY_SUFFIXES = (".svs", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm")
SLIDE_SUFFIXES = (*SLIDE_ONLY_SUFFIXES, ".tif", ".tiff")
# The largest region read at once, in pixels at the model's resolution (the app's 64 MP bound is
# for uploads; a region of a slide is explained untiled up to this, tiled above).
MAX_REGION_PIXELS = 4096 * 4096
THUMBNAIL_SIDE = 1024
MPP_RANGE = limits.MPP_RANGE  # believable microns per pixel (1.0 ≈ 10×, 0.25 ≈ 40×, 0.1 ≈ 100×)


def slides_dir(override: str | Path | None = None) -> Path:
    return Path(override or settings.current().slides_dir)


def list_slides(folder: str | Path | None = None) -> list[Path]:
    """Slide files in the slides folder (not recursive; MIRAX's data folders are skipped)."""
    root = slides_dir(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)


@dataclass
class SlideInfo:
    """What a slide says about itself, and what the explorer decided from it."""

    name: str
    path: Path
    size_wh: tuple[int, int]
    level_count: int
    level_downsamples: list[float]
    mpp: float | None  # microns per level-0 pixel (None: unknown)
    objective_power: float | None
    vendor: str
    properties_sha256: str
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The slide's identity for manifests and result files."""
        return {
            "name": self.name,
            "size_wh": list(self.size_wh),
            "levels": self.level_count,
            "microns_per_pixel": self.mpp,
            "objective_power": self.objective_power,
            "vendor": self.vendor,
            "properties_sha256": self.properties_sha256,
            "notes": self.notes,
        }


def _float(props: Any, key: str) -> float | None:
    try:
        value = float(props[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


class Slide:
    """An open slide; close it (or use ``with``) to release the file."""

    def __init__(self, path: str | Path, mpp_override: float | None = None):
        path = Path(path)
        if not path.is_file():
            raise InputError(f"slide '{path.name}' not found; put slides in {slides_dir()} or give a path")
        import openslide

        try:
            self._osr = openslide.OpenSlide(str(path))
        except openslide.OpenSlideUnsupportedFormatError:
            raise InputError(
                f"'{path.name}' is not a slide OpenSlide can read (or it is truncated); give an Aperio .svs, Hamamatsu .ndpi, MIRAX .mrxs, "
                "Leica .scn, Ventana .bif, DICOM or a tiled pyramidal TIFF (for a single tile use Explore's upload)"
            ) from None
        except openslide.OpenSlideError as exc:
            raise InputError(f"slide '{path.name}' is corrupt or truncated ({exc}); re-export or re-copy it") from None
        props = dict(self._osr.properties)
        notes: list[str] = []
        mpp_x, mpp_y = _float(props, "openslide.mpp-x"), _float(props, "openslide.mpp-y")
        mpp = mpp_x if mpp_x is not None else mpp_y
        if mpp_x is not None and mpp_y is not None and abs(mpp_x - mpp_y) > 0.01 * mpp_x:
            notes.append(f"pixels are not square ({mpp_x:.4g} × {mpp_y:.4g} µm); the x resolution is used")
        if mpp is not None and not limits.plausible_mpp(mpp):
            notes.append(f"the slide says {mpp:g} µm per pixel, which no microscope scan has; it is ignored")
            mpp = None
        if mpp is None:
            notes.append("the slide does not say its resolution (µm per pixel); give it to read regions at the model's")
        if mpp_override is not None:
            if not limits.plausible_mpp(mpp_override):
                raise InputError(
                    f"resolution {mpp_override:g} µm/px is not plausible; give a value in {limits.mpp_range_text()}"
                )
            notes.append(f"resolution set by the user: {mpp_override:g} µm/px (the slide says {mpp or 'nothing'})")
            mpp = mpp_override
        digest = hashlib.sha256(json.dumps(props, sort_keys=True).encode()).hexdigest()
        try:
            level_count = int(self._osr.level_count)
            downsamples = [float(d) for d in self._osr.level_downsamples]
            size = tuple(int(v) for v in self._osr.dimensions)
        except Exception as exc:  # broken pyramids fail here rather than at open
            raise InputError(f"slide '{path.name}' has an unreadable pyramid ({exc})") from None
        self.info = SlideInfo(
            name=path.name,
            path=path,
            size_wh=(size[0], size[1]),
            level_count=level_count,
            level_downsamples=downsamples,
            mpp=mpp,
            objective_power=_float(props, "openslide.objective-power"),
            vendor=str(props.get("openslide.vendor", "unknown")),
            properties_sha256=digest,
            notes=notes,
        )

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._osr.close()

    # ------------------------------------------------------------ reading

    def thumbnail(self, max_side: int = THUMBNAIL_SIDE) -> np.ndarray:
        """An RGB overview at most ``max_side`` a side, read like any view (:meth:`_read`): from
        the nearest reduced level, block by block, never a whole level at once (OpenSlide's own
        ``get_thumbnail`` decodes all of a slide without a pyramid: 14 GB for a 16384² one)."""
        W, H = self.info.size_wh
        out_w, out_h = (
            (max_side, max(1, round(H * max_side / W))) if W >= H else (max(1, round(W * max_side / H)), max_side)
        )
        return self._read(0, 0, W, H, min(out_w, W), min(out_h, H))

    def scale_for(self, target_mpp: float | None) -> float:
        """Level-0 pixels per output pixel when reading at ``target_mpp`` (1 when unknown)."""
        if target_mpp is None or self.info.mpp is None:
            return 1.0
        return target_mpp / self.info.mpp

    def read_region(self, x: int, y: int, w: int, h: int, target_mpp: float | None) -> np.ndarray:
        """Level-0 box (x, y, w, h) as RGB at ``target_mpp`` (the model's resolution).

        Raises:
            InputError: the box is outside the slide, empty, or too large to explain at once.
        """
        W, H = self.info.size_wh
        if w <= 0 or h <= 0:
            raise InputError(f"region {w}×{h} is empty; give a width and height of at least 1 pixel")
        if x < 0 or y < 0 or x + w > W or y + h > H:
            raise InputError(f"region ({x}, {y}) {w}×{h} reaches outside the {W}×{H} slide; move or shrink it")
        scale = self.scale_for(target_mpp)
        out_w, out_h = max(1, round(w / scale)), max(1, round(h / scale))
        if out_w * out_h > MAX_REGION_PIXELS:
            raise InputError(
                f"region {w}×{h} is {out_w}×{out_h} px at the model's resolution, above the "
                f"{int(MAX_REGION_PIXELS**0.5)}² that is read at once; use a smaller region or `batch` for the whole slide"
            )
        return self._read(x, y, w, h, out_w, out_h)

    def overview(self, box: tuple[int, int, int, int], side: int = THUMBNAIL_SIDE) -> np.ndarray:
        """A level-0 box as a picture ``side`` pixels wide (any resolution; for finding regions)."""
        x, y, w, h = box
        return self._read(x, y, w, h, side, max(1, round(h * side / w)))

    def _read(self, x: int, y: int, w: int, h: int, out_w: int, out_h: int) -> np.ndarray:
        """Level-0 box → out_w × out_h RGB, from the level with the largest downsample not above
        the needed one, then resampled (area averaging when shrinking), so detail is never invented.

        Memory follows the output, not the level: a shrinking read larger than
        :data:`~cam_core.limits.SLIDE_READ_BLOCK_PIXELS` is read block by block, each block shrunk
        as it arrives; a level box above :data:`~cam_core.limits.SLIDE_SCAN_MAX_PIXELS` (a slide
        with no reduced levels, seen whole) is refused before any pixel is read.
        """
        from cam_core.limits import SLIDE_READ_BLOCK_PIXELS, SLIDE_SCAN_MAX_PIXELS

        need = w / out_w
        level = max((i for i, d in enumerate(self.info.level_downsamples) if d <= need + 1e-6), default=0)
        down = self.info.level_downsamples[level]
        lw, lh = max(1, round(w / down)), max(1, round(h / down))
        if lw * lh > SLIDE_SCAN_MAX_PIXELS:
            side = int(SLIDE_SCAN_MAX_PIXELS**0.5)
            kind = "has no reduced (pyramid) levels" if self.info.level_count == 1 else "has no level coarse enough"
            raise InputError(
                f"slide '{self.info.name}' {kind} for this view: it would read {lw}×{lh} px of level {level}, "
                f"above the {side}×{side} px this server reads for one view. Save it as a pyramidal TIFF "
                "(e.g. `vips tiffsave in.tif out.tif --tile --pyramid --compression jpeg`) or view a smaller region"
            )
        if lw * lh <= SLIDE_READ_BLOCK_PIXELS or lw * lh <= out_w * out_h:
            return self._read_level(x, y, level, lw, lh, out_w, out_h)
        fx, fy = lw / out_w, lh / out_h
        step = max(1, int((SLIDE_READ_BLOCK_PIXELS / (fx * fy)) ** 0.5))  # output pixels per block side
        out = np.empty((out_h, out_w, 3), np.uint8)
        for oy0 in range(0, out_h, step):
            oy1 = min(oy0 + step, out_h)
            ly0, ly1 = round(oy0 * fy), max(round(oy1 * fy), round(oy0 * fy) + 1)
            for ox0 in range(0, out_w, step):
                ox1 = min(ox0 + step, out_w)
                lx0, lx1 = round(ox0 * fx), max(round(ox1 * fx), round(ox0 * fx) + 1)
                out[oy0:oy1, ox0:ox1] = self._read_level(
                    x + round(lx0 * down), y + round(ly0 * down), level, lx1 - lx0, ly1 - ly0, ox1 - ox0, oy1 - oy0
                )
        return out

    def _read_level(self, x: int, y: int, level: int, lw: int, lh: int, out_w: int, out_h: int) -> np.ndarray:
        """One OpenSlide read of lw × lh level pixels at level-0 (x, y), resampled to out_w × out_h."""
        try:
            tile = self._osr.read_region((int(x), int(y)), level, (lw, lh))
        except Exception as exc:  # OpenSlideError on damaged tile data
            raise InputError(f"slide '{self.info.name}' is damaged at ({x}, {y}): {exc}") from None
        rgb = _flatten_alpha(np.asarray(tile))
        del tile
        if (lw, lh) != (out_w, out_h):
            import cv2

            interp = cv2.INTER_AREA if lw > out_w else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (out_w, out_h), interpolation=interp)
        return np.ascontiguousarray(rgb)


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """Composite onto white (the glass) where the scan is transparent or partly so.

    openslide-python's ``read_region`` un-premultiplies OpenSlide's data ("the image data is not
    premultiplied"), so a pixel is ``rgb · a + 255 · (1 − a)``; the premultiplied formula used
    before (``rgb + 255 · (1 − a)``) brightened half-transparent edge pixels towards white.
    """
    if rgba[..., 3].min() == 255:  # opaque (most of a scan): nothing to composite
        return rgba[..., :3].copy()
    rgb = rgba[..., :3].astype(np.uint16)  # integers: rgb·a + 255·(255 − a) ≤ 65025 (2 bytes, not 4)
    alpha = rgba[..., 3:4].astype(np.uint16)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def region_note(box: tuple[int, int, int, int], name: str, mpp: float | None) -> str:
    """How an image read from a slide says where it came from (CLI result files, the app)."""
    x, y, w, h = box
    at = f", read at {mpp:g} µm/px" if mpp else ""
    return f"region ({x}, {y}) {w}×{h} of {name}{at}"


def tissue_mask(thumb: np.ndarray) -> np.ndarray:
    """Tissue on a thumbnail: saturated, not white (Otsu on saturation, at least 0.07), cleaned."""
    import cv2

    hsv = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)
    sat = hsv[..., 1]
    level, _ = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    raw = (sat > max(level, 18)) & (hsv[..., 2] > 30)
    opened = cv2.morphologyEx(raw.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    closed = cv2.morphologyEx(opened, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))  # no holes between nuclei
    return closed.astype(bool)


def tissue_box(
    tissue: np.ndarray, level0_per_px: float, size_wh: tuple[int, int], margin: float = 0.15
) -> tuple[int, int, int, int]:
    """The level-0 box (x, y, w, h) around the tissue of a thumbnail mask, with a margin; the
    whole slide when there is no tissue."""
    W, H = size_wh
    ys, xs = np.nonzero(tissue)
    if not len(xs):
        return 0, 0, W, H
    x0, x1 = xs.min() * level0_per_px, (xs.max() + 1) * level0_per_px
    y0, y1 = ys.min() * level0_per_px, (ys.max() + 1) * level0_per_px
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = min(max(side, 256.0), W, H)
    x = int(min(max(cx - side / 2, 0), W - side))
    y = int(min(max(cy - side / 2, 0), H - side))
    return x, y, int(side), int(side)


def prune_uploads(folder: Path, keep: Path, kept: int | None = None) -> list[Path]:
    """Delete the oldest uploaded slides in ``folder`` beyond the newest ``kept`` (default
    :data:`cam_core.limits.SLIDE_UPLOADS_KEPT`), never ``keep``: a shared server's temp folder is
    not an archive. Returns what was deleted."""
    from cam_core.limits import SLIDE_UPLOADS_KEPT

    kept = SLIDE_UPLOADS_KEPT if kept is None else kept
    others = sorted((p for p in folder.iterdir() if p.is_file() and p != keep), key=lambda p: p.stat().st_mtime_ns)
    gone = others[: max(0, len(others) + 1 - kept)]
    for old in gone:
        old.unlink(missing_ok=True)
    return gone


def prune_all_uploads(root: Path, keep: Path, max_bytes: int | None = None) -> list[Path]:
    """Delete the oldest uploaded slides of every session under ``root`` until they take at most
    ``max_bytes`` (default :data:`cam_core.limits.SLIDE_UPLOADS_MAX_BYTES`), never ``keep``: the
    per-session count bounds one session, this bounds the server's disk whatever the sessions."""
    from cam_core.limits import SLIDE_UPLOADS_MAX_BYTES

    limit = SLIDE_UPLOADS_MAX_BYTES if max_bytes is None else max_bytes
    files = []
    for p in root.glob("*/*"):
        try:
            if p.is_file() and p != keep:
                st = p.stat()
                files.append((st.st_mtime_ns, st.st_size, p))
        except OSError:  # deleted by another session meanwhile
            continue
    total = sum(size for _, size, _ in files) + (keep.stat().st_size if keep.is_file() else 0)
    gone = []
    for _, size, p in sorted(files, key=lambda f: f[0]):
        if total <= limit:
            break
        p.unlink(missing_ok=True)
        total -= size
        gone.append(p)
    return gone


def store_upload(folder: Path, data: bytes, suffix: str, name: str | None = None) -> Path:
    """An uploaded slide saved in ``folder`` (one session's private folder) under the upload's
    own file name (letters, digits, ``.-_`` kept; its content hash without a name), so captions,
    file names and records call it what the user called it.

    A file already there is reused only when its bytes hash the same (a file planted or changed
    under that name is replaced, never shown to the user as theirs); writes are atomic.
    """
    import re

    digest = hashlib.sha256(data).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._")[:80] if name else ""
    path = folder / f"{stem or digest[:16]}{suffix.lower()}"
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
        os.utime(path)  # the newest upload, for pruning
        return path
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def upload_folder(root: Path, max_age_s: float) -> Path:
    """A new private folder (mode 0700, unpredictable name) for one session's uploaded slides,
    after deleting other sessions' folders untouched for ``max_age_s`` (a server's temp space is
    not an archive)."""
    import shutil
    import tempfile
    import time

    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        try:
            if (
                old.is_dir()
                and now - max([old.stat().st_mtime, *(p.stat().st_mtime for p in old.iterdir())]) > max_age_s
            ):
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            continue
    return Path(tempfile.mkdtemp(prefix="session_", dir=root))
