"""Training section of ``benchmarks/gpu.py``: train-step time and peak memory of LoRA r=128 with
gradient checkpointing on LLaDA-shaped models in bf16, with the memory planner's prediction beside
each measured peak.

    python benchmarks/gpu.py            # adds this section after the rollouts (one GPU)
    python benchmarks/gpu.py --tiny     # the same code path on the CPU (tests/diffusion/test_gpu_benchmark.py)

Models: the 8B LLaDA shape that ``gpu.py`` built (random weights) and a ~1.3B one with LLaDA's
layout at d_model 2048 / 16 layers. Step: d1's micro-batch (6 rows) of prompt 256 + completion 256
tokens, the bidirectional forward of the adapter, fp32 log-softmax of the completion positions
(the likelihood every built-in objective computes), backward, AdamW on the adapter (LoRA on
q/k/v/o/gate/up/down, d1's targets). Time: median of 3 steps after one warm-up (synchronised);
peak: ``torch.cuda.max_memory_allocated`` over those steps. With ``--tiny`` the step runs on the
CPU (process time) and the measured peak column is n/a.

What it does not do yet: run each built-in objective's own ``prepare``/``loss`` (they differ in
passes per loss: dTRPO's staircase, TraFL's heads); every row is the shared likelihood step.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

D1_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]


def _step(model: Any, optimizer: torch.optim.Optimizer, ids: torch.Tensor, gen_length: int) -> None:
    logits = model.logits(ids)  # [M, S, V]
    logp = logits[:, -gen_length:].float().log_softmax(-1)  # [M, L, V]
    loss = -logp.gather(-1, ids[:, -gen_length:].unsqueeze(-1)).mean()
    del logits, logp
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(model: Any, *, rows: int, prompt_length: int, gen_length: int, r: int, repeats: int = 3) -> dict:
    """One configuration: LoRA ``r`` + checkpointing on ``model``; time, measured and predicted peak."""
    from remask.config import LoraSettings
    from remask.planner import PlanInputs, plan_memory

    from rollout_speed import clock

    base_config = model.module.config
    model.apply_lora(LoraSettings(r=r, alpha=r / 2, target_modules=D1_TARGETS))
    model.enable_gradient_checkpointing()
    model.train()
    device = model.device
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 100, (rows, prompt_length + gen_length), generator=g).to(device)  # [M, S]
    cuda = device.type == "cuda"
    try:
        with torch.enable_grad():
            _step(model, optimizer, ids, gen_length)  # warm-up: kernels, optimizer states
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(repeats):
                t0 = clock(device)
                _step(model, optimizer, ids, gen_length)
                times.append(clock(device) - t0)
        peak = torch.cuda.max_memory_allocated() if cuda else None
    finally:
        model.module = model.module.unload()  # the rollout model again, without the adapter
        model.eval()
    plan = plan_memory(PlanInputs(architecture=base_config, dtype=str(model.torch_dtype).split(".")[-1],
                                  rollout_rows=rows, micro_batch=rows, prompt_length=prompt_length,
                                  gen_length=gen_length, block_length=gen_length, gradient_checkpointing=True,
                                  lora_r=r, lora_targets=D1_TARGETS))
    predicted = plan.phases["loss"].total
    return {
        "step s": round(statistics.median(times), 3),
        "measured peak GiB": None if peak is None else round(peak / 2**30, 2),
        "predicted GiB": round(predicted / 2**30, 3),
        "pred/meas": None if peak is None else round(predicted / peak, 2),
    }


def section(model: Any, args: Any) -> Any:
    """The training table of ``gpu.py`` (called after the rollout section with its 8B model)."""
    from gpu import Section
    from rollout_speed import random_llada

    tiny = bool(getattr(args, "tiny", False))
    if tiny:
        rows, prompt_length, gen_length, r = 2, 8, 16, 4
        small = dict(d_model=32, layers=2, heads=2, mlp=64, vocab=4096, device="cpu", dtype="float32")
    else:
        rows, prompt_length, gen_length, r = 6, 256, 256, 128
        small = dict(d_model=2048, layers=16, heads=16, mlp=5632, vocab=126464, device="cuda", dtype="bfloat16")
    sec = Section("Training step: LoRA r=%d (d1's targets) + gradient checkpointing, micro-batch %d, S = %d + %d"
                  % (r, rows, prompt_length, gen_length),
                  ["model", "parameters", "objective", "step s", "measured peak GiB", "predicted GiB", "pred/meas"])
    one_b = random_llada(**small)
    for label, m in (("LLaDA-shaped small", one_b), ("LLaDA-shaped (gpu.py's model)", model)):
        n = sum(p.numel() for p in m.module.parameters())
        if m is one_b and not tiny:
            label = "LLaDA-shaped 1.3B"
        row = {"model": label, "parameters": f"{n / 1e9:.2f}B", "objective": "likelihood step (all objectives)"}
        row.update(measure(m, rows=rows, prompt_length=prompt_length, gen_length=gen_length, r=r))
        sec.rows.append(row)
        print(f"  train {label}: {row['step s']} s/step, peak {row['measured peak GiB']} GiB "
              f"(predicted {row['predicted GiB']})", file=sys.stderr, flush=True)
    del one_b
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return sec
