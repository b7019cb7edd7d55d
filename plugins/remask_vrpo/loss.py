"""VRPO's preference loss as pure functions (LLaDA 1.5, arXiv 2505.19223, its DPO-E objective; spec
zoo-coupled-vrpo.md §2).

DPO with ELBOs in place of log-likelihoods, for pairs ``(y_w, y_l)`` of one prompt::

    ŝ = β [ (B̂_θ(y_w) − B̂_ref(y_w)) − (B̂_θ(y_l) − B̂_ref(y_l)) ]
    L = mean over pairs of −log σ(ŝ)

``B̂`` is the doubly Monte-Carlo ELBO estimate of :func:`remask.likelihood.stratified_count_views`
(θ and the reference on the *same* masked views: VRPO's antithetic sampling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["best_vs_worst", "normalise_elbo", "vrpo_loss"]


def best_vs_worst(scores: Tensor, group_size: int, tie_tolerance: float = 0.0) -> tuple[Tensor, Tensor]:
    """One pair per group of ``group_size`` adjacent rows: the highest score against the lowest
    (first in row order on equal scores); groups whose spread is ``<= tie_tolerance`` give no pair.

    ``[B] -> (chosen [n] long, rejected [n] long)`` row indices. With offline preference data
    (``G = 2``, chosen stored first with reward 1) this is exactly the stored pairs.
    """
    b = scores.shape[0]
    if b % group_size:
        raise ValueError(f"{b} rows do not split into groups of {group_size}")
    s = scores.detach().double().cpu().view(b // group_size, group_size)  # [n, G]
    hi, lo = s.argmax(-1), s.argmin(-1)  # [n]
    keep = (s.max(-1).values - s.min(-1).values) > tie_tolerance  # [n]
    base = torch.arange(b // group_size) * group_size  # [n]
    return (base + hi)[keep], (base + lo)[keep]


def normalise_elbo(elbo: Tensor, response_length: Tensor, max_length: int, mode: str) -> Tensor:
    """``none``: the raw ELBO (the paper's equation); ``max_length``: ÷ the padded completion length
    (DARE's ``log_probs = ELBO / response_length``, which is the padded maximum); ``response_length``:
    ÷ the row's own response length. ``[B] -> [B]``."""
    if mode == "none":
        return elbo
    if mode == "max_length":
        return elbo / max_length
    if mode == "response_length":
        return elbo / response_length.to(elbo.dtype).clamp_min(1)
    raise ValueError(f"unknown length_normalize {mode!r}; use none, max_length or response_length")


def vrpo_loss(
    policy_chosen: Tensor,  # [n] B̂_θ(y_w), with grad
    policy_rejected: Tensor,  # [n] B̂_θ(y_l), with grad
    ref_chosen: Tensor,  # [n] B̂_ref(y_w)
    ref_rejected: Tensor,  # [n] B̂_ref(y_l)
    beta: float,
) -> tuple[Tensor, Tensor]:
    """``(mean_n −log σ(ŝ_n), ŝ [n])`` with ``ŝ = β[(B̂_θ(y_w) − B̂_ref(y_w)) − (B̂_θ(y_l) − B̂_ref(y_l))]``.

    Spec case V1: ELBOs ``θ: (−1.856549, −2.904571)``, ``ref: (−2.392135, −2.330870)``, ``β = 0.1``
    give ``ŝ = 0.110929`` and loss ``0.639220``. ``−log σ(x)`` is computed as ``softplus(−x)``.
    """
    score = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))  # [n]
    return F.softplus(-score).mean(), score
