"""The tree is the architecture (#20): sub-packages in floors, every import one way down, no cycle.

Every ``import`` in ``cam_core`` counts, the ones inside functions too: a lazy import that runs
back up is the same dependency, only later.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

CORE = REPO / "cam_core"
# From the ground up; a package may import its own floor's other packages and any floor below.
FLOORS = {
    "foundation": 0,  # cam_core's own modules: errors, limits, runtime, cache, gate, paths
    "model": 1,
    "data": 1,
    "engine": 2,
    "output": 3,
    "trust": 3,
    "wsi": 3,
    "cli": 4,
}


def _module(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _package(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (CORE / parts[1]).is_dir()):
        return parts[1]
    return "foundation"


def _imports() -> dict[str, set[str]]:
    """Module → the cam_core modules it imports (``from cam_core.x import y``: x.y when y is a module)."""
    modules = {_module(p): p for p in CORE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name in ("cam_core", "cam_core.__main__"):
            continue  # the root's lazy name table and the entry point sit above every floor
        deps: set[str] = set()
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                    )
                if not base.startswith("cam_core"):
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    deps.add(sub if sub in modules else base)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("cam_core"))
            elif (  # a package's lazy re-export (cam_core.lazy.exports): the module named ".facade"
                path.name == "__init__.py"
                and isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and f"{package}{node.value}" in modules
            ):
                deps.add(f"{package}{node.value}")
        graph[name] = {d for d in deps if d != name and d != "cam_core"}
    return graph


def test_every_import_runs_one_way_down():
    upward = []
    for module, deps in _imports().items():
        here = FLOORS[_package(module)]
        for dep in deps:
            if FLOORS[_package(dep)] > here:
                upward.append(f"{module} → {dep}")
    assert not upward, upward  # main: 31 flat modules; trust_report → cli, models ↔ capture


def test_no_import_cycle_between_packages_or_modules():
    graph = _imports()
    packages: dict[str, set[str]] = {}
    for module, deps in graph.items():
        packages.setdefault(_package(module), set()).update(
            _package(d) for d in deps if _package(d) != _package(module)
        )

    def cycle(g: dict[str, set[str]]) -> list[str] | None:
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(n: str) -> list[str] | None:
            state[n] = 1
            stack.append(n)
            for m in g.get(n, ()):
                if state.get(m) == 1:
                    return [*stack[stack.index(m) :], m]
                if m not in state and (found := visit(m)):
                    return found
            stack.pop()
            state[n] = 2
            return None

        for n in g:
            if n not in state and (found := visit(n)):
                return found
        return None

    assert cycle(packages) is None, cycle(packages)
    module_graph = {m: {d for d in deps if not d.endswith("__init__")} for m, deps in graph.items()}
    assert cycle(module_graph) is None, cycle(module_graph)


def test_the_model_object_carries_no_engine_state():
    import dataclasses

    from cam_core.model.models import LoadedModel

    fields = {f.name for f in dataclasses.fields(LoadedModel)}
    assert not fields & {"retained", "passes"}, fields  # main: the kept graph and pass counters


# ---------------------------------------------------------------- one owner per decision


def _sources() -> dict[Path, str]:
    roots = [REPO / "cam_core", REPO / "ui", REPO / "pages", REPO / "scripts", REPO / "models"]
    files = [p for r in roots for p in r.rglob("*.py")] + [REPO / "app.py"]
    return {p: p.read_text() for p in files}


def test_each_listed_decision_is_written_once():
    import re

    rules = {  # a decision → the pattern of writing it down, and the one file allowed to
        # (the training loss's soft Dice, smoothed and differentiable, is another thing: its own file)
        "Dice": (r"2(\.0)? \* [^\n]*(sum|tp|both|inter)\b(?![^\n]*\+ 1\.0)", "cam_core/data/metrics.py"),
        "CoNSeP classes": (r'"inflammatory", "epithelial"', "cam_core/data/consep.py"),
        "ImageNet mean": (r"0\.485, 0\.456, 0\.406", "cam_core/model/models.py"),
        "µm/px range": (r"MPP_RANGE = \(", "cam_core/limits.py"),
        "tile suffixes": (r'"\.png", "\.(jpg|tif)"', "cam_core/data/images.py"),
        "the large-image side": (r"1024×1024|(?<!\* )1024 \* 1024(?! \*)|LARGE_SIDE = \d", "cam_core/limits.py"),
        # a deployment's variables are read in one schema (Dask's own address aside)
        "environment variables": (r"os\.environ\.get\(|os\.getenv\(", "cam_core/wsi/batch.py"),
    }
    # Scripts, pages and the training script find the repository before cam_core is importable;
    # inside the library and the UI the root is cam_core.paths'.
    library = {p: t for p, t in _sources().items() if p.parts[len(REPO.parts)] in ("cam_core", "ui")}
    assert sorted(str(p.relative_to(REPO)) for p, t in library.items() if "parents[1]" in t) == [
        "cam_core/paths.py",
        "ui/serve.py",  # the launcher names app.py beside it
    ]
    found = {}
    for name, (pattern, owner) in rules.items():
        where = sorted(
            str(p.relative_to(REPO))
            for p, text in _sources().items()
            if re.search(pattern, text) and p.parts[-2] != "scripts"
        )
        found[name] = where
        assert where == [owner], (name, where)


def test_a_bad_setting_keeps_its_default_and_says_which_variable(monkeypatch, caplog):
    from cam_core import settings

    monkeypatch.setenv(settings.env_name("heavy_jobs"), "many")
    monkeypatch.setenv(settings.env_name("capture_cache_mb"), "3")
    monkeypatch.setenv(settings.env_name("torch_threads"), "4")
    with caplog.at_level("WARNING", logger="cam_core.settings"):
        now = settings.current()
    assert (now.heavy_jobs, now.capture_cache_mb, now.torch_threads) == (2, 1024, 4)  # the good one is kept
    said = caplog.text
    assert "SEGCAM_HEAVY_JOBS ignored" in said
    assert "valid integer" in said
    assert "SEGCAM_CAPTURE_CACHE_MB" in said
    assert "≥ 64" in said  # what would work
    with pytest.raises(KeyError, match="heavy_jobs"):
        settings.env_name("heavy_job")


def test_the_consep_models_declare_the_consep_classes():
    import json

    from cam_core.data import consep
    from cam_core.model import models

    for info in models.builtin_registry().values():
        assert json.loads((Path(info["path"]) / "segcam.json").read_text())["classes"] == consep.CLASSES


def test_the_cli_parser_does_not_import_the_benchmark():
    import subprocess
    import sys

    code = (
        "import sys; from cam_core.cli import commands; commands._parser(); print('cam_core.cli.bench' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"  # main: bench (600 lines) imported by every CLI run to build its parser


def test_no_function_is_long_without_saying_why():
    """A function above 80 lines is split, or says at its top why it is one piece (main: 13 such)."""
    long = []
    for path, text in _sources().items():
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                head = "\n".join(lines[node.lineno - 1 : node.lineno + 4])
                if "Long on purpose" not in head:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert long == []
