"""GPU benchmark: rollout tokens/s and peak memory of an 8B LLaDA-shaped model in bf16, per sampler/cache policy.

    python benchmarks/gpu.py                 # one GPU; no rollout case starts after --budget-s (330 s)
    python benchmarks/gpu.py --tiny          # the same code path on the CPU in seconds (a test runs this)
    python benchmarks/gpu.py --only d1,vrpo  # training rows of some objectives only (gpu_train.py)

The model has LLaDA-8B-Instruct's shape (32 layers, d_model 4096, MLP 12288, vocabulary 126,464),
random weights, built on the meta device and materialised on the GPU in bfloat16 — no download.
Each case decodes a batch of random left-padded prompts (64 tokens) to L = 256 in blocks of 32 and
reports tokens/s (B·L / synchronised wall time; process CPU time with ``--tiny``), NFE, peak GPU
memory and the overhead against bare passes of the same batch and cache policy (see
``rollout_speed.py``). With random weights no confidence reaches a threshold, so threshold decoding
commits one token per step (NFE = L): its worst case. Not yet run on a GPU (none was available).

The output is a markdown table per section and one JSON line ``{"card": ..., "sections": ...}``.
Sections: the rollout section below, plus ``section(model, args)`` of any module listed in
``EXTRA_SECTIONS`` that is importable from this folder (``gpu_train.py`` adds training there). It
returns a :class:`Section` or a dict ``{"title", "columns", "rows"}``; ``args.budget`` is the shared
:class:`Budget` (``args.budget.ok()``), ``args.tiny`` says whether this is the CPU check.
A rollout case that would start after ``--budget-s`` seconds (default 330, leaving room for the
training section inside the 8-minute target) is reported as skipped, not run; so is a training row
that would start after ``--budget-total-s`` (460).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rollout_speed import bare_pass_seconds, clock, random_llada, random_prompts  # noqa: E402

from remask_diffusion.samplers import FastDLLMSampler, LLaDASampler  # noqa: E402

#: modules in benchmarks/ that add a section when present (each defines ``section(model, args)``)
EXTRA_SECTIONS = ("gpu_train",)


@dataclass
class Section:
    """One table of the report: a title, its column names and one dict per row."""

    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "---|" * len(self.columns)]
        cell = lambda v: "n/a" if v is None else str(v)  # noqa: E731
        lines += ["| " + " | ".join(cell(r.get(c, "")) for c in self.columns) + " |" for r in self.rows]
        return "\n".join(lines)


class Budget:
    """Wall-clock guard: ``ok()`` is false once ``seconds`` have passed since the start."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def ok(self) -> bool:
        return self.elapsed() < self.seconds


def rollout_cases(gen_length: int, block_length: int, steps: int) -> list[tuple[str, Any, dict]]:
    common = dict(gen_length=gen_length, block_length=block_length, steps=steps, temperature=0.0,
                  record_step_stats=True)
    return [
        ("llada, no cache", LLaDASampler, dict(common, cache="none")),
        ("llada, dual cache", LLaDASampler, dict(common, cache="dual")),
        ("fast-dllm 0.9, prefix cache", FastDLLMSampler, dict(common, cache="prefix")),
        ("fast-dllm 0.9, dual cache", FastDLLMSampler, dict(common, cache="dual")),
        ("fast-dllm fixed schedule, dual cache", FastDLLMSampler, dict(common, cache="dual", threshold=None)),
    ]


