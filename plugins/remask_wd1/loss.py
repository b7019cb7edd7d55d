"""wd1's weighted log-likelihood loss as a pure function (arXiv 2507.08838 §3, as the reference code implements it; spec algorithms.md §3.6).

For the rows ``j`` of one group (or of one micro-batch, as the reference code does) with advantages
``A_j = r_j − mean_group(r)`` and sequence log-likelihoods ``S_j = Σ_k m_{j,k} ℓ_θ(o_{j,k})`` (a sum
over the completion through EOS of d1's one-step estimate)::

    w⁺ = softmax(A),   w⁻ = softmax(−A)
    L  = −Σ_j w⁺_j S_j + Σ_j w⁻_j S_j

There is no ratio, no clipping, no old policy and no reference: raising the likelihood of the
better completions and lowering that of the worse ones is the whole objective. The weights carry
no gradient (they depend on rewards only).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["wd1_weights", "wd1_loss"]


def wd1_weights(advantages: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """``(w⁺, w⁻) = (softmax(A), softmax(−A))`` within each block of ``group_size`` adjacent rows. ``[B] -> [B], [B]``."""
    b = advantages.shape[0]
    if b % group_size:
        raise ValueError(f"{b} rows do not split into softmax groups of {group_size}")
    a = advantages.float().view(b // group_size, group_size)  # [n, G]
    return torch.softmax(a, dim=-1).reshape(b), torch.softmax(-a, dim=-1).reshape(b)


def wd1_loss(
    sequence_logps: Tensor,  # [B] S_j = Σ_k m_{j,k} ℓ_θ(o_{j,k}), with grad
    advantages: Tensor,  # [B] A_j
    group_size: int,  # rows per softmax (G, or the micro-batch size for the reference's behaviour)
    *,
    negative_term: bool = True,
) -> Tensor:
    """``mean over softmax groups of [−Σ_j w⁺_j S_j + Σ_j w⁻_j S_j]`` (the second term only with
    ``negative_term``). With one softmax group per micro-batch this is exactly the reference's loss.

    Spec §9.7: ``A = [1, −1], S = [−1, −2]`` -> ``w⁺ = [0.8808, 0.1192]`` and loss ``−0.761594``.
    """
    w_pos, w_neg = wd1_weights(advantages.detach(), group_size)  # [B], [B]
    s = sequence_logps.float()
    per_row = -w_pos * s  # [B]
    if negative_term:
        per_row = per_row + w_neg * s
    n_groups = sequence_logps.shape[0] // group_size
    return per_row.sum() / n_groups
