"""Meta-tests that keep the plugin surface honest (datasette's tests/test_docs.py style)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from remask import hookspecs
from remask.commands.schema import config_reference
from remask.registry import BUILTIN_DISTRIBUTION, get_registry

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
HOOKS = sorted(name for name, fn in vars(hookspecs).items() if hasattr(fn, "remask_spec"))


def _handwritten_docs() -> str:
    return "\n".join(p.read_text() for p in DOCS.rglob("*.md") if p.name != "config-reference.md")


def test_there_are_hooks():
    assert "register_objectives" in HOOKS and "after_step" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_exact_signature(hook):
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"### `{hook}({params})`" in (DOCS / "hooks.md").read_text()


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != "test_docs.py")
    assert re.search(rf"\b{hook}\b", tests), f"no test mentions hook {hook}"


def test_every_builtin_component_is_documented():
    docs = _handwritten_docs()
    comps = [c for c in get_registry().components() if c.distribution == BUILTIN_DISTRIBUTION]
    assert comps, "no built-in components registered"
    missing = [f"{c.kind} {c.name}" for c in comps if f"`{c.name}`" not in docs]
    assert not missing, f"not mentioned in docs/: {missing}"


def test_every_builtin_component_is_listed_by_remask_plugins():
    from core_support import run_cli
    import json

    listed = {(c["kind"], c["name"]) for c in json.loads(run_cli("plugins", "--json").stdout)["components"]}
    for c in get_registry().components():
        assert (c.kind, c.name) in listed


def test_every_builtin_component_passes_its_registration_checks():
    problems = [p.line() for p in get_registry().all_problems() if p.distribution == BUILTIN_DISTRIBUTION]
    assert problems == []


def test_config_reference_is_current():
    current = (DOCS / "config-reference.md").read_text()
    assert current == config_reference(builtin_only=True), (
        "docs/config-reference.md is stale: run `remask schema --markdown --builtin-only > docs/config-reference.md`"
    )


def test_every_config_field_has_a_description():
    from remask.config import EvalConfig, LoraSettings, TrainConfig

    models = [TrainConfig, EvalConfig, LoraSettings] + [c.cls.Config for c in get_registry().components()]
    missing = [f"{m.__qualname__}.{n}" for m in models for n, f in m.model_fields.items() if not f.description]
    assert missing == []


ALGORITHMIC_KINDS = ("step_selector", "advantage", "objective", "likelihood", "data_filter")


@pytest.mark.parametrize(
    "kind, name",
    [(c.kind, c.name) for c in get_registry().components() if c.kind in ALGORITHMIC_KINDS
     and c.distribution == BUILTIN_DISTRIBUTION],
)
def test_every_builtin_algorithmic_component_passes_the_contract_checks(kind, name):
    """remask.testing.check_component on each selector, estimator, objective and likelihood."""
    from remask.testing import check_component

    assert check_component(get_registry().get(kind, name)) == []
