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
from remask.harness.compare import load_compare_spec, pipeline_raw_config

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "compare-scan-fast.yaml"
REPORT = ROOT / "docs" / "results" / "compare-scan-fast"


@pytest.fixture(scope="module")
def spec_and_base():
    return load_compare_spec(SPEC)


@pytest.fixture(scope="module")
def configs(spec_and_base):
    spec, base = spec_and_base
    return {e.name: parse_config(pipeline_raw_config(base, spec, e, spec.seeds[0], Path("runs/x")),
                                 source=f"{SPEC.name}: {e.name}")
            for e in spec.pipelines}


def test_protocol_is_shared_and_only_the_rollout_sampler_differs(spec_and_base, configs):
    spec, _ = spec_and_base
    assert spec.seeds == [0, 1, 2] and spec.budget.optimizer_steps and spec.evaluate_base
    assert list(configs) == ["llada", "llada-dual", "fast-dllm-dual"]
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


def test_llada_pipelines_are_evaluated_with_one_fixed_sampler(configs):
    """`remask compare` evaluates with each pipeline's own sampler class plus eval.sampler; for both llada
    pipelines that is llada, no cache, greedy (the fast-dllm pipeline is re-evaluated with it afterwards)."""
    built = {name: build_eval_sampler(configs[name].sampler, configs[name].eval).config.model_dump()
             for name in ("llada", "llada-dual")}
    assert built["llada"] == built["llada-dual"]
    assert built["llada"]["cache"] == "none" and built["llada"]["temperature"] == 0.0 and built["llada"]["steps"] == 64
    fast = build_eval_sampler(configs["fast-dllm-dual"].sampler, configs["fast-dllm-dual"].eval)
    assert fast.name == "fast-dllm"  # why the fixed-sampler number for it comes from a separate `remask eval`


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
