"""Step selection for EGSPO (arXiv 2603.12554 §4; spec algorithms.md §3.3).

EGSPO trains on K of the T denoising steps of each completion. Its bound says that leaving a step
``t`` out of the policy gradient costs at most ``B · H(π_θ(·|x_t))``, so the steps kept are the K
with the highest mean predictive entropy over the tokens they commit::

    H_k = mean_{i ∈ I_k} H(softmax(ℓ^{(k)}_i)),      S = top-K_k(H_k)   (descending H)

Two baselines from the reference code are kept: ``random`` (K−1 random steps plus the last step)
and ``uniform`` (K−1 evenly spaced steps plus the last step). With ``terminate_at_last_non_eos``
every selector only chooses among steps up to the last step that committed a non-EOS token.

A step is *usable* when it committed at least one token (``I_k ≠ ∅``) and, with the EOS option, is
not after the last non-EOS step. A row with fewer than K usable steps gets all of them, and
``valid = False`` in the columns that could not be filled (those contribute nothing to any loss).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.errors import RemaskError

__all__ = [
    "entropy_from_probs",
    "step_mean_entropy",
    "committed_steps",
    "usable_steps",
    "top_entropy_steps",
    "random_steps",
    "uniform_steps",
    "EntropyTopKSelector",
    "RandomStepSelector",
    "UniformStepSelector",
]


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def entropy_from_probs(probs: Tensor) -> Tensor:
    """``H(p) = −Σ_v p(v) log p(v)`` with ``0 log 0 = 0`` (a one-hot distribution has H = 0 exactly).

    ``[..., V]`` -> ``[...]``.
    """
    p = probs.float()
    return -torch.special.xlogy(p, p).sum(-1)


def step_mean_entropy(token_entropy: Tensor, unmask_step: Tensor, num_steps: int) -> Tensor:
    """``H_k = mean_{i ∈ I_k} H_i`` for every step ``k`` (EGSPO's step score; 0 where ``I_k = ∅``).

    token_entropy ``[B, L]`` (entropy of the prediction at position i in the step that committed it),
    unmask_step ``[B, L]`` -> ``[B, T]``.
    """
    onehot = unmask_step.unsqueeze(-1) == torch.arange(num_steps, device=unmask_step.device)  # [B, L, T]
    w = onehot.to(token_entropy.dtype)
    total = (token_entropy.unsqueeze(-1) * w).sum(1)  # [B, T]
    count = w.sum(1)  # [B, T]
    return total / count.clamp_min(1.0)


def committed_steps(unmask_step: Tensor, num_steps: int) -> Tensor:
    """``I_k ≠ ∅`` for every step. ``[B, L]`` -> ``[B, T]`` bool."""
    steps = torch.arange(num_steps, device=unmask_step.device)
    return (unmask_step.unsqueeze(-1) == steps).any(1)


def usable_steps(
    unmask_step: Tensor,  # [B, L] long
    num_steps: int,
    step_all_eos: Tensor | None = None,  # [B, T] bool
    terminate_at_last_non_eos: bool = False,
) -> Tensor:
    """Steps a selector may choose: ``I_k ≠ ∅`` and, with the EOS option, ``k ≤`` the last step that
    committed a non-EOS token. A row whose every step committed only EOS keeps all its steps (as
    the reference code does). ``[B, T]`` bool."""
    usable = committed_steps(unmask_step, num_steps)  # [B, T]
    if not terminate_at_last_non_eos:
        return usable
    if step_all_eos is None:
        raise ValueError("terminate_at_last_non_eos needs step_all_eos")
    non_eos = usable & ~step_all_eos.to(usable.device).bool()  # [B, T]
    steps = torch.arange(num_steps, device=usable.device)  # [T]
    last = torch.where(non_eos, steps, torch.full_like(steps, -1)).amax(-1)  # [B]
    last = torch.where(last < 0, torch.full_like(last, num_steps - 1), last)  # no non-EOS step: no cap
    return usable & (steps.unsqueeze(0) <= last.unsqueeze(1))


def _pad_columns(steps: Tensor, valid: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Pad ``[B, k']`` selections with invalid step-0 columns up to ``k`` columns."""
    missing = k - steps.shape[1]
    if missing <= 0:
        return steps, valid
    b = steps.shape[0]
    pad_s = torch.zeros(b, missing, dtype=torch.long, device=steps.device)
    pad_v = torch.zeros(b, missing, dtype=torch.bool, device=valid.device)
    return torch.cat([steps, pad_s], 1), torch.cat([valid, pad_v], 1)


def top_entropy_steps(step_entropy: Tensor, usable: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The K usable steps with the highest mean entropy, in descending entropy (spec §9.4 case 17).

    step_entropy ``[B, T]``, usable ``[B, T]`` bool -> ``(steps [B, K] long, valid [B, K] bool)``.
    Ties go to the earlier step; a NaN entropy ranks below every number but above unusable steps.
    """
    t = step_entropy.shape[1]
    score = torch.nan_to_num(step_entropy.float(), nan=-1e30, posinf=1e30, neginf=-1e30)  # [B, T]
    score = torch.where(usable, score, torch.full_like(score, float("-inf")))
    order = torch.sort(score, dim=1, descending=True, stable=True).indices  # [B, T]
    steps = order[:, : min(k, t)]  # [B, K]
    valid = torch.gather(usable, 1, steps)  # [B, K]
    return _pad_columns(steps, valid, k)


def random_steps(usable: Tensor, k: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """K−1 distinct random usable steps (in random order) followed by the last usable step.

    usable ``[B, T]`` bool -> ``(steps [B, K], valid [B, K])``. The reference code draws the K−1
    steps with replacement and the same for every row; here they are distinct and drawn per row.
    """
    b, t = usable.shape
    device = usable.device
    idx = torch.arange(t, device=device)
    last = torch.where(usable, idx, torch.full_like(idx, -1)).amax(-1)  # [B]
    has_any = last >= 0
    keys = torch.rand((b, t), generator=generator, device=generator.device).to(device)  # [B, T]
    candidate = usable & (idx.unsqueeze(0) != last.unsqueeze(1))  # [B, T]
    keys = torch.where(candidate, keys, torch.full_like(keys, -1.0))
    kk = min(k - 1, t)
    picked = torch.topk(keys, kk, dim=1).indices if kk > 0 else torch.zeros(b, 0, dtype=torch.long, device=device)
    picked_valid = torch.gather(candidate, 1, picked)
    steps = torch.cat([picked, last.clamp_min(0).unsqueeze(1)], 1)  # [B, kk+1]
    valid = torch.cat([picked_valid, has_any.unsqueeze(1)], 1)
    return _pad_columns(steps, valid, k)


def uniform_steps(usable: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """K−1 evenly spaced usable steps (``linspace`` over all but the last usable step, floored)
    followed by the last usable step. With every step usable this is the reference's
    ``linspace(0, T−2, K−1) ∪ {T−1}``. usable ``[B, T]`` -> ``(steps [B, K], valid [B, K])``."""
    b = usable.shape[0]
    steps = torch.zeros(b, k, dtype=torch.long, device=usable.device)
    valid = torch.zeros(b, k, dtype=torch.bool, device=usable.device)
    for row in range(b):
        u = torch.nonzero(usable[row], as_tuple=False).flatten()  # [n] sorted
        n = int(u.numel())
        if n == 0:
            continue
        if n >= k:
            spaced = torch.linspace(0, n - 2, k - 1).long().to(u.device) if k > 1 else u[:0]
            chosen = torch.cat([u[spaced], u[-1:]])
        else:
            chosen = u
        steps[row, : chosen.numel()] = chosen
        valid[row, : chosen.numel()] = True
    return steps, valid


# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------


class _SelectorConfig(remask.ComponentConfig):
    num_selected: int = Field(
        8, ge=1, description="K: steps selected per completion (the reference's logps_eval_num_steps)."
    )
    terminate_at_last_non_eos: bool = Field(
        False,
        description="Choose only among steps up to the last step that committed a non-EOS token "
        "(needs a sampler that records step_all_eos).",
    )


class _BaseStepSelector(remask.StepSelector):
    Config = _SelectorConfig

    def _usable(self, rollout: remask.Rollout) -> Tensor:
        if self.config.terminate_at_last_non_eos and rollout.step_all_eos is None:
            raise RemaskError(
                f"step_selector {self.name!r}: terminate_at_last_non_eos needs rollout.step_all_eos; "
                f"use a sampler that records it or set terminate_at_last_non_eos: false"
            )
        return usable_steps(
            rollout.unmask_step, rollout.num_steps, rollout.step_all_eos, self.config.terminate_at_last_non_eos
        )


class EntropyTopKSelector(_BaseStepSelector):
    """EGSPO's selector: the K steps with the highest mean predictive entropy, highest first."""

    name = "entropy-topk"

    class Config(_SelectorConfig):
        pass

    def select(self, rollout: remask.Rollout, generator: torch.Generator) -> remask.StepSelection:
        if rollout.step_entropy is None:
            raise RemaskError(
                "step_selector 'entropy-topk': the rollout has no step_entropy; use a sampler that "
                "records per-step entropies (llada) or the `uniform` / `random` selector"
            )
        usable = self._usable(rollout)  # [B, T]
        steps, valid = top_entropy_steps(rollout.step_entropy.to(usable.device), usable, self.config.num_selected)
        return remask.StepSelection(steps=steps, valid=valid)


class RandomStepSelector(_BaseStepSelector):
    """K−1 random steps plus the last step (the reference code's ``random`` mode)."""

    name = "random"

    class Config(_SelectorConfig):
        pass

    def select(self, rollout: remask.Rollout, generator: torch.Generator) -> remask.StepSelection:
        usable = self._usable(rollout)
        k = self.config.num_selected
        steps, valid = random_steps(usable, k, generator)
        return remask.StepSelection(steps=steps, valid=valid)


class UniformStepSelector(_BaseStepSelector):
    """K−1 evenly spaced steps plus the last step (the reference code's ``uniform`` mode)."""

    name = "uniform"

    class Config(_SelectorConfig):
        pass

    def select(self, rollout: remask.Rollout, generator: torch.Generator) -> remask.StepSelection:
        steps, valid = uniform_steps(self._usable(rollout), self.config.num_selected)
        return remask.StepSelection(steps=steps, valid=valid)
