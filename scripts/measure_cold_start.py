"""Cold start as a user sees it: seconds from the server's health check to the first sign of life
and to the three panels, in Chromium, for `python -m ui.serve` and for plain `streamlit run app.py`.

Usage: .venv/bin/python scripts/measure_cold_start.py [--repeats 3] [--plain]
Each run starts a fresh server process (nothing imported, nothing cached).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SEGCAM_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def once(command: list[str], browser) -> dict[str, float]:
    port = _port()
    proc = subprocess.Popen(
        [*command, "--server.port", str(port), "--server.headless", "true"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    t_start = time.perf_counter()
    try:
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.05)
        t_health = time.perf_counter()
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(url, wait_until="commit")
        page.wait_for_selector("h1", timeout=120_000)
        t_life = time.perf_counter()
        for alt in ("predicted mask", "cam heatmap", "overlay"):
            page.wait_for_selector(f'img[alt^="{alt}"]', timeout=120_000)
        t_panels = time.perf_counter()
        page.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "server_to_health_s": t_health - t_start,
        "health_to_first_sign_s": t_life - t_health,
        "health_to_panels_s": t_panels - t_health,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--plain", action="store_true", help="also measure plain `streamlit run app.py`")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    commands = {"python -m ui.serve": [sys.executable, "-m", "ui.serve"]}
    if args.plain:
        commands["streamlit run app.py"] = [sys.executable, "-m", "streamlit", "run", "app.py"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        print(f"cold start, median of {args.repeats} fresh server processes, {os.cpu_count()} CPUs")
        print("| command | start → health | health → first sign | health → three panels |\n|---|---|---|---|")
        for name, cmd in commands.items():
            runs = [once(cmd, browser) for _ in range(args.repeats)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(
                f"| `{name}` | {med['server_to_health_s']:.1f} s | {med['health_to_first_sign_s']:.1f} s "
                f"| {med['health_to_panels_s']:.1f} s |"
            )
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
