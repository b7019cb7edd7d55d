"""Forward passes on rebuilt sampler states, shared by the EGSPO estimator and objective.

A state ``x_k`` (the completion before step ``k``, later positions masked) is rebuilt from
``unmask_step`` with :func:`remask.states_before_steps`; :func:`remask.likelihood.completion_logits`
puts the prompt back in front and runs the model once, as the sampler's own forward at step ``k``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

import remask
from remask.likelihood import completion_logits  # re-exported: the state forward is a public building block

__all__ = ["completion_logits", "one_step_greedy", "completion_mask_through_eos", "eval_mode"]


def one_step_greedy(state: Tensor, logits: Tensor, mask_token_id: int) -> Tensor:
    """One-step greedy completion ``x̂_0(x_k)``: every masked position of ``x_k`` filled with
    ``argmax ℓ`` (spec §3.3, §9.4 case 18); committed tokens are never changed. The mask token itself
    is never proposed (a trained model gives it ~0 probability; an untrained one might).

    state ``[B, L]``, logits ``[B, L, V]`` -> ``[B, L]``.
    """
    if 0 <= mask_token_id < logits.shape[-1]:
        logits = logits.clone()
        logits[..., mask_token_id] = float("-inf")
    fill = logits.argmax(-1).to(state.device)  # [B, L]
    return torch.where(state == mask_token_id, fill, state)


def completion_mask_through_eos(ids: Tensor, eos_token_id: int) -> Tensor:
    """``[B, L]`` bool: True up to and including the first EOS (everything when there is none)."""
    is_eos = ids == eos_token_id  # [B, L]
    seen_before = torch.cumsum(is_eos.long(), -1) - is_eos.long()  # EOS strictly before i
    return seen_before == 0


@contextlib.contextmanager
def eval_mode(model: remask.DiffusionModel) -> Iterator[None]:
    """Run the model's module in eval mode (no dropout) and restore its mode afterwards."""
    module = model.module
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
