"""The GRPO/d1 example pipelines validate against the installed components (as `remask validate`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from remask.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["llada-gsm8k-d1.yaml", "dream-gsm8k-grpo.yaml", "tiny-arith-d1.yaml"])
def test_example_validates(name):
    cfg = load_config(EXAMPLES / name)
    assert cfg.objective.name in ("d1", "grpo")
    if name != "tiny-arith-d1.yaml":  # the d1 paper's settings
        t = cfg.train
        assert (t.group_size, t.inner_steps, t.learning_rate, t.max_grad_norm) == (6, 12, 3e-6, 0.2)
        assert (t.lora.r, t.lora.alpha, t.weight_decay, tuple(t.adam_betas)) == (128, 64, 0.1, (0.9, 0.99))
        assert t.prompts_per_step * t.group_size == 96 and t.lr_scheduler == "constant_with_warmup"
        assert cfg.objective.params.epsilon == 0.5 and cfg.objective.params.beta == 0.04
        assert cfg.sampler.params.gen_length == 256 and cfg.sampler.params.steps == 128
        assert sum(r.weight for r in cfg.rewards) == 4.0  # d1's GSM8K reward scale
