"""TraceRL's losses as pure functions (arXiv 2509.06949; Gen-Verse/dLLM-RL @ 10b4fd1; spec
zoo-mdpo-tracerl.md §2.6–2.7).

Policy, per training row ``(j, g)`` (completion ``j``, trace chunk ``g`` with target positions ``𝒢``)::

    ρ_i   = exp(ℓ_θ(i) − ℓ_old(i))                         (log-ratio optionally clamped to [−c, c])
    ψ_j,g = (1/N) Σ_{i∈𝒢} min(ρ_i A_i, clip(ρ_i, 1−ε, 1+ε) A_i)
    κ_j,g = (1/N') Σ_{i∈𝒢} [exp(ℓ_old − ℓ_θ) − (ℓ_old − ℓ_θ) − 1]     (k3 to the OLD policy; no reference)
    L     = mean over rows of (−ψ + β κ)

``normalize="per_step_mean"`` (the LLaDA/Dream scripts): ``N = |𝒢|``, ``N' = 1`` (the KL is a sum);
``"per_length"`` (the TraDo/SDAR scripts): ``N = N' = L``. ``A_i = A_j`` without a value model.

Value (optional), with old values ``V^old`` and trace steps ``k = 1..S`` of a completion (GAE over
trace steps, §2.7)::

    r_i = R_j on the last trace step, else 0;  r*_k, V*_k = step means of r_i, V^old_i
    R*_k = r*_k + γ R*_{k+1};   A*_k = r*_k − V*_k + γ V*_{k+1} + γλ A*_{k+1}
    R_i  = r_i + γ R*_{k(i)+1};  A_i = r_i − V^old_i + γ V*_{k(i)+1} + γλ A*_{k(i)+1}
    L_V  = mean over rows of (1/N) Σ_{i∈𝒢} ½ max((V_i − R_i)², (V^old_i + clip(V_i − V^old_i, −ε_V, ε_V) − R_i)²)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["chunk_sums", "tracerl_policy_loss", "gae_over_trace_steps", "clipped_value_loss"]


def chunk_sums(values: Tensor, chunk: Tensor, targets: Tensor, num_chunks: int) -> Tensor:
    """``Σ_{i ∈ chunk g, targets_i} values_i`` per row and chunk. ``[B, L] -> [B, K]``."""
    onehot = torch.nn.functional.one_hot(chunk.clamp_min(0), num_chunks).to(values.dtype)  # [B, L, K]
    keep = (targets & (chunk >= 0)).to(values.dtype).unsqueeze(-1)  # [B, L, 1]
    return (values.unsqueeze(-1) * onehot * keep).sum(1)  # [B, K]


def tracerl_policy_loss(
    logp: Tensor,  # [B, L] ℓ_θ, each position from its chunk's state, with grad
    old_logp: Tensor,  # [B, L] ℓ_old
    advantages: Tensor,  # [B] A_j or [B, L] A_i
    chunk: Tensor,  # [B, L] long chunk index g of each position (−1: none)
    targets: Tensor,  # [B, L] bool, trainable positions
    num_chunks: int,
    *,
    epsilon: float,
    beta: float,
    normalize: str = "per_step_mean",
    logratio_clamp: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """TraceRL's clipped policy loss with k3 to the old policy; rows are the non-empty ``(j, g)`` chunks.

    Spec T1 (σ = 2, ``A = 0.5``, ε = 0.2, β = 0.01): ``per_step_mean`` -> −0.511593, ``per_length`` -> −0.256122.
    """
    log_ratio = logp.float() - old_logp.float()  # [B, L]
    if logratio_clamp is not None:
        log_ratio = log_ratio.clamp(-logratio_clamp, logratio_clamp)
    ratio = torch.exp(log_ratio)
    adv = advantages.float()
    adv = adv.unsqueeze(-1).expand_as(ratio) if adv.dim() == 1 else adv  # [B, L]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - epsilon, 1 + epsilon) * adv)  # [B, L]
    kl = torch.exp(-log_ratio) + log_ratio - 1.0  # [B, L] k3 with ℓ_old as the anchor
    counts = chunk_sums(torch.ones_like(ratio), chunk, targets, num_chunks)  # [B, K] |𝒢|
    rows = counts > 0  # [B, K]
    psi = chunk_sums(surrogate, chunk, targets, num_chunks)  # [B, K]
    kappa = chunk_sums(kl, chunk, targets, num_chunks)  # [B, K]
    if normalize == "per_step_mean":
        psi = psi / counts.clamp_min(1)
    elif normalize == "per_length":
        psi, kappa = psi / logp.shape[-1], kappa / logp.shape[-1]
    else:
        raise ValueError(f"unknown normalize {normalize!r}; use per_step_mean or per_length")
    per_row = (-psi + beta * kappa)[rows]  # [R]
    loss = per_row.mean() if per_row.numel() else (logp * 0.0).sum()
    with torch.no_grad():
        keep = targets & (chunk >= 0)
        n = keep.sum().clamp_min(1)
        clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon) & (adv > 0))
        metrics = {
            "kl_old": float((kl * keep).sum() / n),
            "clip_ratio/region_mean": float((clipped & keep).sum() / n),
            "tracerl/rows": float(rows.sum()),
        }
    return loss, metrics


def gae_over_trace_steps(
    rewards: Tensor,  # [B] R_j (TraceRL's z-scored reward)
    old_values: Tensor,  # [B, L] V^old_i
    chunk: Tensor,  # [B, L] long trace step k(i) (chunk index; −1: not trainable)
    targets: Tensor,  # [B, L] bool, trainable positions
    num_chunks: int,
    *,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Token returns and advantages from GAE over a completion's trace steps. ``-> (R_i [B, L], A_i [B, L])``.

    Spec T2: ``step_map = [0, 0, 1, 2, 2]``, ``R = 1.2``, ``V^old = [0.1, 0.3, 0.5, 0.9, 0.7]``, γ = λ = 1 ->
    ``A = 1.2 − V^old``; γ = 0.9, λ = 0.5 -> ``A = [0.53, 0.33, 0.40, 0.30, 0.50]``. Steps without trainable
    tokens are skipped (they are not trace steps of the completion).
    """
    v = old_values.float()
    counts = chunk_sums(torch.ones_like(v), chunk, targets, num_chunks)  # [B, K]
    present = counts > 0  # [B, K]
    b, k = counts.shape
    # the last present trace step of each row gets the reward
    idx = torch.arange(k, device=v.device).expand(b, k)
    last = torch.where(present, idx, torch.full_like(idx, -1)).max(-1).values  # [B]
    keep = targets & (chunk >= 0)
    r_tok = torch.where(keep & (chunk == last.unsqueeze(-1)), rewards.float().unsqueeze(-1), torch.zeros_like(v))
    r_step = chunk_sums(r_tok, chunk, targets, k) / counts.clamp_min(1)  # [B, K] r*_k
    v_step = chunk_sums(v, chunk, targets, k) / counts.clamp_min(1)  # [B, K] V*_k
    ret_next = torch.zeros(b, k + 1, device=v.device)  # R*_{k+1}, over present steps only
    adv_next = torch.zeros(b, k + 1, device=v.device)  # A*_{k+1}
    val_next = torch.zeros(b, k + 1, device=v.device)  # V*_{k+1}
    ret_acc = torch.zeros(b, device=v.device)
    adv_acc = torch.zeros(b, device=v.device)
    val_acc = torch.zeros(b, device=v.device)
    for g in range(k - 1, -1, -1):
        ret_next[:, g], adv_next[:, g], val_next[:, g] = ret_acc, adv_acc, val_acc
        p = present[:, g]
        new_ret = r_step[:, g] + gamma * ret_acc
        new_adv = r_step[:, g] - v_step[:, g] + gamma * val_acc + gamma * lam * adv_acc
        ret_acc = torch.where(p, new_ret, ret_acc)
        adv_acc = torch.where(p, new_adv, adv_acc)
        val_acc = torch.where(p, v_step[:, g], val_acc)
    c = chunk.clamp_min(0)
    returns = r_tok + gamma * ret_next.gather(1, c)  # [B, L]
    adv = r_tok - v + gamma * val_next.gather(1, c) + gamma * lam * adv_next.gather(1, c)  # [B, L]
    return returns * keep, adv * keep


def clipped_value_loss(
    values: Tensor,  # [B, L] V_φ, with grad
    old_values: Tensor,  # [B, L] V^old
    returns: Tensor,  # [B, L] R_i
    chunk: Tensor,  # [B, L] long
    targets: Tensor,  # [B, L] bool
    num_chunks: int,
    *,
    clip: float,
    normalize: str = "per_step_mean",
) -> Tensor:
    """PPO-clipped value loss, mean over the non-empty chunk rows (spec T2: one row of 5 tokens, ÷5 -> 0.240250)."""
    v, vo, r = values.float(), old_values.float(), returns.float()
    v_clip = vo + (v - vo).clamp(-clip, clip)
    per_token = 0.5 * torch.maximum((v - r) ** 2, (v_clip - r) ** 2)  # [B, L]
    counts = chunk_sums(torch.ones_like(v), chunk, targets, num_chunks)  # [B, K]
    sums = chunk_sums(per_token, chunk, targets, num_chunks)  # [B, K]
    per_row = sums / (counts.clamp_min(1) if normalize == "per_step_mean" else v.shape[-1])
    rows = counts > 0
    return per_row[rows].mean() if rows.any() else (v * 0.0).sum()