def rollout_section(model: Any, args: argparse.Namespace, budget: Budget) -> Section:
    sec = Section(f"Rollouts (L {args.gen_length}, block {args.block_length}, steps {args.steps}, greedy)",
                  ["batch", "sampler", "NFE", "time (s)", "tokens/s", "peak memory (GiB)", "overhead"])
    device = model.device
    n_blocks = args.gen_length // args.block_length
    for batch in args.batches:
        prompts = random_prompts(model, batch, args.prompt_length)
        bare = {pol: bare_pass_seconds(model, prompts, args.gen_length, args.block_length, pol, 2)
                for pol in ("none", "prefix", "dual")}  # also the warm-up of every shape
        for label, cls, cfg in rollout_cases(args.gen_length, args.block_length, args.steps):
            row: dict[str, Any] = {"batch": batch, "sampler": label}
            if not budget.ok():
                row["NFE"] = f"skipped (time budget {budget.seconds:.0f} s)"
                sec.rows.append(row)
                continue
            sampler = cls(cls.Config(**cfg))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = clock(device)  # synchronised wall time on CUDA, process CPU time on the CPU
            rollout = sampler.sample(model, prompts, torch.Generator(device=device).manual_seed(0))
            seconds = clock(device) - t
            full, later = bare[cfg["cache"]]
            n_full = rollout.nfe if cfg["cache"] == "none" else n_blocks
            expected = n_full * full + (rollout.nfe - n_full) * later
            peak = round(torch.cuda.max_memory_allocated(device) / 2**30, 1) if device.type == "cuda" else None
            row.update({"NFE": rollout.nfe, "time (s)": round(seconds, 2),
                        "tokens/s": round(batch * args.gen_length / seconds, 1),
                        "peak memory (GiB)": peak, "overhead": round(seconds / expected, 3)})
            sec.rows.append(row)
            print(f"  {batch:>3} {label}: {row['tokens/s']} tokens/s ({budget.elapsed():.0f} s)",
                  file=sys.stderr, flush=True)
    return sec


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a small model on the CPU, same code path (seconds)")
    ap.add_argument("--budget-s", type=float, default=330.0, help="start no rollout case after this many seconds")
    ap.add_argument("--budget-total-s", type=float, default=460.0,
                    help="start no training row (gpu_train.py) after this many seconds of the whole run")
    ap.add_argument("--only", default=None, help="training rows of these objectives only, e.g. d1,vrpo (default: all)")
    ap.add_argument("--plan-workers", type=int, default=None,
                    help="CPU processes for the planner's predictions beside the training rows (default 8; 0 with --tiny: inline)")
    args = ap.parse_args(argv)
    if args.tiny:
        torch.set_num_threads(1)
        shape = dict(d_model=64, layers=2, heads=2, mlp=128, vocab=4096, device="cpu", dtype="float32")
        args.batches, args.prompt_length, args.gen_length, args.block_length, args.steps = (2, 4), 8, 16, 8, 8
        card = "cpu (--tiny)"
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu.py: no CUDA device visible; use --tiny for the CPU check")
        shape = dict(d_model=4096, layers=32, heads=32, mlp=12288, vocab=126464, device="cuda", dtype="bfloat16")
        args.batches, args.prompt_length, args.gen_length, args.block_length, args.steps = (16, 64), 64, 256, 32, 128
        card = torch.cuda.get_device_name(0)
    if args.only is not None:  # refuse a typo before minutes of model building
        try:
            from gpu_train import OBJECTIVES
        except ModuleNotFoundError:
            OBJECTIVES = ()
        unknown = sorted({n.strip() for n in args.only.split(",") if n.strip()} - set(OBJECTIVES))
        if unknown:
            print(f"gpu.py --only: unknown objective(s) {', '.join(unknown)}; built-ins: {', '.join(OBJECTIVES)}",
                  file=sys.stderr)
            raise SystemExit(2)
    if args.plan_workers is None:
        args.plan_workers = 0 if args.tiny else 8
    budget = args.budget = Budget(args.budget_s)
    model = random_llada(**shape)
    n_params = sum(p.numel() for p in model.module.parameters())
    print(f"{card}: LLaDA-shaped model, {n_params / 1e9:.2f} B parameters, {shape['dtype']}, "
          f"built in {budget.elapsed():.0f} s; torch {torch.__version__}\n")
    with torch.no_grad():
        sections = [rollout_section(model, args, budget)]
        for name in EXTRA_SECTIONS:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name:
                    raise
                continue
            result = module.section(model, args)
            # a dict, or a Section (possibly of this file imported as ``gpu``, another class object)
            sections.append(Section(**result) if isinstance(result, dict) else result)
    for sec in sections:
        print(sec.markdown() + "\n")
    print(json.dumps({"card": card, "parameters": n_params, "dtype": shape["dtype"],
                      "seconds": round(budget.elapsed(), 1),
                      "sections": [{"title": s.title, "rows": s.rows} for s in sections]}))


if __name__ == "__main__":
    main()
