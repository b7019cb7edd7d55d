"""Likelihood estimators ℓ_θ(o_k) for a masked diffusion LM, as small swappable functions.

A dLLM has no exact token log-likelihood; each estimator builds N *noisy views* of the sequence
``[q ; o]`` and a weight per completion token and view, and the per-token estimate is

    ℓ_θ(o_k) = (1/N) Σ_n w^{(n)}_k · log p_θ(o_k | x^{(n)}),      one forward pass per view.

* :func:`one_step_views` — d1's one-step estimator (spec algorithms.md §3.2, d1 eq. 2): N = 1, the
  prompt masked independently w.p. ``p_mask_prompt``, the completion fully masked, w = 1.
* :func:`elbo_views` — the masked-diffusion ELBO (spec §1; LLaDA eq. 3): per view
  ``t ~ U(0, 1]``, every completion token masked w.p. ``t``, ``w = 1[o_k masked] / t``; summing over
  k gives an unbiased Monte-Carlo estimate of the ELBO of log p_θ(o | q).

Every random draw comes from a local ``torch.Generator`` seeded with an explicit seed, so a view is a
deterministic function of its seed (the same seed ⇒ the same mask for θ, θ_old and the reference)
and the global RNG is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

import remask
from remask.functional import gather_logprobs

__all__ = [
    "NoisyViews",
    "prompt_mask",
    "one_step_views",
    "elbo_views",
    "views_to",
    "token_logprobs",
]


@dataclass(frozen=True)
class NoisyViews:
    """N noisy copies of a micro-batch and the weight of each completion token in each copy."""

    input_ids: Tensor  # [N, B, P+L] long, masked sequences x^{(n)}
    token_weights: Tensor  # [N, B, L] float32, w^{(n)}_k
    seed: int  # the seed the views were drawn with

    @property
    def num_views(self) -> int:
        return int(self.input_ids.shape[0])


def _local_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def prompt_mask(prompt_attention: Tensor, p_mask_prompt: float, seed: int) -> Tensor:
    """Which real prompt tokens d1's ``forward_process`` replaces by M: each w.p. ``p_mask_prompt``.

    ``prompt_attention [B, P]`` bool (True on real tokens) -> ``[B, P]`` bool. Left padding is never
    masked. Deterministic in ``seed`` (drawn on the CPU, so identical on every device).
    """
    u = torch.rand(tuple(prompt_attention.shape), generator=_local_generator(seed))  # [B, P]
    return (u < p_mask_prompt) & prompt_attention.cpu().bool()


def one_step_views(
    prompt_ids: Tensor,  # [B, P] long
    prompt_attention: Tensor,  # [B, P] bool
    completion_ids: Tensor,  # [B, L] long
    mask_token_id: int,
    *,
    p_mask_prompt: float,
    seed: int,
) -> NoisyViews:
    """d1's one-step view: ``x̃ = [q with tokens masked w.p. p_mask_prompt ; M × L]`` (N = 1, w = 1)."""
    b, l = completion_ids.shape
    masked_q = torch.where(
        prompt_mask(prompt_attention, p_mask_prompt, seed),
        torch.full_like(prompt_ids.cpu(), mask_token_id),
        prompt_ids.cpu(),
    )  # [B, P]
    x = torch.cat([masked_q, torch.full((b, l), mask_token_id, dtype=torch.long)], dim=1)  # [B, P+L]
    return NoisyViews(input_ids=x.unsqueeze(0), token_weights=torch.ones(1, b, l), seed=int(seed))


def elbo_views(
    prompt_ids: Tensor,  # [B, P] long
    completion_ids: Tensor,  # [B, L] long
    mask_token_id: int,
    *,
    n_mc: int,
    seed: int,
) -> NoisyViews:
    """``n_mc`` ELBO views: per view and row ``t ~ U(0, 1]``, each completion token masked w.p. ``t``,
    weight ``1[masked] / t`` (LLaDA eq. 3). The prompt is kept clean."""
    if n_mc < 1:
        raise ValueError(f"n_mc must be >= 1, got {n_mc}")
    g = _local_generator(seed)
    b, l = completion_ids.shape
    t = 1.0 - torch.rand((n_mc, b, 1), generator=g)  # [N, B, 1] in (0, 1]
    masked = torch.rand((n_mc, b, l), generator=g) < t  # [N, B, L]
    o = completion_ids.cpu().unsqueeze(0).expand(n_mc, -1, -1)  # [N, B, L]
    x_t = torch.where(masked, torch.full_like(o, mask_token_id), o)  # [N, B, L]
    q = prompt_ids.cpu().unsqueeze(0).expand(n_mc, -1, -1)  # [N, B, P]
    weights = masked.float() / t  # [N, B, L]
    return NoisyViews(input_ids=torch.cat([q, x_t], dim=2), token_weights=weights, seed=int(seed))


def views_to(views: NoisyViews, device: torch.device) -> NoisyViews:
    """Move a view set to ``device``."""
    return NoisyViews(views.input_ids.to(device), views.token_weights.to(device), views.seed)


def token_logprobs(
    model: remask.DiffusionModel,
    views: NoisyViews,
    attention_mask: Tensor,  # [B, P+L] bool padding mask
    completion_ids: Tensor,  # [B, L] long
) -> Tensor:
    """``ℓ(o_k) = (1/N) Σ_n w^{(n)}_k log p(o_k | x^{(n)})`` in float32, one forward per view. ``[B, L]``.

    Runs with gradients when the caller has them enabled (the policy in ``loss``) and without under
    ``torch.no_grad`` (old policy and reference in ``prepare``).
    """
    l = completion_ids.shape[1]
    total = None
    for n in range(views.num_views):
        logits = model.forward(views.input_ids[n], attention_mask).logits[:, -l:]  # [B, L, V]
        logp = gather_logprobs(logits, completion_ids)  # [B, L]
        term = logp * views.token_weights[n]  # [B, L]
        total = term if total is None else total + term
    assert total is not None
    return total / views.num_views if views.num_views > 1 else total
