"""The ``espo`` objective: ESPO's sequence-level clipped surrogate on the fixed-count ELBO.

``prepare`` (no grad) draws one mask seed per inner step from the likelihood stream, builds the
fixed-count ELBO views of each seed (:func:`remask.likelihood.fixed_count_views`: ``k ~ U{0..u}``,
stratified across the rows, plus the complementary view: ESPO's ``forward_process`` with
``reduce_var``) and scores them with the old policy (μ > 1) and the reference (β ≠ 0). ``loss`` scores
inner step ``m``'s views with the policy and applies :func:`remask_espo.loss.espo_loss`.
Reference code: ``ML-GSAI/ESPO`` @ ``b5f2dac``, ``ESPOTrainer``; see docs/algorithms/espo.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.errors import RemaskError
from remask.functional import full_sequence, row_advantages
from remask.likelihood import MaskSeedConfig, NoisyViews, fixed_count_views, token_logprobs, views_to

from .loss import espo_loss

__all__ = ["ESPOObjective", "ESPOState"]


@dataclass(frozen=True)
class ESPOState:
    views: tuple[NoisyViews, ...]  # one fixed-count view set per distinct mask seed
    attention_mask: Tensor  # [B, P+L] bool
    completion_ids: Tensor  # [B, L] long
    length: Tensor  # [B] float32, L in ρ = exp(ΔE / L)
    advantages: Tensor  # [B]
    old_elbo: Tensor | None  # [M, B]; None when μ = 1 (E_old = stop_grad E_θ)
    ref_elbo: Tensor | None  # [M, B]; None when β = 0
    prepare_forward_passes: int


class ESPOObjective(remask.PolicyObjective):
    """ESPO: clip(exp((E_θ − E_old)/L)) · A with E the ELBO, plus β·k2 KL on the ELBOs."""

    name = "espo"

    class Config(MaskSeedConfig):
        epsilon: float = Field(0.2, gt=0, description="ε_low: the ratio is clipped below at 1 − ε (ESPO train.yaml 0.2).")
        epsilon_high: float | None = Field(
            None, gt=0, description="ε_high: clip above at 1 + ε_high; None uses epsilon (ESPO's default)."
        )
        beta: float = Field(1e-3, ge=0, description="β: weight of the KL on sequence ELBOs (GSM8K recipe 1e-3; 0 drops the reference).")
        kl_estimator: Literal["k2", "k3"] = Field(
            "k2", description="KL estimator on the ELBOs: k2 = (E_θ − E_ref)²/2 (ESPO) or k3."
        )
        n_mc: int = Field(2, ge=1, description="Monte-Carlo mask draws per ELBO (num_mc; GSM8K recipe 2, train.yaml 1).")
        complementary: bool = Field(
            True, description="Add the complementary view of every draw (ESPO reduce_var): 2 forwards per draw."
        )
        stratified: bool = Field(
            True, description="Spread the mask counts of the micro-batch's rows evenly over 0..u (ESPO's linspace offsets)."
        )
        span: Literal["all", "eos"] = Field(
            "all",
            description="Positions the ELBO covers and masks: 'all' L generated positions, EOS padding included "
            "(ESPO's code), or 'eos' the completion through the first EOS.",
        )
        ratio_length: Literal["gen_length", "span"] = Field(
            "gen_length", description="L in ρ = exp(ΔE/L) and the KL mean: the generation length (ESPO) or each "
            "row's span length."
        )

    @property
    def uses_reference(self) -> bool:  # type: ignore[override]
        """The reference policy is only needed for the KL term (β ≠ 0)."""
        return self.config.beta != 0.0

    def _elbo(self, model: remask.DiffusionModel, views: NoisyViews, attention: Tensor, ids: Tensor) -> Tensor:
        return token_logprobs(model, views, attention, ids).sum(-1)  # [B]; weights are 0 outside the span

    def loss_passes(self, *, gen_length: int, block_length: int, steps: int,
                    selected_steps: int) -> tuple[remask.ForwardPass, ...]:
        """n_mc fixed-count views, doubled by their complements with ``complementary``."""
        return (remask.ForwardPass(),) * (self.config.n_mc * (2 if self.config.complementary else 1))

    def prepare(self, *, rollout, advantages, selection, context) -> ESPOState:
        c = self.config
        advantages = row_advantages(advantages, rollout.batch_size, objective="espo",
                                    hint="use advantage: rloo (ESPO's leave-one-out baseline)")
        device = context.device
        seeds = c.inner_step_seeds(context.generator, context.inner_steps)
        prompts = rollout.prompts
        ids = rollout.completion_ids.to(device)  # [B, L]
        _, attention = full_sequence(prompts, ids)  # [B, P+L]
        span = None if c.span == "all" else rollout.completion_mask.bool()  # [B, L]
        views = tuple(
            views_to(fixed_count_views(prompts.prompt_ids, rollout.completion_ids, context.policy.mask_token_id,
                                       n_mc=c.n_mc, seed=s, span=span, include_zero=True,
                                       stratified=c.stratified, complementary=c.complementary), device)
            for s in seeds
        )
        if c.ratio_length == "gen_length":
            length = torch.full((rollout.batch_size,), float(rollout.gen_length), device=device)
        else:
            length = (torch.ones_like(rollout.completion_mask) if span is None else span).sum(-1).float().clamp_min(1).to(device)
        passes = 0
        old = ref = None
        with torch.no_grad():
            if context.inner_steps > 1:
                old = torch.stack([self._elbo(context.policy, v, attention, ids) for v in views])  # [M, B]
                passes += sum(v.num_views for v in views)
            if self.uses_reference:
                if context.reference is None:
                    raise RemaskError("objective espo: beta != 0 needs the reference policy, but the engine gave none "
                                      "(set objective.beta: 0)")
                ref = torch.stack([self._elbo(context.reference, v, attention, ids) for v in views])  # [M, B]
                passes += sum(v.num_views for v in views)
        return ESPOState(views=views, attention_mask=attention, completion_ids=ids, length=length,
                         advantages=advantages.to(device).float(), old_elbo=old, ref_elbo=ref,
                         prepare_forward_passes=passes)

    def loss(self, state: ESPOState, *, inner_step: int, context) -> remask.LossOutput:
        c = self.config
        m = inner_step % len(state.views)
        views = state.views[m]
        elbo = self._elbo(context.policy, views, state.attention_mask, state.completion_ids)  # [B]
        old = elbo.detach() if state.old_elbo is None else state.old_elbo[m]
        ref = None if state.ref_elbo is None else state.ref_elbo[m]
        terms = espo_loss(elbo, old, state.advantages, state.length, eps_low=c.epsilon, eps_high=c.epsilon_high,
                          ref_elbo=ref, beta=c.beta, kl_estimator=c.kl_estimator)
        with torch.no_grad():
            eh = c.epsilon if c.epsilon_high is None else c.epsilon_high
            r, a = terms.ratio.detach(), state.advantages
            metrics = {
                "espo/elbo": float(elbo.detach().mean()),
                "clip_ratio/low_mean": float(((r < 1 - c.epsilon) & (a < 0)).float().mean()),
                "clip_ratio/high_mean": float(((r > 1 + eh) & (a > 0)).float().mean()),
            }
            if terms.kl is not None:
                metrics["kl"] = float((terms.kl / state.length).mean())
        passes = views.num_views + (state.prepare_forward_passes if inner_step == 0 else 0)
        return remask.LossOutput(loss=terms.loss, metrics=metrics, forward_passes=passes)
