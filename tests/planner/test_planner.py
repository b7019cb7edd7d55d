"""The memory planner (``remask.planner``, ``remask estimate``): its arithmetic, its reading of
accelerate configs, and its predictions against peaks measured on CPU (benchmarks/memory.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from transformers import LlamaConfig

from remask.cli import main
from remask.planner import GiB, LiveBytes, PlanInputs, Sharding, parse_bytes, plan_memory, sharding_from_accelerate

ROOT = Path(__file__).resolve().parents[2]


def _arch(**kw) -> LlamaConfig:
    base = dict(vocab_size=512, hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=4, tie_word_embeddings=False)
    return LlamaConfig(**{**base, **kw})


def _plan(**kw):
    base = dict(architecture=_arch(), dtype="float32", rollout_rows=4, micro_batch=2, prompt_length=32,
                gen_length=32, block_length=8)
    return plan_memory(PlanInputs(**{**base, **kw}))


def test_parse_bytes():
    assert parse_bytes("80GB") == 80 * GiB == parse_bytes("80 GiB") == parse_bytes("80g")
    assert parse_bytes("512MB") == 512 * 2**20
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes("eighty")


def test_live_bytes_counts_storages_until_freed():
    import torch

    with LiveBytes() as live:
        a = torch.empty(1024, device="meta")  # 4 KiB
        b = a.view(32, 32)  # a view: no new storage
        c = torch.empty(256, device="meta")  # 1 KiB
        del c
        assert live.live == 4096 and live.peak == 5120
        del a, b
    assert live.live == 0 and live.peak == 5120


def test_plan_parts_follow_the_settings():
    full = _plan()
    n = full.params
    assert full.trainable == n
    assert full.phases["loss"].parts["weights"] == 4 * n and full.phases["loss"].parts["optimizer"] == 8 * n
    ckpt = _plan(gradient_checkpointing=True)
    assert ckpt.phases["loss"].total < full.phases["loss"].total
    assert ckpt.phases["rollout"].total == full.phases["rollout"].total  # no-grad passes are unaffected
    lora = _plan(lora_r=4)
    assert lora.trainable < n / 10 and lora.phases["loss"].parts["optimizer"] == 8 * lora.trainable
    q = _plan(lora_r=4, load_in_4bit=True, dtype="bfloat16")
    linear = sum(4 * 128 * 128 + 3 * 128 * 352 for _ in range(4))  # decoder linears, quantised
    assert q.phases["loss"].parts["weights"] < lora.phases["loss"].parts["weights"] / 2 - linear
    cached = _plan(kv_cache="prefix")
    assert cached.phases["rollout"].parts["kv_cache"] == 2 * 4 * 4 * 64 * 128 * 4  # 2 x layers x R x S x d x 4 B


def test_sharding_divides_weights_gradients_and_optimizer():
    alone = _plan()
    fsdp = _plan(sharding=Sharding(4, "fsdp-full"))
    zero2 = _plan(sharding=Sharding(4, "zero2"))
    w, o = alone.phases["loss"].parts["weights"], alone.phases["loss"].parts["optimizer"]
    assert zero2.phases["loss"].parts["weights"] == w and zero2.phases["loss"].parts["optimizer"] == o // 4
    assert fsdp.phases["loss"].parts["gradients"] == w // 4
    assert w // 4 < fsdp.phases["loss"].parts["weights"] < w  # a shard + the gathered layers
    assert fsdp.phases["loss"].total < zero2.phases["loss"].total < alone.phases["loss"].total


def test_largest_micro_batch_is_consistent_with_the_loss_phase():
    plan = _plan(rollout_rows=64, micro_batch=4)
    budget = plan.phases["loss"].total + 3 * plan.loss_per_row
    assert plan.largest_micro_batch(budget) in (6, 7)  # 4 rows fit, and 3 more rows' worth
    assert plan.largest_micro_batch(plan.loss_fixed - 1) == 0
    assert plan.largest_micro_batch(1000 * GiB) == 64  # never more than a process's rows


def test_sharding_read_from_the_shipped_accelerate_configs():
    acc = ROOT / "examples" / "accelerate"
    assert sharding_from_accelerate(str(acc / "fsdp.yaml")) == Sharding(8, "fsdp-full")
    assert sharding_from_accelerate(str(acc / "deepspeed_zero2.yaml")).kind == "zero2"
    assert sharding_from_accelerate(str(acc / "deepspeed_zero3.yaml")).kind == "zero3"
    assert sharding_from_accelerate(str(acc / "multi_gpu.yaml")).kind == "ddp"
    assert sharding_from_accelerate(str(acc / "cpu.yaml")) == Sharding(1, "none")
    assert sharding_from_accelerate(None) == Sharding(1, "none")


def test_estimate_command(capsys):
    assert main(["estimate", str(ROOT / "examples" / "tiny-arith-d1.yaml"), "--gpu-memory", "2GB",
                 "--prompt-length", "16"]) == 0
    out = capsys.readouterr().out
    assert "rollout" in out and "prepare" in out and "loss" in out and "fits in 2.00 GiB" in out
    assert main(["estimate", str(ROOT / "examples" / "tiny-arith-d1.yaml"), "--json", "--gpu-memory", "1MB",
                 "--prompt-length", "16"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] is False and plan["largest_micro_batch"] == 0 and plan["parameters"] > 0


def test_estimate_bad_input_is_one_line(capsys):
    assert main(["estimate", str(ROOT / "examples" / "tiny-arith-d1.yaml"), "--gpu-memory", "lots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--gpu-memory" in err[0]
    acc = ROOT / "examples" / "accelerate" / "fsdp.yaml"  # 8 processes; the tiny config has 12 prompts per step
    assert main(["estimate", str(ROOT / "examples" / "tiny-arith-d1.yaml"), "--accelerate-config", str(acc),
                 "--train.prompts_per_step", "12"]) == 2
    assert "not divisible by the 8 processes" in capsys.readouterr().err


def _memory_benchmark():
    spec = importlib.util.spec_from_file_location("remask_bench_memory", ROOT / "benchmarks" / "memory.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_predictions_within_20_percent_of_measured_cpu_peaks():
    """Peak RSS of a real step (fresh subprocess per case) against the meta-device prediction."""
    bench = _memory_benchmark()
    cases = [bench.Case("train, full", "train", 2, 128),
             bench.Case("train, LoRA + checkpointing", "train", 2, 128, checkpointing=True, lora_r=16)]
    for row in bench.run(bench.SMALL, 2, 128, cases):
        assert abs(row["error"]) < 0.20, row


def test_adapters_describe_their_architecture_from_config_json_alone(tmp_path):
    """A directory with only LLaDA's / Dream's config.json (no weights) is enough to plan."""
    from remask_diffusion.dream import DreamModel
    from remask_diffusion.llada import LLaDAModel
    from remask_diffusion.tiny import TinyDiffusionModel

    llada_dir, dream_dir = tmp_path / "llada", tmp_path / "dream"
    llada_dir.mkdir()
    dream_dir.mkdir()
    (llada_dir / "config.json").write_text(json.dumps({
        "model_type": "llada", "d_model": 256, "n_heads": 8, "n_kv_heads": 8, "n_layers": 3, "mlp_hidden_size": 688,
        "vocab_size": 1000, "embedding_size": 1024, "block_type": "llama", "rope_theta": 500000.0}))
    (dream_dir / "config.json").write_text(json.dumps({
        "model_type": "Dream", "hidden_size": 224, "num_attention_heads": 7, "num_key_value_heads": 1,
        "num_hidden_layers": 2, "intermediate_size": 512, "vocab_size": 2000}))
    llama = LLaDAModel.architecture_config(LLaDAModel.Config(path=str(llada_dir)))
    assert (llama.model_type, llama.hidden_size, llama.num_hidden_layers, llama.vocab_size) == ("llama", 256, 3, 1024)
    qwen = DreamModel.architecture_config(DreamModel.Config(path=str(dream_dir)))
    assert (qwen.model_type, qwen.hidden_size, qwen.num_key_value_heads) == ("qwen2", 224, 1)
    tiny = TinyDiffusionModel.architecture_config(TinyDiffusionModel.Config(hidden_size=64, num_layers=3))
    assert (tiny.hidden_size, tiny.num_hidden_layers, tiny.vocab_size) == (64, 3, 100)
    plan = plan_memory(PlanInputs(architecture=qwen, dtype="bfloat16", micro_batch=2, rollout_rows=2,
                                  prompt_length=16, gen_length=16, block_length=8, lora_r=4, load_in_4bit=True))
    assert plan.params > 0 and plan.phases["loss"].total > plan.phases["loss"].parts["weights"]
