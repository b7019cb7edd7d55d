"""The ``grpo`` and ``d1`` policy objectives.

Both are the clipped surrogate of :func:`remask_grpo.losses.policy_gradient_loss` over a seeded
likelihood estimator (:mod:`remask.likelihood`). What happens once per rollout (``prepare``,
no grad) and per inner update (``loss``):

``prepare``  draws M mask seeds from ``ctx.generator`` (M = μ with ``random_masking``, else one fixed
             seed), builds the noisy views of every seed, and scores them with the old policy
             (only when μ > 1) and the reference (only when β ≠ 0): ``ℓ_old^{(m)}``, ``ℓ_ref^{(m)}``.
``loss``     inner step m uses views m: ``ℓ_θ^{(m)}`` with grad, ρ = exp(ℓ_θ^{(m)} − ℓ_old^{(m)})
             (``ℓ_old = stop_grad(ℓ_θ)`` when μ = 1, so ρ ≡ 1), k3 KL against ``ℓ_ref^{(m)}``.

The policy, the old policy and the reference always see the *same* masked inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.errors import RemaskError
from remask.functional import full_sequence, masked_mean, row_advantages
from remask.likelihood import (
    SEED_HIGH,
    NoisyViews,
    draw_mask_seeds,
    elbo_views,
    inner_step_seeds,
    one_step_views,
    token_logprobs,
    views_to,
)

from .losses import Normalisation, inner_iteration_index, policy_gradient_loss

__all__ = ["PolicyGradientState", "GRPOObjective", "D1Objective", "draw_mask_seeds"]

@dataclass(frozen=True)
class PolicyGradientState:
    """What ``prepare`` computed for one micro-batch; handed back to ``loss`` untouched."""

    views: tuple[NoisyViews, ...]  # M view sets, one per distinct mask seed
    attention_mask: Tensor  # [B, P+L] bool
    completion_ids: Tensor  # [B, L] long
    completion_mask: Tensor  # [B, L] bool
    advantages: Tensor  # [B] float32
    old_logps: Tensor | None  # [M, B, L] ℓ_old^{(m)}; None when μ = 1 (ℓ_old = stop_grad ℓ_θ)
    ref_logps: Tensor | None  # [M, B, L] ℓ_ref^{(m)}; None when β = 0
    prepare_forward_passes: int  # forwards spent in prepare (old policy + reference)

    @property
    def num_masks(self) -> int:
        return len(self.views)

    @property
    def mask_seeds(self) -> tuple[int, ...]:
        return tuple(v.seed for v in self.views)


def _check_advantages(advantages: Tensor, batch: int, where: str) -> Tensor:
    return row_advantages(advantages, batch, objective=where,
                          hint="use a per-row advantage estimator (group-mean, group-mean-std, rloo)")


def prepare_policy_gradient(
    *,
    rollout: remask.Rollout,
    advantages: Tensor,  # [B]
    context: remask.StepContext,
    seeds: list[int],
    build_views: Callable[[Tensor, Tensor, Tensor, int, int], NoisyViews],
    need_reference: bool,
    where: str,
) -> PolicyGradientState:
    """Build the seeded views and score them with the old policy and the reference (no grad)."""
    device = context.device
    adv = _check_advantages(advantages, rollout.batch_size, where).to(device)
    prompts = rollout.prompts
    completion_ids = rollout.completion_ids.to(device)  # [B, L]
    _, attention = full_sequence(prompts, completion_ids)  # [B, P+L]
    mask_id = context.policy.mask_token_id
    views = tuple(
        views_to(build_views(prompts.prompt_ids, prompts.attention_mask, rollout.completion_ids, mask_id, s), device)
        for s in seeds
    )
    passes = 0
    old = ref = None
    with torch.no_grad():
        if context.inner_steps > 1:
            old = torch.stack([token_logprobs(context.policy, v, attention, completion_ids) for v in views])  # [M, B, L]
            passes += sum(v.num_views for v in views)
        if need_reference:
            if context.reference is None:
                raise RemaskError(
                    f"objective {where}: beta != 0 needs the reference policy, but the engine provided none "
                    "(set objective.beta: 0 or let the engine keep a reference)"
                )
            ref = torch.stack([token_logprobs(context.reference, v, attention, completion_ids) for v in views])  # [M, B, L]
            passes += sum(v.num_views for v in views)
    return PolicyGradientState(
        views=views,
        attention_mask=attention,
        completion_ids=completion_ids,
        completion_mask=rollout.completion_mask.to(device).bool(),
        advantages=adv,
        old_logps=old,
        ref_logps=ref,
        prepare_forward_passes=passes,
    )


def policy_gradient_step_loss(
    state: PolicyGradientState,
    mask_index: int,
    context: remask.StepContext,
    *,
    eps_low: float,
    eps_high: float | None,
    beta: float,
    normalisation: Normalisation,
    count_prepare: bool,
) -> remask.LossOutput:
    """The loss of one inner update with the views, old and reference log-probs of ``mask_index``."""
    m = mask_index % state.num_masks
    views = state.views[m]
    logp = token_logprobs(context.policy, views, state.attention_mask, state.completion_ids)  # [B, L]
    old = logp.detach() if state.old_logps is None else state.old_logps[m]  # [B, L]
    ref = None if state.ref_logps is None else state.ref_logps[m]  # [B, L]
    terms = policy_gradient_loss(
        logp, old, state.advantages, state.completion_mask,
        ref_logp=ref, eps_low=eps_low, eps_high=eps_high, beta=beta, normalisation=normalisation,
    )
    metrics = {k: float(v) for k, v in terms.clip.items()}
    if terms.kl is not None:
        metrics["kl"] = float(masked_mean(terms.kl.detach(), state.completion_mask))
    passes = views.num_views + (state.prepare_forward_passes if count_prepare else 0)
    return remask.LossOutput(loss=terms.loss, metrics=metrics, forward_passes=passes)


class GRPOObjective(remask.PolicyObjective):
    """GRPO for dLLMs: clipped surrogate + k3 KL over a one-step or ELBO likelihood estimator."""

    name = "grpo"

    class Config(remask.ComponentConfig):
        epsilon: float = Field(0.2, gt=0, description="ε (ε_low): the ratio is clipped below at 1 − ε.")
        epsilon_high: float | None = Field(
            None, gt=0, description="ε_high: clip above at 1 + ε_high (asymmetric, DAPO); None uses epsilon."
        )
        beta: float = Field(0.04, ge=0, description="β: weight of the k3 KL to the reference; 0 drops the reference.")
        normalisation: Literal["per_token", "per_sequence"] = Field(
            "per_token",
            description="per_token: one mean over all completion tokens of the micro-batch (TRL >= 0.16, d1); "
            "per_sequence: mean per sequence, then over sequences (DeepSeekMath, older TRL).",
        )
        likelihood: Literal["one-step", "elbo"] = Field(
            "one-step",
            description="Log-prob estimator: d1's one-step estimator (completion fully masked) or the "
            "Monte-Carlo masked-diffusion ELBO (t ~ U(0,1], 1/t weights).",
        )
        p_mask_prompt: float = Field(
            0.15, ge=0, le=1, description="one-step only: probability of masking each prompt token."
        )
        n_mc: int = Field(2, ge=1, description="elbo only: Monte-Carlo samples (forward passes) per estimate.")
        random_masking: bool = Field(
            True, description="Draw a new mask seed per inner iteration from the likelihood stream; "
            "False uses mask_seed for every iteration and step."
        )
        mask_seed: int = Field(42, description="The fixed mask seed when random_masking is False.")

    @property
    def uses_reference(self) -> bool:  # type: ignore[override]
        """The reference policy is only needed for the KL term (β ≠ 0)."""
        return self.config.beta != 0.0

    def _build_views(self, prompt_ids: Tensor, prompt_attn: Tensor, completion_ids: Tensor, mask_id: int,
                     seed: int) -> NoisyViews:
        c = self.config
        if c.likelihood == "one-step":
            return one_step_views(prompt_ids, prompt_attn, completion_ids, mask_id, p_mask_prompt=c.p_mask_prompt, seed=seed)
        return elbo_views(prompt_ids, completion_ids, mask_id, n_mc=c.n_mc, seed=seed)

    def loss_passes(self, *, gen_length: int, block_length: int, steps: int,
                    selected_steps: int) -> tuple[remask.ForwardPass, ...]:
        """One pass per view: 1 (one-step) or n_mc (ELBO)."""
        return (remask.ForwardPass(),) * (1 if self.config.likelihood == "one-step" else self.config.n_mc)

    def prepare(self, *, rollout, advantages, selection, context) -> PolicyGradientState:
        c = self.config
        seeds = inner_step_seeds(context.generator, context.inner_steps, random_masking=c.random_masking,
                                 fixed_seed=c.mask_seed)
        return prepare_policy_gradient(
            rollout=rollout, advantages=advantages, context=context, seeds=seeds,
            build_views=self._build_views, need_reference=self.uses_reference, where=self.name,
        )

    def loss(self, state: PolicyGradientState, *, inner_step: int, context) -> remask.LossOutput:
        c = self.config
        return policy_gradient_step_loss(
            state, inner_iteration_index(inner_step, max(1, context.inner_steps)), context,
            eps_low=c.epsilon, eps_high=c.epsilon_high, beta=c.beta, normalisation=c.normalisation,
            count_prepare=inner_step == 0,
        )


class D1Objective(remask.PolicyObjective):
    """d1 / diffu-GRPO: token-mean clipped surrogate + k3 KL, one-step estimator with seeded prompt masks."""

    name = "d1"

    class Config(remask.ComponentConfig):
        epsilon: float = Field(0.5, gt=0, description="ε: the ratio is clipped to [1 − ε, 1 + ε] (d1 uses 0.5).")
        beta: float = Field(0.04, ge=0, description="β: weight of the k3 KL to the reference; 0 drops the reference.")
        p_mask_prompt: float = Field(
            0.15, ge=0, le=1, description="Probability of masking each prompt token (d1 train.yaml 0.15; code default 0.3)."
        )
        random_masking: bool = Field(
            True, description="A new mask seed per inner iteration (d1 random_masking); False always uses mask_seed."
        )
        mask_seed: int = Field(42, description="The fixed mask seed when random_masking is False (d1 uses 42).")
        mask_seed_high: int = Field(
            SEED_HIGH, ge=1, description="Seeds are drawn from [0, mask_seed_high); d1's code uses 4096."
        )
        mask_index: Literal["inner-step", "d1-micro-batch-counter"] = Field(
            "inner-step",
            description="Which mask a loss call uses: the engine's inner step m (every micro-batch sees all mu "
            "masks), or d1's counter of loss calls mod mu (with gradient accumulation a micro-batch sees only "
            "some masks; spec trap 3.2.5).",
        )

    def __init__(self, config: remask.ComponentConfig | None = None) -> None:
        super().__init__(config)
        self._loss_calls = 0  # d1's `_step`: loss calls so far (micro-batches), for mask_index=d1-micro-batch-counter

    @property
    def uses_reference(self) -> bool:  # type: ignore[override]
        """The reference policy is only needed for the KL term (β ≠ 0)."""
        return self.config.beta != 0.0

    def _build_views(self, prompt_ids: Tensor, prompt_attn: Tensor, completion_ids: Tensor, mask_id: int,
                     seed: int) -> NoisyViews:
        return one_step_views(prompt_ids, prompt_attn, completion_ids, mask_id,
                              p_mask_prompt=self.config.p_mask_prompt, seed=seed)

    def prepare(self, *, rollout, advantages, selection, context) -> PolicyGradientState:
        c = self.config
        seeds = inner_step_seeds(context.generator, context.inner_steps, random_masking=c.random_masking,
                                 fixed_seed=c.mask_seed, high=c.mask_seed_high)
        return prepare_policy_gradient(
            rollout=rollout, advantages=advantages, context=context, seeds=seeds,
            build_views=self._build_views, need_reference=self.uses_reference, where=self.name,
        )

    def mask_index_for(self, inner_step: int, inner_steps: int) -> int:
        """The seed index m of the next loss call (advances d1's counter in that mode)."""
        if self.config.mask_index == "d1-micro-batch-counter":
            self._loss_calls += 1  # d1 increments `_step` before compute_loss
            return inner_iteration_index(self._loss_calls, inner_steps)
        return inner_iteration_index(inner_step, inner_steps)

    def loss(self, state: PolicyGradientState, *, inner_step: int, context) -> remask.LossOutput:
        c = self.config
        m = self.mask_index_for(inner_step, max(1, context.inner_steps))
        return policy_gradient_step_loss(
            state, m, context, eps_low=c.epsilon, eps_high=None, beta=c.beta,
            normalisation="per_token", count_prepare=inner_step == 0,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"loss_calls": self._loss_calls}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._loss_calls = int(state.get("loss_calls", 0))
