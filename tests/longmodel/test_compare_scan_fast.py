"""examples/compare-scan-fast.yaml (issue 13 §4, RL with fast rollouts): every pipeline it builds is a valid
config that differs from the anchor only in its rollout sampler, the llada pipelines are evaluated with one
fixed sampler (llada, no cache, greedy), and the fast-dllm + dual-cache RL pipeline trains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from remask.config import parse_config
from remask.engine.evaluation import build_eval_sampler
from remask.harness.compare import load_compare_spec, pipeline_configs, pipeline_raw_config

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "compare-scan-fast.yaml"
REPORT = ROOT / "docs" / "results" / "compare-scan-fast"


@pytest.fixture(scope="module")
def spec_and_configs():
    return pipeline_configs(SPEC)


@pytest.fixture(scope="module")
def spec_and_base():
    return load_compare_spec(SPEC)


@pytest.fixture(scope="module")
def configs(spec_and_configs):
    return spec_and_configs[1]


def test_protocol_is_shared_and_only_the_rollout_sampler_differs(spec_and_base, configs):
    spec, _ = spec_and_base
    assert len(spec.seeds) >= 5 and spec.budget.optimizer_steps and spec.evaluate_base
    assert spec.reference == "llada"  # the report pairs every pipeline with llada, seed by seed
    assert list(configs) == ["llada", "llada-dual", "fast-dllm-dual", "fast-dllm-dual-nocap"]
    anchor = configs["llada"]
    for name, cfg in configs.items():
        assert cfg.model.dump() == anchor.model.dump() and cfg.task.dump() == anchor.task.dump(), name
        assert cfg.objective.dump() == anchor.objective.dump() and cfg.advantage.dump() == anchor.advantage.dump()
        assert [r.dump() for r in cfg.rewards] == [r.dump() for r in anchor.rewards], name
        assert cfg.eval.model_dump() == anchor.eval.model_dump(), name
        assert cfg.train.model_dump(exclude={"output_dir"}) == anchor.train.model_dump(exclude={"output_dir"}), name
        s = cfg.sampler.params
        assert (s.gen_length, s.block_length, s.temperature) == (64, 16, 1.0), name
    assert anchor.sampler.name == "llada" and anchor.sampler.params.cache == "none"
    dual = configs["llada-dual"].sampler
    assert dual.name == "llada" and dual.params.cache == "dual" and dual.params.steps == 64  # fixed NFE per block
    fast = configs["fast-dllm-dual"].sampler.params
    assert configs["fast-dllm-dual"].sampler.name == "fast-dllm"
    assert fast.cache == "dual" and fast.threshold is not None and fast.max_tokens_per_step == 2
    nocap = configs["fast-dllm-dual-nocap"].sampler.params
    assert nocap.max_tokens_per_step is None
    assert nocap.model_dump(exclude={"max_tokens_per_step"}) == fast.model_dump(exclude={"max_tokens_per_step"})


def test_every_pipeline_is_evaluated_with_one_fixed_sampler(configs):
    """eval.sampler names llada: whatever sampler a pipeline trains with, its checkpoint is decoded by
    llada, no cache, 64 steps, greedy, so the accuracies are comparable."""
    built = {name: build_eval_sampler(cfg.sampler, cfg.eval) for name, cfg in configs.items()}
    assert {b.name for b in built.values()} == {"llada"}
    dumps = [b.config.model_dump() for b in built.values()]
    assert all(d == dumps[0] for d in dumps)
    assert dumps[0]["cache"] == "none" and dumps[0]["temperature"] == 0.0 and dumps[0]["steps"] == 64


@pytest.mark.slow
def test_fast_dllm_dual_pipeline_trains_two_steps(configs, tmp_path):
    """The fast-rollout RL pipeline on the long completions: 2 steps of 2 x 3 rows with a finite loss, and the
    per-step cap bounds the passes: at most 2 tokens per step means at least 8 passes per block of 16, while the
    threshold saves some (fewer than llada's 64). No gradient is asserted: threshold-0.9 rollouts of one prompt
    are often identical at temperature 1 (docs/results/compare-scan-fast/report.md), so a 2-step run may have
    zero advantage everywhere."""
    from remask.engine import train

    cfg = configs["fast-dllm-dual"]
    raw = json.loads(json.dumps(cfg.dump()))
    raw["train"].update({"max_steps": 2, "prompts_per_step": 2, "group_size": 3, "output_dir": str(tmp_path / "run"),
                         "report_to": [], "progress": False, "save_steps": 0, "log_completions": 0})
    result = train(parse_config(raw, source="fast-dllm-dual smoke"))
    assert result["global_step"] == 2
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["train/loss"] for row in logged if "train/loss" in row]
    nfe = [row["diffusion/nfe"] for row in logged if "diffusion/nfe" in row]
    assert losses and all(math.isfinite(x) for x in losses), losses
    assert nfe and all(32 <= n < 64 for n in nfe), nfe


def test_archived_first_version_still_validates():
    """docs/results/compare-scan-fast/v1-50-steps/: the first run (3 seeds, 50 steps at lr 3e-4) kept with its
    spec and addendum, which still load (their base paths point back at examples/)."""
    v1 = REPORT / "v1-50-steps"
    for spec_path in (v1 / "spec.yaml", v1 / "uncapped" / "spec.yaml"):
        spec, configs = pipeline_configs(spec_path)
        assert spec.seeds == [0, 1, 2] and spec.budget.optimizer_steps == 50
        assert all(c.model.params.path == "builtin:tiny-scan" for c in configs.values())
    assert (v1 / "report.md").is_file() and (v1 / "results.json").is_file()


def test_committed_report_is_this_specs(spec_and_base):
    """results.json holds every pipeline x seed, finished under the spec's budget and evaluated with llada."""
    spec, _ = spec_and_base
    runs = json.loads((REPORT / "results.json").read_text())
    seeds: dict[str, list[int]] = {}
    for run in runs:
        seeds.setdefault(run["pipeline"], []).append(run["seed"])
        assert run["status"] == "finished" and run["eval"]["num_problems"] == spec.eval["limit"]
        assert (run["eval"]["sampler"]["name"], run["eval"]["sampler"]["cache"]) == ("llada", "none")
        if run["pipeline"] != "base (untrained)":
            assert run["train"]["steps"] == spec.budget.optimizer_steps
    names = ["base (untrained)", *[e.name for e in spec.pipelines]]
    assert {n: sorted(s) for n, s in seeds.items()} == {n: spec.seeds for n in names}
    report = (REPORT / "report.md").read_text()
    assert "remask compare examples/compare-scan-fast.yaml" in report and "Machine:" in report
    assert "## Paired by seed against `llada`" in report
    assert "## How this report was made" in report and "## Reading it" in report


def test_arith_companion_shares_the_protocol_and_only_the_rollout_sampler_differs():
    """examples/compare-arith-fast.yaml: the same four rollout samplers on builtin:tiny-arith, where RL's own
    gain is resolvable; GRPO everywhere, one llada evaluation with pass@k at the training temperature."""
    spec, configs = pipeline_configs(ROOT / "examples" / "compare-arith-fast.yaml")
    assert len(spec.seeds) >= 5 and spec.reference == "llada" and spec.evaluate_base
    assert list(configs) == ["llada", "llada-dual", "fast-dllm-dual", "fast-dllm-dual-nocap"]
    anchor = configs["llada"]
    assert anchor.model.params.path == "builtin:tiny-arith" and anchor.objective.name == "grpo"
    for name, cfg in configs.items():
        for section in ("model", "task", "objective", "advantage"):
            assert getattr(cfg, section).dump() == getattr(anchor, section).dump(), (name, section)
        assert cfg.step_selector is None
        assert cfg.train.model_dump(exclude={"output_dir"}) == anchor.train.model_dump(exclude={"output_dir"}), name
        greedy = build_eval_sampler(cfg.sampler, cfg.eval)
        sampled = build_eval_sampler(cfg.sampler, cfg.eval.model_copy(update={"greedy": False}))
        assert (greedy.name, greedy.config.cache, greedy.config.temperature) == ("llada", "none", 0.0), name
        assert sampled.config.temperature == cfg.sampler.params.temperature == 1.0, name
    assert configs["llada-dual"].sampler.params.cache == "dual"
    fast, nocap = configs["fast-dllm-dual"].sampler.params, configs["fast-dllm-dual-nocap"].sampler.params
    assert (fast.cache, fast.threshold, fast.max_tokens_per_step) == ("dual", 0.9, 2)
    assert nocap.model_dump(exclude={"max_tokens_per_step"}) == fast.model_dump(exclude={"max_tokens_per_step"})
    assert nocap.max_tokens_per_step is None


def test_arith_companion_report_is_this_specs():
    """docs/results/compare-arith-fast/: every pipeline x seed, finished, evaluated with llada (pass@k sampled
    at temperature 1, so every row has pass@1), and the paired table against llada."""
    spec, _ = load_compare_spec(ROOT / "examples" / "compare-arith-fast.yaml")
    out = ROOT / "docs" / "results" / "compare-arith-fast"
    runs = json.loads((out / "results.json").read_text())
    names = ["base (untrained)", *[e.name for e in spec.pipelines]]
    assert sorted((r["pipeline"], r["seed"]) for r in runs) == sorted((n, s) for n in names for s in spec.seeds)
    for run in runs:
        assert run["status"] == "finished" and run["eval"]["num_problems"] == spec.eval["limit"]
        assert (run["eval"]["sampler"]["name"], run["eval"]["sampler"]["sampled_temperature"]) == ("llada", 1.0)
        assert "1" in run["eval"]["pass_at_k"]
    report = (out / "report.md").read_text()
    assert "## Paired by seed against `llada`" in report and "## Reading it" in report
    assert "remask compare examples/compare-arith-fast.yaml" in report


def test_long_addendum_is_the_same_protocol_at_three_times_the_budget(spec_and_configs):
    """docs/results/compare-scan-fast/long/spec.yaml: the main spec's evaluation and pipelines (a subset),
    300 steps instead of 100, so a drift of threshold-rollout RL over a longer run (d1 #25) would show."""
    spec, configs = spec_and_configs
    long_spec, long_configs = pipeline_configs(REPORT / "long" / "spec.yaml")
    assert long_spec.eval == spec.eval and long_spec.reference == "llada"
    assert long_spec.budget.optimizer_steps == 3 * spec.budget.optimizer_steps
    assert list(long_configs) == ["llada", "fast-dllm-dual", "fast-dllm-dual-nocap"]
    for name, cfg in long_configs.items():
        mine = configs[name]
        assert cfg.sampler.dump() == mine.sampler.dump() and cfg.objective.dump() == mine.objective.dump(), name
        assert cfg.train.model_dump(exclude={"output_dir", "max_steps"}) == \
            mine.train.model_dump(exclude={"output_dir", "max_steps"}), name


def test_long_addendum_report_is_its_specs():
    spec, _ = load_compare_spec(REPORT / "long" / "spec.yaml")
    runs = json.loads((REPORT / "long" / "results.json").read_text())
    names = ["base (untrained)", *[e.name for e in spec.pipelines]]
    assert sorted((r["pipeline"], r["seed"]) for r in runs) == sorted((n, s) for n in names for s in spec.seeds)
    for run in runs:
        assert run["status"] == "finished" and run["eval"]["sampler"]["name"] == "llada"
        assert "1" in run["eval"]["pass_at_k"]  # the temperature carried over: every row has pass@1
        if run["pipeline"] != "base (untrained)":
            assert run["train"]["steps"] == spec.budget.optimizer_steps
    report = (REPORT / "long" / "report.md").read_text()
    assert "## Paired by seed against `llada`" in report and "## Reading it" in report


def test_step_companion_is_this_protocol_on_the_parallel_rule(spec_and_base, configs):
    """examples/compare-step-fast.yaml: the same seeds, budget, evaluation and pipelines on builtin:tiny-step;
    every pipeline differs from its tiny-scan twin only in the model, the digit-scan rule and its run directory."""
    spec, _ = spec_and_base
    step_spec, step_configs = pipeline_configs(ROOT / "examples" / "compare-step-fast.yaml")
    assert (step_spec.seeds, step_spec.budget, step_spec.eval, step_spec.reference) == \
        (spec.seeds, spec.budget, spec.eval, spec.reference)
    assert list(step_configs) == list(configs)
    for name, cfg in step_configs.items():
        scan = configs[name]
        assert cfg.model.params.path == "builtin:tiny-step" and cfg.task.params.rule == "step", name
        assert cfg.model.params.model_dump(exclude={"path"}) == scan.model.params.model_dump(exclude={"path"})
        assert cfg.task.params.model_dump(exclude={"rule"}) == scan.task.params.model_dump(exclude={"rule"})
        for section in ("sampler", "objective", "advantage"):
            assert getattr(cfg, section).dump() == getattr(scan, section).dump(), (name, section)
        assert [r.dump() for r in cfg.rewards] == [r.dump() for r in scan.rewards], name
        assert cfg.eval.model_dump() == scan.eval.model_dump(), name
        assert cfg.train.model_dump(exclude={"output_dir"}) == scan.train.model_dump(exclude={"output_dir"}), name
