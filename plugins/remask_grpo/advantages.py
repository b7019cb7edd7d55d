"""Group-relative advantage estimators: ``group-mean``, ``group-mean-std`` and ``rloo``.

Rows come in groups of G adjacent completions of one prompt (``rollout.prompts.group_ids``). The
pure functions take rewards ``r [B]`` and the group size G and return advantages ``A [B]``.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.errors import RemaskError
from remask.functional import group_mean, group_std

__all__ = [
    "group_mean_advantages",
    "group_mean_std_advantages",
    "rloo_advantages",
    "GroupMeanAdvantage",
    "GroupMeanStdAdvantage",
    "RLOOAdvantage",
]


def group_mean_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """``A_j = r_j − mean_{i in group} r_i`` (d1 §3.2, EGSPO, wd1: no std division). ``[B] -> [B]``."""
    r = rewards.float()  # [B]
    return r - group_mean(r, group_size)


def group_mean_std_advantages(rewards: Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    """``A_j = (r_j − mean(r)) / (std(r) + eps)`` with the unbiased std (ddof = 1, as ``torch.std``).

    GRPO / DeepSeekMath eq. 3 outcome supervision and TRL's default; spec §3.1. A group of equal
    rewards gets exactly A = 0 (a float32 mean can be an ulp off, and dividing that by eps alone
    would give every row of the group ~6e-4). ``[B] -> [B]``.
    """
    r = rewards.float()  # [B]
    adv = (r - group_mean(r, group_size)) / (group_std(r, group_size) + eps)  # [B]
    grouped = r.reshape(-1, group_size)  # [B/G, G]
    equal = (grouped == grouped[:, :1]).all(1, keepdim=True).expand_as(grouped).reshape(r.shape)  # [B]
    return torch.where(equal, torch.zeros_like(adv), adv)


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """REINFORCE leave-one-out: ``A_j = r_j − (1/(G−1)) Σ_{i≠j} r_i = G/(G−1) (r_j − mean(r))``.

    Ahmadian et al. 2024 ("Back to Basics"), eq. 6. Needs G ≥ 2. ``[B] -> [B]``.
    """
    if group_size < 2:
        raise ValueError("rloo needs at least 2 completions per prompt (group_size >= 2)")
    r = rewards.float()  # [B]
    b = r.shape[0]
    if b % group_size:
        raise ValueError(f"{b} rows do not split into groups of {group_size}")
    g = r.view(b // group_size, group_size)  # [B/G, G]
    others = (g.sum(1, keepdim=True) - g) / (group_size - 1)  # [B/G, G] mean of the other rows
    return (g - others).reshape(b)


def _group_size_of(rollout: remask.Rollout, where: str) -> int:
    try:
        return rollout.prompts.group_size
    except ValueError as exc:
        raise RemaskError(f"advantage {where}: {exc}; groups of G rows must be contiguous and equal") from None


def _per_row(rewards: remask.Rewards, rollout: remask.Rollout, where: str) -> Tensor:
    if rewards.batch_size != rollout.batch_size:
        raise RemaskError(
            f"advantage {where}: {rewards.batch_size} rewards for {rollout.batch_size} rollout rows"
        )
    return torch.nan_to_num(rewards.total.float(), nan=0.0)  # [B]


class GroupMeanAdvantage(remask.AdvantageEstimator):
    """r − mean of the group (d1 / diffu-GRPO, EGSPO, wd1): no std division."""

    name = "group-mean"

    class Config(remask.ComponentConfig):
        pass

    def estimate(self, *, rollout, rewards, selection, context) -> Tensor:
        r = _per_row(rewards, rollout, self.name)
        return group_mean_advantages(r, _group_size_of(rollout, self.name))  # [B]


class GroupMeanStdAdvantage(remask.AdvantageEstimator):
    """(r − group mean) / (group std + eps), std unbiased (GRPO, TRL default)."""

    name = "group-mean-std"

    class Config(remask.ComponentConfig):
        eps: float = Field(1e-4, ge=0, description="Added to the group std before dividing (TRL uses 1e-4).")

    def estimate(self, *, rollout, rewards, selection, context) -> Tensor:
        r = _per_row(rewards, rollout, self.name)
        return group_mean_std_advantages(r, _group_size_of(rollout, self.name), self.config.eps)  # [B]


class RLOOAdvantage(remask.AdvantageEstimator):
    """r minus the mean reward of the other G−1 completions of the prompt (RLOO)."""

    name = "rloo"

    class Config(remask.ComponentConfig):
        pass

    def estimate(self, *, rollout, rewards, selection, context) -> Tensor:
        r = _per_row(rewards, rollout, self.name)
        g = _group_size_of(rollout, self.name)
        if g < 2:
            raise RemaskError("advantage rloo: needs train.group_size >= 2 (leave-one-out over the group)")
        return rloo_advantages(r, g)  # [B]
