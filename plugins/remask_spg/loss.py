"""SPG's sandwiched sequence log-likelihood and loss as pure functions (arXiv 2510.09541 §3; spec §3.7).

SPG bounds ``log π_θ(o|q)`` from below (an ELBO-type mean) for completions with positive advantage
and from above (an EUBO, Rényi-type upper bound) for the others, so that both push the policy in
the safe direction. With ``N`` views, scored sets ``M_n`` (masked completion positions through EOS),
``ℓ`` the per-token log-probs and ``p = exp ℓ``::

    Ŝ⁺     = (1/N) Σ_n  (1/|M_n|) Σ_{k∈M_n} ℓ_k                         (lower bound, per-token mean)
    t̂_n    = |M_n| / |o|
    a_k    = (1/N) Σ_n  p_k^β · 1[k∈M_n] / t̂_n
    Ŝ_EUBO = (1/β) · mean_{k: a_k > 0} log a_k                          (upper bound)
    Ŝ⁻     = Ŝ_EUBO | w·Ŝ_EUBO + (1−w)·Ŝ⁺ (mix) | Ŝ⁺ (elbo) | 0 (zero)
    Ŝ_j    = Ŝ⁺_j if A_j > 0 else Ŝ⁻_j
    loss   = Σ_j (−A_j Ŝ_j) |o_j| / Σ_j |o_j|                           (length-weighted mean)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["NegativeBound", "lower_bound", "upper_bound", "spg_sequence_logps", "spg_loss"]

NegativeBound = Literal["eubo", "mix", "elbo", "zero"]


def lower_bound(logps: Tensor, scored: Tensor) -> Tensor:
    """``Ŝ⁺ = mean_n [Σ_{k∈M_n} ℓ_k / |M_n|]``. ``[N, B, L], [N, B, L] bool -> [B]``."""
    s = scored.to(logps.dtype)
    return ((logps * s).sum(-1) / s.sum(-1).clamp_min(1e-8)).mean(0)


def upper_bound(logps: Tensor, scored: Tensor, completion_mask: Tensor, beta: float) -> Tensor:
    """``Ŝ_EUBO = (1/β) mean_{k: a_k>0} log a_k`` with ``a_k = mean_n p_k^β 1[k∈M_n] / t̂_n``. ``-> [B]``."""
    s = scored.to(logps.dtype)  # [N, B, L]
    t_hat = s.sum(-1) / completion_mask.to(logps.dtype).sum(-1).clamp_min(1.0)  # [N, B]
    a = (torch.exp(beta * logps) * s / t_hat.clamp_min(1e-8).unsqueeze(-1)).mean(0)  # [B, L]
    keep = a > 0  # [B, L]
    log_a = torch.log(torch.where(keep, a, torch.ones_like(a)))  # log 1 = 0 where a = 0, no NaN gradient
    return (log_a * keep).sum(-1) / keep.to(a.dtype).sum(-1).clamp_min(1e-8) / beta


def spg_sequence_logps(
    logps: Tensor,  # [N, B, L] per-view log-probs of the completion tokens
    scored: Tensor,  # [N, B, L] bool, masked completion positions through EOS
    completion_mask: Tensor,  # [B, L] bool
    positive: Tensor,  # [B] bool, A_j > 0
    *,
    negative_bound: NegativeBound = "mix",
    eubo_beta: float = 1.5,
    mix_weight: float = 0.5,
) -> Tensor:
    """``Ŝ_j``: the lower bound for positive-advantage rows, the chosen upper bound otherwise. # [B]"""
    lower = lower_bound(logps, scored)  # [B]
    if negative_bound == "eubo":
        negative = upper_bound(logps, scored, completion_mask, eubo_beta)
    elif negative_bound == "mix":
        negative = mix_weight * upper_bound(logps, scored, completion_mask, eubo_beta) + (1 - mix_weight) * lower
    elif negative_bound == "elbo":
        negative = lower
    elif negative_bound == "zero":
        negative = torch.zeros_like(lower)
    else:
        raise ValueError(f"unknown negative_bound {negative_bound!r}; use eubo, mix, elbo or zero")
    return torch.where(positive.to(lower.device), lower, negative)


def spg_loss(sequence_logps: Tensor, advantages: Tensor, lengths: Tensor) -> Tensor:
    """``Σ_j (−A_j Ŝ_j)|o_j| / Σ_j |o_j|``. ``[B], [B], [B] -> []``."""
    w = lengths.to(sequence_logps.dtype)
    return (-advantages.to(sequence_logps.dtype) * sequence_logps * w).sum() / w.sum().clamp_min(1.0)
