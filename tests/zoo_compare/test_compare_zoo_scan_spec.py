"""examples/compare-zoo-scan.yaml, the zoo table on the long-completion model: every objective that remask
ships is in it, its pipelines are valid configs that differ only in objective-specific sections, each
entry's objective settings are those of its examples/tiny-scan-<name>.yaml, and the committed report in
docs/results/compare-zoo-scan/ is the report of this spec (same pipelines, seeds, budget, evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from remask.config import load_config
from remask.registry import get_registry
from zoo_support import check_shared_protocol

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "compare-zoo-scan.yaml"
REPORT = ROOT / "docs" / "results" / "compare-zoo-scan"
BASE = "base (untrained)"



def test_every_shipped_objective_is_compared_on_tiny_scan(configs):
    shipped = {c.name for c in get_registry().components() if c.kind == "objective" and c.distribution == "remask"}
    assert {cfg.objective.name for cfg in configs.values()} == shipped
    assert {cfg.model.dump()["path"] for cfg in configs.values()} == {"builtin:tiny-scan"}
    assert configs["egspo"].advantage.params.lam == 0.0 and configs["egspo-sa"].advantage.params.lam > 0


def test_protocol_is_shared(spec, configs):
    check_shared_protocol(spec, configs)


@pytest.mark.parametrize("name", ["egspo", "egspo-sa", "grpo", "d1", "wd1", "spg", "espo", "coupled-grpo", "tracerl",
                                  "trafl", "dtrpo", "vrpo", "mdpo"])
def test_objective_settings_are_the_tiny_scan_examples(name, configs):
    """The table compares the shipped examples' objectives; the sampler and optimizer are the protocol's.
    MDPO is the one documented exception: on the shared LLaDA sampler it recomputes its one-step predictions."""
    example = load_config(ROOT / "examples" / f"tiny-scan-{name}.yaml")
    cfg = configs[name]
    drop = {"without_records"} if name == "mdpo" else set()
    assert {k: v for k, v in cfg.objective.dump().items() if k not in drop} == \
        {k: v for k, v in example.objective.dump().items() if k not in drop}
    assert {k: v for k, v in cfg.advantage.dump().items() if k not in drop} == \
        {k: v for k, v in example.advantage.dump().items() if k not in drop}
    assert (cfg.step_selector and cfg.step_selector.dump()) == (example.step_selector and example.step_selector.dump())
    assert cfg.train.inner_steps == example.train.inner_steps


def test_archived_first_version_still_validates():
    """docs/results/compare-zoo-scan/v1-800-passes/: the first table (800 passes, 100 test rows), kept with
    its spec, which still loads (its base path points back at examples/)."""
    from remask.harness.compare import pipeline_configs

    v1 = REPORT / "v1-800-passes"
    spec, configs = pipeline_configs(v1 / "spec.yaml")
    assert spec.budget.forward_passes == 800 and spec.eval["limit"] == 100 and len(configs) == 13
    assert (v1 / "report.md").is_file() and (v1 / "results.json").is_file()


def test_committed_report_is_this_specs(spec):
    results = json.loads((REPORT / "results.json").read_text())
    by_pipeline: dict[str, list[int]] = {}
    for run in results:
        by_pipeline.setdefault(run["pipeline"], []).append(run["seed"])
        assert run["status"] == "finished", (run["pipeline"], run["seed"])
        assert run["eval"]["num_problems"] == spec.eval["limit"]
        if run["pipeline"] != BASE:
            assert run["train"]["forward_passes"] >= spec.budget.forward_passes
    assert {n: sorted(s) for n, s in by_pipeline.items()} == \
        {n: sorted(spec.seeds) for n in [BASE] + [e.name for e in spec.pipelines]}
    report = (REPORT / "report.md").read_text()
    assert "remask compare examples/compare-zoo-scan.yaml" in report and "Machine:" in report
    assert "## How this report was made" in report and "## Reading it" in report
    assert "## Paired by seed against `base (untrained)`" in report
    for entry in spec.pipelines:
        assert f"| {entry.name} |" in report
    for png in ("reward_vs_forward_passes.png", "pass_at_k.png"):
        assert (REPORT / png).stat().st_size > 0
