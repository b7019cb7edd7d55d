"""Rebuilding intermediate sampler states from ``unmask_step``.

A confidence-based sampler never re-masks, so every completion position is committed exactly once.
With ``s(i) = unmask_step[i]`` the state *before* step ``k`` is (spec algorithms.md §2.4)

    x^(k)_i = o_i  if s(i) < k  else  M,        I_k = { i : s(i) = k }

``x^(0)`` is all masked and ``x^(T) = o``. These functions are the only place this rule lives.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["state_before_step", "newly_unmasked", "states_before_steps", "block_step_table"]


def state_before_step(
    completion_ids: Tensor,  # [B, L] long
    unmask_step: Tensor,  # [B, L] long
    step: int | Tensor,  # int, or [B] long (one step per row)
    mask_token_id: int,
) -> tuple[Tensor, Tensor]:
    """Return ``(x_k, I_k)``: the state before step ``k`` and the positions committed at ``k``.

    ``x_k`` is ``[B, L]`` long with ``mask_token_id`` wherever ``unmask_step >= k``; ``I_k`` is a
    ``[B, L]`` bool mask of ``unmask_step == k``.
    """
    if isinstance(step, Tensor) and step.dim() == 1:
        k = step.to(unmask_step.device).view(-1, 1)  # [B, 1]
    else:
        k = torch.as_tensor(step, device=unmask_step.device)
    masked = unmask_step >= k  # [B, L]
    x_k = torch.where(masked, torch.full_like(completion_ids, mask_token_id), completion_ids)
    return x_k, unmask_step == k


def newly_unmasked(unmask_step: Tensor, step: int | Tensor) -> Tensor:
    """``I_k`` as a ``[B, L]`` bool mask (``step`` is an int or ``[B]``)."""
    if isinstance(step, Tensor) and step.dim() == 1:
        return unmask_step == step.to(unmask_step.device).view(-1, 1)
    return unmask_step == step


def states_before_steps(
    completion_ids: Tensor,  # [B, L]
    unmask_step: Tensor,  # [B, L]
    steps: Tensor,  # [B, K] long
    mask_token_id: int,
) -> tuple[Tensor, Tensor]:
    """Vectorised :func:`state_before_step` for K steps per row: ``([B, K, L], [B, K, L])``."""
    s = unmask_step.unsqueeze(1)  # [B, 1, L]
    k = steps.to(unmask_step.device).unsqueeze(-1)  # [B, K, 1]
    ids = completion_ids.unsqueeze(1).expand(-1, steps.shape[1], -1)  # [B, K, L]
    x = torch.where(s >= k, torch.full_like(ids, mask_token_id), ids)
    return x, s == k


def block_step_table(unmask_step: Tensor, block_length: int) -> list[list[list[int]]]:
    """For every row and block, the sorted distinct steps at which that block committed tokens.

    Semi-autoregressive samplers give each block a contiguous run of steps; threshold samplers
    (Fast-dLLM) give blocks different numbers of steps. ``T_B`` of a block is the length of its list.
    """
    b, l = unmask_step.shape
    n_blocks = (l + block_length - 1) // block_length
    table: list[list[list[int]]] = []
    for row in unmask_step.tolist():
        table.append(
            [sorted(set(row[j * block_length : (j + 1) * block_length])) for j in range(n_blocks)]
        )
    return table
