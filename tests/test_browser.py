"""Real-browser tests: `python -m ui.serve` (streamlit run app.py + warm-up) on a free port, driven by Playwright on Chromium.

Chromium comes from the system (Debian's `chromium` package; `scripts/test.sh` installs it);
`playwright install` is not needed. Screenshots of every page go to artifacts/screenshots/.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import BROWSER_ARGS, CHROMIUM, REPO

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SHOTS = REPO / "artifacts" / "screenshots"
# Waits poll every 200 ms, not on every frame (Playwright's default): a predicate reading innerText
# lays the page out 60×/s, on the 2 cores the measured server runs on (a 2000² click: 1.14 s → ?).
POLL_MS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from cam_core.wsi import synthslide

    slide_dir = tmp_path_factory.mktemp("slides")  # a 20000² slide for the Slide page
    synthslide.write_slide(slide_dir / "big.tif", synthslide.sample_tiles(), 20_000, (9_000, 9_000, 1_536, 1_536))
    with streamlit_server(tmp_path_factory.mktemp("server") / "server.log", {"SEGCAM_SLIDES_DIR": str(slide_dir)}) as s:
        yield s


@contextlib.contextmanager
def streamlit_server(log: Path, env: dict[str, str]):
    """``python -m ui.serve`` on a free port, until the block ends: (url, log)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run scripts/test.sh (installs Debian's chromium) or set SEGCAM_CHROMIUM"
        )
    port = free_port()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ui.serve",
                "--server.port",
                str(port),
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"streamlit did not start: {log.read_text()[-2000:]}")
    try:
        yield url, log
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
    pg = ctx.new_page()
    yield pg
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"FAILED_{request.node.name}.png"), full_page=True)
    ctx.close()


def passes(log: Path) -> int:
    return log.read_text().count("model pass:")


def wait_idle(pg, timeout=90_000):
    """Until Streamlit has finished the current run (its status widget disappears)."""
    pg.wait_for_timeout(300)
    pg.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", polling=POLL_MS, timeout=timeout
    )


def no_exception(pg):
    assert pg.locator('[data-testid="stException"]').count() == 0


def shot(pg, name):
    """Full-page screenshot once images and the data grid have painted."""
    pg.wait_for_load_state("networkidle")
    pg.wait_for_timeout(1500)
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_three_panels_then_opacity_without_model_pass(server, page):
    url, log = server
    page.goto(url)
    for alt in ("predicted mask", "cam heatmap", "overlay"):
        page.wait_for_selector(f'img[alt^="{alt}"]', timeout=120_000)
    wait_idle(page)
    no_exception(page)
    shot(page, "explore")
    before_src = page.locator('img[alt^="overlay"]').get_attribute("src")
    before = passes(log)
    thumb = page.locator('[data-testid="stSlider"] input[type="range"]').first
    slider = page.locator('[data-testid="stSlider"]').first
    # 0.50 → 0.70 in steps of 0.05; a key pressed while the rerun of the previous one redraws the
    # widget can be lost on a loaded machine (CI once saw 0.55 after four presses), so press until
    # the slider says 0.70 — what is tested is that the model does not run, not the keyboard.
    for _ in range(12):
        if "0.70" in slider.inner_text():
            break
        thumb.focus()
        page.keyboard.press("ArrowRight")
        wait_idle(page)
    page.wait_for_function(
        "(src) => { const i = document.querySelector('img[alt^=\"overlay\"]'); return i && i.src !== src; }",
        arg=before_src,
        polling=POLL_MS,
        timeout=60_000,
    )
    wait_idle(page)
    assert "0.70" in slider.inner_text()
    assert passes(log) == before  # the overlay changed, the model did not run
    no_exception(page)


def test_upload_is_explained(server, page, tmp_path):
    url, log = server
    page.goto(url)
    page.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
    wait_idle(page)
    page.get_by_text("Upload", exact=True).click()
    page.wait_for_selector('input[type="file"]', state="attached", timeout=30_000)
    before = passes(log)
    page.set_input_files('input[type="file"]', str(REPO / "samples/images/test_8_001.png"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('p')].some(p => p.innerText.includes('test_8_001') || p.innerText.includes('GradCAM'))",
        polling=POLL_MS,
        timeout=120_000,
    )
    page.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
    wait_idle(page)
    assert passes(log) > before  # the uploaded tile went through the model
    no_exception(page)
    shot(page, "upload")


