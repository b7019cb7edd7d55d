"""End to end on a CPU: EGSPO and EGSPO-SA through `remask.engine.train` on a small random tiny model.

Self-contained (no dependence on the shipped checkpoint's quality): the reward is dense and
learnable in seconds, the fraction of completion characters that are digits. Reward rising by a
clear margin means the whole chain points the right way: llada's recorded entropies -> entropy-topk
-> egspo-stepwise (with intermediate rewards for SA) -> egspo prepare/loss -> optimizer.
"""

from __future__ import annotations

import json
import time

import pytest
from pydantic import Field

import remask
from remask.config import parse_config
from remask.testing import plugin_of, registered_plugin


class DigitFraction(remask.RewardModel):
    """Fraction of the completion's first ``width`` characters that are digits."""

    name = "egspo-test-digits"

    class Config(remask.ComponentConfig):
        width: int = Field(4, ge=1, description="Characters judged (the generation length).")

    def score(self, *, prompts, completions, references):
        vals = [sum(c.isdigit() for c in text[: self.config.width]) / self.config.width for text in completions]
        return remask.Rewards.from_scores(self.name, vals)


def _config(tmp_path, lam: float):
    raw = {
        "model": {"name": "tiny", "path": "random", "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                  "intermediate_size": 64, "max_length": 32, "seed": 0, "device": "cpu"},
        "task": {"name": "arithmetic", "digits": 1, "train_size": 64, "test_size": 8},
        "sampler": {"name": "llada", "gen_length": 4, "block_length": 4, "steps": 4, "temperature": 1.0},
        "rewards": [{"name": "egspo-test-digits", "width": 4}],
        "step_selector": {"name": "entropy-topk", "num_selected": 2},
        "advantage": {"name": "egspo-stepwise", "lam": lam},
        "objective": {"name": "egspo", "beta": 0.04, "epsilon_low": 0.2, "epsilon_high": 0.5},
        "train": {"output_dir": str(tmp_path), "seed": 0, "max_steps": 40, "prompts_per_step": 4,
                  "group_size": 4, "inner_steps": 2, "learning_rate": 3e-3, "lr_scheduler": "constant",
                  "max_grad_norm": 1.0, "logging_steps": 1, "log_completions": 0, "save_steps": 0,
                  "save_total_limit": 1, "report_to": [], "progress": False},
        "eval": {},
    }
    return parse_config(raw, source="test_tiny_training.yaml")


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("lam", [0.0, 0.5], ids=["egspo", "egspo-sa"])
def test_reward_goes_up_on_the_tiny_model(tmp_path, lam):
    from remask.engine import train

    start = time.process_time()
    with registered_plugin(plugin_of(DigitFraction), name="egspo-test-reward"):
        train(_config(tmp_path, lam))
    cpu_seconds = time.process_time() - start
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "train/reward" in r]
    rewards = [r["train/reward"] for r in rows]
    assert len(rewards) == 20  # 40 updates / inner_steps 2 (K = 2 selected steps, one update each)
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.2, rewards
    assert rows[-1]["train/kl"] > 0
    assert all(r["train/egspo/lambda"] == lam for r in rows)
    assert all(("train/egspo/step_reward" in r) == (lam > 0) for r in rows)
    assert cpu_seconds < 60, cpu_seconds
