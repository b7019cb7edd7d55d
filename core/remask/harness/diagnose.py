"""Estimator diagnostics: how far is each likelihood estimator from the exact trajectory log-ratio?

For a recorded rollout, the exact log-ratio of the token choices along the trajectory is

    log π_θ(τ)/π_ref(τ) = Σ_k Σ_{i ∈ I_k} [ log p_θ(o_i | x_k) − log p_ref(o_i | x_k) ]

(the position-selection terms are assumed to cancel, spec algorithms.md §3.4 (1)). It needs one
forward of each model per sampler step, T in all — too expensive for training, cheap on the tiny
model. Every registered :class:`~remask.LikelihoodEstimator` is drawn ``draws`` times per row and
compared against it: bias, standard deviation, RMSE and forward passes per draw.

Reading ``|bias|/SE``: for row b with draws x_1..x_D, z_b = (mean(x) − exact_b) / (std(x)/√D). For
an unbiased estimator z_b is approximately N(0, 1), so E|z_b| = √(2/π) ≈ 0.80 (not 0), about 5% of
rows exceed 2 and 0.3% exceed 3. A signed mean of the per-row biases can be near zero while every row
is far off (the biases cancel), so the diagnostic reports the mean of |z_b| and how many rows exceed
2 and 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..functional import full_sequence, gather_logprobs
from ..interfaces import DiffusionModel, LikelihoodEstimator
from ..records import Rollout
from ..trajectory import state_before_step

__all__ = ["exact_trajectory_log_ratio", "EstimatorDiagnostic", "diagnose_estimators"]


@torch.no_grad()
def exact_trajectory_logp(model: DiffusionModel, rollout: Rollout) -> Tensor:
    """``Σ_k Σ_{i∈I_k} log p(o_i | x_k)`` for every row, by brute force (T forwards). # [B]"""
    total = torch.zeros(rollout.batch_size, dtype=torch.float64)
    p = rollout.prompts.prompt_length
    for k in range(rollout.num_steps):
        x_k, newly = state_before_step(rollout.completion_ids, rollout.unmask_step, k, model.mask_token_id)
        if not newly.any():
            continue
        ids, attn = full_sequence(rollout.prompts, x_k)  # [B, P+L]
        logits = model.logits(ids.to(model.device), attn.to(model.device), keep=slice(p, None))  # [B, L, V]
        logp = gather_logprobs(logits, rollout.completion_ids.to(logits.device)).double().cpu()  # [B, L]
        total += (logp * newly.double()).sum(-1)
    return total


def exact_trajectory_log_ratio(policy: DiffusionModel, reference: DiffusionModel, rollout: Rollout) -> Tensor:
    """The exact trajectory log-ratio of every row. # [B] float64"""
    return exact_trajectory_logp(policy, rollout) - exact_trajectory_logp(reference, rollout)


@dataclass
class EstimatorDiagnostic:
    """Accuracy of one estimator against the exact trajectory log-ratio, averaged over rows."""

    name: str
    scale: str
    bias: float  # mean over rows of (mean of draws − exact): signed, so per-row biases can cancel
    abs_bias_se: float  # mean over rows of |z_b| = |bias_b| / SE_b; ≈ √(2/π) ≈ 0.80 for an unbiased estimator
    rows_over_2: int  # rows with |z_b| > 2 (≈ 5% of rows if unbiased)
    rows_over_3: int  # rows with |z_b| > 3 (≈ 0.3% of rows if unbiased)
    rows: int
    std: float  # mean over rows of the standard deviation of one draw
    rmse: float  # sqrt(mean over rows and draws of (draw − exact)²)
    forward_passes_per_draw: float
    exact_mean: float  # mean exact value (for scale)
    row_z: list[float]  # z_b of every row (signed)

    def as_dict(self) -> dict[str, float | str]:
        return dict(self.__dict__)


def diagnose_estimators(
    estimators: Sequence[tuple[str, LikelihoodEstimator]],
    policy: DiffusionModel,
    reference: DiffusionModel,
    rollout: Rollout,
    *,
    draws: int = 64,
    seed: int = 0,
) -> tuple[list[EstimatorDiagnostic], Tensor]:
    """Draw every estimator ``draws`` times on ``rollout``; returns the diagnostics and the exact values."""
    exact = exact_trajectory_log_ratio(policy, reference, rollout)  # [B]
    lengths = rollout.completion_mask.double().sum(-1).clamp_min(1).cpu()  # [B]
    results = []
    for name, est in estimators:
        gen = torch.Generator().manual_seed(seed)
        target = exact / lengths if est.scale == "per_token" else exact
        samples = []
        nfe0 = policy.nfe + reference.nfe
        with torch.no_grad():
            for _ in range(draws):
                samples.append(est.log_ratio(policy=policy, reference=reference, rollout=rollout, generator=gen)
                               .double().cpu())
        fwd = (policy.nfe + reference.nfe - nfe0) / max(draws, 1)
        s = torch.stack(samples)  # [draws, B]
        row_mean = s.mean(0)
        row_std = s.std(0, unbiased=True) if draws > 1 else torch.zeros_like(row_mean)
        se = row_std / math.sqrt(max(draws, 1))
        bias = row_mean - target
        # a deterministic estimator (SE 0) is exact (z 0) or infinitely many standard errors off
        off = torch.where(bias.abs() > 1e-9, bias.sign() * math.inf, torch.zeros_like(bias))
        z = torch.where(se > 0, bias / se.clamp_min(1e-300), off)  # [B]
        results.append(EstimatorDiagnostic(
            name=name, scale=est.scale, bias=float(bias.mean()), abs_bias_se=float(z.abs().mean()),
            rows_over_2=int((z.abs() > 2).sum()), rows_over_3=int((z.abs() > 3).sum()), rows=int(z.numel()),
            row_z=[float(v) for v in z],
            std=float(row_std.mean()), rmse=float(((s - target) ** 2).mean().sqrt()),
            forward_passes_per_draw=fwd, exact_mean=float(target.mean()),
        ))
    return results, exact
