"""Sampler overhead on the built-in tiny model: wall time / (NFE x one bare forward of the same batch).

    python benchmarks/sampler_overhead.py                    # default tiny model, CPU, 1 thread
    python benchmarks/sampler_overhead.py --batch 16 --gen-length 128 --device cuda

Times are process CPU time (``time.process_time``, one thread), which other jobs on a shared
machine do not inflate; on a GPU (``--device cuda``) wall time is used. A ratio of 1.00 means the sampler costs nothing beyond its forward passes; the issue's target is
<= 1.05. Fast-dLLM's cached passes feed only the current block and the suffix, so its ratio can be
below 1. On a shared machine the end-to-end ratio is noisy, so the table also times each sampler
with the forward pass replaced by replayed logits (its own per-step work alone) and reports
``1 + own work / bare forward``. Prints a markdown table (the `## Samplers` section of docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from remask import ModelOutput, PromptBatch
from remask_diffusion.samplers import DreamSampler, FastDLLMSampler, LLaDASampler
from remask_diffusion.tiny import TinyDiffusionModel


def prompts_for(model: TinyDiffusionModel, batch: int, prompt_length: int) -> PromptBatch:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 100, (batch, prompt_length), generator=g)
    lengths = torch.randint(prompt_length // 2, prompt_length + 1, (batch,), generator=g)
    attn = torch.arange(prompt_length).unsqueeze(0) >= (prompt_length - lengths).unsqueeze(1)  # left padding
    ids = torch.where(attn, ids, torch.full_like(ids, model.pad_token_id))
    return PromptBatch(ids, attn, torch.arange(batch), tuple("" for _ in range(batch)), tuple({} for _ in range(batch)))


def clock(device: torch.device) -> float:
    """CPU time of this process on CPU (robust to other load); synchronised wall time on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def full_batch(model: TinyDiffusionModel, prompts: PromptBatch, gen_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[q, M×L]`` and its padding mask, as the samplers build them. # [B, P+L] x2"""
    device = model.device
    x = torch.cat([prompts.prompt_ids, torch.full((prompts.batch_size, gen_length), model.mask_token_id)], 1)
    attn = torch.cat([prompts.attention_mask, torch.ones(prompts.batch_size, gen_length, dtype=torch.bool)], 1)
    return x.to(device), attn.to(device)


def bare_forward_seconds(model: TinyDiffusionModel, prompts: PromptBatch, gen_length: int, repeats: int) -> float:
    device = model.device
    x, attn = full_batch(model, prompts, gen_length)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 2):
            t = clock(device)
            model.logits(x, attn)
            times.append(clock(device) - t)
    return statistics.median(times[2:])


class LogitsReplay:
    """Stands in for ``model.forward``: returns stored logits instantly, so that timing a sampler
    with it measures the sampler's own per-step work and nothing else."""

    def __init__(self, model: TinyDiffusionModel, logits: torch.Tensor) -> None:
        self.model, self.logits = model, logits

    class _Cache:
        def get_seq_length(self) -> int:
            return 0

        def crop(self, n: int) -> None:
            pass

    def __call__(self, input_ids, attention_mask=None, **kwargs) -> ModelOutput:
        self.model.nfe += 1
        b, s = input_ids.shape
        cache = self._Cache() if kwargs.get("use_cache") else None
        # a view, not a copy: samplers leave logits as they got them (the one column they mask for
        # the argmax is restored), and a copy would be counted as the sampler's own work
        logits = self.logits[:b, -s:]  # [B, S, V]
        keep = kwargs.get("logits_to_keep")
        return ModelOutput(logits=logits if keep is None else logits[:, keep], past_key_values=cache)


def time_sampler(sampler, model, prompts, repeats: int) -> tuple[float, int]:
    sampler.sample(model, prompts, torch.Generator().manual_seed(0))  # warm-up
    times, nfe = [], 0
    for r in range(repeats):
        t = clock(model.device)
        rollout = sampler.sample(model, prompts, torch.Generator().manual_seed(r))
        times.append(clock(model.device) - t)
        nfe = rollout.nfe
    return statistics.median(times), nfe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-length", type=int, default=16)
    ap.add_argument("--gen-length", type=int, default=64)
    ap.add_argument("--block-length", type=int, default=16)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per sampler (median)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = TinyDiffusionModel(TinyDiffusionModel.Config(device=args.device))
    prompts = prompts_for(model, args.batch, args.prompt_length)
    bare = bare_forward_seconds(model, prompts, args.gen_length, repeats=20)
    common = dict(gen_length=args.gen_length, temperature=1.0)
    block = dict(block_length=args.block_length, steps=args.steps)
    cases = [
        ("llada", LLaDASampler, {**common, **block}),
        ("llada (record_step_stats off)", LLaDASampler, {**common, **block, "record_step_stats": False}),
        ("llada (remasking random)", LLaDASampler, {**common, **block, "remasking": "random"}),
        ("dream (entropy)", DreamSampler, {**common, "steps": args.steps}),
        ("fast-dllm (threshold None = fixed steps, no cache)", FastDLLMSampler,
         {**common, **block, "threshold": None, "cache": "none"}),
        ("fast-dllm (threshold 0.9, no cache)", FastDLLMSampler, {**common, **block, "cache": "none"}),
        ("fast-dllm (threshold 0.9, prefix cache)", FastDLLMSampler, {**common, **block, "cache": "prefix"}),
    ]
    print(f"tiny model ({model.num_parameters() / 1e6:.2f} M params), device {args.device}, "
          f"{args.threads} thread(s), {platform.processor() or platform.machine()}; batch {args.batch}, "
          f"prompt {args.prompt_length}, L {args.gen_length}, block {args.block_length}, steps {args.steps}; "
          f"bare forward {bare * 1e3:.2f} ms")
    print()
    print("| sampler | NFE | time (ms) | time / (NFE x bare forward) | own work per step (ms) | "
          "1 + own work / bare forward |")
    print("|---|---:|---:|---:|---:|---:|")
    with torch.no_grad():
        replay_logits = model.logits(*full_batch(model, prompts, args.gen_length))  # [B, P+L, V]
    for label, cls, cfg in cases:
        sampler = cls(cls.Config(**cfg))
        wall, nfe = time_sampler(sampler, model, prompts, args.repeats)
        model.forward = LogitsReplay(model, replay_logits)  # instance attribute shadows the method
        try:
            own, own_nfe = time_sampler(sampler, model, prompts, args.repeats)
        finally:
            del model.forward
        per_step = own / own_nfe
        print(f"| {label} | {nfe} | {wall * 1e3:.1f} | {wall / (nfe * bare):.3f} | {per_step * 1e3:.2f} | "
              f"{1 + per_step / bare:.3f} |")


if __name__ == "__main__":
    main()
