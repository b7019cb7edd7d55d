"""``remask sample CONFIG --prompt "..." [--n N] [--seed S] [--steps] [--section.field value]``

Builds the config's model and sampler, decodes each prompt ``n`` times and prints the completions,
so a user can see what a sampler does before training. ``--steps`` also prints, for the first
completion, the state before every sampler step (``_`` marks a masked position), rebuilt from the
recorded ``unmask_step``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

from ..cli import command, load_cli_config
from ..errors import RemaskError
from ..interfaces import DiffusionModel
from ..records import Example, PromptBatch

__all__ = ["prompt_batch", "render_states"]


def prompt_batch(model: DiffusionModel, prompts: Sequence[str | Example], group_size: int) -> PromptBatch:
    """Render (chat template + prefill), tokenise and left-pad ``prompts`` (texts or task rows), each
    repeated ``group_size`` times; task rows keep their references."""
    examples = [p if isinstance(p, Example) else Example(prompt=p, reference={}) for p in prompts]
    rows = [model.render_prompt(e) for e in examples for _ in range(group_size)]
    refs = tuple(e.reference for e in examples for _ in range(group_size))
    encoded = [list(model.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rows]
    width = max(1, max(len(ids) for ids in encoded))
    ids = torch.full((len(rows), width), model.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(encoded):
        if row:
            ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = True
    groups = torch.arange(len(prompts)).repeat_interleave(group_size)
    return PromptBatch(ids, mask, groups, tuple(rows), refs)


def render_states(model: DiffusionModel, completion_ids: torch.Tensor, unmask_step: torch.Tensor,
                  num_steps: int) -> list[str]:
    """One line per step ``k``: the completion before step ``k`` with ``_`` for masked positions."""
    lines = []
    for k in range(num_steps + 1):
        pieces = []
        for token, step in zip(completion_ids.tolist(), unmask_step.tolist()):
            pieces.append("_" if step >= k else model.tokenizer.decode([token], skip_special_tokens=False))
        lines.append(f"  {k:>3} | {''.join(pieces)!r}")
    return lines


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline YAML file (its model and sampler sections are used)")
    p.add_argument("--prompt", action="append", required=True, help="prompt text; repeat for several prompts")
    p.add_argument("--n", type=int, default=1, help="completions per prompt (default 1)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: train.seed of the config)")
    p.add_argument("--steps", action="store_true", help="print the state before every step of the first completion")


@command("sample", "decode prompts with the config's model and sampler and print the completions", _args)
def _sample(args: argparse.Namespace, extra: list[str]) -> int:
    from ..registry import get_registry

    if args.n < 1:
        raise RemaskError(f"--n must be at least 1 (got {args.n})")
    registry = get_registry()
    registry.raise_problems()  # the rule of every command that runs a model: no broken plugins
    cfg = load_cli_config(args.config, extra)
    model = cfg.model.build(registry, "model")
    sampler = cfg.sampler.build(registry, "sampler")
    batch = prompt_batch(model, args.prompt, args.n)
    seed = cfg.train.seed if args.seed is None else args.seed
    device = model.device
    generator = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    rollout = sampler.sample(model, batch, generator)
    wall = time.perf_counter() - start
    for i, text in enumerate(rollout.texts):
        prompt_i, sample_j = divmod(i, args.n)
        print(f"[{prompt_i}.{sample_j}] {args.prompt[prompt_i]!r} -> {text!r}")
    if args.steps:
        print(f"states of [0.0] ({rollout.num_steps} steps, '_' = masked):")
        for line in render_states(model, rollout.completion_ids[0], rollout.unmask_step[0], rollout.num_steps):
            print(line)
    print(
        f"model {cfg.model.name}, sampler {cfg.sampler.name}: {rollout.batch_size} completions of "
        f"{rollout.gen_length} tokens, {rollout.num_steps} steps, {rollout.nfe} forward passes, {wall:.2f}s"
    )
    return 0
