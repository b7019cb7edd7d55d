"""SPG's ``block_random`` forward process: which completion tokens each of ``num_t`` views masks.

Reference: ``facebookresearch/SPG`` @ ``a1c7120``, ``SPGTrainer.forward_process`` with
``forward_type=block_random`` (spec algorithms.md §3.7). For row ``i`` with completion length
``|o_i|`` (through the first EOS) in blocks of ``B_l`` positions, each view ``j``:

1. picks a block ``b``: a uniformly random permutation of the ``N_B = L / B_l`` blocks, taken
   modulo the ``⌈|o_i| / B_l⌉`` blocks that hold completion tokens, first ``num_t`` entries;
2. masks every position of the blocks after ``b`` and, inside block ``b``, ``n ~ U{max(⌊m·t_min⌋, 1)
   .. min(⌊m·t_max⌋, m)}`` uniformly chosen of its ``m = min(B_l, |o_i| − b·B_l)`` completion
   tokens (a block-diffusion state: clean past, partly masked present, masked future);
3. masks every position after the EOS;
4. masks each still-clean token of the context (real prompt tokens and the clean earlier blocks)
   independently w.p. ``p_mask_prompt`` (the reference's "prompt" masking also reaches the clean
   completion blocks).

The scored set of a view is its masked positions inside the completion (through EOS); the view's
token weight is 1 there and 0 elsewhere. Every draw comes from a local generator seeded with the
view set's seed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from remask.likelihood import NoisyViews, prompt_mask

__all__ = ["block_random_masks", "block_random_views"]


def block_random_masks(
    completion_mask: Tensor,  # [B, L] bool, through the first EOS
    block_length: int,
    num_t: int,
    generator: torch.Generator,
    *,
    min_t: float = 0.0,
    max_t: float = 1.0,
) -> Tensor:
    """Steps 1–3 above: the masked completion positions of each view. # [N=num_t, B, L] bool"""
    cm = completion_mask.cpu().bool()
    b, l = cm.shape
    if l % block_length:
        raise ValueError(f"SPG block_random needs gen_length ({l}) to be a multiple of block_length ({block_length})")
    n_blocks = l // block_length
    if num_t > n_blocks:
        raise ValueError(f"SPG block_random needs num_t ({num_t}) <= the number of blocks ({n_blocks})")
    lengths = cm.sum(-1).clamp_min(1)  # [B] |o_i|
    out = torch.zeros(num_t, b, l, dtype=torch.bool)
    for i in range(b):
        used_blocks = int((lengths[i] - 1) // block_length + 1)
        picks = torch.randperm(n_blocks, generator=generator) % used_blocks  # [N_B]
        for j in range(num_t):
            blk = int(picks[j])
            lo = blk * block_length
            m = min(block_length, int(lengths[i]) - lo)
            first = max(int(m * min_t), 1)
            last = min(int(m * max_t), m)
            n = int(torch.randint(first, last + 1, (1,), generator=generator))
            order = torch.randperm(m, generator=generator)  # [m]
            out[j, i, lo + block_length:] = True
            out[j, i, lo + m: lo + block_length] = True
            out[j, i, lo + order[:n]] = True
    return out | ~cm.unsqueeze(0)


def block_random_views(
    prompt_ids: Tensor,  # [B, P] long
    prompt_attention: Tensor,  # [B, P] bool
    completion_ids: Tensor,  # [B, L] long
    completion_mask: Tensor,  # [B, L] bool
    mask_token_id: int,
    *,
    block_length: int,
    num_t: int,
    seed: int,
    min_t: float = 0.0,
    max_t: float = 1.0,
    p_mask_prompt: float = 0.15,
) -> NoisyViews:
    """``num_t`` SPG views of ``[q ; o]`` (steps 1–4). ``token_weights`` = 1 on the scored positions."""
    g = torch.Generator().manual_seed(int(seed))
    masked = block_random_masks(completion_mask, block_length, num_t, g, min_t=min_t, max_t=max_t)  # [N, B, L]
    b, p = prompt_ids.shape
    views, weights = [], []
    for j in range(num_t):
        context_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
        q_masked = prompt_mask(prompt_attention, p_mask_prompt, context_seed)  # [B, P]
        clean = ~masked[j]  # [B, L]
        c_masked = clean & (torch.rand(clean.shape, generator=g) < p_mask_prompt)  # [B, L]
        m = masked[j] | c_masked  # [B, L]
        q = torch.where(q_masked, torch.full_like(prompt_ids.cpu(), mask_token_id), prompt_ids.cpu())
        o = torch.where(m, torch.full_like(completion_ids.cpu(), mask_token_id), completion_ids.cpu())
        views.append(torch.cat([q, o], dim=1))  # [B, P+L]
        weights.append((m & completion_mask.cpu().bool()).float())  # [B, L]
    return NoisyViews(input_ids=torch.stack(views), token_weights=torch.stack(weights), seed=int(seed))
