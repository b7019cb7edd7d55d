"""One-step predictions of a rollout that did not record them (a sampler other than ``mdpo``).

``x_t`` is rebuilt from ``unmask_step`` (:func:`remask.states_before_steps`) and ``x̂0_t`` is the policy's
greedy fill of its masked positions (the mask token excluded), with confidence ``p(x̂0)`` at temperature
``τ``. At ``τ = 0`` this is what the ``mdpo`` sampler records; for sampled rollouts it replaces the
sampled proposals by greedy ones (``without_records: recompute``, docs/algorithms/mdpo.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

import remask

__all__ = ["greedy_step_predictions"]


@torch.no_grad()
def greedy_step_predictions(model: remask.DiffusionModel, rollout: remask.Rollout, steps: Tensor,
                            temperature: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """``(x_t, x̂0_t, c_t)`` for ``steps [B, K]``: each ``[B, K, L]`` (ids long, confidence float32, 0 where unmasked).

    One batched forward of ``B`` rows per selected step column.
    """
    device, mask_id = model.device, model.mask_token_id
    comp = rollout.completion_ids.to(device)
    steps = steps.to(device)
    states, _ = remask.states_before_steps(comp, rollout.unmask_step.to(device), steps, mask_id)  # [B, K, L]
    prompt = rollout.prompts.prompt_ids.to(device)
    p = prompt.shape[1]
    preds, confs = torch.empty_like(states), torch.zeros(states.shape, dtype=torch.float32, device=device)
    for k in range(states.shape[1]):
        ids, attn = remask.functional.full_sequence(rollout.prompts, states[:, k])  # [B, P+L]
        logits = model.logits(ids.to(device), attn.to(device), keep=slice(p, None)).float()  # [B, L, V]
        if 0 <= mask_id < logits.shape[-1]:
            logits[..., mask_id] = float("-inf")
        probs = torch.softmax(logits / temperature, dim=-1)
        conf, fill = probs.max(-1)  # [B, L]
        masked = states[:, k] == mask_id
        preds[:, k] = torch.where(masked, fill, states[:, k])
        confs[:, k] = torch.where(masked, conf, torch.zeros_like(conf))
    return states, preds, confs
