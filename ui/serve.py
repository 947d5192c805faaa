"""Start the explorer: ``python -m ui.serve [streamlit flags]`` (what scripts/run_app.sh runs).

Plain ``streamlit run app.py`` imports torch, loads the model and explains the first tile only
when the first browser connects (the page stayed blank for 8–13 s on a 2-core CPU). Here a
background thread does that work while the server starts, so the first session finds the model
loaded and the default sample's capture in the cache. Streamlit flags pass through unchanged.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app.py"


def _warm() -> None:
    try:
        from . import compute
        from .state import DEFAULT_SAMPLE

        compute.warm_up(DEFAULT_SAMPLE)
    except Exception:  # the server must start anyway; the first session will show the error
        logging.getLogger("segcam").exception("warm-up failed")


def main(argv: list[str] | None = None) -> None:
    from streamlit.web import cli as stcli

    from cam_core.limits import MAX_BYTES

    threading.Thread(target=_warm, name="segcam-warm-up", daemon=True).start()
    upload_mb = f"--server.maxUploadSize={MAX_BYTES >> 20}"  # the library's bound, defined once
    sys.argv = ["streamlit", "run", str(APP), upload_mb, *(sys.argv[1:] if argv is None else argv)]
    stcli.main()


if __name__ == "__main__":
    main()
