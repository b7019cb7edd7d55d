"""Pure loss functions of GRPO and d1 / diffu-GRPO (no trainer state in here).

Notation (spec algorithms.md §3.1–3.2): for row ``j`` of a micro-batch and completion position ``k``

    ρ_{j,k} = exp( ℓ_θ(o_{j,k}) − ℓ_old(o_{j,k}) )                       importance ratio
    L_{j,k} = −min( ρ A_j , clip(ρ, 1−ε_low, 1+ε_high) A_j ) + β KL_{j,k}   per-token loss
    KL_{j,k} = exp(ℓ_ref − ℓ_θ) − (ℓ_ref − ℓ_θ) − 1                        k3 estimator

and the per-token losses are reduced over the completion mask ``m`` either as one mean over every
token of the micro-batch (``per_token``: d1, TRL ≥ 0.16) or as a mean per sequence followed by a
mean over sequences (``per_sequence``: the DeepSeekMath equation, older TRL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from remask.functional import clipped_surrogate, k3_kl, masked_mean

__all__ = [
    "Normalisation",
    "PolicyLossTerms",
    "importance_ratio",
    "reduce_token_loss",
    "clip_fractions",
    "policy_gradient_loss",
    "inner_iteration_index",
]

Normalisation = Literal["per_token", "per_sequence"]


def importance_ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """ρ = exp(ℓ_θ − ℓ_old) per token (PPO eq. 6). Shapes broadcast; ``[B, L]`` in practice."""
    return torch.exp(logp - old_logp)


def reduce_token_loss(per_token: Tensor, mask: Tensor, normalisation: Normalisation) -> Tensor:
    """Reduce ``per_token [B, L]`` over ``mask [B, L]`` to a scalar.

    * ``per_token``: Σ_{j,k} L_{j,k} m_{j,k} / Σ_{j,k} m_{j,k} (one mean over all tokens; d1's
      ``compute_loss``, TRL ≥ 0.16);
    * ``per_sequence``: (1/B) Σ_j [ Σ_k L_{j,k} m_{j,k} / |o_j| ] (DeepSeekMath eq. 3, ``1/|o|``
      inside the group mean). A row with an empty mask contributes 0.
    """
    if normalisation == "per_token":
        return masked_mean(per_token, mask)
    if normalisation == "per_sequence":
        return masked_mean(per_token, mask, dim=-1).mean()
    raise ValueError(f"unknown normalisation {normalisation!r}; use 'per_token' or 'per_sequence'")


def clip_fractions(
    ratio: Tensor,  # [B, L]
    advantages: Tensor,  # [B, 1] or [B, L]
    mask: Tensor,  # [B, L]
    eps_low: float,
    eps_high: float,
) -> dict[str, Tensor]:
    """Fractions of completion tokens whose gradient the clip removed, with TRL's names.

    ``low``: ρ < 1−ε_low and A < 0; ``high``: ρ > 1+ε_high and A > 0; ``region``: either.
    Each is a masked mean over the tokens of the micro-batch (a 0-dim tensor).
    """
    low = (ratio < 1.0 - eps_low) & (advantages < 0)  # [B, L]
    high = (ratio > 1.0 + eps_high) & (advantages > 0)  # [B, L]
    return {
        "clip_ratio/low_mean": masked_mean(low.float(), mask),
        "clip_ratio/high_mean": masked_mean(high.float(), mask),
        "clip_ratio/region_mean": masked_mean((low | high).float(), mask),
    }


@dataclass(frozen=True)
class PolicyLossTerms:
    """Everything :func:`policy_gradient_loss` computed, for the loss and its metrics."""

    loss: Tensor  # [] scalar to minimise
    per_token_loss: Tensor  # [B, L] L_{j,k} before masking
    ratio: Tensor  # [B, L] ρ_{j,k}
    kl: Tensor | None  # [B, L] k3 KL_{j,k}, None without a reference
    clip: dict[str, Tensor]  # TRL clip_ratio/* fractions (0-dim)


def policy_gradient_loss(
    logp: Tensor,  # [B, L] ℓ_θ, with grad
    old_logp: Tensor,  # [B, L] ℓ_old (no grad)
    advantages: Tensor,  # [B] A_j
    mask: Tensor,  # [B, L] bool completion mask m_{j,k}
    *,
    ref_logp: Tensor | None = None,  # [B, L] ℓ_ref (no grad), needed when β ≠ 0
    eps_low: float = 0.2,
    eps_high: float | None = None,
    beta: float = 0.0,
    normalisation: Normalisation = "per_token",
) -> PolicyLossTerms:
    """Clipped-surrogate GRPO loss with a k3 KL penalty (DeepSeekMath eq. 3; d1 eq. 3 / §3.2).

    ``L_{j,k} = −min(ρ A_j, clip(ρ, 1−ε_low, 1+ε_high) A_j) + β [exp(ℓ_ref−ℓ_θ) − (ℓ_ref−ℓ_θ) − 1]``,
    reduced over ``mask`` by :func:`reduce_token_loss`. ``eps_high=None`` clips symmetrically
    (ε_high = ε_low); a larger ε_high is DAPO's "clip-higher". With ``β = 0`` the reference is not
    read; with ``β ≠ 0`` it is required.
    """
    if advantages.dim() != 1:
        raise ValueError(f"advantages must be [B] (one per row), got shape {tuple(advantages.shape)}")
    eh = eps_low if eps_high is None else eps_high
    adv = advantages.to(logp.dtype).unsqueeze(-1)  # [B, 1]
    ratio = importance_ratio(logp, old_logp)  # [B, L]
    per_token, _ = clipped_surrogate(ratio, adv, eps_low, eh)  # [B, L]
    kl = None
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp)  # [B, L]
    if beta != 0.0:
        if kl is None:
            raise ValueError("beta != 0 needs ref_logp (the reference policy's log-probs)")
        per_token = per_token + beta * kl
    loss = reduce_token_loss(per_token, mask, normalisation)
    with torch.no_grad():
        clip = clip_fractions(ratio.detach(), adv, mask, eps_low, eh)
    return PolicyLossTerms(loss=loss, per_token_loss=per_token, ratio=ratio, kl=kl, clip=clip)


def inner_iteration_index(step: int, inner_steps: int) -> int:
    """Which of the μ seeded masks (and old log-probs) a loss call uses: ``m = step mod μ``.

    With ``step`` the engine's inner step (0..μ−1) this is the identity. d1's trainer passes its
    ``_step`` counter (micro-batches seen, incremented before the loss), spec §9.1 case 8:
    ``inner_iteration_index(4, 3) == 1``.
    """
    if inner_steps < 1:
        raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
    return step % inner_steps
