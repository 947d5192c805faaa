"""Real-browser tests: `python -m ui.serve` (streamlit run app.py + warm-up) on a free port, driven by Playwright on Chromium.

Chromium comes from the system (Debian's `chromium` package; `scripts/test.sh` installs it);
`playwright install` is not needed. Screenshots of every page go to artifacts/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = os.environ.get("SEGCAM_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
SHOTS = REPO / "artifacts" / "screenshots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run scripts/test.sh (installs Debian's chromium) or set SEGCAM_CHROMIUM"
        )
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
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
    yield url, log
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
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
    pg.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


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
        page.wait_for_selector(f'img[alt="{alt}"]', timeout=120_000)
    wait_idle(page)
    no_exception(page)
    shot(page, "explore")
    before_src = page.locator('img[alt="overlay"]').get_attribute("src")
    before = passes(log)
    thumb = page.locator('[data-testid="stSlider"] input[type="range"]').first
    thumb.focus()
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "(src) => { const i = document.querySelector('img[alt=\"overlay\"]'); return i && i.src !== src; }",
        arg=before_src,
        timeout=60_000,
    )
    wait_idle(page)
    assert "0.70" in page.locator('[data-testid="stSlider"]').first.inner_text()
    assert passes(log) == before  # the overlay changed, the model did not run
    no_exception(page)


def test_upload_is_explained(server, page, tmp_path):
    url, log = server
    page.goto(url)
    page.wait_for_selector('img[alt="overlay"]', timeout=120_000)
    wait_idle(page)
    page.get_by_text("Upload", exact=True).click()
    page.wait_for_selector('input[type="file"]', state="attached", timeout=30_000)
    before = passes(log)
    page.set_input_files('input[type="file"]', str(REPO / "samples/images/test_8_001.png"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('p')].some(p => p.innerText.includes('test_8_001') || p.innerText.includes('GradCAM'))",
        timeout=120_000,
    )
    page.wait_for_selector('img[alt="overlay"]', timeout=120_000)
    wait_idle(page)
    assert passes(log) > before  # the uploaded tile went through the model
    no_exception(page)
    shot(page, "upload")


def test_compare_grid_and_every_page(server, page):
    url, _ = server
    page.goto(url)
    page.wait_for_selector('img[alt="overlay"]', timeout=120_000)
    wait_idle(page)
    for label, name, check in (
        ("Compare", "compare", 'img[alt^="cam "]'),
        ("Model", "model", "text=Add your own model"),
        ("About CAMs", "about", "text=Reading a Class Activation Map"),
        ("Explore", "explore_again", 'img[alt="overlay"]'),
    ):
        page.get_by_role("link", name=label).first.click()
        page.wait_for_selector(check, timeout=120_000)
        wait_idle(page)
        no_exception(page)
        if name == "compare":  # 6 fast methods × 3 default layers
            page.wait_for_function(
                "() => document.querySelectorAll('img[alt^=\"cam \"]').length >= 18", timeout=120_000
            )
            wait_idle(page)
        shot(page, name)


def test_trust_line_in_the_browser(server, page):
    """One click under the panels: a progress bar, then the faithfulness and sanity lines."""
    url, log = server
    page.goto(url)
    page.wait_for_selector('img[alt="overlay"]', timeout=120_000)
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
    assert passes(log) > before  # the checks ran the model
    shot(page, "trust")
    # The result is cached: the button is gone after a re-run, and the lines stay.
    page.get_by_role("link", name="Explore").first.click()
    page.wait_for_selector("text=randomised copy of the model", timeout=120_000)
    wait_idle(page)
    assert page.get_by_role("button", name="Check this map").count() == 0


def overlay_pixels(pg, base_url):
    import io

    import numpy as np
    from PIL import Image

    src = pg.locator('img[alt="overlay"]').get_attribute("src")
    data = pg.request.get(src if src.startswith("http") else base_url + src).body()
    return np.asarray(Image.open(io.BytesIO(data)))


def test_parallel_sessions_match_serial(server, browser):
    """Four browser sessions at once, each on its own tile (via ?sample=), see their own results."""
    url, _ = server
    tiles = ["test_8_001", "test_13_008", "test_11_010", "test_10_013"]
    contexts = [browser.new_context(viewport={"width": 1400, "height": 900}) for _ in tiles]
    pages = [c.new_page() for c in contexts]
    try:
        for pg, tile in zip(pages, tiles):  # all four start before any finishes
            pg.goto(f"{url}/?sample={tile}", wait_until="commit")
        parallel = {}
        for pg, tile in zip(pages, tiles):
            pg.wait_for_selector('img[alt="overlay"]', timeout=180_000)
            wait_idle(pg)
            no_exception(pg)
            text = pg.locator("p", has_text="· model").first.inner_text()
            assert f"image {tile}" in text, text  # nobody sees another session's tile
            parallel[tile] = overlay_pixels(pg, url)
        for pg, tile in zip(pages, tiles):  # now one at a time, fresh sessions
            pg.goto(f"{url}/?sample={tile}")
            pg.wait_for_selector('img[alt="overlay"]', timeout=180_000)
            wait_idle(pg)
            assert (overlay_pixels(pg, url) == parallel[tile]).all(), tile
    finally:
        for c in contexts:
            c.close()
