"""The CLI sits on top of the house: the engine, the harness and the core modules below them never
import the command line (issue 17), and the core never imports a plugin (DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import remask

CORE = Path(remask.__file__).resolve().parent
TOP = ("remask.cli", "remask.commands", "remask.__main__")


def _imported(source: str, package: str) -> list[str]:
    """Absolute module names imported by ``source``, a module of ``package`` (relative imports resolved)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.append(mod)
            names.extend(f"{mod}.{a.name}" for a in node.names)  # `from . import cli`
    return names


def _imports(path: Path) -> list[str]:
    # remask/engine/trainer.py -> package remask.engine; remask/engine/__init__.py -> remask.engine too
    package = ("remask." + ".".join(path.relative_to(CORE).with_suffix("").parts)).rsplit(".", 1)[0]
    return _imported(path.read_text(), package)


def _below_cli() -> list[Path]:
    return [p for p in sorted(CORE.rglob("*.py")) if p.relative_to(CORE).parts[0] not in ("cli.py", "commands", "__main__.py")]


def test_the_scan_sees_every_way_of_importing_the_cli():
    assert "remask.cli" in _imported("from ..cli import env_info", "remask.engine")
    assert "remask.cli" in _imported("from .. import cli", "remask.harness")
    assert "remask.cli" in _imported("import remask.cli", "remask.engine")
    assert "remask.commands.train" in _imported("from ...commands import train", "remask.engine.sub")
    assert "remask.environment" in _imported("from .environment import env_info", "remask")


@pytest.mark.parametrize("path", _below_cli(), ids=lambda p: str(p.relative_to(CORE)))
def test_nothing_below_the_cli_imports_it(path):
    bad = [n for n in _imports(path) if n.startswith(TOP)]
    assert not bad, f"{path.relative_to(CORE)} imports {bad}: the CLI must sit on top"


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_core_never_imports_a_plugin(path):
    bad = [n for n in _imports(path) if n.split(".")[0].startswith("remask_")]
    assert not bad, f"{path.relative_to(CORE)} imports plugin modules {bad}"
