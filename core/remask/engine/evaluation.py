"""Held-out evaluation: accuracy of the task's own parser (``Task.is_correct``) on one split.

:func:`evaluate` is the one function every caller uses (``remask train`` before/after/every N
steps, ``remask sft``'s accuracy target, the comparison harness). It decodes with a sampler built
from the pipeline's sampler section plus ``eval.sampler`` overrides, greedy when ``eval.greedy``
(temperature 0 where the sampler has a ``temperature`` field), in batches of ``eval.batch_size``
prompts, with a fresh generator seeded from ``eval.seed`` so it never disturbs the training streams.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import lockstep
from ..config import ComponentSpec, EvalConfig, eval_sampler_config
from ..interfaces import DiffusionModel, Sampler, Task
from ..registry import Registry, get_registry
from .data import build_prompt_batch
from .reporting import format_duration

__all__ = ["EvalResult", "evaluate", "build_eval_sampler", "pass_at_k", "accuracy_summary"]


@dataclass
class EvalResult:
    """Accuracy of one evaluation pass."""

    accuracy: float  # mean score over all samples (greedy accuracy when ``greedy``, else sampled pass@1)
    num_problems: int
    num_samples: int
    seconds: float
    split: str
    gen_length: int | None = None
    pass_at_k: dict[int, float] = field(default_factory=dict)
    nfe: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)  # id, prompt, completion, score
    greedy: bool = False  # decoded at temperature 0: no samples, so no pass@k

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        """Scalars to log. A metric named pass@k only ever comes from samples at the sampler's
        temperature: a greedy evaluation logs its accuracy alone."""
        out = {f"{prefix}accuracy": self.accuracy, f"{prefix}num_problems": float(self.num_problems),
               f"{prefix}seconds": self.seconds}
        if not self.greedy:
            for k, v in self.pass_at_k.items():
                if k > 1:
                    out[f"{prefix}pass@{k}"] = v
        return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021 (eq. 1): ``1 − C(n−c, k) / C(n, k)``."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def build_eval_sampler(sampler_spec: ComponentSpec, eval_config: EvalConfig, *, gen_length: int | None = None,
                       registry: Registry | None = None) -> Sampler:
    """The evaluation sampler: :func:`remask.config.eval_sampler_config` built."""
    cls, config = eval_sampler_config(sampler_spec, eval_config, registry or get_registry(), gen_length=gen_length)
    return cls(config)


def _gather(accelerator: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if accelerator is None or accelerator.num_processes == 1:
        return rows
    from accelerate.utils import gather_object

    return list(gather_object(rows))


def evaluate(
    model: DiffusionModel,
    task: Task,
    sampler: Sampler,
    eval_config: EvalConfig,
    *,
    accelerator: Any = None,
    limit: int | None = None,
    device: torch.device | str | None = None,
) -> EvalResult:
    """Decode every problem of ``eval_config.split`` (first ``limit`` rows) and score it with
    ``task.is_correct``. Rows are split over processes; every process returns the full result."""
    start = time.perf_counter()
    examples: Sequence[Any] = task.examples(eval_config.split)
    n_lim = limit if limit is not None else eval_config.limit
    if n_lim is not None:
        examples = list(examples)[:n_lim]
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    mine = list(range(rank, len(examples), world))
    dev = device if device is not None else model.device
    n = eval_config.samples_per_prompt
    generator = torch.Generator(device=torch.device(dev)).manual_seed(eval_config.seed + rank)
    nfe_before = model.nfe
    rows: list[dict[str, Any]] = []
    # decoding: eval mode and no gradients whatever the sampler does; lockstep: sharded ranks may
    # hold unequal numbers of batches
    with model.decoding(), lockstep.region(model, "evaluation", drain=True):
        for lo in range(0, len(mine), eval_config.batch_size):
            idx = mine[lo:lo + eval_config.batch_size]
            batch = [examples[i] for i in idx]
            prompts = build_prompt_batch(model, batch, group_size=n, first_group_id=lo, device=dev)
            rollout = sampler.sample(model, prompts, generator)
            for r, text in enumerate(rollout.texts):
                ex = batch[r // n]
                try:
                    score = float(task.is_correct(text, ex.reference))
                except Exception:  # noqa: BLE001 - a parser failure counts as wrong
                    score = 0.0
                rows.append({"index": idx[r // n], "id": ex.id, "prompt": prompts.texts[r],
                             "completion": text, "score": score})
    nfe = model.nfe - nfe_before
    rows = sorted(_gather(accelerator, rows), key=lambda r: (r["index"], r["completion"]))
    by_problem: dict[int, list[float]] = {}
    for r in rows:
        by_problem.setdefault(r["index"], []).append(r["score"])
    scores = [s for r in rows for s in [r["score"]]]
    acc = sum(scores) / len(scores) if scores else 0.0
    greedy = float(getattr(sampler.config, "temperature", 1.0) or 0.0) == 0.0
    pak = {}
    for k in range(1, 1 if greedy else n + 1):
        vals = [pass_at_k(len(v), sum(1 for s in v if s >= 1.0), k) for v in by_problem.values() if len(v) >= k]
        pak[k] = sum(vals) / len(vals) if vals else 0.0
    gen_length = getattr(sampler.config, "gen_length", None)
    return EvalResult(accuracy=acc, num_problems=len(by_problem), num_samples=len(rows),
                      seconds=time.perf_counter() - start, split=eval_config.split, gen_length=gen_length,
                      pass_at_k=pak, nfe=nfe, rows=rows, greedy=greedy)


def accuracy_summary(before: EvalResult, after: EvalResult, seconds: float, *, greedy: bool = True) -> str:
    """``greedy accuracy 12.0% → 48.0% on 50 held-out problems in 1m23s`` (``seconds``: the run's wall time)."""
    mode = "greedy accuracy" if greedy else "accuracy"
    return (f"{mode} {100 * before.accuracy:.1f}% → {100 * after.accuracy:.1f}% on {after.num_problems} "
            f"held-out problems in {format_duration(seconds)}")