def test_compare_grid_and_every_page(server, page):
    url, _ = server
    page.goto(url)
    page.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
    wait_idle(page)
    for label, name, check in (
        ("Compare", "compare", 'img[alt^="cam "]'),
        ("Model", "model", "text=Add your own model"),
        ("About CAMs", "about", "text=Reading a Class Activation Map"),
        ("Explore", "explore_again", 'img[alt^="overlay"]'),
    ):
        page.get_by_role("link", name=label).first.click()
        page.wait_for_selector(check, timeout=120_000)
        wait_idle(page)
        no_exception(page)
        if name == "compare":  # 6 fast methods × 3 default layers
            page.wait_for_function(
                "() => document.querySelectorAll('img[alt^=\"cam \"]').length >= 18", polling=POLL_MS, timeout=120_000
            )
            wait_idle(page)
        shot(page, name)


def test_trust_line_in_the_browser(server, page):
    """One click under the panels: a progress bar, then the faithfulness and sanity lines."""
    url, log = server
    page.goto(url)
    page.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
    wait_idle(page)
    before = passes(log)
    page.get_by_role("button", name="Check this map").click()
    page.wait_for_selector("text=randomised copy of the model", timeout=300_000)  # the last line drawn
    wait_idle(page, timeout=300_000)
    no_exception(page)
    text = page.locator('[data-testid="stMain"]').inner_text()
    assert "random maps" in text
    assert "target mask" in text
    assert "randomised copy of the model" in text
    # one verdict (Believe / Caution / Don't trust) with its reason and margins, and the rule
    from cam_core.trust import VERDICTS

    assert sum(text.count(f"{words}:") for words in VERDICTS.values()) == 1, text
    assert "margin" in text
    assert "The sanity rule:" in text
    assert "Stain evidence" in text  # haematoxylin vs eosin, and the map under re-staining
    assert "Under re-staining" in text
    assert passes(log) > before  # the checks ran the model
    shot(page, "trust")
    # The result is cached: the button is gone after a re-run, and the lines stay.
    page.get_by_role("link", name="Explore").first.click()
    page.wait_for_selector("text=randomised copy of the model", timeout=120_000)
    wait_idle(page)
    assert page.get_by_role("button", name="Check this map").count() == 0


