"""Recompute a rollout's per-step log-probs and entropies from its rebuilt states, under the KV-cache
policy the sampler used.

With ``cache: none`` a sampler's recorded ``step_logps`` are what any objective recomputes with one
full pass on the rebuilt state ``x_k`` (spec algorithms.md §2.4). A cached sampler's later steps in a
block see stale keys/values, so its recorded values are the log-probs of the *cached* policy (the
behaviour policy that actually produced the tokens). :func:`replay_step_stats` rebuilds every state
from ``unmask_step`` and replays the same cache schedule — a full pass on the state before a block's
first step builds the cache, the block's later steps go through it — so an objective that wants the
behaviour log-probs of a cached rollout can get them without the sampler's internals.
"""

from __future__ import annotations

import torch
from torch import Tensor

from remask import DiffusionModel, Rollout, block_step_table, state_before_step

from .block_cache import BlockForward, CachePolicy

__all__ = ["replay_step_stats"]


def replay_step_stats(model: DiffusionModel, rollout: Rollout, cache: CachePolicy) -> tuple[Tensor, Tensor]:
    """``(step_logps [B, T], step_entropy [B, T])`` recomputed under ``cache`` (T=1, as recorded).

    Each row is replayed on its own (its own left padding kept), block by block, so rows of a
    threshold sampler that spent different numbers of steps per block replay correctly. Positions
    committed at step ``k`` all lie in one block (every built-in block sampler guarantees it).
    """
    b, length = rollout.completion_ids.shape
    p, mask_id = rollout.prompts.prompt_length, model.mask_token_id
    logps = torch.zeros(b, rollout.num_steps, dtype=torch.float32)
    entropy = torch.zeros(b, rollout.num_steps, dtype=torch.float32)
    table = block_step_table(rollout.unmask_step.cpu(), rollout.block_length)
    device = model.device
    with torch.no_grad():
        for row in range(b):
            prompt = rollout.prompts.prompt_ids[row:row + 1].to(device)  # [1, P]
            attn = torch.cat([rollout.prompts.attention_mask[row:row + 1].to(device).bool(),
                              torch.ones(1, length, dtype=torch.bool, device=device)], dim=1)  # [1, P+L]
            completion = rollout.completion_ids[row:row + 1].to(device)  # [1, L]
            unmask = rollout.unmask_step[row:row + 1].to(device)  # [1, L]
            passes = BlockForward(model, attn, cache)
            for j, steps in enumerate(table[row]):
                lo, hi = p + j * rollout.block_length, p + min((j + 1) * rollout.block_length, length)
                passes.start_block(lo, hi)
                for k in steps:
                    x_k, committed = state_before_step(completion, unmask, k, mask_id)  # [1, L] x2
                    tail = passes(torch.cat([prompt, x_k], dim=1))
                    logits = tail[:, : hi - lo].float()  # [1, Bl, V]
                    lp = torch.log_softmax(logits, dim=-1)  # [1, Bl, V]
                    here = committed[:, lo - p:hi - p]  # [1, Bl]
                    tok = completion[:, lo - p:hi - p]
                    tok_lp = lp.gather(-1, tok.unsqueeze(-1)).squeeze(-1)  # [1, Bl]
                    ent = -(lp.exp() * lp).sum(-1)  # [1, Bl]
                    logps[row, k] = float((tok_lp * here).sum())
                    entropy[row, k] = float((ent * here).sum() / here.sum().clamp_min(1))
    return logps, entropy
