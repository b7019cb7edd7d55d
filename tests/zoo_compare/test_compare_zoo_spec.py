"""examples/compare-zoo.yaml: every objective that remask ships is in it, every pipeline it builds is a
valid config, the pipelines differ only in objective-specific sections, and the committed report in
docs/results/compare-zoo/ is the report of this spec (same pipelines,
seeds, budget and evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

from remask.registry import get_registry
from zoo_support import check_shared_protocol

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "compare-zoo.yaml"
REPORT = ROOT / "docs" / "results" / "compare-zoo"
BASE = "base (untrained)"  # the untrained model's rows in results.json



def test_every_shipped_objective_is_compared(configs):
    shipped = {c.name for c in get_registry().components() if c.kind == "objective" and c.distribution == "remask"}
    assert {cfg.objective.name for cfg in configs.values()} == shipped
    # EGSPO-SA is EGSPO's objective with stepwise (lam > 0) advantages: both are in
    assert configs["egspo"].advantage.params.lam == 0.0 and configs["egspo-sa"].advantage.params.lam > 0


def test_protocol_is_shared(spec, configs):
    check_shared_protocol(spec, configs)


def test_committed_report_is_this_specs(spec):
    """The committed table holds every entry of the spec once per seed (one run of all of them), all
    finished under the spec's budget and evaluation, and the report names every pipeline."""
    results = json.loads((REPORT / "results.json").read_text())
    by_pipeline: dict[str, list[int]] = {}
    for run in results:
        by_pipeline.setdefault(run["pipeline"], []).append(run["seed"])
        assert run["status"] == "finished"
        assert run["eval"]["num_problems"] == spec.eval["limit"]
        assert run["eval"]["samples_per_prompt"] == spec.eval["samples_per_prompt"]
        if run["pipeline"] != BASE:
            assert run["train"]["forward_passes"] >= spec.budget.forward_passes
    trained = {name: sorted(seeds) for name, seeds in by_pipeline.items() if name != BASE}
    assert trained == {e.name: sorted(spec.seeds) for e in spec.pipelines}
    manifest = json.loads((REPORT / "manifest.json").read_text())
    assert [p["name"] for p in manifest["spec_resolved"]["pipelines"]] == [e.name for e in spec.pipelines]
    report = (REPORT / "report.md").read_text()
    assert "remask compare examples/compare-zoo.yaml" in report and "Machine:" in report
    for entry in spec.pipelines:
        assert f"| {entry.name} |" in report
    for png in ("reward_vs_forward_passes.png", "pass_at_k.png"):
        assert (REPORT / png).stat().st_size > 0
