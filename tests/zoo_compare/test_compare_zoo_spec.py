"""examples/compare-zoo.yaml: every objective that remask ships is in it, every pipeline it builds is a
valid config, the pipelines differ only in objective-specific sections, and the committed report in
docs/results/compare-zoo/ (with its MDPO addendum in mdpo/) is the report of this spec (same pipelines,
seeds, budget and evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from remask.harness.compare import load_compare_spec, pipeline_configs
from remask.registry import get_registry

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "compare-zoo.yaml"
REPORT = ROOT / "docs" / "results" / "compare-zoo"
# what an entry may change: the objective and what it needs; everything else is the protocol
PER_OBJECTIVE_SECTIONS = {"objective", "advantage", "step_selector"}
PER_OBJECTIVE_TRAIN = {"train.inner_steps"}
BASE = "base (untrained)"  # the untrained model's rows in results.json


@pytest.fixture(scope="module")
def spec_and_configs():
    return pipeline_configs(SPEC)


@pytest.fixture(scope="module")
def spec_and_base():
    return load_compare_spec(SPEC)


@pytest.fixture(scope="module")
def configs(spec_and_configs):
    return spec_and_configs[1]


def test_every_shipped_objective_is_compared(configs):
    shipped = {c.name for c in get_registry().components() if c.kind == "objective" and c.distribution == "remask"}
    assert {cfg.objective.name for cfg in configs.values()} == shipped
    # EGSPO-SA is EGSPO's objective with stepwise (lam > 0) advantages: both are in
    assert configs["egspo"].advantage.params.lam == 0.0 and configs["egspo-sa"].advantage.params.lam > 0


def test_protocol_is_shared(spec_and_base, configs):
    spec, _ = spec_and_base
    assert len(spec.seeds) >= 3 and spec.budget.forward_passes and spec.evaluate_base
    for entry in spec.pipelines:
        assert set(entry.set) <= PER_OBJECTIVE_SECTIONS, entry.name
        per_entry = set(entry.override) - PER_OBJECTIVE_TRAIN
        assert {k: entry.override[k] for k in per_entry} == {k: spec.pipelines[0].override[k] for k in per_entry}, \
            f"{entry.name}: a protocol field differs from {spec.pipelines[0].name}'s"
    first = next(iter(configs.values()))
    for name, cfg in configs.items():
        assert cfg.model.dump() == first.model.dump() and cfg.task.dump() == first.task.dump(), name
        assert cfg.sampler.dump() == first.sampler.dump(), name
        assert [r.dump() for r in cfg.rewards] == [r.dump() for r in first.rewards], name
        assert cfg.eval.model_dump() == first.eval.model_dump(), name
        t, f = cfg.train, first.train
        assert (t.prompts_per_step, t.group_size, t.learning_rate, t.lr_scheduler, t.warmup_steps, t.max_grad_norm,
                t.max_forward_passes) == (f.prompts_per_step, f.group_size, f.learning_rate, f.lr_scheduler,
                                          f.warmup_steps, f.max_grad_norm, f.max_forward_passes), name


def test_committed_report_is_this_specs(spec_and_base):
    """The committed table holds every entry of the spec once per seed (one run of all of them), all
    finished under the spec's budget and evaluation, and the report names every pipeline."""
    spec, _ = spec_and_base
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
