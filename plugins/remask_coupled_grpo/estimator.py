"""The coupled estimate as a registered likelihood-ratio estimator, for ``remask diagnose``.

One draw of ``Σ_{k ≤ EOS} [ℓ̃_θ(o_k) − ℓ̃_ref(o_k)]`` on shared coupled views. With the official
``pair_reduction="sum"`` the estimate is about 1.5× a log-ratio by construction (spec
zoo-coupled-vrpo.md §1.3), so diagnose reports a large "bias" against the exact trajectory log-ratio;
``pair_reduction="mean"`` is on the log-probability scale.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.functional import full_sequence
from remask.likelihood import coupled_views, token_logprobs, views_to

__all__ = ["CoupledLogRatio"]


class CoupledLogRatio(remask.LikelihoodEstimator):
    """DiffuCoder's coupled estimate (full view + complementary pair, t ~ U(t_low, t_high)) of the log-ratio."""

    name = "coupled"

    class Config(remask.ComponentConfig):
        t_low: float = Field(0.2, gt=0, lt=1, description="Lower end of t ~ U(t_low, t_high).")
        t_high: float = Field(0.8, gt=0, lt=1, description="Upper end of t ~ U(t_low, t_high).")
        full_view: bool = Field(True, description="Average in the fully masked view (the official code).")
        pair_reduction: Literal["sum", "mean"] = Field(
            "sum", description="sum: the official code's scale; mean: the log-probability scale."
        )

    def log_ratio(self, *, policy, reference, rollout, generator) -> Tensor:
        c = self.config
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        views = coupled_views(rollout.prompts.prompt_ids, rollout.completion_ids, policy.mask_token_id, seed=seed,
                              t_low=c.t_low, t_high=c.t_high, full_view=c.full_view, pair_reduction=c.pair_reduction)
        device = policy.device
        views = views_to(views, device)
        ids = rollout.completion_ids.to(device)
        _, attn = full_sequence(rollout.prompts, ids)  # [B, P+L]
        diff = token_logprobs(policy, views, attn, ids) - token_logprobs(reference, views, attn, ids)  # [B, L]
        return (diff * rollout.completion_mask.to(device).float()).sum(-1).cpu()  # [B]
