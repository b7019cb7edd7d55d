"""MDPO's per-step loss as a pure function (autonomousvision/mdpo @ e6ae439, ``mdpo_trainer.py:1487-1545``;
spec zoo-mdpo-tracerl.md §1.5).

For a selected step ``t`` of completion ``j`` with state ``x_t``, masked positions ``m_i = 1[x_t^i = M]``,
``n_t = Σ_i m_i``, recorded confidences ``c_i`` and one-step-prediction targets ``x̂0_{t,i}``::

    ℓ(i)    = log softmax(f([q; x_t]) / (τ + ε_dt))_i [x̂0_{t,i}]
    λ_t     = L / (n_t + 1e-4)
    ρ_i     = exp(ℓ_θ(i) − ℓ_old(i))
    pg_i    = −min(ρ_i A_{j,t}, clip(ρ_i, 1−ε, 1+ε) A_{j,t}) · λ_t
    kl_i    = ½ (ℓ_ref(i) − ℓ_θ(i))²                                     (k2)
    loss_t  = Σ_i m_i c_i (pg_i + β kl_i) / (n_t + 1e-4)

and ``J = mean_j Σ_{t ∈ top-K(j)} loss_t(j)`` (the objective sums the K steps of a row).
"""

from __future__ import annotations

import torch
from torch import Tensor

from remask.functional import clipped_surrogate

__all__ = ["mdpo_step_loss"]


def mdpo_step_loss(
    logp: Tensor,  # [N, L] ℓ_θ of the targets x̂0_t, with grad
    old_logp: Tensor,  # [N, L] ℓ_old (= logp.detach() when μ = 1)
    ref_logp: Tensor | None,  # [N, L] ℓ_ref, or None when β = 0
    advantages: Tensor,  # [N] A_{j,t}
    weights: Tensor,  # [N, L] recorded confidence c_t (ones when confidence weighting is off)
    masked: Tensor,  # [N, L] bool, x_t^i = M over the completion
    *,
    gen_length: int,
    epsilon: float,
    beta: float,
    lambda_t: bool = True,
) -> tuple[Tensor, Tensor]:
    """Per-(row, step) losses ``loss_t [N]`` and the mean k2 over masked positions ``[N]``.

    Spec M2 (``L = 4``, ``n_t = 3``, β = 0.02, ρ ≡ 1): ``A = +0.7`` -> −0.653020, ``A = −0.7`` -> 0.653560.
    """
    m = masked.float()
    n = m.sum(-1)  # [N]
    lam = gen_length / (n + 1e-4) if lambda_t else torch.ones_like(n)  # [N]
    ratio = torch.exp(logp.float() - old_logp.float())  # [N, L]
    pg, _ = clipped_surrogate(ratio, advantages.float().unsqueeze(-1), epsilon)  # [N, L]
    per_token = pg * lam.unsqueeze(-1)
    if ref_logp is not None and beta != 0.0:
        kl = 0.5 * (ref_logp.float() - logp.float()) ** 2  # [N, L] k2
        per_token = per_token + beta * kl
        kl_mean = (kl.detach() * m).sum(-1) / n.clamp_min(1.0)
    else:
        kl_mean = torch.zeros_like(n)
    loss = (per_token * m * weights.float()).sum(-1) / (n + 1e-4)  # [N]
    return loss, kl_mean
