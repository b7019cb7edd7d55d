"""The ``spg`` objective: sandwiched policy gradient (arXiv 2510.09541) on block-random masked views.

``prepare`` (no grad) draws one mask seed per inner step from the likelihood stream and builds SPG's
``block_random`` views (:func:`remask_spg.masks.block_random_views`); SPG has no old-policy ratio and
no reference, so it runs no forward pass. ``loss`` scores inner step ``m``'s views with the policy
(:func:`remask.likelihood.view_logprobs`, one forward per view), forms the sandwiched sequence
log-likelihood (:func:`remask_spg.loss.spg_sequence_logps`) and the length-weighted loss.
Reference code: ``facebookresearch/SPG`` @ ``a1c7120``, ``SPGTrainer``; see docs/algorithms/spg.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.errors import RemaskError
from remask.functional import full_sequence, row_advantages
from remask.likelihood import MaskSeedConfig, NoisyViews, view_logprobs, views_to

from .loss import NegativeBound, lower_bound, spg_loss, spg_sequence_logps
from .masks import block_random_views

__all__ = ["SPGObjective", "SPGState"]


@dataclass(frozen=True)
class SPGState:
    views: tuple[NoisyViews, ...]  # num_t views per distinct mask seed
    attention_mask: Tensor  # [B, P+L] bool
    completion_ids: Tensor  # [B, L] long
    completion_mask: Tensor  # [B, L] bool
    advantages: Tensor  # [B]


class SPGObjective(remask.PolicyObjective):
    """SPG: −A·Ŝ with Ŝ an ELBO-type lower bound for A > 0 and an EUBO (or mix) upper bound otherwise."""

    name = "spg"
    uses_reference = False  # SPG supports no KL term (β = 0 in the reference code)

    class Config(MaskSeedConfig):
        negative_bound: NegativeBound = Field(
            "mix", description="Ŝ for rows with A ≤ 0: 'eubo' (upper bound), 'mix' (w·EUBO + (1−w)·ELBO), "
            "'elbo' (lower bound, plain ELBO policy gradient) or 'zero' (no gradient from them)."
        )
        eubo_beta: float = Field(1.5, gt=0, description="β of the EUBO p^β (reference runs: 1.0 sudoku, 1.5 GSM8K/MATH, 2.0 countdown).")
        mix_weight: float = Field(0.5, ge=0, le=1, description="w of the EUBO in the 'mix' bound (reference: 0.5).")
        num_t: int = Field(2, ge=1, description="Views (mask levels, forward passes) per estimate (reference: 2).")
        block_length: int | None = Field(
            None, ge=1, description="Block size of the block_random masks; None uses the rollout's sampler block length."
        )
        min_t: float = Field(0.0, ge=0, le=1, description="Smallest masked fraction of the chosen block (reference: 0).")
        max_t: float = Field(1.0, ge=0, le=1, description="Largest masked fraction of the chosen block (reference: 1).")
        p_mask_prompt: float = Field(
            0.15, ge=0, le=1, description="Probability of masking each clean context token (prompt and earlier "
            "blocks); 0 turns it off (reference use_mask_prompt with 0.15)."
        )

    def loss_passes(self, *, gen_length: int, block_length: int, steps: int,
                    selected_steps: int) -> tuple[remask.ForwardPass, ...]:
        """num_t block-masked views."""
        return (remask.ForwardPass(),) * self.config.num_t

    def prepare(self, *, rollout, advantages, selection, context) -> SPGState:
        c = self.config
        advantages = row_advantages(advantages, rollout.batch_size, objective="spg",
                                    hint="use advantage: group-mean (SPG: r − group mean)")
        block = c.block_length or rollout.block_length
        if rollout.gen_length % block or c.num_t > rollout.gen_length // block:
            raise RemaskError(
                f"objective spg: gen_length {rollout.gen_length} must be a multiple of block_length {block} with at "
                f"least num_t = {c.num_t} blocks; set objective.block_length or objective.num_t"
            )
        device = context.device
        seeds = c.inner_step_seeds(context.generator, context.inner_steps)
        prompts = rollout.prompts
        ids = rollout.completion_ids.to(device)
        _, attention = full_sequence(prompts, ids)
        views = tuple(
            views_to(block_random_views(prompts.prompt_ids, prompts.attention_mask, rollout.completion_ids,
                                        rollout.completion_mask, context.policy.mask_token_id, block_length=block,
                                        num_t=c.num_t, seed=s, min_t=c.min_t, max_t=c.max_t,
                                        p_mask_prompt=c.p_mask_prompt), device)
            for s in seeds
        )
        return SPGState(views=views, attention_mask=attention, completion_ids=ids,
                        completion_mask=rollout.completion_mask.to(device).bool(),
                        advantages=advantages.to(device).float())

    def loss(self, state: SPGState, *, inner_step: int, context) -> remask.LossOutput:
        c = self.config
        views = state.views[inner_step % len(state.views)]
        logps = view_logprobs(context.policy, views, state.attention_mask, state.completion_ids)  # [N, B, L]
        positive = state.advantages > 0  # [B]
        seq = spg_sequence_logps(logps, views.masked, state.completion_mask, positive,
                                 negative_bound=c.negative_bound, eubo_beta=c.eubo_beta, mix_weight=c.mix_weight)
        lengths = state.completion_mask.sum(-1)  # [B]
        loss = spg_loss(seq, state.advantages, lengths)
        with torch.no_grad():
            metrics = {
                "spg/lower_bound": float(lower_bound(logps.detach(), views.masked).mean()),
                "spg/positive_fraction": float(positive.float().mean()),
            }
        return remask.LossOutput(loss=loss, metrics=metrics, forward_passes=views.num_views)
