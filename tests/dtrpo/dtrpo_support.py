"""Helpers of the dTRPO tests: the small tiny model and hand-built rollouts with recorded
semi-autoregressive / threshold trajectories."""

from __future__ import annotations

import pytest
import torch

import remask
from remask import PromptBatch, Rollout

SMALL = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


def tiny(seed: int = 0):
    """The registered ``tiny`` model adapter (random weights, small), built through the registry."""
    from remask.registry import get_registry

    try:
        cls = get_registry().get("model", "tiny")
    except remask.UnknownComponentError:  # pragma: no cover - plugin missing
        pytest.skip("model adapter `tiny` is not registered")
    return cls(cls.Config(**SMALL, seed=seed))


def prompts_for(model, texts=("1+2=", "33+44="), group_size=2) -> PromptBatch:
    """Left-padded prompt batch (G adjacent rows per prompt) tokenised with ``model.tokenizer``."""
    tok = model.tokenizer
    rows = [t for t in texts for _ in range(group_size)]
    enc = [tok(t, add_special_tokens=False).input_ids for t in rows]
    p = max(len(x) for x in enc)
    ids = torch.full((len(rows), p), model.pad_token_id, dtype=torch.long)
    attn = torch.zeros((len(rows), p), dtype=torch.bool)
    for i, x in enumerate(enc):
        ids[i, p - len(x):] = torch.tensor(x)
        attn[i, p - len(x):] = True
    groups = torch.arange(len(texts)).repeat_interleave(group_size)
    return PromptBatch(ids, attn, groups, tuple(rows), tuple({"answer": ""} for _ in rows))


def semi_ar_unmask_step(rows: int, gen_length: int, block_length: int, steps_per_block: int, seed: int) -> torch.Tensor:
    """A recorded semi-AR trajectory: blocks in order, a random commit order inside each block,
    ``ceil``-style uneven counts per step (every step commits at least one token). # [B, L]"""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(rows, gen_length, dtype=torch.long)
    for b in range(0, gen_length, block_length):
        n = min(block_length, gen_length - b)
        for r in range(rows):
            order = torch.randperm(n, generator=g)
            step_of_rank = (torch.arange(n) * steps_per_block) // n  # [n], non-decreasing, all steps used
            out[r, b + order] = b // block_length * steps_per_block + step_of_rank
    return out


def make_rollout(model, unmask_step: torch.Tensor, block_length: int, *, group_size: int = 2, seed: int = 0,
                 texts=("1+2=", "33+44=")) -> Rollout:
    rows, gen_length = unmask_step.shape
    prompts = prompts_for(model, texts[: rows // group_size], group_size)
    ids = torch.randint(4, 100, (rows, gen_length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(rows, gen_length, dtype=torch.bool)
    return Rollout(prompts=prompts, completion_ids=ids, completion_mask=mask, unmask_step=unmask_step,
                   block_length=block_length, num_steps=int(unmask_step.max()) + 1,
                   texts=tuple("" for _ in range(rows)), nfe=0)
