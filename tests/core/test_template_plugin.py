"""The plugin template really installs as a third-party distribution (.ci/run pip-installs it)."""

from __future__ import annotations

import importlib.metadata as md
import json

import pytest
import yaml

from core_support import run_cli


def _installed() -> bool:
    try:
        md.distribution("remask-template")
    except md.PackageNotFoundError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _installed(), reason="run `pip install -e examples/plugin-template` first (the README's test command does)"
)


def test_template_is_listed_with_its_distribution():
    data = json.loads(run_cli("plugins", "--json").stdout)
    rows = {(c["kind"], c["name"]): c for c in data["components"]}
    for key in (("objective", "template-awl"), ("reward", "template-brevity")):
        assert rows[key]["distribution"] == "remask-template" and rows[key]["version"] == "0.1.0"


def test_template_components_can_be_selected_in_a_config(tmp_path):
    from remask.registry import get_registry

    names = get_registry().names
    if not (names("model") and names("task") and names("sampler") and names("advantage")):
        pytest.fail("built-in model/task/sampler/advantage plugins are missing")
    cfg = {
        "model": {"name": names("model")[0] if "tiny" not in names("model") else "tiny"},
        "task": {"name": "arithmetic" if "arithmetic" in names("task") else names("task")[0]},
        "sampler": {"name": "llada" if "llada" in names("sampler") else names("sampler")[0]},
        "rewards": [{"name": "template-brevity", "max_chars": 8}],
        "advantage": {"name": "group-mean" if "group-mean" in names("advantage") else names("advantage")[0]},
        "objective": {"name": "template-awl", "scale": 2.0},
    }
    p = tmp_path / "template.yaml"
    p.write_text(yaml.safe_dump(cfg))
    proc = run_cli("validate", str(p))
    assert proc.returncode == 0, proc.stderr
    assert "objective template-awl" in proc.stdout
