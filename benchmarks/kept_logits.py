"""Kept logits vs full logits: the samplers with the output layer run on the current block only
(``DiffusionModel.logits(keep=)``, what remask does) against the same samplers on the same model
computing every position's logits and slicing afterwards (``remask.testing.FullLogits``: what every
pass cost before, and what LLaDA's own ``generate`` computes), side by side in one run.

    OMP_NUM_THREADS=1 python benchmarks/kept_logits.py          # random LLaDA-shaped model, vocabulary 126,464
    OMP_NUM_THREADS=1 python benchmarks/kept_logits.py --tiny   # seconds, the same code path (tested)

For each sampler/cache case the two variants run alternately (full, kept, full, kept, ...) after one
warm-up each, so drift on a shared machine hits both alike; times are the medians of process CPU
seconds (CPU) or synchronised wall seconds (CUDA). "largest logits" is the largest output of the
model's output layer in any pass of the rollout (a forward hook measures it), in MB at the model's
dtype. Each case also checks that both variants decode identically (tokens, ``unmask_step``, step
log-probs). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rollout_speed import add_shape_args, clock, random_llada, random_prompts  # noqa: E402

from remask.testing import FullLogits
from remask_diffusion.samplers import FastDLLMSampler, LLaDASampler


class LargestLogits:
    """Largest output (bytes) of the model's output layer while installed."""

    def __init__(self, model: Any) -> None:
        self.head = model.module.get_output_embeddings()
        self.bytes = 0

    def __enter__(self) -> "LargestLogits":
        def hook(mod: Any, inp: Any, out: torch.Tensor) -> None:
            self.bytes = max(self.bytes, out.numel() * out.element_size())

        self.handle = self.head.register_forward_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def cases(gen_length: int, block_length: int) -> list[tuple[str, Any, dict]]:
    common = dict(gen_length=gen_length, block_length=block_length, steps=gen_length, temperature=0.0)
    return [
        ("llada, no cache", LLaDASampler, dict(common, cache="none")),
        ("llada, prefix cache", LLaDASampler, dict(common, cache="prefix")),
        ("llada, dual cache", LLaDASampler, dict(common, cache="dual")),
        ("fast-dllm 0.9, dual cache", FastDLLMSampler, dict(common, threshold=0.9, cache="dual")),
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a minute model and short rollouts (seconds; tests run this)")
    add_shape_args(ap)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median) after one warm-up")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.tiny:
        args.vocab, args.d_model, args.layers, args.heads, args.mlp = 512, 16, 1, 2, 32
        args.gen_length, args.block_length, args.repeats = 8, 4, 1
    torch.set_num_threads(args.threads)
    model = random_llada(d_model=args.d_model, layers=args.layers, heads=args.heads, mlp=args.mlp, vocab=args.vocab,
                         device=args.device, dtype=args.dtype)
    prompts = random_prompts(model, args.batch, args.prompt_length)
    full_model = FullLogits(model)
    n_params = sum(p.numel() for p in model.module.parameters())
    print(f"random LLaDA-shaped model (d_model {args.d_model}, {args.layers} layers, vocabulary {args.vocab}), "
          f"{n_params / 1e6:.1f} M parameters, {args.dtype}, device {args.device}, {torch.get_num_threads()} thread(s), "
          f"{platform.processor() or platform.machine()}; batch {prompts.batch_size}, prompt {prompts.prompt_length}, "
          f"L {args.gen_length}, block {args.block_length}, greedy; median of {args.repeats} alternating run(s) per "
          f"variant; load average {os.getloadavg()[0]:.1f} at the start")
    print()
    print("| sampler | NFE | full logits (s) | kept logits (s) | speed-up | largest logits, full (MB) | "
          "largest logits, kept (MB) | identical rollouts |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    device = model.device
    for label, cls, cfg in cases(args.gen_length, args.block_length):
        sampler = cls(cls.Config(**cfg))
        runs: dict[str, list[float]] = {"full": [], "kept": []}
        largest: dict[str, int] = {}
        last: dict[str, Any] = {}
        for r in range(args.repeats + 1):  # round 0 is the warm-up of both
            for name, m in (("full", full_model), ("kept", model)):
                with LargestLogits(model) as peak:
                    t = clock(device)
                    last[name] = sampler.sample(m, prompts, torch.Generator(device=device).manual_seed(r))
                    seconds = clock(device) - t
                largest[name] = peak.bytes
                if r:
                    runs[name].append(seconds)
        a, b = last["full"], last["kept"]
        same = all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("completion_ids", "unmask_step", "step_logps"))
        full_s, kept_s = statistics.median(runs["full"]), statistics.median(runs["kept"])
        print(f"| {label} | {b.nfe} | {full_s:.2f} | {kept_s:.2f} | {full_s / kept_s:.2f}× | "
              f"{largest['full'] / 1e6:.3g} | {largest['kept'] / 1e6:.3g} | {'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
