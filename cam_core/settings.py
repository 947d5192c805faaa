"""The environment variables a deployment sets, in one schema (pydantic-settings).

Every ``SEGCAM_*`` variable is a field here, with its type, bound and meaning; modules read
:func:`current` instead of ``os.environ``. A bad value never stops a server: it is reported once
by name with what would work, and that setting keeps its default (a typo in a lab's compose
file must not take the explorer down, nor be silently ignored).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from cam_core.paths import REPO_ROOT

PREFIX = "SEGCAM_"
log = logging.getLogger("cam_core.settings")


class Settings(BaseSettings):
    """What a deployment may set, each as ``SEGCAM_<NAME>`` (e.g. ``SEGCAM_HEAVY_JOBS=4``)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", validate_default=True)

    models_dir: Path | None = Field(None, description="folder of user models (default models/user)")
    slides_dir: Path = Field(REPO_ROOT / "slides", description="folder of slides the Slide page lists")
    batch_dir: Path = Field(REPO_ROOT / "batch_out", description="batch output the Slide page shows")
    capture_cache_mb: int = Field(1024, ge=64, description="captures kept by a server, MB (≥ 64)")
    heavy_jobs: int = Field(2, ge=1, description="heavy jobs a server runs at once (≥ 1)")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (≥ 1; default per process)")


def env_name(field: str) -> str:
    """The variable that sets ``field`` (``heavy_jobs`` → ``SEGCAM_HEAVY_JOBS``)."""
    if field not in Settings.model_fields:
        raise KeyError(f"no setting {field!r}; settings: {', '.join(Settings.model_fields)}")
    return PREFIX + field.upper()


_reported: set[tuple[str, str]] = set()


def current() -> Settings:
    """The settings from the environment now; a bad variable keeps its default, with a warning."""
    try:
        return Settings()
    except ValidationError as exc:
        keep_default = {}
        for err in exc.errors():
            field = str(err["loc"][0])
            keep_default[field] = Settings.model_fields[field].default
            key = (field, err["msg"])
            if key not in _reported:  # once per process, not on every read
                _reported.add(key)
                log.warning(
                    "%s ignored (%s; %s); using the default %r",
                    env_name(field),
                    err["msg"],
                    Settings.model_fields[field].description,
                    keep_default[field],
                )
        return Settings(**keep_default)
