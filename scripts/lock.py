"""The lock of what the pins pull in: ``constraints.txt``.

``requirements*.txt`` pin what we import (one place per version); every package those pull in
(pandas under Streamlit, sympy under torch, tokenizers under transformers…) would otherwise
float, and a fresh machine next month could get a pandas or protobuf that breaks the app. This
writes the exact versions the tested venv holds for those, and ``scripts/setup.sh`` and the
Dockerfile install with ``-c constraints.txt``; ``tests/test_requirements.py`` fails when the
venv holds a package in neither file, or another version than they say.

    .venv/bin/python scripts/lock.py          # rewrite constraints.txt from .venv (after a pin changes)
    .venv/bin/python scripts/lock.py --check  # exit 1 and list the differences
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = "constraints.txt"
# The venv's own installer (upgraded by setup.sh), not a dependency of the app; setuptools is one
# (torch requires it).
TOOLS = frozenset({"pip", "wheel"})
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)")


def canonical(name: str) -> str:
    """PEP 503's normalised name (``Typing_Extensions`` and ``typing-extensions`` are one)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of one requirements or constraints file (``-r`` lines are not followed)."""
    pins = {}
    for line in path.read_text().splitlines():
        m = _PIN.match(line.strip())
        if m:
            pins[canonical(m[1])] = m[3]
    return pins


def direct_pins(root: Path = REPO) -> dict[str, str]:
    """Every version ``requirements*.txt`` pins."""
    pins: dict[str, str] = {}
    for path in sorted(root.glob("requirements*.txt")):
        pins.update(read_pins(path))
    return pins


def installed() -> dict[str, str]:
    """What this interpreter's environment holds, by canonical name, without the venv's tools."""
    found = {canonical(d.metadata["Name"]): d.version for d in md.distributions()}
    return {n: v for n, v in found.items() if n not in TOOLS}


def differences(root: Path = REPO, have: dict[str, str] | None = None) -> list[str]:
    """What the venv and the two files disagree on, in words (empty: the lock holds)."""
    have = installed() if have is None else have
    pins, lock = direct_pins(root), read_pins(root / LOCK) if (root / LOCK).exists() else {}
    out = [f"{n}: pinned in requirements*.txt and in {LOCK} (keep one)" for n in sorted(pins.keys() & lock.keys())]
    wanted = {**lock, **pins}
    for name in sorted(have.keys() | wanted.keys()):
        if name not in wanted:
            out.append(f"{name}=={have[name]} is installed but in neither requirements*.txt nor {LOCK}")
        elif name not in have:
            if name not in pins:  # a direct pin may be for another platform's install (e.g. none here)
                out.append(f"{name}=={wanted[name]} is in {LOCK} but not installed")
        elif have[name].split("+")[0] != wanted[name].split("+")[0]:  # 2.14.1+cpu is torch==2.14.1
            out.append(f"{name}: installed {have[name]}, the files say {wanted[name]}")
    return out


def write(root: Path = REPO) -> Path:
    """Rewrite the lock: every installed package no requirements file pins, at its version."""
    pins = direct_pins(root)
    lines = [f"{n}=={v}" for n, v in sorted(installed().items()) if n not in pins]
    head = (
        "# The exact versions of what requirements*.txt pull in, from the tested venv: scripts/lock.py\n"
        "# (installed with -c by scripts/setup.sh and the Dockerfile; tests/test_requirements.py checks it).\n"
    )
    path = root / LOCK
    path.write_text(head + "\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="list the differences, exit 1 if any")
    args = p.parse_args(argv)
    if args.check:
        diff = differences()
        print("\n".join(diff) or f"{LOCK}: the venv matches requirements*.txt and the lock")
        return 1 if diff else 0
    print(f"wrote {write()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
