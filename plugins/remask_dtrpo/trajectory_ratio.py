"""dTRPO's trajectory log-ratio estimator (spec algorithms.md §3.4, reconstructed [DERIVED]).

The block-causal trajectory pieces live in :mod:`remask.likelihood` (public, shared with other
objectives) and are re-exported here; this module adds what only dTRPO's offline mode needs: the
sampler's transfer schedule and schedule-matched trajectories for data without recorded steps.

For a completion ``y`` decoded block by block (``N_B`` blocks, block ``b`` taking the steps
``S_b``, ``T_B = |S_b|``) with selection probabilities that cancel between θ and ref (§3.4 (1)):

    log π_θ(τ)/π_ref(τ) = Σ_b Σ_{t ∈ S_b} Δ_{b,t},
    Δ_{b,t} = Σ_{i ∈ I_{b,t}} [ log μ_θ(y_i | τ_{b,t}) − log μ_ref(y_i | τ_{b,t}) ]

and one uniformly drawn step per block gives the unbiased estimate (§3.4 (2))

    R̂(τ) = Σ_b T_B · Δ_{b, t_b},    t_b ~ U(S_b) independently per block.

Steps are the sampler's own indices ``k`` (0..T−1, ``remask.trajectory``): the paper's
``τ_{b,t}`` is the state before step ``k`` and ``I_{b,t}`` the positions committed at ``k``.

How the model reads the state ``τ_{b,t_b}`` is an open choice, ``attention``:

* ``block-causal``: the block-diffusion view. Every query attends to the prompt and to the blocks up
  to and including its own; block ``b`` is conditioned on the prompt, the **clean** blocks ``< b``
  and itself re-masked, and sees nothing of later blocks (neither tokens nor masks). All ``N_B``
  conditionals come out of **one** forward of ``[prompt, clean y, re-masked y]`` with a staircase
  mask (:func:`staircase_attention_mask`); :func:`newly_unmasked_logps_per_block` computes the same
  numbers with ``N_B`` forwards of the truncated states ``[prompt, clean y_{<b}, re-masked y_b]``.
  Both need an adapter that accepts a 4-D mask.
* ``full``: the exact state the semi-autoregressive sampler conditioned on, ``x^{(t_b)}`` (prompt,
  clean earlier blocks, the partly masked block, the fully masked future), with the model's usual
  bidirectional attention and 2-D padding mask. One forward per block; no single-pass form exists,
  because every block would need its own copy of the masked future.
"""

from __future__ import annotations

import torch
from torch import Tensor

from remask.likelihood import (  # re-exported: dTRPO's estimator is composed of these
    block_index,
    block_step_candidates,
    block_sums,
    draw_block_steps,
    exact_trajectory_log_ratio,
    newly_unmasked_logps_full_state,
    newly_unmasked_logps_per_block,
    newly_unmasked_logps_single_pass,
    prompt_position_ids,
    remasked_completion,
    shifts_logits,
    staircase_attention_mask,
    trajectory_log_ratio,
    uniform,
)

__all__ = [
    "uniform",
    "block_index",
    "block_step_candidates",
    "draw_block_steps",
    "remasked_completion",
    "staircase_attention_mask",
    "prompt_position_ids",
    "shifts_logits",
    "newly_unmasked_logps_single_pass",
    "newly_unmasked_logps_per_block",
    "newly_unmasked_logps_full_state",
    "block_sums",
    "trajectory_log_ratio",
    "transfer_schedule",
    "schedule_matched_unmask_step",
    "exact_trajectory_log_ratio",
]


def transfer_schedule(n: int, steps: int) -> list[int]:
    """Tokens committed at each of ``steps`` steps for ``n`` masked positions (LLaDA, spec §2.1).

    ``k_s = ⌊n / S⌋ + 1[s < n mod S]``: the remainder goes to the earliest steps, e.g.
    ``n = 32, S = 5 -> [7, 7, 6, 6, 6]``.
    """
    base, extra = divmod(n, steps)
    return [base + (1 if s < extra else 0) for s in range(steps)]


def schedule_matched_unmask_step(
    shape: tuple[int, int], block_length: int, steps_per_block: int, generator: torch.Generator
) -> Tensor:
    """A random-order trajectory with the sampler's schedule, for data without recorded steps.

    Spec §3.4 (3): in every block, a uniformly random order of its positions is cut by
    :func:`transfer_schedule` into ``steps_per_block`` steps, numbered ``b · steps_per_block + s``.
    The state before a uniformly drawn step is then a uniformly random subset of the block masked
    with the schedule's size, and ``I`` a random subset of it of size ``k_s``: the MDM forward
    process. This matches the recorded trajectory's law only for random-order samplers. # [B, L] long
    """
    bsz, l = shape
    out = torch.empty((bsz, l), dtype=torch.long)
    n_blocks = (l + block_length - 1) // block_length
    for b in range(n_blocks):
        lo, hi = b * block_length, min((b + 1) * block_length, l)
        n = hi - lo
        sched = transfer_schedule(n, steps_per_block)
        step_of_rank = torch.repeat_interleave(torch.arange(steps_per_block), torch.tensor(sched))  # [n]
        order = uniform((bsz, n), generator).argsort(dim=-1)  # [B, n] rank -> position
        block = torch.empty((bsz, n), dtype=torch.long)
        block.scatter_(1, order, step_of_rank.unsqueeze(0).expand(bsz, -1))
        out[:, lo:hi] = b * steps_per_block + block
    return out
