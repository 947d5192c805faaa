"""The pins and the lock (scripts/lock.py): what the tested venv holds is what a fresh machine gets."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from cam_core.model.kinds import TRANSFORMERS_PIN

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("segcam_lock", REPO / "scripts" / "lock.py")
assert _spec
assert _spec.loader
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)


def test_the_venv_holds_exactly_the_pinned_and_locked_versions():
    assert lock.differences() == [], "run .venv/bin/python scripts/lock.py after changing a pin"


@pytest.fixture
def files(tmp_path):
    (tmp_path / "requirements.txt").write_text("torch==2.14.1\ndask[distributed]==2026.8.0  # batch\n-r other.txt\n")
    (tmp_path / "requirements-dev.txt").write_text("-r requirements.txt\nPyTest==9.2.0\n")
    (tmp_path / lock.LOCK).write_text("# head\nsympy==1.14.0\ntyping_extensions==4.15.0\n")
    return tmp_path


def test_the_check_names_every_kind_of_drift(files):
    held = {
        "torch": "2.14.1+cpu",
        "dask": "2026.8.0",
        "pytest": "9.2.0",
        "sympy": "1.14.0",
        "typing-extensions": "4.15.0",
    }
    assert lock.differences(files, held) == []  # a local label is the same release; names normalised
    drift = {**held, "sympy": "1.13.0", "pandas": "3.0.1"}
    del drift["typing-extensions"]
    said = lock.differences(files, drift)
    assert said == [
        "pandas==3.0.1 is installed but in neither requirements*.txt nor constraints.txt",
        "sympy: installed 1.13.0, the files say 1.14.0",
        "typing-extensions==4.15.0 is in constraints.txt but not installed",
    ]
    (files / lock.LOCK).write_text("torch==2.14.1\nsympy==1.14.0\ntyping-extensions==4.15.0\n")
    assert lock.differences(files, held) == ["torch: pinned in requirements*.txt and in constraints.txt (keep one)"]


def test_a_written_lock_holds_and_leaves_the_direct_pins_out(tmp_path):
    for path in REPO.glob("requirements*.txt"):
        shutil.copy(path, tmp_path / path.name)
    written = lock.read_pins(lock.write(tmp_path))
    assert not written.keys() & lock.direct_pins(tmp_path).keys()
    assert lock.differences(tmp_path) == []
    assert written == lock.read_pins(REPO / lock.LOCK), "constraints.txt is stale: run scripts/lock.py"


def test_the_transformers_pin_the_app_names_is_the_one_installed():
    name, version = TRANSFORMERS_PIN.split("==")
    assert lock.direct_pins()[lock.canonical(name)] == version  # requirements-extras.txt
