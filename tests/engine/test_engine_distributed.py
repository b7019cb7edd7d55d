"""Two gloo CPU processes (accelerate.debug_launcher) give the weights of one process with the same
global batch. Components are chosen so that no draw depends on how rows are split: a row-seeded
sampler, no random prompt masks. Tolerance: gradients are averaged in a different order (per-process
means, then an all-reduce), so they agree to float32 rounding only; Adam's eps is raised to 1e-3 so
that entries whose true gradient is ~0 are not normalised up to a whole step of noise. With that,
every weight agrees to |Δ| ≤ 1e-6 after 4 updates."""

from __future__ import annotations

import engine_fakes
import pytest
import torch
from safetensors.torch import load_file

from remask.config import parse_config
from remask.engine import train


def _raw(out: str) -> dict:
    raw = engine_fakes.base_config(out, max_steps=4, prompts_per_step=4, group_size=2, inner_steps=2,
                             lr_scheduler="cosine", learning_rate=0.02, adam_eps=1e-3)
    raw["sampler"] = {"name": "test-row-sampler", "gen_length": 6, "block_length": 6, "steps": 3}
    raw["objective"] = {"name": "test-ratio", "prompt_mask_prob": 0.0}
    return raw


def _two_process_run(out: str) -> None:
    from accelerate.state import AcceleratorState, PartialState

    from remask.testing import registered_plugin

    # the forked child inherits the parent's single-process accelerate singletons
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    with registered_plugin(engine_fakes.plugin(), name="engine-test-fakes-child"):
        result = train(parse_config(_raw(out)))
    assert result["global_step"] == 4


def test_two_gloo_processes_match_one(fakes, tmp_path):
    from accelerate import debug_launcher
    from accelerate.state import AcceleratorState, PartialState

    one = train(parse_config(_raw(str(tmp_path / "one"))))
    assert one["global_step"] == 4
    try:
        debug_launcher(_two_process_run, args=(str(tmp_path / "two"),), num_processes=2)
    finally:
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    a = load_file(str(tmp_path / "one" / "checkpoint-4" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoint-4" / "model.safetensors"))
    initial = engine_fakes.FakeModel().module.state_dict()
    assert any(not torch.equal(a[k], initial[k]) for k in a)  # it trained
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), (k, float((a[k] - b[k]).abs().max()))
    two = (tmp_path / "two" / "checkpoint-4")
    assert (two / "rng_state_0.pth").is_file() and (two / "rng_state_1.pth").is_file()
    import json

    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["train/reward"] == pytest.approx(ref[0]["train/reward"], abs=1e-6)
    # each process's rollout and reward seconds are gathered; the slowest rank is named (issue 16)
    assert rows[-1]["perf/rollout_slowest_rank"] in (0.0, 1.0) and rows[-1]["perf/reward_slowest_rank"] in (0.0, 1.0)
    assert rows[-1]["perf/rollout_seconds_max_rank"] >= rows[-1]["perf/rollout_seconds_min_rank"] > 0
    assert rows[-1]["train/num_tokens"] == ref[-1]["train/num_tokens"]  # counted over both processes


def test_shipped_accelerate_configs_load():
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    root = Path(__file__).resolve().parents[2] / "examples" / "accelerate"
    expected = {"cpu": "NO", "single_gpu": "NO", "multi_gpu": "MULTI_GPU", "fsdp": "FSDP",
                "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED"}
    for name, kind in expected.items():
        cfg = load_config_from_file(str(root / f"{name}.yaml"))
        assert str(cfg.distributed_type).endswith(kind), name
    assert load_config_from_file(str(root / "deepspeed_zero3.yaml")).deepspeed_config["zero_stage"] == 3
