"""d1's one-step estimator and the ELBO as registered likelihood-ratio estimators.

These wrap the public building blocks of :mod:`remask.likelihood` so that ``remask diagnose`` can measure
how far each is from the exact trajectory log-ratio; the objectives do not go through them.
One draw estimates ``Σ_k [ℓ_θ(o_k) − ℓ_ref(o_k)]`` over the completion through EOS, on the same
noisy views for both models.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.functional import full_sequence
from remask.likelihood import NoisyViews, elbo_views, fixed_count_views, one_step_views, token_logprobs, views_to

__all__ = ["OneStepLogRatio", "ElboLogRatio"]


def _views_log_ratio(policy: remask.DiffusionModel, reference: remask.DiffusionModel,
                     rollout: remask.Rollout, views: NoisyViews) -> Tensor:
    _, attn = full_sequence(rollout.prompts, rollout.completion_ids)  # [B, P+L]
    device = policy.device
    views = views_to(views, device)
    ids = rollout.completion_ids.to(device)
    attn = attn.to(device)
    diff = token_logprobs(policy, views, attn, ids) - token_logprobs(reference, views, attn, ids)  # [B, L]
    return (diff * rollout.completion_mask.to(device).float()).sum(-1).cpu()  # [B]


def _seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


class OneStepLogRatio(remask.LikelihoodEstimator):
    """d1's one-step estimate: prompt masked w.p. p, completion fully masked, one forward per model."""

    name = "d1-one-step"

    class Config(remask.ComponentConfig):
        p_mask_prompt: float = Field(0.15, ge=0, le=1, description="Probability of masking each prompt token.")

    def log_ratio(self, *, policy, reference, rollout, generator) -> Tensor:
        views = one_step_views(rollout.prompts.prompt_ids, rollout.prompts.attention_mask, rollout.completion_ids,
                               policy.mask_token_id, p_mask_prompt=self.config.p_mask_prompt, seed=_seed(generator))
        return _views_log_ratio(policy, reference, rollout, views)


class ElboLogRatio(remask.LikelihoodEstimator):
    """Monte-Carlo ELBO difference on shared views: random-t (t ~ U(0,1], weight 1/t) or fixed-count
    (exactly k ~ U{0..u} tokens masked, weight (u+1)/k, ESPO), optionally with complementary views."""

    name = "elbo"

    class Config(remask.ComponentConfig):
        n_mc: int = Field(1, ge=1, description="Monte-Carlo mask draws (forward passes per model, x2 with complementary).")
        masking: Literal["random-t", "fixed-count"] = Field(
            "random-t", description="random-t: each token masked w.p. t ~ U(0,1] (LLaDA eq. 3); fixed-count: exactly "
            "k ~ U{0..u} span tokens masked (LLaDA eq. 12, ESPO)."
        )
        complementary: bool = Field(
            False, description="Add the view masking exactly the other tokens of every draw (DiffuCoder / ESPO reduce_var)."
        )
        antithetic: bool = Field(False, description="random-t only: pair t with 1 − t across draws (n_mc even).")
        stratified: bool = Field(False, description="fixed-count only: spread the rows' counts evenly over 0..u (ESPO).")

    def log_ratio(self, *, policy, reference, rollout, generator) -> Tensor:
        c = self.config
        if c.masking == "random-t":
            views = elbo_views(rollout.prompts.prompt_ids, rollout.completion_ids, policy.mask_token_id,
                               n_mc=c.n_mc, seed=_seed(generator), antithetic=c.antithetic,
                               complementary=c.complementary)
        else:
            views = fixed_count_views(rollout.prompts.prompt_ids, rollout.completion_ids, policy.mask_token_id,
                                      n_mc=c.n_mc, seed=_seed(generator), include_zero=True,
                                      stratified=c.stratified, complementary=c.complementary)
        return _views_log_ratio(policy, reference, rollout, views)
