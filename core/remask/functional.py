"""Small pure tensor functions shared by every algorithm (no trainer state in here).

Algorithms build their losses from these so that the same equation is written once: per-token
log-probs, entropies, the k3 KL estimator, masked means, group statistics and the clipped surrogate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import RemaskError
from .records import PromptBatch

__all__ = [
    "gather_logprobs",
    "token_entropy",
    "k3_kl",
    "masked_mean",
    "masked_sum",
    "group_mean",
    "group_std",
    "clipped_surrogate",
    "full_sequence",
    "row_advantages",
]


def gather_logprobs(logits: Tensor, token_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """``log softmax(logits / T)[token]`` in float32. logits ``[..., V]``, ids ``[...]`` -> ``[...]``.

    Uses ``-cross_entropy`` so the ``[..., V]`` float32 log-softmax is never materialised twice.
    """
    flat = logits.reshape(-1, logits.shape[-1]).float()
    if temperature != 1.0:
        flat = flat / temperature
    out = -F.cross_entropy(flat, token_ids.reshape(-1), reduction="none")
    return out.view(token_ids.shape)


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy of ``softmax(logits)`` per position, float32. ``[..., V]`` -> ``[...]``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL(π_θ || π_ref) per token (DeepSeekMath eq. 4):

    ``exp(ℓ_ref − ℓ_θ) − (ℓ_ref − ℓ_θ) − 1`` (≥ 0, zero iff ℓ_ref = ℓ_θ). Shapes broadcast.
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() if dim is None else (x * m).sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None, eps: float = 1.0) -> Tensor:
    """Mean of ``x`` over ``mask`` (all elements, or along ``dim``); empty masks give 0."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp_min(eps)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(eps)


def group_mean(values: Tensor, group_size: int) -> Tensor:
    """Mean over each group of ``group_size`` adjacent rows, broadcast back. ``[B, ...]`` -> ``[B, ...]``."""
    b = values.shape[0]
    if b % group_size:
        raise ValueError(f"{b} rows do not split into groups of {group_size}")
    g = values.reshape(b // group_size, group_size, *values.shape[1:])
    return g.mean(1, keepdim=True).expand_as(g).reshape(values.shape)


def group_std(values: Tensor, group_size: int) -> Tensor:
    """Unbiased (ddof=1) standard deviation over each group, broadcast back (0 for G = 1)."""
    b = values.shape[0]
    if b % group_size:
        raise ValueError(f"{b} rows do not split into groups of {group_size}")
    g = values.reshape(b // group_size, group_size, *values.shape[1:])
    std = g.std(1, unbiased=True, keepdim=True) if group_size > 1 else torch.zeros_like(g[:, :1])
    return std.expand_as(g).reshape(values.shape)


def clipped_surrogate(ratio: Tensor, advantages: Tensor, eps_low: float, eps_high: float | None = None) -> tuple[Tensor, Tensor]:
    """PPO clipped objective per element, as a quantity to *minimise* (PPO eq. 7, negated).

    Returns ``(loss, clipped)`` where ``loss = −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A)`` and ``clipped``
    marks the elements where the clipped branch was taken. Shapes broadcast.
    """
    eh = eps_low if eps_high is None else eps_high
    unclipped = ratio * advantages
    clipped_r = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eh) * advantages
    loss = -torch.minimum(unclipped, clipped_r)
    return loss, clipped_r < unclipped


def full_sequence(prompts: PromptBatch, completion_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Concatenate left-padded prompts and completions.

    Returns ``input_ids [B, P+L]`` and the ``[B, P+L]`` bool padding mask (completion positions are
    always attended).
    """
    ids = torch.cat([prompts.prompt_ids.to(completion_ids.device), completion_ids], dim=1)
    attn = torch.cat(
        [prompts.attention_mask.to(completion_ids.device), torch.ones_like(completion_ids, dtype=torch.bool)], dim=1
    )
    return ids, attn


def row_advantages(advantages: Tensor, batch_size: int, *, objective: str, hint: str) -> Tensor:
    """Check that an objective got one advantage per row (``[B]``) and return it in float32.

    A mismatch (a ``[B, K]`` step-wise estimator under a sequence-level objective, or a wrong row
    count) is a configuration error: one line naming the objective, both shapes and ``hint``
    (which advantage estimator fits, e.g. ``"use advantage: rloo"``).
    """
    if advantages.dim() != 1 or advantages.shape[0] != batch_size:
        raise RemaskError(
            f"objective {objective}: needs one advantage per row, shape [{batch_size}], got "
            f"{tuple(advantages.shape)}; {hint}"
        )
    return advantages.float()  # [B]
