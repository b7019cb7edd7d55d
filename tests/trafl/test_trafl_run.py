"""Short CPU runs of `trafl` through the engine (slow).

TraFL's claim is that the policy moves toward the reward-tilted reference p_ref·exp(βr) rather than
the reward's mode: reward rises while the number of distinct correct completions per prompt does not
collapse. Both are measured on fixed prompts before and after training, with G sampled completions
per prompt.

* a self-contained run on a small random `tiny` model with a learnable reward that has many correct
  completions (the completion starts with a digit), so it never depends on a shipped checkpoint;
* examples/tiny-arith-trafl.yaml itself, shortened, on the shipped `builtin:tiny-arith` model
  (skipped while that checkpoint is missing).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

import remask
from remask.config import load_config, parse_config
from remask.errors import RemaskError
from remask.harness.metrics import distinct_correct
from remask.testing import plugin_of, registered_plugin

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny-arith-trafl.yaml"

pytestmark = pytest.mark.slow


class LeadingDigit(remask.RewardModel):
    """1.0 when the completion starts with a digit: ten first characters, many correct strings."""

    name = "trafl-test-leading-digit"

    class Config(remask.ComponentConfig):
        pass

    def score(self, *, prompts, completions, references):
        return remask.Rewards.from_scores(self.name, [1.0 if c[:1].isdigit() else 0.0 for c in completions])


def probe(pipeline, examples, samples: int, judge, seed: int = 7) -> dict[str, float]:
    """Sample ``samples`` completions per prompt; mean correctness and distinct correct per prompt."""
    from remask.engine.data import build_prompt_batch

    model = pipeline.model
    batch = build_prompt_batch(model, examples, group_size=samples)
    model.module.eval()
    with torch.no_grad():
        rollout = pipeline.sampler.sample(model, batch, torch.Generator().manual_seed(seed))
    correct = [bool(judge(t, r)) for t, r in zip(rollout.texts, batch.references)]
    per_prompt = [(distinct_correct(rollout.texts[i:i + samples], correct[i:i + samples]), sum(correct[i:i + samples]))
                  for i in range(0, len(correct), samples)]
    n = len(per_prompt)
    return {
        "accuracy": sum(correct) / len(correct),
        "distinct_correct": sum(d for d, _ in per_prompt) / n,
        "correct_per_prompt": sum(c for _, c in per_prompt) / n,
    }


def metrics_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "train/reward" in r]


@pytest.mark.timeout(240)
def test_random_tiny_model_reward_rises_and_correct_completions_stay_distinct(tmp_path):
    from remask.engine import train
    from remask.engine.components import build_pipeline

    raw = {
        "model": {"name": "tiny", "path": "random", "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                  "intermediate_size": 64, "max_length": 32, "seed": 0, "device": "cpu"},
        "task": {"name": "arithmetic", "digits": 1, "train_size": 64, "test_size": 8},
        "sampler": {"name": "llada", "gen_length": 4, "block_length": 4, "steps": 4, "temperature": 1.0},
        "rewards": [{"name": LeadingDigit.name}],
        "advantage": {"name": "group-mean"},
        "objective": {"name": "trafl", "beta": 4.0, "head_learning_rate": 1e-2},
        "train": {"output_dir": str(tmp_path), "seed": 0, "max_steps": 40, "prompts_per_step": 4,
                  "group_size": 8, "inner_steps": 1, "learning_rate": 3e-3, "lr_scheduler": "constant",
                  "max_grad_norm": 1.0, "logging_steps": 1, "log_completions": 0, "save_steps": 0,
                  "save_total_limit": 1, "report_to": [], "progress": False},
        "eval": {},
    }
    start = time.process_time()
    with registered_plugin(plugin_of(LeadingDigit), name="trafl-test-reward"):
        config = parse_config(raw, source="test_trafl_run.yaml")
        pipeline = build_pipeline(config)
        examples = list(pipeline.task.examples("test"))

        def judge(text, reference):
            return text[:1].isdigit()

        before = probe(pipeline, examples, 16, judge)
        train(config, pipeline=pipeline)
        after = probe(pipeline, examples, 16, judge)
    cpu_seconds = time.process_time() - start

    rows = metrics_rows(tmp_path)
    rewards = [r["train/reward"] for r in rows]
    assert len(rewards) == 40
    first, last = sum(rewards[:8]) / 8, sum(rewards[-8:]) / 8
    print(f"train reward {first:.3f} -> {last:.3f}; probe {before} -> {after}; {cpu_seconds:.1f}s CPU")
    assert last > first + 0.15, rewards
    assert after["accuracy"] > before["accuracy"] + 0.1
    # no collapse: more distinct correct completions per prompt, and most correct samples are distinct
    assert after["distinct_correct"] > before["distinct_correct"]
    assert after["distinct_correct"] >= 0.5 * after["correct_per_prompt"]
    # the learned normaliser moved and the surrogate left the reference
    assert rows[-1]["train/trafl/z_mean"] < 0 < rows[-1]["train/trafl/d_hat_mean"]
    assert cpu_seconds < 60, cpu_seconds


def _random_tiny_config(out: Path, *, max_steps: int, save_steps: int, **objective) -> dict:
    return {
        "model": {"name": "tiny", "path": "random", "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                  "intermediate_size": 64, "max_length": 32, "seed": 0, "device": "cpu"},
        "task": {"name": "arithmetic", "digits": 1, "train_size": 64, "test_size": 8},
        "sampler": {"name": "llada", "gen_length": 4, "block_length": 4, "steps": 4, "temperature": 1.0},
        "rewards": [{"name": LeadingDigit.name}],
        "advantage": {"name": "group-mean"},
        "objective": {"name": "trafl", "beta": 4.0, **objective},
        "train": {"output_dir": str(out), "seed": 0, "max_steps": max_steps, "prompts_per_step": 2,
                  "group_size": 4, "inner_steps": 2, "learning_rate": 3e-3, "lr_scheduler": "constant",
                  "max_grad_norm": 1.0, "logging_steps": 1, "log_completions": 0, "save_steps": save_steps,
                  "save_total_limit": 2, "report_to": [], "progress": False},
        "eval": {},
    }


@pytest.mark.timeout(240)
def test_resume_restores_the_lazy_log_z_head_exactly(tmp_path):
    """The head is sized lazily (hidden_size: infer) after the optimizer exists; resume must still
    restore its weights and Adam state so that the resumed run equals the uninterrupted one."""
    from remask.engine import train

    head = {"head": "mlp", "head_learning_rate": 1e-2}
    with registered_plugin(plugin_of(LeadingDigit), name="trafl-test-reward"):
        train(parse_config(_random_tiny_config(tmp_path / "full", max_steps=8, save_steps=0, **head), source="full"))
        cut = _random_tiny_config(tmp_path / "cut", max_steps=4, save_steps=4, **head)
        train(parse_config(cut, source="cut"))
        cut["train"]["max_steps"] = 8
        train(parse_config(cut, source="cut"), resume=str(tmp_path / "cut" / "checkpoint-4"))
    full, resumed = metrics_rows(tmp_path / "full"), metrics_rows(tmp_path / "cut")
    assert [r["step"] for r in resumed] == [r["step"] for r in full] == [2, 4, 6, 8]
    for a, b in zip(full, resumed):
        assert a["train/trafl/z_mean"] == b["train/trafl/z_mean"]
        assert a["train/loss"] == b["train/loss"]
    assert full[-1]["train/trafl/z_mean"] != 0.0


@pytest.mark.timeout(300)
def test_example_tiny_arith_trafl_short_run(tmp_path):
    from remask.engine import train
    from remask.engine.components import build_pipeline

    overrides = {
        "train.max_steps": 20, "train.save_steps": 0, "train.save_total_limit": 1,
        "train.log_completions": 0, "train.progress": False, "train.report_to": [],
        "train.output_dir": str(tmp_path / "run"),
    }
    start = time.process_time()
    config = load_config(EXAMPLE, overrides)
    try:
        pipeline = build_pipeline(config)
    except RemaskError as exc:  # built by `remask sft examples/tiny-arith-sft.yaml`
        pytest.skip(f"the shipped tiny model is not available: {exc}")
    examples = list(pipeline.task.examples("test"))[:32]
    task = pipeline.task

    def judge(text, reference):
        return task.is_correct(text, reference) > 0.5

    before = probe(pipeline, examples, 8, judge)
    if before["accuracy"] < 0.05:
        pytest.skip(f"the shipped tiny model is not trained yet (sampled accuracy {before['accuracy']:.2f})")
    train(config, pipeline=pipeline)
    after = probe(pipeline, examples, 8, judge)
    cpu_seconds = time.process_time() - start
    rows = metrics_rows(tmp_path / "run")
    print(f"probe {before} -> {after}; {cpu_seconds:.1f}s CPU")
    assert len(rows) == 20 and any(r["train/trafl/z_mean"] != 0.0 for r in rows)
    assert after["accuracy"] > before["accuracy"]
    assert after["distinct_correct"] >= before["distinct_correct"]
    assert cpu_seconds < 60, cpu_seconds
