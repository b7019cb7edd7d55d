"""VRPO's ELBO difference as a registered likelihood-ratio estimator, for ``remask diagnose``.

One draw of ``B̂_θ(y) − B̂_ref(y)`` per row on shared stratified fixed-count views over the completion
through EOS. It estimates an ELBO difference, not the exact trajectory log-ratio, so diagnose
reports a bias; that is expected.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

import remask
from remask.likelihood import draw_mask_seeds, stratified_count_views, stratified_time_views, views_log_ratio

__all__ = ["VRPOElboLogRatio"]


class VRPOElboLogRatio(remask.LikelihoodEstimator):
    """B̂_θ − B̂_ref with n_t stratified mask counts per row (n_yt masks each), shared between the models."""

    name = "vrpo-elbo"

    class Config(remask.ComponentConfig):
        n_t: int = Field(4, ge=1, description="Timesteps (mask counts) per row.")
        n_yt: int = Field(1, ge=1, description="Masks per timestep (1: VRPO's optimal allocation).")
        timesteps: Literal["discrete-stratified", "discrete", "continuous-stratified", "continuous"] = Field(
            "discrete-stratified", description="Fixed-count (discrete) or random-t (continuous) views, stratified "
            "across a row's views or drawn independently (as the vrpo objective's field)."
        )

    def log_ratio(self, *, policy, reference, rollout, generator) -> Tensor:
        c = self.config
        span = rollout.completion_mask.cpu().bool()  # [B, L]
        build = stratified_count_views if c.timesteps.startswith("discrete") else stratified_time_views
        views = build(rollout.prompts.prompt_ids, rollout.completion_ids, policy.mask_token_id, n_t=c.n_t,
                      n_yt=c.n_yt, seed=draw_mask_seeds(generator, 1)[0], span=span,
                      stratified=c.timesteps.endswith("stratified"))
        return views_log_ratio(policy, reference, rollout.prompts, rollout.completion_ids, views, span)  # [B]
