"""EGSPO's per-step clipped policy objective (arXiv 2603.12554; spec algorithms.md §3.3).

Denoising is an MDP whose action at step ``k`` is the next state; with a confidence sampler the
transition probability factorises over the positions ``I_k`` committed at that step, so the exact
per-step log-probability is (one forward pass on the rebuilt state ``x_k``)

    ℓ_θ(k) = Σ_{i ∈ I_k} log p_θ(x^i | x_k)

For each selected step the loss is PPO's asymmetric clipped surrogate plus a KL penalty, averaged
over rows and divided by the tokens committed per step ``L / T``::

    ρ     = exp(ℓ_θ(k) − ℓ_old(k))
    L_j   = −min(ρ A_{j,c}, clip(ρ, 1 − ε_low, 1 + ε_high) A_{j,c}) + β KL_j
    KL_j  = exp(ℓ_ref − ℓ_θ) − (ℓ_ref − ℓ_θ) − 1          (k3 on the step sums)
          | Σ_{i ∈ I_k} Σ_v p_θ(v) (log p_θ(v) − log p_ref(v))   (exact, kl: exact)
    loss  = mean_j L_j / (L / T)

Schedule (``schedule: cycle``, the reference's): inner update ``n`` trains selected-step rank
``c = n mod K`` only, so ``train.inner_steps`` must be ``K × (updates per selected step)``.
``schedule: all`` trains every selected step at each inner update (K forward passes per update).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.errors import RemaskError
from remask.functional import clipped_surrogate, k3_kl, masked_mean
from remask.likelihood import completion_logits, step_logprob_sums  # the exact per-step transition log-prob

__all__ = ["step_logprob_sums", "exact_step_kl", "egspo_step_loss", "EGSPOObjective", "EGSPOState"]


def exact_step_kl(logp: Tensor, ref_logp: Tensor, row_index: Tensor, batch_size: int) -> Tensor:
    """``Σ_{i ∈ I_k} Σ_v p_θ(v|i)(log p_θ(v|i) − log p_ref(v|i))`` per row (the reference's use_exact_kl).

    logp, ref_logp ``[n, V]`` log-softmaxes at the committed positions of all rows, row_index ``[n]``
    -> ``[B]``.
    """
    per_position = (logp.exp() * (logp - ref_logp)).sum(-1)  # [n]
    out = torch.zeros(batch_size, dtype=per_position.dtype, device=per_position.device)
    return out.index_add(0, row_index.to(per_position.device), per_position)


def egspo_step_loss(
    step_logps: Tensor,  # [B, C] ℓ_θ(k) for C selected steps
    old_step_logps: Tensor,  # [B, C] ℓ_old(k)
    advantages: Tensor,  # [B, C]
    weight: Tensor,  # [B, C] 0 where the step is invalid or I_k = ∅
    *,
    epsilon_low: float,
    epsilon_high: float,
    beta: float = 0.0,
    kl: Tensor | None = None,  # [B, C]
    tokens_per_step: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """EGSPO's loss for C selected steps: clipped surrogate + β KL, weighted mean, ``/ (L/T)``.

    Returns ``(loss [], ratio [B, C], per_entry [B, C])`` (spec §9.4 cases 14, 15).
    """
    ratio = torch.exp(step_logps - old_step_logps)  # [B, C]
    per_entry, _ = clipped_surrogate(ratio, advantages, epsilon_low, epsilon_high)  # [B, C]
    if beta and kl is not None:
        per_entry = per_entry + beta * kl
    w = weight.to(per_entry.dtype)
    loss = (per_entry * w).sum() / w.sum().clamp_min(1.0) / tokens_per_step
    return loss, ratio, per_entry


@dataclass
class EGSPOState:
    """What :meth:`EGSPOObjective.prepare` computed for one micro-batch."""

    prompts: remask.PromptBatch
    completion_ids: Tensor  # [B, L]
    states: Tensor  # [B, K, L] x_k for every selected step
    committed: Tensor  # [B, K, L] bool I_k
    weight: Tensor  # [B, K] float, 0 where invalid or I_k = ∅
    advantages: Tensor  # [B, K]
    old_logps: Tensor  # [B, K]
    ref_logps: Tensor | None  # [B, K]
    ref_dists: list[Tensor] | None  # K x [n_c, V] reference log-softmax at committed positions
    tokens_per_step: float
    cycle: bool
    prepare_forwards: int
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def num_selected(self) -> int:
        return int(self.states.shape[1])


class EGSPOObjective(remask.PolicyObjective):
    """EGSPO: exact per-step transition log-probs, asymmetric clip, KL, one selected step per update."""

    name = "egspo"

    class Config(remask.ComponentConfig):
        epsilon_low: float = Field(0.2, ge=0.0, lt=1.0, description="ε_low: ratios below 1 − ε_low are clipped.")
        epsilon_high: float = Field(0.5, ge=0.0, description="ε_high: ratios above 1 + ε_high are clipped.")
        beta: float = Field(0.04, ge=0.0, description="β: weight of the KL penalty to the reference policy.")
        kl: Literal["k3", "exact"] = Field(
            "k3",
            description="'k3': Schulman's k3 on the step log-prob sums; 'exact': Σ_i Σ_v p_θ (log p_θ − log p_ref) "
            "over the committed positions (stores the reference distributions of those positions).",
        )
        old_logps: Literal["auto", "sampler", "recompute"] = Field(
            "auto",
            description="Old-policy step log-probs: 'sampler' uses rollout.step_logps (the reference), "
            "'recompute' runs one forward pass per selected step in prepare (ratio exactly 1 at the first "
            "update without dropout), 'auto' uses the sampler's when recorded.",
        )
        schedule: Literal["cycle", "all"] = Field(
            "cycle",
            description="'cycle': inner update n trains selected step n mod K (the reference; set "
            "train.inner_steps = K x updates per step); 'all': every selected step at each update.",
        )
        divide_by_tokens_per_step: bool = Field(
            True, description="Divide the loss by the tokens committed per step, L / T (the reference's 'sum' mode)."
        )

    @property
    def uses_reference(self) -> bool:  # type: ignore[override]
        """The reference policy is only needed for the KL term (β > 0)."""
        return self.config.beta > 0

    # -- prepare ------------------------------------------------------------------------------

    def _selected(self, rollout: remask.Rollout, selection: remask.StepSelection | None) -> tuple[Tensor, Tensor, Tensor | None]:
        device = rollout.completion_ids.device
        if selection is None:
            # No step selector: every step of the trajectory, all trained at each update.
            b, t = rollout.batch_size, rollout.num_steps
            steps = torch.arange(t, device=device).unsqueeze(0).expand(b, -1)  # [B, T]
            return steps, torch.ones(b, t, dtype=torch.bool, device=device), None
        return selection.steps.to(device), selection.valid.to(device), selection.weights

    @staticmethod
    def _step_logps(model: remask.DiffusionModel, prompts: remask.PromptBatch, completion_ids: Tensor,
                    states: Tensor, committed: Tensor, c: int) -> tuple[Tensor, Tensor]:
        """``ℓ(k)`` of selected-step rank ``c`` under ``model``: ``([B], logits [B, L, V])``."""
        logits = completion_logits(model, prompts, states[:, c])  # [B, L, V]
        return step_logprob_sums(logits, completion_ids, committed[:, c]), logits

    def loss_passes(self, *, gen_length: int, block_length: int, steps: int,
                    selected_steps: int) -> tuple[remask.ForwardPass, ...]:
        """One selected step per update (``cycle``) or all K of them (``all``); with no selector
        (``selected_steps`` 0) every one of the T steps at each update, whatever the schedule."""
        if self.config.schedule == "cycle" and selected_steps:
            return (remask.ForwardPass(),)
        return (remask.ForwardPass(),) * max(1, selected_steps or steps)

    def prepare(
        self,
        *,
        rollout: remask.Rollout,
        advantages: Tensor,
        selection: remask.StepSelection | None,
        context: remask.StepContext,
    ) -> EGSPOState:
        cfg = self.config
        policy = context.policy
        steps, valid, sel_weights = self._selected(rollout, selection)  # [B, K]
        b, k = steps.shape
        cycle = cfg.schedule == "cycle" and selection is not None
        if cycle and context.inner_steps % k:
            raise RemaskError(
                f"objective 'egspo': train.inner_steps = {context.inner_steps} is not a multiple of the "
                f"K = {k} selected steps (schedule: cycle trains one selected step per inner update); "
                f"use {k}, {2 * k}, {3 * k}, ... or objective.schedule: all"
            )
        adv = advantages.to(steps.device).float()
        if adv.dim() == 1:
            adv = adv.unsqueeze(1).expand(b, k)  # [B, K]
        elif tuple(adv.shape) != (b, k):
            raise RemaskError(
                f"objective 'egspo': advantages of shape {tuple(adv.shape)} do not match the {k} selected steps "
                f"of {b} rows; use the `egspo-stepwise` estimator or one giving [B] advantages"
            )
        states, committed = remask.states_before_steps(
            rollout.completion_ids, rollout.unmask_step, steps, policy.mask_token_id
        )  # [B, K, L], [B, K, L]
        weight = (valid & committed.any(-1)).float()  # [B, K]: steps with I_k = ∅ contribute nothing
        if sel_weights is not None:
            weight = weight * sel_weights.to(weight.device).float()
        forwards = 0

        use_sampler = cfg.old_logps == "sampler" or (cfg.old_logps == "auto" and rollout.step_logps is not None)
        if use_sampler:
            if rollout.step_logps is None:
                raise RemaskError(
                    "objective 'egspo': old_logps: sampler, but the rollout has no step_logps; use a sampler "
                    "that records them or set old_logps: recompute"
                )
            old = torch.gather(rollout.step_logps.to(steps.device).float(), 1, steps)  # [B, K]
        else:
            old = torch.zeros(b, k, device=steps.device)
            for c in range(k):
                old[:, c], _ = self._step_logps(policy, rollout.prompts, rollout.completion_ids, states,
                                                committed, c)
                forwards += 1

        ref_logps = None
        ref_dists: list[Tensor] | None = None
        if cfg.beta > 0:
            reference = context.reference
            if reference is None:
                raise RemaskError("objective 'egspo': beta > 0 needs a reference policy, but the engine gave none")
            ref_logps = torch.zeros(b, k, device=steps.device)
            ref_dists = [] if cfg.kl == "exact" else None
            for c in range(k):
                ref_logps[:, c], logits = self._step_logps(reference, rollout.prompts, rollout.completion_ids,
                                                           states, committed, c)
                forwards += 1
                if ref_dists is not None:
                    picked = logits[committed[:, c].to(logits.device)]  # [n_c, V]
                    ref_dists.append(torch.log_softmax(picked.float(), -1))

        metrics: dict[str, float] = {}
        for key, value in (context.extras.get("egspo") or {}).items():
            metrics[f"egspo/{key}"] = float(value)
        tokens_per_step = rollout.gen_length / rollout.num_steps if cfg.divide_by_tokens_per_step else 1.0
        return EGSPOState(
            prompts=rollout.prompts, completion_ids=rollout.completion_ids, states=states, committed=committed,
            weight=weight, advantages=adv, old_logps=old.detach(), ref_logps=ref_logps, ref_dists=ref_dists,
            tokens_per_step=tokens_per_step, cycle=cycle, prepare_forwards=forwards, metrics=metrics,
        )

    # -- loss ---------------------------------------------------------------------------------

    def loss(self, state: EGSPOState, *, inner_step: int, context: remask.StepContext) -> remask.LossOutput:
        cfg = self.config
        policy = context.policy
        k = state.num_selected
        columns = [inner_step % k] if state.cycle else list(range(k))
        b = state.completion_ids.shape[0]
        logps, kls = [], []
        for c in columns:
            step_logp, logits = self._step_logps(policy, state.prompts, state.completion_ids, state.states,
                                                 state.committed, c)  # [B], [B, L, V]
            logps.append(step_logp)
            if cfg.beta > 0:
                if cfg.kl == "exact":
                    mask = state.committed[:, c].to(logits.device)  # [B, L]
                    rows = torch.arange(b, device=logits.device).unsqueeze(1).expand_as(mask)[mask]  # [n_c]
                    logp = torch.log_softmax(logits[mask].float(), -1)  # [n_c, V]
                    kls.append(exact_step_kl(logp, state.ref_dists[c].to(logp.device), rows, b))
                else:
                    kls.append(k3_kl(step_logp, state.ref_logps[:, c].to(step_logp.device)))
        idx = torch.tensor(columns, device=state.weight.device)
        step_logps = torch.stack(logps, 1)  # [B, C]
        kl = torch.stack(kls, 1) if kls else None  # [B, C]
        dev = step_logps.device
        adv = state.advantages[:, idx].to(dev)
        weight = state.weight[:, idx].to(dev)
        loss, ratio, _ = egspo_step_loss(
            step_logps, state.old_logps[:, idx].to(dev), adv, weight,
            epsilon_low=cfg.epsilon_low, epsilon_high=cfg.epsilon_high, beta=cfg.beta, kl=kl,
            tokens_per_step=state.tokens_per_step,
        )
        with torch.no_grad():
            r = ratio.detach()
            on = weight > 0
            low = (r < 1 - cfg.epsilon_low) & (adv < 0)
            high = (r > 1 + cfg.epsilon_high) & (adv > 0)
            metrics = {
                "clip_ratio/low_mean": float(masked_mean(low.float(), on)),
                "clip_ratio/high_mean": float(masked_mean(high.float(), on)),
                "clip_ratio/region_mean": float(masked_mean((low | high).float(), on)),
                "ratio_mean": float(masked_mean(r, on)),
            }
            if kl is not None:
                metrics["kl"] = float(masked_mean(kl.detach(), on))
            if inner_step == 0:
                metrics.update(state.metrics)
        forwards = len(columns) + (state.prepare_forwards if inner_step == 0 else 0)
        return remask.LossOutput(loss=loss, metrics=metrics, forward_passes=forwards)
