"""FSDP2 on CPU: 2 gloo processes (accelerate's ``debug_launcher`` and process group) shard a remask
model with ``HFDiffusionModel.fully_shard`` and train it with gradient checkpointing; the weights equal those of one unsharded
process on the same global batch to float32 rounding, for full-weight training and for LoRA; the
reference policy works on the sharded module (LoRA: adapter disabled; full: a frozen sharded copy);
a sharded checkpoint (torch.distributed.checkpoint) saved and loaded mid-run continues bit-exactly.

accelerate itself turns an FSDP config into plain DDP on a CPU-only machine (its MULTI_CPU mode), so
these tests drive torch's FSDP2 under accelerate's gloo process group (docs/training.md)."""

from __future__ import annotations

import fsdp_worker
import pytest
import torch
from safetensors.torch import load_file


def _sharded(out: str, lora: bool, resume_check: bool) -> None:
    from accelerate import PartialState

    state = PartialState(cpu=True)  # the gloo process group of this debug_launcher child
    fsdp_worker.run(out, lora, state.num_processes, state.process_index, resume_check)


def _launch(tmp_path, lora: bool, resume_check: bool = False) -> dict[str, torch.Tensor]:
    from accelerate import debug_launcher
    from accelerate.state import AcceleratorState, PartialState

    out = tmp_path / ("sharded-resumed" if resume_check else "sharded")
    out.mkdir()
    try:
        debug_launcher(_sharded, args=(str(out), lora, resume_check), num_processes=2)
    finally:
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    return load_file(str(out / "result.safetensors"))


def _single(tmp_path, lora: bool) -> dict[str, torch.Tensor]:
    out = tmp_path / "single"
    out.mkdir()
    fsdp_worker.run(str(out), lora, world=1, rank=0)
    return load_file(str(out / "result.safetensors"))


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_fsdp2_matches_one_process_and_resumes_exactly(lora, tmp_path):
    one = _single(tmp_path, lora)
    two = _launch(tmp_path, lora)
    start = fsdp_worker.full_state(fsdp_worker.build(lora))
    weights = [k for k in one if not k.startswith("__")]
    assert set(weights) == set(start) and (all("lora_" in k for k in weights) if lora else len(weights) > 10)
    assert any(not torch.equal(one[k], start[k]) for k in weights)  # it trained
    for k in weights:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-6, msg=k)
    # the reference policy: unchanged by training, identical sharded or not
    torch.testing.assert_close(two["__reference_logits"], one["__reference_logits"], rtol=0, atol=1e-5)
    base = fsdp_worker.build(lora)
    ids, _ = fsdp_worker.batch()
    with torch.no_grad():
        if lora:
            with base.disable_adapter():
                expected = base.logits(ids)
        else:
            expected = base.logits(ids)
    torch.testing.assert_close(one["__reference_logits"], expected, rtol=0, atol=1e-5)
    # save sharded before the last step, load into a fresh sharded model, finish: bit-exact
    resumed = _launch(tmp_path, lora, resume_check=True)
    for k in weights:
        assert torch.equal(resumed[k], two[k]), k
