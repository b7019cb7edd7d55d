"""`remask eval`: strict JSON, and pass@k only ever from samples at the sampler's temperature."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from remask.cli import main
from remask.harness.evaluate import json_safe, strict_json

CONFIG = {
    "model": {"name": "tiny", "path": "random", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
              "intermediate_size": 64, "max_length": 16},
    "task": {"name": "arithmetic", "digits": 1, "train_size": 20, "test_size": 8},
    "sampler": {"name": "llada", "gen_length": 3, "block_length": 3, "steps": 3, "temperature": 1.0},
    "rewards": [{"name": "arithmetic-correct"}],
    "advantage": {"name": "group-mean"},
    "objective": {"name": "d1", "beta": 0.0},
    "train": {"prompts_per_step": 2, "group_size": 2},
    "eval": {"limit": 6, "samples_per_prompt": 3, "batch_size": 6},
}


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-standard JSON constant {name}")


def test_strict_json_turns_non_finite_numbers_into_null():
    text = strict_json({"a": math.nan, "b": [1.0, math.inf, -math.inf], "c": {"d": 2.5}})
    assert json.loads(text, parse_constant=_reject_constant) == {"a": None, "b": [1.0, None, None], "c": {"d": 2.5}}
    assert json_safe((math.nan, "x")) == [None, "x"]


@pytest.mark.parametrize("samples", [1, 3])
def test_eval_reports_greedy_accuracy_and_sampled_pass_at_k_separately(tmp_path, samples):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "eval": {**CONFIG["eval"], "samples_per_prompt": samples}}))
    assert main(["eval", str(cfg), "--out", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "eval.json").read_text(), parse_constant=_reject_constant)
    result = data["results"][0]
    rows = [json.loads(line, parse_constant=_reject_constant)
            for line in (tmp_path / "out" / "completions.jsonl").read_text().splitlines()]
    greedy = [r["score"] for r in rows if r["mode"] == "greedy"]
    sampled = [r["score"] for r in rows if r["mode"] == "sampled"]
    assert len(greedy) == 6 and len(sampled) == 6 * samples
    # greedy accuracy is the temperature-0 decode; pass@1 is the mean over the sampled completions
    assert result["greedy_accuracy"] == pytest.approx(sum(greedy) / len(greedy))
    assert result["pass_at_k"]["1"] == pytest.approx(sum(sampled) / len(sampled))
    assert sorted(result["pass_at_k"]) == [str(k) for k in range(1, samples + 1)]
    assert result["sampler"]["temperature"] == 0.0 and result["sampler"]["sampled_temperature"] == 1.0
    md = (tmp_path / "out" / "eval.md").read_text()
    assert "greedy accuracy %" in md and "pass@1 %" in md
