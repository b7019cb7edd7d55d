"""examples/compare-zoo-scan.yaml, the zoo table on the long-completion model: every objective that remask
ships is in it, its pipelines are valid configs that differ only in objective-specific sections, each
entry's objective settings are those of its examples/tiny-scan-<name>.yaml, and the committed report in
docs/results/compare-zoo-scan/ is the report of this spec (same pipelines, seeds, budget, evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from remask.config import load_config
from remask.harness.compare import load_compare_spec, pipeline_configs
from remask.registry import get_registry

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "compare-zoo-scan.yaml"
REPORT = ROOT / "docs" / "results" / "compare-zoo-scan"
PER_OBJECTIVE_SECTIONS = {"objective", "advantage", "step_selector"}
PER_OBJECTIVE_TRAIN = {"train.inner_steps"}
BASE = "base (untrained)"


@pytest.fixture(scope="module")
def spec_and_configs():
    return pipeline_configs(SPEC)


@pytest.fixture(scope="module")
def spec_and_base():
    return load_compare_spec(SPEC)


@pytest.fixture(scope="module")
def configs(spec_and_configs):
    return spec_and_configs[1]


def test_every_shipped_objective_is_compared_on_tiny_scan(configs):
    shipped = {c.name for c in get_registry().components() if c.kind == "objective" and c.distribution == "remask"}
    assert {cfg.objective.name for cfg in configs.values()} == shipped
    assert {cfg.model.dump()["path"] for cfg in configs.values()} == {"builtin:tiny-scan"}
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
                t.weight_decay, t.max_forward_passes) == (f.prompts_per_step, f.group_size, f.learning_rate,
                                                          f.lr_scheduler, f.warmup_steps, f.max_grad_norm,
                                                          f.weight_decay, f.max_forward_passes), name


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


def test_committed_report_is_this_specs(spec_and_base):
    spec, _ = spec_and_base
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
    for entry in spec.pipelines:
        assert f"| {entry.name} |" in report
    for png in ("reward_vs_forward_passes.png", "pass_at_k.png"):
        assert (REPORT / png).stat().st_size > 0
