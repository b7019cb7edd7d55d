"""The ``coupled-grpo`` objective: GRPO over DiffuCoder's coupled likelihood estimate (arXiv 2506.20639).

``prepare`` (no grad, once per micro-batch) draws one mask seed per inner step from the likelihood
stream (:func:`remask.likelihood.inner_step_seeds`), builds the coupled views of each seed
(:func:`remask.likelihood.coupled_views`: full mask, ``u < t``, ``u ≥ t``), and scores them with the
old policy (only μ > 1) and the reference (only β ≠ 0) through :func:`remask.likelihood.token_logprobs`.
``loss`` scores the views of its seed with the policy and applies :func:`remask_coupled_grpo.loss.coupled_grpo_loss`.
The policy, the old policy and the reference always see identical masked inputs. Reference code:
``apple/ml-diffucoder`` @ ``f735e01``, ``src/open_r1/coupled_grpo.py``; see docs/algorithms/coupled-grpo.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

import remask
from remask.errors import RemaskError
from remask.functional import full_sequence, masked_mean, row_advantages
from remask.likelihood import MaskSeedConfig, NoisyViews, coupled_views, token_logprobs, views_to

from .loss import coupled_grpo_loss

__all__ = ["CoupledGRPOObjective", "CoupledState"]


@dataclass(frozen=True)
class CoupledState:
    """What ``prepare`` computed for one micro-batch."""

    views: tuple[NoisyViews, ...]  # M coupled view sets, one per mask seed
    attention_mask: Tensor  # [B, P+L] bool
    completion_ids: Tensor  # [B, L] long
    completion_mask: Tensor  # [B, L] bool
    advantages: Tensor  # [B] float32
    old_logps: Tensor | None  # [M, B, L] ℓ̃_old^{(m)}; None when μ = 1
    ref_logps: Tensor | None  # [M, B, L] ℓ̃_ref^{(m)}; None when β = 0
    prepare_forward_passes: int


class CoupledGRPOObjective(remask.PolicyObjective):
    """Coupled-GRPO: token-mean clipped surrogate + k3 KL on the coupled (full + complementary pair) estimate."""

    name = "coupled-grpo"

    class Config(MaskSeedConfig):
        epsilon: float = Field(0.5, gt=0, description="ε_low: the ratio is clipped below at 1 − ε (DiffuCoder 0.5).")
        epsilon_high: float | None = Field(
            None, gt=0, description="ε_high: clip above at 1 + ε_high; None uses epsilon (DiffuCoder leaves it unset)."
        )
        beta: float = Field(0.01, ge=0, description="β: weight of the k3 KL on the coupled estimates (DiffuCoder 0.01).")
        t_low: float = Field(0.2, gt=0, lt=1, description="Lower end of the mask ratio t ~ U(t_low, t_high) (code: 0.2).")
        t_high: float = Field(0.8, gt=0, lt=1, description="Upper end of the mask ratio t ~ U(t_low, t_high) (code: 0.8).")
        t_per: Literal["batch", "row"] = Field(
            "batch", description="One t per mask seed for the whole micro-batch (the official code), or one per row."
        )
        full_view: bool = Field(
            True, description="Average in the fully masked view x^(0) (the code does; the README only names the pair)."
        )
        pair_reduction: Literal["sum", "mean"] = Field(
            "sum", description="sum: ½·full + the pair's sum (the code; ≈1.5× a log-prob for a context-free model); "
            "mean: ½·full + the pair's mean."
        )
        mask_index: Literal["inner-step", "micro-batch-counter"] = Field(
            "inner-step",
            description="Which seed a loss call uses: the engine's inner step m, or the official code's counter of "
            "loss calls mod mu (with gradient accumulation a micro-batch then sees only some seeds; spec §1.5).",
        )

        @model_validator(mode="after")
        def _t_range(self):
            if self.t_low > self.t_high:
                raise ValueError(f"t_low ({self.t_low}) must not exceed t_high ({self.t_high})")
            return self

    def __init__(self, config: remask.ComponentConfig | None = None) -> None:
        super().__init__(config)
        self._loss_calls = 0  # the official `_step`, for mask_index=micro-batch-counter

    @property
    def uses_reference(self) -> bool:  # type: ignore[override]
        """The reference is only needed for the KL term (β ≠ 0)."""
        return self.config.beta != 0.0

    def loss_passes(self, *, gen_length: int, block_length: int, steps: int,
                    selected_steps: int) -> tuple[remask.ForwardPass, ...]:
        """The complementary pair of views, plus the fully masked one with ``full_view``."""
        return (remask.ForwardPass(),) * (3 if self.config.full_view else 2)

    def prepare(self, *, rollout, advantages, selection, context) -> CoupledState:
        c = self.config
        advantages = row_advantages(advantages, rollout.batch_size, objective="coupled-grpo",
                                    hint="use advantage: rloo (DiffuCoder's leave-one-out)")
        device = context.device
        seeds = c.inner_step_seeds(context.generator, context.inner_steps)
        prompts = rollout.prompts
        completion_ids = rollout.completion_ids.to(device)  # [B, L]
        _, attention = full_sequence(prompts, completion_ids)  # [B, P+L]
        views = tuple(
            views_to(coupled_views(prompts.prompt_ids, rollout.completion_ids, context.policy.mask_token_id, seed=s,
                                   t_low=c.t_low, t_high=c.t_high, t_per=c.t_per, full_view=c.full_view,
                                   pair_reduction=c.pair_reduction), device)
            for s in seeds
        )
        passes = 0
        old = ref = None
        with torch.no_grad():
            if context.inner_steps > 1:
                old = torch.stack([token_logprobs(context.policy, v, attention, completion_ids) for v in views])
                passes += sum(v.num_views for v in views)
            if self.uses_reference:
                if context.reference is None:
                    raise RemaskError("objective coupled-grpo: beta != 0 needs the reference policy, but the engine "
                                      "provided none (set objective.beta: 0 or let the engine keep a reference)")
                ref = torch.stack([token_logprobs(context.reference, v, attention, completion_ids) for v in views])
                passes += sum(v.num_views for v in views)
        return CoupledState(views=views, attention_mask=attention, completion_ids=completion_ids,
                            completion_mask=rollout.completion_mask.to(device).bool(),
                            advantages=advantages.to(device).float(), old_logps=old, ref_logps=ref,
                            prepare_forward_passes=passes)

    def mask_index_for(self, inner_step: int, inner_steps: int) -> int:
        """The seed index of the next loss call (advances the official counter in that mode)."""
        if self.config.mask_index == "micro-batch-counter":
            self._loss_calls += 1  # the official code increments `_step` before compute_loss
            return self._loss_calls % inner_steps
        return inner_step % inner_steps

    def loss(self, state: CoupledState, *, inner_step: int, context) -> remask.LossOutput:
        c = self.config
        m = self.mask_index_for(inner_step, max(1, context.inner_steps)) % len(state.views)
        views = state.views[m]
        logp = token_logprobs(context.policy, views, state.attention_mask, state.completion_ids)  # [B, L]
        old = logp.detach() if state.old_logps is None else state.old_logps[m]
        ref = None if state.ref_logps is None else state.ref_logps[m]
        terms = coupled_grpo_loss(logp, old, state.advantages, state.completion_mask, ref_logp=ref,
                                  eps_low=c.epsilon, eps_high=c.epsilon_high, beta=c.beta)
        mask = state.completion_mask
        metrics = {
            "clip_ratio/low_mean": float(masked_mean(terms.low_clipped.float(), mask)),
            "clip_ratio/high_mean": float(masked_mean(terms.high_clipped.float(), mask)),
            "clip_ratio/region_mean": float(masked_mean((terms.low_clipped | terms.high_clipped).float(), mask)),
            "coupled-grpo/coupled_logp": float(masked_mean(logp.detach(), mask)),
        }
        if terms.kl is not None:
            metrics["kl"] = float(masked_mean(terms.kl.detach(), mask))
        passes = views.num_views + (state.prepare_forward_passes if inner_step == 0 else 0)
        return remask.LossOutput(loss=terms.loss, metrics=metrics, forward_passes=passes)

    def state_dict(self) -> dict[str, Any]:
        return {"loss_calls": self._loss_calls}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._loss_calls = int(state.get("loss_calls", 0))
