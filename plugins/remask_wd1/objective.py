"""The ``wd1`` objective: d1's one-step likelihood under softmax(±A) weights (arXiv 2507.08838).

``prepare`` (no grad) draws one mask seed per inner step from the likelihood stream
(:func:`remask.likelihood.inner_step_seeds`) and builds d1's one-step views
(:func:`remask.likelihood.one_step_views`); it needs no forward pass, because wd1 has no old-policy
ratio and no reference. ``loss`` scores the views of inner step ``m`` with the policy, sums the
per-token estimates over the completion through EOS, and applies :func:`remask_wd1.loss.wd1_loss`.
Reference code: ``xiaohangt/wd1`` @ ``0898985``, ``RevDiffuGRPOTrainer.compute_loss``
(``trainer_type=wll_d1_neg``); see docs/algorithms/wd1.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.errors import RemaskError
from remask.functional import full_sequence, masked_sum, row_advantages
from remask.likelihood import MaskSeedConfig, NoisyViews, one_step_views, token_logprobs, views_to

from .loss import wd1_loss, wd1_weights

__all__ = ["WD1Objective", "WD1State"]


@dataclass(frozen=True)
class WD1State:
    """What ``prepare`` built for one micro-batch (no forward passes)."""

    views: tuple[NoisyViews, ...]  # one d1 one-step view set per distinct mask seed
    attention_mask: Tensor  # [B, P+L] bool
    completion_ids: Tensor  # [B, L] long
    completion_mask: Tensor  # [B, L] bool
    advantages: Tensor  # [B] float32
    softmax_size: int  # rows per softmax (G or the micro-batch)


class WD1Objective(remask.PolicyObjective):
    """wd1: −Σ softmax(A)·S + Σ softmax(−A)·S with S the summed d1 one-step log-likelihood."""

    name = "wd1"
    requires_whole_groups = True  # the softmax runs over the G completions of a prompt
    uses_reference = False

    class Config(MaskSeedConfig):
        p_mask_prompt: float = Field(
            0.15, ge=0, le=1, description="Probability of masking each prompt token in d1's one-step view "
            "(wd1 train.yaml 0.15)."
        )
        softmax_over: Literal["group", "micro-batch"] = Field(
            "group",
            description="Rows the softmax(±A) weights run over: the G completions of each prompt, or the whole "
            "micro-batch as the reference code does (the same when a micro-batch holds one group).",
        )
        negative_term: bool = Field(
            True, description="Include +Σ softmax(−A)·S (wd1's wll_d1_neg); False keeps only the positive term."
        )

    def prepare(self, *, rollout, advantages, selection, context) -> WD1State:
        c = self.config
        advantages = row_advantages(advantages, rollout.batch_size, objective="wd1",
                                    hint="use advantage: group-mean (wd1: r − group mean)")
        device = context.device
        seeds = c.inner_step_seeds(context.generator, context.inner_steps)
        prompts = rollout.prompts
        completion_ids = rollout.completion_ids.to(device)  # [B, L]
        _, attention = full_sequence(prompts, completion_ids)  # [B, P+L]
        views = tuple(
            views_to(one_step_views(prompts.prompt_ids, prompts.attention_mask, rollout.completion_ids,
                                    context.policy.mask_token_id, p_mask_prompt=c.p_mask_prompt, seed=s), device)
            for s in seeds
        )
        try:
            size = rollout.batch_size if c.softmax_over == "micro-batch" else max(1, rollout.prompts.group_size)
        except ValueError as exc:  # groups of unequal size: a micro-batch cut through a group
            raise RemaskError(f"objective wd1: softmax_over: group needs whole groups in a micro-batch ({exc})") from exc
        if rollout.batch_size % size:
            raise RemaskError(
                f"objective wd1: a micro-batch of {rollout.batch_size} rows does not hold whole groups of "
                f"{size}; choose train.micro_batch_size as a multiple of train.group_size"
            )
        return WD1State(views=views, attention_mask=attention, completion_ids=completion_ids,
                        completion_mask=rollout.completion_mask.to(device).bool(),
                        advantages=advantages.to(device).float(), softmax_size=size)

    def loss(self, state: WD1State, *, inner_step: int, context) -> remask.LossOutput:
        views = state.views[inner_step % len(state.views)]
        logp = token_logprobs(context.policy, views, state.attention_mask, state.completion_ids)  # [B, L]
        seq = masked_sum(logp, state.completion_mask, dim=-1)  # [B] S_j
        loss = wd1_loss(seq, state.advantages, state.softmax_size, negative_term=self.config.negative_term)
        with torch.no_grad():
            w_pos, _ = wd1_weights(state.advantages, state.softmax_size)
            metrics = {
                "wd1/sequence_logp": float(seq.detach().mean()),
                "wd1/max_weight": float(w_pos.max()),
            }
        return remask.LossOutput(loss=loss, metrics=metrics, forward_passes=views.num_views)
