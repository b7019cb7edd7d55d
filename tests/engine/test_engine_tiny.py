"""The engine on the real built-in `tiny` model with `d1`: LoRA checkpoints through the adapter's
save_pretrained, gradient checkpointing on, and an interrupted + resumed run equal to an uninterrupted
one bit for bit."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from remask.config import parse_config
from remask.engine import train
from remask.registry import get_registry


def _config(out: str, **train_overrides):
    raw = {"model": {"name": "tiny", "path": "random", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                     "intermediate_size": 64, "max_length": 16, "seed": 0, "device": "cpu"},
           "task": {"name": "arithmetic", "digits": 1, "operation": "+", "train_size": 20, "test_size": 8},
           "sampler": {"name": "llada", "gen_length": 4, "block_length": 4, "steps": 4, "temperature": 1.0},
           "rewards": [{"name": "arithmetic-correct"}, {"name": "test-digits"}],  # dense: non-zero advantages
           "advantage": {"name": "group-mean"},
           "objective": {"name": "d1", "beta": 0.04},
           "train": {"output_dir": out, "max_steps": 4, "prompts_per_step": 2, "group_size": 2, "inner_steps": 2,
                     "learning_rate": 1e-2, "report_to": [], "progress": False, "log_completions": 0,
                     "save_steps": 2, "lr_scheduler": "cosine",
                     "lora": {"r": 4, "alpha": 8, "target_modules": "all-linear"}, "gradient_checkpointing": True,
                     **train_overrides},
           "eval": {"limit": 4}}
    return parse_config(raw)


def test_tiny_d1_lora_resume_is_bit_exact(fakes, tmp_path):
    reg = get_registry()
    for kind, name in (("model", "tiny"), ("objective", "d1"), ("sampler", "llada"), ("task", "arithmetic")):
        if name not in reg.names(kind):
            pytest.skip(f"{kind} {name!r} is not installed")
    train(_config(str(tmp_path / "full")))
    part = tmp_path / "part"
    train(_config(str(part)))
    shutil.rmtree(part / "checkpoint-4")  # as if the run had died after checkpoint-2
    result = train(_config(str(part)), resume="latest")
    assert result["global_step"] == 4
    a = load_file(str(tmp_path / "full" / "checkpoint-4" / "adapter_model.safetensors"))
    b = load_file(str(part / "checkpoint-4" / "adapter_model.safetensors"))
    assert len(a) > 0 and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(float(v.abs().sum()) > 0 for k, v in a.items() if "lora_B" in k)  # the adapter trained
