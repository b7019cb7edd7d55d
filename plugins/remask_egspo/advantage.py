"""EGSPO's stepwise advantages (arXiv 2603.12554; spec algorithms.md §3.3 "SA").

For each selected step ``k`` of a completion with final reward ``r(x_0)``, EGSPO-SA scores the
one-step greedy completion ``x̂_0(x_k)`` with the same reward models (``r̂_k``) and uses the return

    G_k = ( r(x_0) + λ (r(x_0) − r̂_k) ) / (1 + λ)            (normalize_returns; without it no /(1+λ))

A step whose greedy guess was already as good as the final answer gets a smaller return than a step
that still had work to do. The advantage subtracts the group mean per selected-step rank ``c``
(column ``c`` holds the c-th selected step of each row, which may be different time steps):

    A_{j,c} = G_{j,c} − mean_{j' ∈ group(j)} G_{j',c}             (group mean only, no std)

``λ = 0`` is plain EGSPO: ``A = r − mean r`` at every selected step, and no intermediate reward is
computed. ``standard_grpo_returns`` takes the baseline from the final rewards instead:
``A = (r − mean r) + λ (r − r̂_k)``, divided by ``1 + λ`` with ``normalize_returns``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.errors import RemaskError
from remask.functional import group_mean

from .states import completion_logits, completion_mask_through_eos, eval_mode, one_step_greedy

__all__ = [
    "stepwise_returns",
    "group_baseline_advantages",
    "standard_grpo_stepwise_advantages",
    "decayed_lambda",
    "EGSPOStepwiseAdvantage",
]


def stepwise_returns(final_rewards: Tensor, step_rewards: Tensor, lam: float, normalize: bool = True) -> Tensor:
    """``G_k = (r(x_0) + λ (r(x_0) − r̂_k)) / (1 + λ)`` (EGSPO-SA; spec §9.4 case 16).

    final_rewards ``[B]``, step_rewards ``[B, K]`` (``r̂_k``) -> ``[B, K]``.
    """
    r = final_rewards.unsqueeze(1)  # [B, 1]
    returns = r + lam * (r - step_rewards)  # [B, K]
    return returns / (1.0 + lam) if normalize else returns


def _masked_group_mean(values: Tensor, valid: Tensor, group_size: int) -> Tensor:
    """Mean over the valid entries of each group, per column, broadcast back. ``[B, K]``."""
    v = valid.to(values.dtype)
    total = group_mean(values * v, group_size)  # [B, K] (sum / G)
    count = group_mean(v, group_size)  # [B, K] (count / G)
    return torch.where(count > 0, total / count.clamp_min(1e-12), torch.zeros_like(total))


def group_baseline_advantages(returns: Tensor, valid: Tensor, group_size: int) -> Tensor:
    """``A_{j,c} = G_{j,c} − mean_{j' ∈ group} G_{j',c}`` over valid entries; 0 where invalid.

    returns ``[B, K]``, valid ``[B, K]`` bool -> ``[B, K]``.
    """
    adv = returns - _masked_group_mean(returns, valid, group_size)
    return torch.where(valid, adv, torch.zeros_like(adv))


def standard_grpo_stepwise_advantages(
    final_rewards: Tensor, step_rewards: Tensor, valid: Tensor, lam: float, group_size: int, normalize: bool = True
) -> Tensor:
    """``A = (r − mean_group r) + λ (r − r̂_k)``, ``/(1+λ)`` when normalised (``standard_grpo_returns``).

    final_rewards ``[B]``, step_rewards ``[B, K]``, valid ``[B, K]`` -> ``[B, K]``.
    """
    r = final_rewards.unsqueeze(1)  # [B, 1]
    adv = (r - group_mean(r, group_size)) + lam * (r - step_rewards)  # [B, K]
    if normalize:
        adv = adv / (1.0 + lam)
    return torch.where(valid, adv, torch.zeros_like(adv))


def decayed_lambda(lam: float, global_step: int, halve_every: int) -> float:
    """``λ · 2^(−⌊step / N⌋)`` (``dynamic_lambda1``); ``N = 0`` keeps λ constant."""
    if halve_every <= 0:
        return lam
    return lam * 0.5 ** (global_step // halve_every)


class EGSPOStepwiseAdvantage(remask.AdvantageEstimator):
    """EGSPO(-SA) stepwise returns with a group-mean baseline per selected-step rank."""

    name = "egspo-stepwise"

    class Config(remask.ComponentConfig):
        lam: float = Field(
            0.5, ge=0.0,
            description="λ (the reference's lambda1): weight of the intermediate-reward term; 0 gives plain EGSPO.",
        )
        normalize_returns: bool = Field(True, description="Divide the stepwise returns by 1 + λ.")
        standard_grpo_returns: bool = Field(
            False, description="Baseline from the final rewards: A = (r − mean r) + λ (r − r̂_k) (then /(1+λ))."
        )
        lambda_halve_every: int = Field(
            0, ge=0, description="Halve λ every N optimizer steps (the reference's dynamic_lambda1); 0: constant."
        )
        intermediate_reward: remask.RewardName | None = Field(
            None,
            description="Reward component (alias or name in the rewards list) that scores the one-step greedy "
            "completions, weighted as in the total; null uses the weighted total of every reward "
            "(set it to the correctness reward for the reference's correctness_step_reward_only).",
        )
        greedy_completions: Literal["auto", "sampler", "recompute"] = Field(
            "auto",
            description="Where x̂_0(x_k) comes from: 'sampler' uses rollout.greedy_ids, 'recompute' runs one "
            "forward pass per selected step on the rebuilt state, 'auto' uses the sampler's when recorded.",
        )

    # -- intermediate rewards -----------------------------------------------------------------

    def greedy_completions(self, rollout: remask.Rollout, steps: Tensor, context: remask.StepContext) -> Tensor:
        """``x̂_0(x_k)`` for every selected step. steps ``[B, K]`` -> ``[B, K, L]`` long."""
        source = self.config.greedy_completions
        if source == "sampler" and rollout.greedy_ids is None:
            raise RemaskError(
                "advantage 'egspo-stepwise': greedy_completions: sampler, but the rollout has no greedy_ids; "
                "use a sampler that records them or set greedy_completions: recompute"
            )
        if rollout.greedy_ids is not None and source in ("auto", "sampler"):
            g = rollout.greedy_ids  # [B, T, L]
            idx = steps.to(g.device).unsqueeze(-1).expand(-1, -1, g.shape[-1])  # [B, K, L]
            return torch.gather(g, 1, idx)
        policy = context.policy
        states, _ = remask.states_before_steps(
            rollout.completion_ids, rollout.unmask_step, steps, policy.mask_token_id
        )  # [B, K, L]
        out = torch.empty_like(states)
        with torch.no_grad(), eval_mode(policy):
            for c in range(states.shape[1]):
                logits = completion_logits(policy, rollout.prompts, states[:, c])  # [B, L, V]
                out[:, c] = one_step_greedy(states[:, c], logits, policy.mask_token_id)
        return out

    def _score(self, rewards: remask.Rewards) -> Tensor:
        name = self.config.intermediate_reward
        if name is None:
            return rewards.total.float()
        if name not in rewards.components:
            known = ", ".join(rewards.components) or "(none)"
            raise RemaskError(
                f"advantage 'egspo-stepwise': intermediate_reward {name!r} is not a reward of this pipeline; "
                f"rewards: {known}"
            )
        weight = rewards.weights.get(name, 1.0)
        return weight * torch.nan_to_num(rewards.components[name].float(), nan=0.0)

    def step_rewards(self, rollout: remask.Rollout, steps: Tensor, context: remask.StepContext) -> Tensor:
        """``r̂_k = r(x̂_0(x_k))``: one ``context.score`` call of B texts per selected-step rank.

        steps ``[B, K]`` -> ``[B, K]`` float32.
        """
        greedy = self.greedy_completions(rollout, steps, context)  # [B, K, L]
        policy = context.policy
        columns = []
        for c in range(greedy.shape[1]):
            ids = greedy[:, c]  # [B, L]
            texts = policy.decode(ids, completion_mask_through_eos(ids, policy.eos_token_id))
            columns.append(self._score(context.score(rollout.prompts, texts)).to(steps.device))
        return torch.stack(columns, 1)  # [B, K]

    # -- the estimator ------------------------------------------------------------------------

    def estimate(
        self,
        *,
        rollout: remask.Rollout,
        rewards: remask.Rewards,
        selection: remask.StepSelection | None,
        context: remask.StepContext,
    ) -> Tensor:
        group_size = rollout.prompts.group_size
        final = rewards.total.float().to(rollout.completion_ids.device)  # [B]
        if selection is None:
            # No selected steps: no intermediate rewards; every step gets r − mean r.
            return final - group_mean(final, group_size)  # [B]
        lam = decayed_lambda(self.config.lam, context.global_step, self.config.lambda_halve_every)
        steps = selection.steps.to(final.device)  # [B, K]
        committed = (rollout.unmask_step.to(final.device).unsqueeze(1) == steps.unsqueeze(-1)).any(-1)  # [B, K]
        valid = selection.valid.to(final.device) & committed  # steps with I_k = ∅ contribute nothing
        if lam == 0.0:
            step_rewards = final.unsqueeze(1).expand_as(steps.float())  # r̂ unused when λ = 0
        else:
            step_rewards = self.step_rewards(rollout, steps, context)  # [B, K]
        # Reported by the `egspo` objective with its metrics (the estimator has no metrics channel).
        context.extras["egspo"] = {"lambda": lam}
        if lam and valid.any():
            context.extras["egspo"]["step_reward"] = float(step_rewards[valid].mean())
        if self.config.standard_grpo_returns:
            return standard_grpo_stepwise_advantages(
                final, step_rewards, valid, lam, group_size, self.config.normalize_returns
            )
        returns = stepwise_returns(final, step_rewards, lam, self.config.normalize_returns)  # [B, K]
        return group_baseline_advantages(returns, valid, group_size)
