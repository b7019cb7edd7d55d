"""TraceRL's step selector (``trace-shrink``) and advantage (``tracerl-zscore``).

``trace-shrink`` returns, per row, the first step of every chunk of ``σ`` distinct sampler steps
(:func:`remask_tracerl.trace.chunk_starts`); ``tracerl-zscore`` is dLLM-RL's ``reward/rl_reward.py``
advantage: ``A_j = (r_j − mean_group r) / std_group r`` with the population std (ddof 0), 0 for a
group whose rewards are all equal, and 0 for groups outside the accuracy band (the official code
drops those groups from training).
"""

from __future__ import annotations

import logging

import torch
from pydantic import Field, model_validator
from torch import Tensor

import remask

from .trace import chunk_starts

log = logging.getLogger("remask")

__all__ = ["TraceShrinkSelector", "TraceRLZScoreAdvantage", "zscore_advantages"]


class TraceShrinkSelector(remask.StepSelector):
    """The start of every chunk of ``shrink`` distinct recorded steps (TraceRL's shrinkage σ), in time order."""

    name = "trace-shrink"

    class Config(remask.ComponentConfig):
        shrink: int = Field(
            8, ge=1, description="σ: distinct sampler steps merged into one training step (dLLM-RL: 8 for LLaDA/Dream, "
            "1 for TraDo); 1 trains every step."
        )

    def select(self, rollout: remask.Rollout, generator: torch.Generator) -> remask.StepSelection:
        starts, valid = chunk_starts(rollout.unmask_step, self.config.shrink)  # [B, K], [B, K]
        return remask.StepSelection(steps=starts, valid=valid)


def zscore_advantages(rewards: Tensor, group_size: int, *, min_accuracy: float | None = None,
                      max_accuracy: float | None = None, accuracy: Tensor | None = None) -> Tensor:
    """``(r − mean) / std`` per group with ddof 0 (0 where std = 0); groups whose mean accuracy lies outside
    ``[min_accuracy, max_accuracy]`` get 0, the accuracy being ``accuracy`` ``[B]`` (default: the rewards).
    ``[B] -> [B]``."""
    b = rewards.shape[0]
    if b % group_size:
        raise ValueError(f"{b} rows do not split into groups of {group_size}")
    r = rewards.float().view(b // group_size, group_size)  # [n, G]
    mean = r.mean(-1, keepdim=True)
    std = r.std(-1, unbiased=False, keepdim=True)  # ddof 0
    adv = torch.where(std > 0, (r - mean) / std.clamp_min(1e-12), torch.zeros_like(r))
    acc = mean if accuracy is None else accuracy.float().view(b // group_size, group_size).mean(-1, keepdim=True)
    keep = torch.ones_like(acc, dtype=torch.bool)  # [n, 1]
    if min_accuracy is not None:
        keep &= acc >= min_accuracy
    if max_accuracy is not None:
        keep &= acc <= max_accuracy
    return (adv * keep).reshape(b)


class TraceRLZScoreAdvantage(remask.AdvantageEstimator):
    """dLLM-RL's z-scored group reward (population std), with its accuracy band as a zero-advantage filter."""

    name = "tracerl-zscore"

    class Config(remask.ComponentConfig):
        filter_groups: bool = Field(
            True, description="Zero the advantages of groups whose mean reward is outside [min_accuracy, max_accuracy] "
            "(dLLM-RL drops them from training)."
        )
        min_accuracy: float = Field(0.2, ge=0, le=1, description="Lower end of the kept band of group accuracy.")
        max_accuracy: float = Field(0.8, ge=0, le=1, description="Upper end of the kept band of group accuracy.")
        accuracy_reward: remask.RewardName | None = Field(
            None, description="Reward (name or alias in `rewards`) whose group mean is the accuracy the band "
            "filters on, e.g. the 0/1 correctness reward when partial credit is added; None: the total reward "
            "(dLLM-RL's, whose reward is the 0/1 correctness)."
        )

        @model_validator(mode="after")
        def _band(self):
            if self.min_accuracy > self.max_accuracy:
                raise ValueError(f"min_accuracy ({self.min_accuracy}) must not exceed max_accuracy ({self.max_accuracy})")
            return self

    _warned = False

    def estimate(self, *, rollout, rewards, selection, context) -> Tensor:
        c = self.config
        g = max(1, rollout.prompts.group_size)
        total = rewards.total.nan_to_num(0.0)  # [B]
        if not c.filter_groups:
            return zscore_advantages(total, g)
        if c.accuracy_reward is None:
            accuracy = total
        elif c.accuracy_reward in rewards.components:
            accuracy = rewards.components[c.accuracy_reward].nan_to_num(0.0)  # [B]
        else:
            raise remask.RemaskError(f"advantage.accuracy_reward: no reward named {c.accuracy_reward!r} "
                                     f"(rewards: {', '.join(sorted(rewards.components))})")
        mean = accuracy.float().view(-1, g).mean(-1)  # [n]
        if bool(((mean > 1) | (mean < 0)).any()) and not self._warned:
            self._warned = True  # e.g. exact match + partial credit (0..2) never lands in a 0..1 band
            kept = (mean >= c.min_accuracy) & (mean <= c.max_accuracy)  # [n]
            log.warning("advantage tracerl-zscore: group mean rewards %.2f..%.2f are not accuracies in [0, 1], but "
                        "the band [%g, %g] filters on them (%d of %d groups kept this step); set "
                        "advantage.accuracy_reward to the 0/1 correctness reward", float(mean.min()), float(mean.max()),
                        c.min_accuracy, c.max_accuracy, int(kept.sum()), kept.numel())
        return zscore_advantages(total, g, min_accuracy=c.min_accuracy, max_accuracy=c.max_accuracy, accuracy=accuracy)
