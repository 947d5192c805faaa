"""The built image, tried as a user would (run by ``scripts/test_docker.sh``, not by the unit suite).

It needs an image (``$SEGCAM_IMAGE``) and an engine (``$SEGCAM_ENGINE``: ``docker`` or
``podman``, with ``$SEGCAM_ENGINE_ARGS`` for ``run``). Every container it starts is removed.
Checked: health and the image's HEALTHCHECK; the three panels and every page in Chromium; a
mounted models folder whose model (written by ``save_pretrained``, mode 0600) is refused with the
permission message, then appears and explains once made readable as the README says; a mounted
slides folder on the Slide page; ``batch`` into a mounted host folder with ``--user``, whose files
the host user owns; the code root-owned; a transformers folder refused with the build argument that
fixes it, and it and a MONAI factory folder loading in the image built with it
(``$SEGCAM_IMAGE_EXTRAS``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import BROWSER_ARGS, CHROMIUM, tiny_unet, write_model_folder  # noqa: E402  (the unit suite's)

ENGINE = os.environ.get("SEGCAM_ENGINE", "docker")
ENGINE_ARGS = shlex.split(os.environ.get("SEGCAM_ENGINE_ARGS", ""))
IMAGE = os.environ.get("SEGCAM_IMAGE", "segcam:test")
EXTRAS_IMAGE = os.environ.get("SEGCAM_IMAGE_EXTRAS", f"{IMAGE}-extras")  # built with --build-arg EXTRAS=1


def engine(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ENGINE, *args], capture_output=True, text=True, check=check, timeout=timeout)


def run_once(*args: str, user: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``docker run --rm`` of a command in the image."""
    who = ["--user", user] if user else []
    return engine("run", "--rm", *ENGINE_ARGS, *who, *args, check=False, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def container(*mounts: str) -> Iterator[tuple[str, str]]:
    """The app in a container (as the README runs it), its URL and its name; removed afterwards."""
    port = _free_port()
    name = f"segcam-test-{port}"
    volumes = [a for m in mounts for a in ("-v", m)]
    engine("run", "-d", "--name", name, *ENGINE_ARGS, "-p", f"127.0.0.1:{port}:8501", *volumes, IMAGE)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 120:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            time.sleep(0.5)
        else:
            pytest.fail("no health answer in 120 s:\n" + engine("logs", name, check=False).stderr[-3000:])
        print(f"health after {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        yield url, name
    finally:
        engine("rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mounts")
    models = root / "my_models"
    tiny_unet().save_pretrained(str(models / "tiny_unet"))  # model.safetensors as save_file writes it: 0600
    (models / "tiny_unet" / "segcam.json").write_text('{"classes": ["background", "alpha", "beta"]}')
    slides = root / "slides"
    slides.mkdir()
    made = subprocess.run(
        [sys.executable, "-m", "cam_core", "make-slide", str(slides / "demo.tif"), "--size", "3000", "--tissue", "768"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    for folder in (root, slides):
        folder.chmod(0o755)
    (slides / "demo.tif").chmod(0o644)
    extras = root / "extras_models"  # the optional kinds, in a folder of their own
    for kind, name in OPTIONAL_KINDS.items():
        write_model_folder(kind, extras / name)
    subprocess.run(["chmod", "-R", "a+rX", str(extras)], check=True)
    return {"models": models, "slides": slides, "root": root, "extras": extras}


OPTIONAL_KINDS = {"transformers": "hf_segformer", "factory (MONAI)": "monai_unet"}  # requirements-extras.txt


def test_the_optional_kinds_are_refused_with_the_fix_and_load_in_the_extras_image(folders):
    mount = f"{folders['extras']}:/models:ro"
    plain = run_once("-v", mount, IMAGE, "python", "-m", "cam_core", "models", "--check", "/models/hf_segformer")
    assert plain.returncode == 1, plain.stdout + plain.stderr[-2000:]
    assert "needs the optional package" in plain.stdout
    assert "--build-arg EXTRAS=1" in plain.stdout
    for kind, name in OPTIONAL_KINDS.items():
        r = run_once("-v", mount, EXTRAS_IMAGE, "python", "-m", "cam_core", "models", "--check", f"/models/{name}")
        assert r.returncode == 0, f"{kind}: {r.stdout}{r.stderr[-2000:]}"
        assert f"{name}: loads" in r.stdout, r.stdout


def test_a_0600_model_file_is_refused_with_the_fix(folders):
    weights = folders["models"] / "tiny_unet" / "model.safetensors"
    assert stat.S_IMODE(weights.stat().st_mode) == 0o600  # what a user's save_pretrained leaves
    r = run_once("-v", f"{folders['models']}:/models:ro", IMAGE, "python", "-m", "cam_core", "models")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "permission denied reading model.safetensors: the server runs as uid 10001" in r.stdout
    assert "chmod -R a+rX tiny_unet" in r.stdout
    (line,) = [ln for ln in r.stdout.splitlines() if "permission denied" in ln]
    assert "/models/" not in line  # the folder's name, not the server's path


def test_the_image_runs_and_every_page_works(folders):
    from playwright.sync_api import sync_playwright

    subprocess.run(["chmod", "-R", "a+rX", str(folders["models"])], check=True)  # the README's step
    mounts = (f"{folders['models']}:/models:ro", f"{folders['slides']}:/slides:ro")
    with container(*mounts) as (url, name), sync_playwright() as p:
        code = engine("exec", name, "python", "-c", "import os; print(os.getuid())").stdout.strip()
        assert code == "10001"
        owners = engine("exec", name, "stat", "-c", "%u", "/app/app.py", "/app/cam_core/__init__.py").stdout.split()
        assert owners == ["0", "0"]  # the code is root's; the server cannot change it
        if ENGINE == "podman":  # the image's own HEALTHCHECK (kept by --format docker)
            assert engine("healthcheck", "run", name, check=False).returncode == 0
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
        print(f"three panels {time.perf_counter() - t0:.1f} s after health", file=sys.stderr)
        for path, text in (
            ("Compare", "Compare methods"),
            ("Model", "tiny_unet"),
            ("About", "Reading a Class Activation Map"),
            ("Slide", "demo.tif"),
        ):
            page.goto(f"{url}/{path}")
            page.wait_for_selector(f"text={text}", timeout=120_000)
            assert page.locator('[data-testid="stException"]').count() == 0, path
        page.goto(f"{url}/?model=tiny_unet&sample=test_12_002&class=alpha&target=class")
        page.wait_for_selector('img[alt^="overlay"]', timeout=120_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        assert "tiny_unet" in page.content()
        browser.close()


def test_batch_writes_into_a_host_folder_the_host_user_owns(folders):
    out = folders["root"] / "batch_out"
    out.mkdir()
    slides = f"{folders['slides']}:/slides:ro"
    mounts = ("-v", slides, "-v", f"{out}:/batch_out", IMAGE)
    batch = ("python", "-m", "cam_core", "batch", "/slides/demo.tif", "--out", "/batch_out", "--workers", "1")
    # as the image's user, a host folder it cannot write is named with the fix
    refused = run_once(*mounts, *batch)
    if os.getuid() != 10001:
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert "uid 10001" in refused.stderr
        assert '--user "$(id -u):$(id -g)"' in refused.stderr
    # as the README says: --user "$(id -u):$(id -g)"
    r = run_once(*mounts, *batch, user=f"{os.getuid()}:{os.getgid()}", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "not writable" not in r.stderr  # matplotlib's config folder (MPLCONFIGDIR)
    manifest = json.loads((out / "demo" / "manifest.json").read_text())
    assert manifest["tiles"]["done"] == manifest["tiles"]["planned"] > 0
    assert {p.stat().st_uid for p in out.rglob("*")} == {os.getuid()}
    # the Slide page shows the run's GeoJSON from the read-only batch folder (the README's line)
    from playwright.sync_api import sync_playwright

    with container(slides, f"{out}:/batch_out:ro") as (url, _name), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/Slide")
        page.wait_for_selector("text=demo.geojson (QuPath", timeout=120_000)
        browser.close()
    shutil.rmtree(out / "demo")  # the host user can delete what the container wrote
