"""MDPO's step-wise advantage ``mdpo-stepwise`` (autonomousvision/mdpo @ e6ae439,
``mdpo_trainer.py:757-858``; spec zoo-mdpo-tracerl.md §1.3).

Every one-step prediction ``x̂0_{j,t}`` (``Rollout.step_pred_ids``) is decoded and scored with the
pipeline's weighted rewards, giving ``R_{j,t}`` (``t = T−1`` reuses the final reward, since the last
step commits every remaining mask). Then, with ``R_{j,−1} := 0``::

    Ã_{j,t} = 1 + (R_{j,t} − R_{j,t−1}) + F_{j,t}
    F_{j,t} = (1/(T−1−t)) Σ_{s=t+1}^{T−1} R_{j,s}  (t < T−1),   F_{j,T−1} = R_{j,T−1}
    A_{j,t} = (Ã_{j,t} − mean_grp Ã_{·,t}) / (std_grp Ã_{·,t} + 1e-4)          (std with ddof 1)

Returns ``A [B, T]``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.errors import RemaskError

from .recompute import greedy_step_predictions

__all__ = ["MDPOStepwiseAdvantage", "score_step_predictions", "step_scores", "stepwise_advantages"]


def step_scores(step_rewards: Tensor) -> Tensor:
    """``Ã`` from the step rewards ``R``: reward improvement + mean of all later rewards. ``[B, T] -> [B, T]``."""
    r = step_rewards.float()
    t = r.shape[1]
    prev = torch.cat([torch.zeros_like(r[:, :1]), r[:, :-1]], dim=1)  # R_{t−1}, R_{−1} = 0
    later_sum = r.flip(-1).cumsum(-1).flip(-1) - r  # Σ_{s>t} R_s  [B, T]
    later_n = torch.arange(t - 1, -1, -1, device=r.device, dtype=r.dtype)  # T−1−t
    future = torch.where(later_n > 0, later_sum / later_n.clamp_min(1), r[:, -1:].expand_as(r))
    return 1.0 + (r - prev) + future


def stepwise_advantages(step_rewards: Tensor, group_size: int) -> Tensor:
    """Per-step group normalisation of ``Ã`` (std ddof 1, ``+1e-4``). ``[B, T] -> [B, T]`` (adjacent groups)."""
    b, t = step_rewards.shape
    if group_size < 2 or b % group_size:
        raise RemaskError(f"advantage mdpo-stepwise: needs groups of at least 2 rows that divide the batch "
                          f"(B={b}, group_size={group_size})")
    s = step_scores(step_rewards).view(b // group_size, group_size, t)  # [n, G, T]
    adv = (s - s.mean(1, keepdim=True)) / (s.std(1, keepdim=True) + 1e-4)
    return adv.reshape(b, t)


class MDPOStepwiseAdvantage(remask.AdvantageEstimator):
    """MDPO: rewards of every intermediate one-step prediction, turned into per-step group advantages."""

    name = "mdpo-stepwise"

    class Config(remask.ComponentConfig):
        without_records: Literal["recompute", "error"] = Field(
            "recompute", description="When the rollout has no step_pred_ids (a sampler other than mdpo): 'recompute' "
            "x̂0_t as the policy's greedy fill of x_t rebuilt from unmask_step (T forwards; equals the mdpo sampler's "
            "record at τ = 0), or 'error'."
        )

    def estimate(self, *, rollout, rewards, selection, context) -> Tensor:
        final = rewards.total.float().nan_to_num(0.0)  # [B]
        preds = rollout.step_pred_ids
        g = max(1, rollout.prompts.group_size)
        if preds is None:
            if self.config.without_records == "error":
                raise RemaskError("advantage mdpo-stepwise: the rollout has no step_pred_ids; use sampler: mdpo "
                                  "(or without_records: recompute)")
            if bool((rollout.unmask_step < 0).any()):
                raise RemaskError("advantage mdpo-stepwise: rows without a recorded unmask_step; cannot rebuild x_t")
            steps = torch.arange(max(1, rollout.num_steps)).unsqueeze(0).expand(rollout.batch_size, -1)  # [B, T]
            preds = greedy_step_predictions(context.policy, rollout, steps)[1]
        step_r = score_step_predictions(context.policy, rollout.prompts, preds, final, context.score)
        over = ((step_r[:, :-1] >= 1).any(-1) & (step_r[:, -1] < 1)).float()  # some intermediate right, final wrong
        context.extras["mdpo/over_denoising_rate"] = float(over.mean())
        context.extras["mdpo/step_reward_mean"] = float(step_r.mean())
        context.extras["mdpo/final_reward"] = float(step_r[:, -1].mean())
        return stepwise_advantages(step_r, g)


def score_step_predictions(model: remask.DiffusionModel, prompts: remask.PromptBatch, preds: Tensor, final: Tensor,
                           score) -> Tensor:
    """``R [B, T]``: the weighted reward of every decoded one-step prediction ``x̂0_t`` (``preds [B, T, L]``).

    ``t = T−1`` is ``final [B]`` (the last step commits every mask, so ``x̂0_{T−1} = o``). Every distinct
    text of a row is scored once, all in one ``score(prompts, texts)`` call (``StepContext.score``).
    """
    b, t, _ = preds.shape
    eos = model.eos_token_id
    flat = preds[:, : t - 1].reshape(b * (t - 1), -1).long()  # [B(T−1), L]
    is_eos = flat == eos
    keep = (torch.cumsum(is_eos.long(), -1) - is_eos.long()) == 0  # through the first EOS
    texts = model.decode(flat, keep) if flat.numel() else []
    step_r = torch.empty(b, t, dtype=torch.float32)
    step_r[:, t - 1] = final.float().cpu()
    unique: dict[tuple[int, str], int] = {}
    rows, outs = [], []
    for i, text in enumerate(texts):
        key = (i // (t - 1), text)
        if key not in unique:
            unique[key] = len(rows)
            rows.append(key[0])
            outs.append(text)
    if rows:
        scored = score(remask.take(prompts, rows), outs).total.float().nan_to_num(0.0).cpu()
        for i, text in enumerate(texts):
            step_r[i // (t - 1), i % (t - 1)] = scored[unique[(i // (t - 1), text)]]
    return step_r.to(final.device)
