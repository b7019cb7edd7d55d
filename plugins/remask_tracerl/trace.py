"""Trace steps of a recorded rollout and TraceRL's shrinkage, as pure functions (arXiv 2509.06949;
Gen-Verse/dLLM-RL @ 10b4fd1 ``train/rl_llada.py`` ``collapse_k_unique``; spec zoo-mdpo-tracerl.md §2.5).

With ``D_j`` the sorted distinct sampler steps of completion ``j`` (``unmask_step``), shrinkage ``σ``
cuts ``D_j`` into consecutive chunks of ``σ`` values; chunk ``g`` is trained from the state before
its first step ``d_{gσ+1}`` (every position with ``s(i) ≥ d_{gσ+1}`` masked, the prompt clean) on
the positions it committed. Chunks run over the whole completion (full attention), so they may
cross block boundaries.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["chunk_starts", "chunk_of_position"]


def chunk_starts(unmask_step: Tensor, shrink: int) -> tuple[Tensor, Tensor]:
    """First step of every chunk of ``shrink`` distinct steps, in time order, per row.

    ``unmask_step [B, L]`` -> ``(starts [B, K] long, valid [B, K] bool)`` with ``K = max_j ⌈|D_j|/σ⌉``;
    padding repeats the row's last start and is invalid. Spec T1: ``[0, 0, 1, 2, 3, 3]``, σ = 2 -> ``[0, 2]``.
    """
    if shrink < 1:
        raise ValueError(f"shrink must be >= 1, got {shrink}")
    rows = [torch.unique(r[r >= 0])[::shrink] for r in unmask_step.cpu()]  # sorted distinct steps, every σ-th
    k = max((len(r) for r in rows), default=1) or 1
    starts = torch.zeros(len(rows), k, dtype=torch.long)
    valid = torch.zeros(len(rows), k, dtype=torch.bool)
    for b, r in enumerate(rows):
        if len(r):
            starts[b, : len(r)] = r
            starts[b, len(r):] = r[-1]
            valid[b, : len(r)] = True
    return starts.to(unmask_step.device), valid.to(unmask_step.device)


def chunk_of_position(unmask_step: Tensor, starts: Tensor, valid: Tensor) -> Tensor:
    """Index ``g`` of the chunk that committed each position: the last valid start ``<= s(i)``. # [B, L] long

    Positions before the first start (or with ``s(i) < 0``) get −1.
    """
    s = unmask_step.unsqueeze(-1)  # [B, L, 1]
    st = starts.to(unmask_step.device).unsqueeze(1)  # [B, 1, K]
    ok = (st <= s) & valid.to(unmask_step.device).unsqueeze(1)  # [B, L, K]
    return ok.long().sum(-1) - 1  # starts are increasing, so the count of starts <= s(i) is g + 1
