"""VRPO's ELBO difference as a registered likelihood-ratio estimator, for ``remask diagnose``.

One draw of ``B̂_θ(y) − B̂_ref(y)`` per row on shared stratified fixed-count views over the completion
through EOS. It estimates an ELBO difference, not the exact trajectory log-ratio, so diagnose
reports a bias; that is expected.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.functional import full_sequence
from remask.likelihood import stratified_count_views, stratified_time_views, token_logprobs, views_to

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
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        span = rollout.completion_mask.cpu().bool()  # [B, L]
        build = stratified_count_views if c.timesteps.startswith("discrete") else stratified_time_views
        views = build(rollout.prompts.prompt_ids, rollout.completion_ids, policy.mask_token_id,
                      n_t=c.n_t, n_yt=c.n_yt, seed=seed, span=span, stratified=c.timesteps.endswith("stratified"))
        device = policy.device
        views = views_to(views, device)
        ids = rollout.completion_ids.to(device)
        _, attn = full_sequence(rollout.prompts, ids)  # [B, P+L]
        diff = token_logprobs(policy, views, attn, ids) - token_logprobs(reference, views, attn, ids)  # [B, L]
        return (diff * span.to(device).float()).sum(-1).cpu()  # [B]
