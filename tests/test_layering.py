"""Layering: no package imports one above it.

The allowed graph (each package may import itself and the packages listed):

    common:   nothing            (shared helpers, e.g. common.validation)
    replay:   common             (data and sampling know nothing of who writes or reads them)
    learner:  common, replay     (the update consumes replay.types batches)
    actors:   common, replay, learner   (actors run the learner's policy network)
    launch:   everything         (config composition, CLI, Ray topology)
    tests/, benchmarks/: anything

Every import of every .py file counts, at any depth (inside functions too): a lazy upward import is
still an upward dependency. Third-party modules are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ALLOWED: dict[str, frozenset[str]] = {
    "common": frozenset(),
    "replay": frozenset({"common"}),
    "learner": frozenset({"common", "replay"}),
    "actors": frozenset({"common", "replay", "learner"}),
    "launch": frozenset({"common", "replay", "learner", "actors"}),
}
PROJECT = frozenset(ALLOWED)


def imported_packages(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `source`, at any nesting depth."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.partition(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.partition(".")[0]))
        # Relative imports (level > 0) stay inside the importing package.
    return found


def violations(package: str, source: str, filename: str = "<string>") -> list[str]:
    """Imports in `source` (a file of `package`) of a project package it may not import."""
    allowed = ALLOWED[package] | {package}
    return [
        f"{filename}:{line}: `{package}` imports `{target}` (allowed: {sorted(ALLOWED[package])})"
        for line, target in imported_packages(source, filename)
        if target in PROJECT and target not in allowed
    ]


def package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_allowed_graph_is_acyclic_and_covers_every_package():
    for package, deps in ALLOWED.items():
        assert (ROOT / package / "__init__.py").is_file(), package
        for dep in deps:
            assert package not in ALLOWED[dep], f"{package} <-> {dep}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_upward_import(package):
    files = package_files(package)
    assert files, f"no .py files found under {package}/"
    bad = []
    for path in files:
        bad += violations(package, path.read_text(), str(path.relative_to(ROOT)))
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_checker_catches_upward_imports_at_any_depth():
    source = """
import numpy as np
import replay.types
from common.validation import require
from . import storage

def bench():
    from launch.ray_setup import init_ray
    return init_ray

class Shard:
    def method(self):
        import learner.config as c
        if c:
            from actors import env
"""
    bad = violations("replay", source, "synthetic.py")
    assert [b.split(": ", 1)[0] for b in bad] == [
        "synthetic.py:8",
        "synthetic.py:13",
        "synthetic.py:15",
    ]
    assert "`replay` imports `launch`" in bad[0]
    assert violations("launch", source) == []
    assert violations("common", "import replay") != []
    assert violations("learner", "from replay.types import SampledBatch") == []
    assert violations("learner", "import actors.env") != []