def image_pixels(pg, base_url, selector='img[alt^="overlay"]'):
    """The pixels of a picture on the page (a data URL from a clickable panel, or a media URL)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    src = pg.locator(selector).first.get_attribute("src")
    if src.startswith("data:"):
        data = base64.b64decode(src.split(",", 1)[1])
    else:
        data = pg.request.get(src if src.startswith("http") else base_url + src).body()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def overlay_pixels(pg, base_url):
    return image_pixels(pg, base_url)


def test_parallel_sessions_match_serial(server, browser, tmp_path):
    """Four browser sessions at once, each on its own tile (via ?sample=), see their own results:
    the same pixels as one session at a time on a fresh server (its own, empty caches)."""
    url, _ = server
    tiles = ["test_8_001", "test_13_008", "test_11_010", "test_10_013"]
    contexts = [browser.new_context(viewport={"width": 1400, "height": 900}) for _ in tiles]
    pages = [c.new_page() for c in contexts]
    try:
        for pg, tile in zip(pages, tiles):  # all four start before any finishes
            pg.goto(f"{url}/?sample={tile}", wait_until="commit")
        parallel = {}
        for pg, tile in zip(pages, tiles):
            pg.wait_for_selector('img[alt^="overlay"]', timeout=180_000)
            wait_idle(pg)
            no_exception(pg)
            text = pg.locator("p", has_text="· model").first.inner_text()
            assert f"image {tile}" in text, text  # nobody sees another session's tile
            parallel[tile] = overlay_pixels(pg, url)
        with streamlit_server(tmp_path / "serial.log", {}) as (fresh, log):
            for pg, tile in zip(pages, tiles):  # now one at a time, computed anew
                pg.goto(f"{fresh}/?sample={tile}")
                pg.wait_for_selector('img[alt^="overlay"]', timeout=180_000)
                wait_idle(pg)
                assert (overlay_pixels(pg, fresh) == parallel[tile]).all(), tile
            assert log.read_text().count("model pass: forward+backward") >= len(tiles)  # not from a cache
    finally:
        for c in contexts:
            c.close()


# ---------------------------------------------------------------- #12: click, links, presenter, truth


def _prediction(name="test_12_002", rule=None):
    import numpy as np
    from PIL import Image

    from cam_core import engine
    from cam_core.model import models

    loaded = models.load(None)
    return engine.predict(loaded, np.asarray(Image.open(REPO / f"samples/images/{name}.png").convert("RGB")), rule)


def _target_line(pg) -> str:
    return pg.locator("p", has_text="Target:").first.inner_text()


def test_click_on_a_nucleus_explains_that_object(server, page):
    from urllib.parse import quote

    from cam_core.data.objects import component_at, find_objects
    from cam_core.model.rules import DecisionRule
    from cam_core.output.render import contour

    url, log = server
    # A rule no other test uses: this view's capture is then the newest, whose graph the server
    # keeps (a view served from the cache while another session's graph is kept costs a full pass).
    pred = _prediction(rule=DecisionRule(type="background_below", threshold=0.4))
    obj = next(o for o in find_objects(pred.mask) if o.class_index == 3)  # the largest epithelial nucleus
    x, y = obj.centroid_xy
    _, component = component_at(pred.mask, x, y)
    page.goto(f"{url}/?rule={quote('P(background) < 0.4')}")
    mask = page.wait_for_selector('img[alt^="predicted mask"]', timeout=120_000)
    wait_idle(page)
    box = mask.bounding_box()
    h, w = pred.mask.shape
    before = log.read_text().count("forward+backward")
    page.mouse.click(box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h)
    page.wait_for_function(
        "() => [...document.querySelectorAll('p')].some(p => p.innerText.startsWith('Target: clicked object'))",
        polling=POLL_MS,
        timeout=120_000,
    )
    wait_idle(page)
    no_exception(page)
    line = _target_line(page)
    assert f"{int(component.sum())} px" in line, line  # the target is exactly the clicked component
    assert "at (" in line
    # The outline is drawn on every panel: the object's edge is white on the mask and the overlay.
    edge = contour(component)
    for selector in ('img[alt^="predicted mask"]', 'img[alt^="cam heatmap"]', 'img[alt^="overlay"]'):
        pixels = image_pixels(page, url, selector)
        assert (pixels[edge] == 255).all(), selector
    assert "point=" in page.url  # the link carries the clicked point
    # The click costs one backward through the kept graph, never a new forward pass.
    assert log.read_text().count("forward+backward") == before
    assert "backward only (recapture)" in log.read_text()
    shot(page, "click_nucleus")


def test_a_click_on_a_2000px_upload_costs_one_tile_and_keeps_class_sidebar_and_link_in_sync(server, page, tmp_path):
    """#22: a click on a large image runs only the tiles its object touches (the server log says
    how long), explains it with a local method, and the sidebar and the link name its class."""
    import re

    import numpy as np
    from PIL import Image
    from scipy import ndimage

    from cam_core import grid
    from cam_core.engine import tiling
    from cam_core.model import models

    url, log = server
    tile = np.asarray(Image.open(REPO / "samples/images/test_12_002.png").convert("RGB"))
    big = np.pad(tile, ((0, 2000 - 256), (0, 2000 - 256), (0, 0)), mode="symmetric")[:2000, :2000]
    upload = tmp_path / "large_upload.png"
    Image.fromarray(np.ascontiguousarray(big)).save(upload)
    page.goto(url)
    page.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
    wait_idle(page)
    page.get_by_text("Upload", exact=True).click()
    page.wait_for_selector('input[type="file"]', state="attached", timeout=30_000)
    page.set_input_files('input[type="file"]', str(upload))
    page.wait_for_function(
        "() => [...document.querySelectorAll('p')].some(p => p.innerText.includes('large_upload.png'))",
        polling=POLL_MS,
        timeout=300_000,
    )
    page.wait_for_selector('img[alt^="predicted mask of large_upload.png"]', timeout=300_000)
    wait_idle(page, timeout=300_000)
    pixels = image_pixels(page, url, 'img[alt^="predicted mask"]')
    spec = models.load(None).spec
    classes = spec.classes
    epithelial = (pixels == np.array([int(spec.colors[3][i : i + 2], 16) for i in (1, 3, 5)])).all(axis=2)
    h, w = pixels.shape[:2]  # the picture sent (downscaled); the page maps a click back to the image
    k = 2000 / w
    boxes = [c.box for c in grid.grid(2000, 2000, tiling.DEFAULT_TILE, tiling.DEFAULT_OVERLAP, align=32)]
    labels, _ = ndimage.label(ndimage.binary_erosion(epithelial, iterations=2))
    found = []  # (tiles that see it, its slice) for each nucleus
    for sl in ndimage.find_objects(labels):
        y0, y1, x0, x1 = (sl[0].start - 6) * k, (sl[0].stop + 6) * k, (sl[1].start - 6) * k, (sl[1].stop + 6) * k
        found.append(({i for i, (a, b, c, d) in enumerate(boxes) if a < y1 and y0 < c and b < x1 and x0 < d}, sl))
    seam = next(f for f in found if len(f[0]) > 1)  # main: its 2–4 tiles' passes; first, as the slowest click
    inside, seen = [seam], set(seam[0])  # then two nuclei in other tiles
    for tiles, sl in found:
        if len(tiles) == 1 and not tiles & seen and len(inside) < 3:
            inside.append((tiles, sl))
            seen |= tiles
    assert len(inside) == 3, inside
    runs = r"page run: Explore large_upload\.png, target point: ([\d.]+) s"
    for n, (_, sl) in enumerate(inside[:3], start=1):
        ys, xs = np.nonzero(labels[sl] > 0)
        x, y = int(xs[len(xs) // 2] + sl[1].start), int(ys[len(ys) // 2] + sl[0].start)
        panel = page.locator('img[alt^="predicted mask of large_upload.png"]').first
        panel.scroll_into_view_if_needed()
        box = panel.bounding_box()  # redrawn after each click; notes above it come and go with the target
        page.mouse.click(box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h)
        deadline = time.time() + 120
        while len(re.findall(runs, log.read_text())) < n and time.time() < deadline:
            time.sleep(0.2)
        wait_idle(page)
    page.wait_for_function(
        "() => [...document.querySelectorAll('p')].some(p => p.innerText.startsWith('Target: clicked object'))",
        polling=POLL_MS,
        timeout=120_000,
    )
    page.wait_for_url(re.compile("method=HiResCAM"), timeout=120_000)  # the run after the click has finished
    wait_idle(page)
    no_exception(page)
    text = log.read_text()
    lines = re.findall(r"tiled recapture \(point target\) \S+: the target explained in one (\d+)×(\d+) px window", text)
    assert len(lines) == 3, "the clicks did not take the one-window path"
    assert all(int(a) * int(b) < tiling.DEFAULT_TILE**2 for a, b in lines), lines  # each less than one tile
    # The whole server run that answers a click (sidebar, recapture, map, panels drawn and encoded),
    # from the server's log: three clicks (main: a full tiled pass, 18.7 s measured). The first click
    # is on a seam, where the one-tile path cost 2–4 tiles.
    seconds = sorted(float(t) for t in re.findall(runs, text))
    assert len(seconds) == 3, seconds
    assert seconds[-1] <= 1.0, (seconds, lines)  # #22: ≤ 1 s of server time
    assert "method=HiResCAM" in page.url  # a local method, in the link
    assert f"class={classes[3]}" in page.url  # the clicked object's class, not the old one
    assert "point=" in page.url
    shown = page.evaluate(  # each sidebar selectbox: its label, then the value in its input
        """() => [...document.querySelectorAll('[data-testid="stSidebar"] [data-testid="stSelectbox"]')]
            .map(b => b.textContent + '=' + [...b.querySelectorAll('input')].map(i => i.value).join('|'))"""
    )
    # the sidebar says so too
    assert any(t.startswith("Class") and classes[3] in t for t in shown), shown
    assert any(t.startswith("Method") and "HiResCAM" in t for t in shown), shown
    shot(page, "click_large_upload")


def assert_link_reproduces(url, browser, link, selector, shown):
    """``link`` opened in another browser (its own session, nothing cached for it) shows the
    picture at ``selector`` with exactly the pixels ``shown``."""
    other = browser.new_context(viewport={"width": 1500, "height": 1000})
    try:
        b = other.new_page()
        b.goto(link)
        b.wait_for_selector(selector, timeout=120_000)
        wait_idle(b)
        no_exception(b)
        assert (image_pixels(b, url, selector) == shown).all()  # the same picture, pixel for pixel
    finally:
        other.close()


def test_a_copied_link_reproduces_the_overlay_in_another_browser(server, browser):
    url, _ = server
    first = browser.new_context(viewport={"width": 1500, "height": 1000})
    try:
        a = first.new_page()
        a.goto(f"{url}/?sample=test_8_001")
        a.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
        wait_idle(a)
        before = image_pixels(a, url)
        thumb = a.locator('[data-testid="stSlider"] input[type="range"]').first  # opacity
        thumb.focus()
        for _ in range(3):
            a.keyboard.press("ArrowRight")
        a.wait_for_function("() => window.location.search.includes('opacity=0.65')", polling=POLL_MS, timeout=60_000)
        wait_idle(a)
        a.get_by_text("percentile", exact=True).click()  # threshold mode
        a.wait_for_function("() => window.location.search.includes('thr=percentile')", polling=POLL_MS, timeout=60_000)
        wait_idle(a)
        shown = image_pixels(a, url)
        assert (shown != before).any()  # the settings changed the picture
        assert_link_reproduces(url, browser, a.url, 'img[alt^="overlay"]', shown)
    finally:
        first.close()


def test_the_shortcut_preset_and_its_ab_link_in_another_browser(server, browser):
    """#22: one click shows the teaching model with and without the dot; the A/B view's link
    gives another browser the same figure, pixel for pixel."""
    url, _ = server
    first = browser.new_context(viewport={"width": 1500, "height": 1000})
    try:
        a = first.new_page()
        a.goto(f"{url}/?sample=ink_dot_test_13_014")
        a.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
        wait_idle(a)
        a.get_by_role("button", name="Show the shortcut").click()
        a.wait_for_selector('img[alt^="A/B figure"]', timeout=120_000)
        wait_idle(a)
        no_exception(a)
        assert "ab=marker" in a.url
        assert "model=consep-unet-marker-teaching" in a.url
        shown = image_pixels(a, url, 'img[alt^="A/B figure"]')
        shot(a, "shortcut_ab")
        assert_link_reproduces(url, browser, a.url, 'img[alt^="A/B figure"]', shown)
    finally:
        first.close()


def test_presentation_mode_fits_a_1280x720_projector(server, browser):
    url, _ = server
    ctx = browser.new_context(
        viewport={"width": 1280, "height": 720}, permissions=["clipboard-read", "clipboard-write"]
    )
    try:
        pg = ctx.new_page()
        from cam_core.output.figure import FIGURE_BOX

        SHOTS.mkdir(parents=True, exist_ok=True)
        for view, shot in (("three", "presenter.png"), ("overlay", "presenter_one_panel.png")):
            pg.goto(f"{url}/?sample=test_8_001&class=epithelial&present=1&view={view}")
            fig = pg.wait_for_selector('img[alt^="figure: Where the model looked"]', timeout=120_000)
            wait_idle(pg)
            no_exception(pg)
            pg.wait_for_timeout(1000)
            box = fig.bounding_box()
            assert box["y"] >= 0
            assert box["y"] + box["height"] <= 720, box  # the whole figure without scrolling
            # shown at its own size: its type (none under 14 px, tests/test_figure.py) is what the room reads
            assert round(box["width"]) == FIGURE_BOX[0], box
            assert pg.evaluate("e => e.naturalWidth", fig) >= FIGURE_BOX[0]  # never enlarged (blurred)
            pg.screenshot(path=str(SHOTS / shot))  # the screen as the audience sees it
        pg.locator("button.segcam-copy").click()  # one click puts the figure on the clipboard
        pg.wait_for_selector("text=copied", timeout=30_000)
        kinds = pg.evaluate("async () => (await navigator.clipboard.read()).flatMap(i => i.types)")
        assert "image/png" in kinds
    finally:
        ctx.close()


def test_truth_and_missed_pixels_target_in_the_browser(server, page):
    from cam_core.data.truth import FN, compare, load_truth

    url, _ = server
    pred = _prediction()
    truth = load_truth(
        REPO / "samples/masks/test_12_002.png",
        ["background", "other", "inflammatory", "epithelial", "spindle"],
        pred.mask.shape,
    )
    missed = int((compare(pred.mask, truth, 3) == FN).sum())
    page.goto(f"{url}/?sample=test_12_002&class=epithelial&target=fn")
    page.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
    page.wait_for_selector('img[alt^="ground truth mask"]', timeout=120_000)
    wait_idle(page)
    no_exception(page)
    line = _target_line(page)
    assert "missed (false negatives)" in line
    assert f"{missed} px" in line, line
    assert page.get_by_text("Errors — epithelial").count() == 1
    shot(page, "truth_fn")
    page.get_by_role("heading", name="Ground truth").scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    page.screenshot(path=str(SHOTS / "truth_section.png"))


def test_a_sample_thumbnail_opens_its_tile(server, page):
    from cam_core.data.samples import names as sample_names

    url, _ = server
    names = sample_names()
    wanted = "test_8_001"
    index = names.index(wanted)
    page.goto(url)
    page.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
    wait_idle(page)
    sheet = page.locator('img[alt^="sample tiles"]')
    box = sheet.bounding_box()
    w, h = int(sheet.get_attribute("data-width")), int(sheet.get_attribute("data-height"))
    rows = -(-len(names) // 4)
    x = (index % 4 + 0.5) * (w / 4)
    y = (index // 4) * (h / rows) + 20
    page.mouse.click(box["x"] + x * box["width"] / w, box["y"] + y * box["height"] / h)
    page.wait_for_function(
        f"() => [...document.querySelectorAll('p')].some(p => p.innerText.includes('image {wanted}'))",
        polling=POLL_MS,
        timeout=120_000,
    )
    wait_idle(page)
    no_exception(page)


def test_slide_page_opens_a_slide_and_explains_a_clicked_region(server, page):
    url, _ = server
    page.goto(url)
    page.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
    wait_idle(page)
    page.get_by_role("link", name="Slide").first.click()
    overview = page.wait_for_selector('img[alt^="overview of big.tif"]', timeout=120_000)
    wait_idle(page)
    no_exception(page)
    assert "20000×20000 px" in page.locator('[data-testid="stMain"]').inner_text()
    x_input = page.get_by_label("x (level-0 px)")
    before = x_input.input_value()
    overview.scroll_into_view_if_needed()
    box = overview.bounding_box()
    page.mouse.click(box["x"] + 0.7 * box["width"], box["y"] + min(0.5 * box["height"], 900 - box["y"]))
    page.wait_for_function(
        "(v) => [...document.querySelectorAll('input')].some(i => i.getAttribute('aria-label') === 'x (level-0 px)' "
        "&& i.value !== v)",
        arg=before,
        polling=POLL_MS,
        timeout=60_000,
    )
    wait_idle(page)
    x = int(x_input.input_value())
    assert x > int(before)  # the region moved towards the click (right of the tissue's centre)
    shot(page, "slide")
    page.get_by_role("button", name="Explain this region").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('p')].some(p => p.innerText.includes('image big.tif ('))",
        polling=POLL_MS,
        timeout=120_000,
    )
    page.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
    wait_idle(page)
    no_exception(page)
    assert "µm²" in _target_line(page)  # the region carries its resolution (scale bars, areas)
    shot(page, "slide_region")


def test_downloads_are_built_on_click_and_fit_other_tools(server, page, tmp_path):
    import io
    import json
    import zipfile

    import numpy as np
    from PIL import Image

    from cam_core.output import bundle
    from cam_core.wsi import geojson as gj

    url, _ = server
    page.goto(f"{url}/?sample=test_12_002&class=epithelial")
    page.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
    wait_idle(page)
    got = {}
    for label in ("mask.png", "objects.geojson", "results.zip"):
        with page.expect_download(timeout=60_000) as info:
            page.get_by_role("button", name=label, exact=True).click()
        d = info.value
        path = tmp_path / d.suggested_filename
        d.save_as(path)
        got[label] = path
        wait_idle(page)
    assert got["mask.png"].name == "test_12_002_epithelial_decoder.blocks.2_GradCAM_mask.png"
    mask = np.asarray(Image.open(got["mask.png"]))
    assert mask.ndim == 2
    assert set(np.unique(mask)) <= set(range(5))  # class indices
    doc = json.loads(got["objects.geojson"].read_text())
    assert gj.validate(doc, 256, 256) == []
    assert any(f["properties"]["objectType"] == "detection" for f in doc["features"])
    with zipfile.ZipFile(got["results.zip"]) as z:
        # the CLI's files under the CLI's names, and the tile's GeoJSON (main: no heatmap_signed.png)
        assert z.namelist() == [n for n in bundle.FILES if n != "truth_compare.png"]
        assert json.loads(z.read("result.json"))["class"] == "epithelial"
        assert np.asarray(Image.open(io.BytesIO(z.read("mask.png")))).ndim == 2


# ---------------------------------------------------------------- a hostile lab (#19)

EVIL_LINK = "[**Session expired**](http://evil.example/login)"
TRACKER = "![x](http://127.0.0.1:8629/track.png)"
HOSTILE_SLIDE = "scan [login](evil.example) ![t](track.png).tif"  # a file name cannot hold "/"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A server whose models folder, slides folder and batch outputs were filled by someone hostile."""
    import json

    from conftest import tiny_unet

    from cam_core.wsi import synthslide

    root = tmp_path_factory.mktemp("hostile")
    model = root / "models" / "hostile"
    tiny_unet().save_pretrained(str(model))
    (model / "segcam.json").write_text(
        json.dumps(
            {"classes": ["background", EVIL_LINK, TRACKER], "description": f"See {EVIL_LINK} or mail a@evil.example"}
        )
    )
    (model / "MODEL_CARD.md").write_text(
        f"# Card\n\n{EVIL_LINK} {TRACKER} <http://evil.example/auto> https://evil.example/bare www.evil.example "
        "mail@evil.example\n\n[ref]: http://evil.example/ref\n\nA [ref] link.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    slides_dir = root / "slides"
    slides_dir.mkdir()
    synthslide.write_slide(
        slides_dir / HOSTILE_SLIDE, synthslide.sample_tiles(), 4096, (1024, 1024, 1024, 1024), mpp=0.5
    )
    damaged = root / "batch_out" / Path(HOSTILE_SLIDE).stem
    damaged.mkdir(parents=True)
    (damaged / "cam_lowres.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order'")  # cut short
    env = {
        "SEGCAM_MODELS_DIR": str(model.parent),
        "SEGCAM_SLIDES_DIR": str(slides_dir),
        "SEGCAM_BATCH_DIR": str(root / "batch_out"),
    }
    with streamlit_server(root / "server.log", env) as (url, log):
        yield url, log


@pytest.fixture
def watched(browser, hostile):
    """A page that records every request the browser makes."""
    ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
    pg = ctx.new_page()
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    yield pg, requests
    ctx.close()


def no_link_image_or_request(pg, url: str, requests: list[str]) -> None:
    """No link and no image leads off this server, and the browser asked nothing of anyone else."""
    from urllib.parse import urlsplit

    def elsewhere(u: str) -> bool:
        return not u.startswith(("data:", "blob:")) and urlsplit(u).netloc != urlsplit(url).netloc

    hrefs = pg.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    assert not [h for h in hrefs if elsewhere(h) or "track.png" in h.split("?")[0]], hrefs
    srcs = pg.eval_on_selector_all("img", "els => els.map(e => e.src)")
    assert not [s for s in srcs if elsewhere(s) or "track" in s], srcs
    outside = [r for r in requests if elsewhere(r)]
    assert not outside, outside  # main: the visitor's browser fetched 127.0.0.1:8629/track.png


def body_text(pg) -> str:
    """The page's text as read (without the invisible joiners that keep URLs in text unlinked)."""
    return pg.inner_text("body").replace("\u2060", "")


def test_injected_markdown_makes_no_link_image_or_request(hostile, watched, tmp_path):
    url, _ = hostile
    pg, requests = watched
    pg.goto(f"{url}/?%5B**Session%20expired**%5D(http%3A%2F%2Fevil.example%2Flogin)=1")
    pg.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
    wait_idle(pg)
    assert "Session expired" in body_text(pg)  # the payload is shown, as text
    no_link_image_or_request(pg, url, requests)

    pg.goto(f"{url}/?slide=%21%5Bx%5D(http%3A%2F%2F127.0.0.1%3A8629%2Ftrack.png)&region=0,0,256,256")
    pg.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
    wait_idle(pg)
    assert "track.png" in body_text(pg)
    no_link_image_or_request(pg, url, requests)

    pg.goto(f"{url}/?model=hostile&cls=1")  # class names from a dropped-in segcam.json
    pg.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
    wait_idle(pg)
    assert "Session expired" in body_text(pg)
    no_link_image_or_request(pg, url, requests)

    upload = tmp_path / "a`` `b ![t](track.png) [x](evil.example).png"  # backticks in an upload's name
    shutil.copy(REPO / "samples/images/test_8_001.png", upload)
    pg.get_by_text("Upload", exact=True).click()
    pg.wait_for_selector('input[type="file"]', state="attached", timeout=30_000)
    pg.set_input_files('input[type="file"]', str(upload))
    pg.wait_for_function("() => document.body.innerText.includes('track.png) [x]')", polling=POLL_MS, timeout=120_000)
    wait_idle(pg)
    no_link_image_or_request(pg, url, requests)

    pg.goto(f"{url}/Model?model=hostile")  # the folder's description, classes and MODEL_CARD.md
    pg.wait_for_function("() => document.body.innerText.includes('Card')", polling=POLL_MS, timeout=120_000)
    wait_idle(pg)
    text = body_text(pg)
    assert "evil.example/bare" in text
    assert "mail@evil.example" in text
    assert pg.locator("table").count() >= 1 or "| a |" not in text  # the card's table still renders
    no_link_image_or_request(pg, url, requests)

    pg.goto(f"{url}/Slide")  # the slide's file name and properties
    pg.wait_for_function("() => document.body.innerText.includes('scan [login]')", polling=POLL_MS, timeout=120_000)
    wait_idle(pg)
    no_link_image_or_request(pg, url, requests)
    assert pg.locator('[data-testid="stException"]').count() == 0


def test_bad_link_values_and_damaged_outputs_are_one_line_notes(hostile, watched):
    url, _ = hostile
    pg, _ = watched
    pg.goto(f"{url}/?thr=percentile&thr_pct=nan")
    pg.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
    wait_idle(pg)
    text = body_text(pg)
    assert "thr_pct" in text  # a note names the value (main: a traceback from render.threshold_level)
    assert "Traceback" not in text
    assert pg.locator('[data-testid="stException"]').count() == 0
    pg.goto(f"{url}/Slide")
    pg.wait_for_function("() => document.body.innerText.includes('is damaged')", polling=POLL_MS, timeout=120_000)
    pg.wait_for_function(
        "() => document.body.innerText.includes('cam_core batch')", polling=POLL_MS, timeout=60_000
    )  # the page's end
    wait_idle(pg)
    text = body_text(pg)
    notes = [line for line in text.splitlines() if "is damaged" in line]
    assert len(notes) == 1, notes  # main: np.load crashed the page for everyone
    assert "Traceback" not in text
    assert "/tmp/" not in text  # no server path (main: "when OUT is /tmp/…/batch_out")
    assert pg.locator('[data-testid="stException"]').count() == 0
