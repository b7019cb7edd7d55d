"""Coupled-GRPO's loss as a pure function (DiffuCoder arXiv 2506.20639; apple/ml-diffucoder @
f735e01 ``DiffuGRPOTrainer.compute_loss``; spec zoo-coupled-vrpo.md §1.4).

For the rows ``j`` of a micro-batch and completion positions ``k`` (``c_{j,k}`` = completion mask
through the first EOS), with ``ℓ̃`` the coupled per-token estimate of :func:`remask.likelihood.coupled_weights`::

    ρ_{j,k}  = exp( ℓ̃_θ(o_{j,k}) − ℓ̃_old(o_{j,k}) )                   (ℓ̃_old = stop_grad ℓ̃_θ when μ = 1)
    pg_{j,k} = −min( ρ A_j , clip(ρ, 1 − ε_low, 1 + ε_high) A_j )
    kl_{j,k} = exp(ℓ̃_ref − ℓ̃_θ) − (ℓ̃_ref − ℓ̃_θ) − 1                  (k3 on the coupled estimates)
    L        = Σ_{j,k} c_{j,k} (pg_{j,k} + β kl_{j,k}) / max(1, Σ_{j,k} c_{j,k})     (one token mean)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from remask.functional import clipped_surrogate, k3_kl, masked_mean

__all__ = ["CoupledLossTerms", "coupled_grpo_loss"]


@dataclass(frozen=True)
class CoupledLossTerms:
    loss: Tensor  # [] the token-mean loss
    kl: Tensor | None  # [B, L] k3 per token (None when β = 0)
    ratio: Tensor  # [B, L] ρ
    low_clipped: Tensor  # [B, L] bool, ρ < 1 − ε_low with A < 0 (the clipped branch is active)
    high_clipped: Tensor  # [B, L] bool, ρ > 1 + ε_high with A > 0


def coupled_grpo_loss(
    logp: Tensor,  # [B, L] ℓ̃_θ, with grad
    old_logp: Tensor,  # [B, L] ℓ̃_old (or logp.detach())
    advantages: Tensor,  # [B] A_j
    completion_mask: Tensor,  # [B, L] bool
    *,
    ref_logp: Tensor | None,  # [B, L] ℓ̃_ref, None when β = 0
    eps_low: float,
    eps_high: float | None,
    beta: float,
) -> CoupledLossTerms:
    """The token-mean clipped surrogate + β·k3 of Coupled-GRPO, in float32.

    Spec case C2: ``A = [2.25, −0.75, −1.5]`` with the ℓ̃ of §3.1 gives ``−0.408163``.
    """
    logp, old_logp = logp.float(), old_logp.float()
    adv = advantages.float().unsqueeze(-1)  # [B, 1]
    ratio = torch.exp(logp - old_logp)  # [B, L]
    per_token, _ = clipped_surrogate(ratio, adv, eps_low, eps_high)  # [B, L]
    kl = None
    if beta != 0.0:
        if ref_logp is None:
            raise ValueError("beta != 0 needs the reference's coupled log-probs")
        kl = k3_kl(logp, ref_logp.float())  # [B, L]
        per_token = per_token + beta * kl
    mask = completion_mask.bool()
    eh = eps_low if eps_high is None else eps_high
    with torch.no_grad():
        low = (ratio < 1 - eps_low) & (adv < 0) & mask
        high = (ratio > 1 + eh) & (adv > 0) & mask
    return CoupledLossTerms(loss=masked_mean(per_token, mask), kl=kl, ratio=ratio.detach(), low_clipped=low,
                            high_clipped=high)
