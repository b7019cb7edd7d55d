"""A toy objective and a toy reward, written only against remask's public API."""

from __future__ import annotations

import torch
from pydantic import Field

import remask
from remask.functional import full_sequence, gather_logprobs, masked_mean


class LengthPenaltyReward(remask.RewardModel):
    """1 for an empty completion, falling linearly to 0 at `max_chars` characters."""

    name = "template-brevity"

    class Config(remask.ComponentConfig):
        max_chars: int = Field(32, ge=1, description="Completions this long or longer score 0.")

    def score(self, *, prompts, completions, references) -> remask.Rewards:
        cap = self.config.max_chars
        values = [max(0.0, 1.0 - len(text) / cap) for text in completions]
        reasons = [f"{len(text)} chars" for text in completions]
        return remask.Rewards.from_scores(self.name, values, reasons)


class AdvantageWeightedLikelihood(remask.PolicyObjective):
    """REINFORCE on a one-step likelihood: loss = -mean_j A_j * mean_i log p(o_ji | prompt, all masked)."""

    name = "template-awl"
    uses_reference = False

    class Config(remask.ComponentConfig):
        scale: float = Field(1.0, gt=0, description="Multiplier on the loss.")

    def prepare(self, *, rollout, advantages, selection, context):
        return rollout, advantages

    def loss(self, state, *, inner_step, context) -> remask.LossOutput:
        rollout, advantages = state
        model = context.policy
        masked = torch.full_like(rollout.completion_ids, model.mask_token_id)
        ids, attn = full_sequence(rollout.prompts, masked)  # [B, P+L]
        logits = model.logits(ids, attn)[:, rollout.prompts.prompt_length :]  # [B, L, V]
        logp = gather_logprobs(logits, rollout.completion_ids)  # [B, L]
        per_row = masked_mean(logp, rollout.completion_mask, dim=1)  # [B]
        loss = -self.config.scale * (advantages.to(per_row) * per_row).mean()
        return remask.LossOutput(loss=loss, metrics={"template/logp": per_row.mean().item()}, forward_passes=1)
