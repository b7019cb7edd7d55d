"""TraFL's loss as small pure functions (spec algorithms.md §3.5; reconstructed, see docs).

Notation: ``K`` masks per row, ``B`` rows, ``L`` completion positions. ``a_M`` is the per-token
average log-ratio on the masked positions of one mask ([3P] "Eq. 4"), ``D̂`` the mean of ``a_M``
over the ``K`` masks, ``r̃`` the group-centred reward, ``u`` the span length and ``z`` the learned
per-token log-partition ``z_φ(x)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "masked_token_average",
    "mask_log_ratio",
    "sequence_surrogate",
    "reward_tilt",
    "trajectory_balance_residual",
    "trafl_loss",
    "optimal_log_partition",
]


def masked_token_average(values: Tensor, masks: Tensor) -> Tensor:
    """``(1/|M|) Σ_{i∈M} values_i`` for every mask (0 for an empty mask). ``[K, B, L]`` -> ``[K, B]``."""
    m = masks.to(values.dtype)  # [K, B, L]
    return (values * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def mask_log_ratio(logp: Tensor, ref_logp: Tensor, masks: Tensor) -> Tensor:
    """``a_M(y) = (1/|M|) Σ_{i∈M} [log p_θ(y_i | y_¬M, x) − log p_ref(y_i | y_¬M, x)]``. # [K, B]

    TraFL's "Eq. 4" (per-token average, the same mask ``M`` for θ and ref). ``logp`` and
    ``ref_logp`` are ``[K, B, L]`` log-probs of the completion tokens, each row k computed from the
    input with mask k applied; ``masks`` is ``[K, B, L]`` bool.
    """
    return masked_token_average(logp - ref_logp, masks)


def sequence_surrogate(mask_ratios: Tensor) -> Tensor:
    """``D̂(y) = (1/K) Σ_k a_{M_k}(y)``: the diffusion-compatible sequence log-ratio. ``[K, B]`` -> ``[B]``."""
    return mask_ratios.mean(0)


def reward_tilt(centred_reward: Tensor, beta: float, span_length: Tensor | None) -> Tensor:
    """The reward term of the residual: ``(β/u)·r̃`` (intensive) or ``β·r̃`` (``span_length=None``). # [B]

    ``u`` is clamped to at least 1 so that an empty span does not divide by zero.
    """
    if span_length is None:
        return beta * centred_reward
    return beta * centred_reward / span_length.to(centred_reward.dtype).clamp_min(1.0)


def trajectory_balance_residual(sequence_ratio: Tensor, tilt: Tensor, log_partition: Tensor) -> Tensor:
    """``δ_j = D̂(y_j) − (β/u)·r̃_j + z_φ(x_j)``: the relative trajectory-balance residual. # [B]

    All three inputs are ``[B]``; with the exact trajectory log-ratio in place of ``D̂`` this is
    ``log Z + log p_θ(τ|x) − log p_ref(τ|x) − β r`` in per-token units (spec §3.5).
    """
    return sequence_ratio - tilt + log_partition


def trafl_loss(residual: Tensor) -> Tensor:
    """``L_TraFL = mean_{x,j} δ_j²``. ``[B]`` -> ``[]``."""
    return residual.pow(2).mean()


def optimal_log_partition(sequence_ratio: Tensor, tilt: Tensor) -> Tensor:
    """Minimiser over a scalar ``z`` of ``Σ_j (D̂_j − t_j + z)²`` for one group: ``z* = −mean_j(D̂_j − t_j)``.

    ``sequence_ratio`` and ``tilt`` are ``[G]`` (one group) or ``[n, G]`` (n groups) -> ``[]`` / ``[n]``.
    """
    return -(sequence_ratio - tilt).mean(-1)
