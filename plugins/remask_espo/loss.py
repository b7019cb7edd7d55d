"""ESPO's sequence-level loss as pure functions (arXiv 2512.03759 §3, as the reference code implements it; spec algorithms.md §3.8).

ESPO treats a whole completion as one action and uses the ELBO ``E_θ(o)`` (a Monte-Carlo estimate of
``log p_θ(o|q)``, :func:`remask.likelihood.fixed_count_views`) as its log-likelihood::

    ρ_j  = exp( (E_θ(o_j) − E_old(o_j)) / L )                   per-token normalised ratio
    L_j  = −min( ρ_j A_j , clip(ρ_j, 1−ε_low, 1+ε_high) A_j )
    KL_j = (E_θ(o_j) − E_ref(o_j))² / 2                         k2 (Schulman), ESPO's default
    loss = (1/B) Σ_j L_j + β · (1/(B·L)) Σ_j KL_j

``L`` is the completion length the ELBO is summed over (the generation length in the reference
code, which scores every position, EOS padding included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from remask.functional import clipped_surrogate, k3_kl

__all__ = ["ESPOLossTerms", "sequence_elbo", "k2_kl", "espo_loss"]


def sequence_elbo(view_logps: Tensor, weights: Tensor) -> Tensor:
    """``E(o) = Σ_k (1/N) Σ_n w^{(n)}_k log p(o_k | x^{(n)})`` (ESPO's ``_get_elbo`` with ``reduce_var``). ``[N, B, L] -> [B]``."""
    return (view_logps * weights).mean(0).sum(-1)


def k2_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Schulman's k2 estimator ``(ℓ_θ − ℓ_ref)² / 2`` (non-negative, unbiased only to second order)."""
    return (logp - ref_logp).pow(2) / 2.0


@dataclass(frozen=True)
class ESPOLossTerms:
    loss: Tensor  # [] to minimise
    ratio: Tensor  # [B] ρ_j
    kl: Tensor | None  # [B] per-row KL estimate (before β and 1/L)


def espo_loss(
    elbo: Tensor,  # [B] E_θ, with grad
    old_elbo: Tensor,  # [B] E_old (no grad)
    advantages: Tensor,  # [B]
    length: int | Tensor,  # L (int) or [B] per-row lengths
    *,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    ref_elbo: Tensor | None = None,  # [B] E_ref, needed when β ≠ 0
    beta: float = 0.0,
    kl_estimator: Literal["k2", "k3"] = "k2",
) -> ESPOLossTerms:
    """ESPO's clipped sequence-level surrogate with the k2 (or k3) KL on sequence ELBOs (module docstring).

    Spec §9.8: ``E_θ − E_old = 2`` on ``L = 256`` gives ``ρ = exp(2/256) = 1.007843``.
    """
    length_t = torch.as_tensor(length, dtype=elbo.dtype, device=elbo.device)
    ratio = torch.exp((elbo - old_elbo) / length_t)  # [B]
    per_row, _ = clipped_surrogate(ratio, advantages.to(elbo.dtype), eps_low, eps_high)  # [B]
    b = elbo.shape[0]
    loss = per_row.sum() / b
    kl = None
    if ref_elbo is not None:
        kl = k2_kl(elbo, ref_elbo) if kl_estimator == "k2" else k3_kl(elbo, ref_elbo)  # [B]
    if beta != 0.0:
        if kl is None:
            raise ValueError("beta != 0 needs ref_elbo (the reference policy's ELBO)")
        loss = loss + beta * (kl / length_t).sum() / b
    return ESPOLossTerms(loss=loss, ratio=ratio, kl=kl)
