"""The coupled estimate as a registered likelihood-ratio estimator, for ``remask diagnose``.

One draw of ``Σ_{k ≤ EOS} [ℓ̃_θ(o_k) − ℓ̃_ref(o_k)]`` on shared coupled views. With the official
``pair_reduction="sum"`` the estimate is about 1.5× a log-ratio by construction (spec
zoo-coupled-vrpo.md §1.3), so diagnose reports a large "bias" against the exact trajectory log-ratio;
``pair_reduction="mean"`` is on the log-probability scale.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

import remask
from remask.likelihood import coupled_views, draw_mask_seeds, views_log_ratio

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
        views = coupled_views(rollout.prompts.prompt_ids, rollout.completion_ids, policy.mask_token_id,
                              seed=draw_mask_seeds(generator, 1)[0], t_low=c.t_low, t_high=c.t_high,
                              full_view=c.full_view, pair_reduction=c.pair_reduction)
        return views_log_ratio(policy, reference, rollout.prompts, rollout.completion_ids, views,
                               rollout.completion_mask)  # [B]
