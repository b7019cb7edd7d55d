"""The ``mdpo`` objective (MDPO, arXiv 2508.13148; autonomousvision/mdpo @ e6ae439; spec
zoo-mdpo-tracerl.md §1.5, §1.9).

``prepare`` (no grad, once per micro-batch): per row, the ``K = num_train_steps`` steps with the largest
``|A_{j,t}|`` (descending, ties to the lower ``t``); for each, the state ``x_t`` (rebuilt from
``unmask_step``, or ``Rollout.step_state_ids`` under RCR), the targets ``x̂0_t``
(``Rollout.step_pred_ids``), the weights ``c_t`` (``Rollout.step_confidence``) and the masked positions.
With ``β > 0`` the frozen reference scores the targets on the same states; with ``μ > 1`` the
pre-update policy gives ``ℓ_old`` (an extension: the reference code only runs ``μ = 1``).
``loss`` scores all ``B·K`` states in one batched forward and returns
``mean_j Σ_k loss_{t_k}(j)`` (:func:`remask_mdpo.loss.mdpo_step_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.errors import RemaskError
from remask.functional import gather_logprobs
from remask.trajectory import states_before_steps

from .loss import mdpo_step_loss
from .recompute import greedy_step_predictions

__all__ = ["MDPOObjective", "MDPOState", "top_k_steps"]


def top_k_steps(advantages: Tensor, k: int) -> Tensor:
    """The ``k`` steps with the largest ``|A|`` per row, descending, ties to the lower step. ``[B, T] -> [B, k]``."""
    order = torch.sort(advantages.abs(), dim=-1, descending=True, stable=True).indices
    return order[:, : min(k, advantages.shape[1])]


@dataclass(frozen=True)
class MDPOState:
    """What ``prepare`` computed for one micro-batch (``N = B·K`` rows, row-major over (row, step))."""

    input_ids: Tensor  # [N, P+L] long, [q; x_t]
    attention_mask: Tensor  # [N, P+L] bool
    targets: Tensor  # [N, L] long, x̂0_t
    weights: Tensor  # [N, L] float, c_t (ones without confidence weighting)
    masked: Tensor  # [N, L] bool, x_t == M
    advantages: Tensor  # [N] A_{j,t}
    old_logps: Tensor | None  # [N, L] ℓ_old (None: μ = 1, ℓ_old = stop_grad ℓ_θ)
    ref_logps: Tensor | None  # [N, L] ℓ_ref (None: β = 0)
    steps: Tensor  # [B, K] selected steps
    temperature: float  # τ + ε_dt used for every log-prob
    prompt_length: int
    prepare_forward_passes: int  # reference / old-policy / recomputation forwards spent in prepare


class MDPOObjective(remask.PolicyObjective):
    """MDPO: confidence-weighted, λ_t-scaled clipped PG on the top-K steps by |A|, k2 KL to a frozen reference."""

    name = "mdpo"

    class Config(remask.ComponentConfig):
        num_train_steps: int = Field(8, ge=1, description="K: steps trained per completion, the largest |A_{j,t}| "
                                     "(MDPO README run: 8; config default 16).")
        epsilon: float = Field(0.2, gt=0, description="ε: ratio clip [1 − ε, 1 + ε]; inactive at μ = 1 (the reference).")
        beta: float = Field(0.02, ge=0, description="β: weight of the k2 KL to the frozen reference (README run 0.02; "
                            "0 loads no reference).")
        temperature: float | None = Field(
            None, ge=0, description="τ of the log-probs; None reads the sampler's temperature from the rollout. A value "
            "that differs from the sampler's is refused."
        )
        temperature_eps: float = Field(
            0.0, ge=0, description="ε_dt added to τ (the reference adds finfo(logits dtype).eps: 2^-7 under bf16). "
            "τ + ε_dt = 0 means untempered log-probs."
        )
        confidence_weight: bool = Field(True, description="Weight each token by its recorded confidence c_t.")
        lambda_t: bool = Field(True, description="Scale the PG term by λ_t = L / (n_t + 1e-4).")
        without_records: Literal["recompute", "error"] = Field(
            "recompute", description="When the rollout has no step_pred_ids (a sampler other than mdpo): 'recompute' "
            "x̂0_t and c_t as the policy's greedy fill of x_t rebuilt from unmask_step (equals the mdpo sampler's "
            "record at τ = 0; a per-row advantage is broadcast over the steps), or 'error'."
        )

    def __init__(self, config: remask.ComponentConfig | None = None) -> None:
        super().__init__(config)
        self.uses_reference = self.config.beta > 0  # the reference is loaded only when β ≠ 0

    def _temperature(self, rollout: remask.Rollout) -> float:
        mine, theirs = self.config.temperature, rollout.sampler.get("temperature")
        if mine is not None and theirs is not None and abs(float(theirs) - mine) > 1e-12:
            raise RemaskError(f"objective mdpo: temperature {mine} differs from the sampler's {theirs}; the log-probs "
                              "must use the sampling temperature")
        tau = mine if mine is not None else (float(theirs) if theirs is not None else 1.0)
        div = tau + self.config.temperature_eps
        return div if div > 0 else 1.0

    def loss_passes(self, *, gen_length: int, block_length: int, steps: int,
                    selected_steps: int) -> tuple[remask.ForwardPass, ...]:
        """One pass over the K = num_train_steps trained states of every row."""
        return (remask.ForwardPass(rows=min(self.config.num_train_steps, max(1, steps))),)

    def prepare(self, *, rollout, advantages, selection, context) -> MDPOState:
        c = self.config
        device = context.device if hasattr(context, "device") else context.policy.device
        mask_id = context.policy.mask_token_id
        b, l = rollout.completion_ids.shape
        comp = rollout.completion_ids.to(device)
        preds, conf = rollout.step_pred_ids, rollout.step_confidence
        adv = advantages.to(device).float()
        tau = self._temperature(rollout)
        t_total = preds.shape[1] if preds is not None else max(1, rollout.num_steps)
        if preds is None and c.without_records == "error":
            raise RemaskError("objective mdpo: the rollout has no step_pred_ids; use sampler: mdpo "
                              "(or without_records: recompute)")
        if preds is None and adv.dim() == 1 and adv.shape[0] == b:
            adv = adv.unsqueeze(1).expand(b, t_total)
        if adv.dim() != 2 or adv.shape != (b, t_total):
            raise RemaskError(f"objective mdpo: needs one advantage per row and step, shape [{b}, {t_total}], "
                              f"got {tuple(advantages.shape)}; use advantage: mdpo-stepwise")
        steps = top_k_steps(adv, c.num_train_steps)  # [B, K]
        k = steps.shape[1]
        idx = steps.unsqueeze(-1).expand(b, k, l)  # [B, K, L]
        if bool((rollout.unmask_step < 0).any()) and rollout.step_state_ids is None:
            raise RemaskError("objective mdpo: rows without a recorded unmask_step cannot rebuild x_t")
        if preds is None:  # recompute greedy one-step predictions with the current policy
            states, targets, conf = greedy_step_predictions(context.policy, rollout, steps, tau)
            weights = conf if c.confidence_weight else torch.ones_like(conf)
        else:
            if rollout.step_state_ids is not None:
                states = rollout.step_state_ids.to(device).long().gather(1, idx)  # [B, K, L]
            else:
                states, _ = states_before_steps(comp, rollout.unmask_step.to(device), steps, mask_id)  # [B, K, L]
            targets = preds.to(device).long().gather(1, idx)  # [B, K, L]
            if conf is not None and c.confidence_weight:
                weights = conf.to(device).float().gather(1, idx)
            else:
                weights = torch.ones(b, k, l, device=device)
        masked = states == mask_id
        prompt = rollout.prompts.prompt_ids.to(device)
        p = prompt.shape[1]
        ids = torch.cat([prompt.unsqueeze(1).expand(b, k, p), states], dim=-1).reshape(b * k, p + l)
        pattn = rollout.prompts.attention_mask.to(device).bool()
        attn = torch.cat([pattn.unsqueeze(1).expand(b, k, p), torch.ones(b, k, l, dtype=torch.bool, device=device)],
                         dim=-1).reshape(b * k, p + l)
        flat_t = targets.reshape(b * k, l)
        with torch.no_grad():
            ref = old = None
            if c.beta > 0 and context.reference is not None:
                ref = gather_logprobs(context.reference.logits(ids, attn, keep=slice(p, None)), flat_t, temperature=tau)
            if context.inner_steps > 1:
                old = gather_logprobs(context.policy.logits(ids, attn, keep=slice(p, None)), flat_t, temperature=tau)
        if c.beta > 0 and ref is None:
            raise RemaskError("objective mdpo: beta > 0 needs the reference model, but the context has none")
        return MDPOState(input_ids=ids, attention_mask=attn, targets=flat_t, weights=weights.reshape(b * k, l),
                         masked=masked.reshape(b * k, l), advantages=adv.gather(1, steps).reshape(b * k),
                         old_logps=old, ref_logps=ref, steps=steps, temperature=tau, prompt_length=p,
                         prepare_forward_passes=int(ref is not None) + int(old is not None) + (k if preds is None else 0))

    def loss(self, state: MDPOState, *, inner_step: int, context) -> remask.LossOutput:
        c = self.config
        p = state.prompt_length
        logits = context.policy.logits(state.input_ids, state.attention_mask, keep=slice(p, None))  # [N, L, V]
        logp = gather_logprobs(logits, state.targets, temperature=state.temperature)  # [N, L]
        old = state.old_logps if state.old_logps is not None else logp.detach()
        per_step, kl = mdpo_step_loss(logp, old, state.ref_logps, state.advantages, state.weights, state.masked,
                                      gen_length=state.targets.shape[1], epsilon=c.epsilon, beta=c.beta,
                                      lambda_t=c.lambda_t)
        b, k = state.steps.shape
        loss = per_step.view(b, k).sum(1).mean()
        metrics = {
            "mdpo/kl": float(kl.mean()),
            "mdpo/selected_abs_advantage": float(state.advantages.abs().mean()),
            "mdpo/masked_fraction": float(state.masked.float().mean()),
            "mdpo/mean_selected_step": float(state.steps.float().mean()),
        }
        metrics.update({key: float(v) for key, v in context.extras.items()
                        if isinstance(key, str) and key.startswith("mdpo/")})
        passes = 1 + (0 if inner_step else state.prepare_forward_passes)
        return remask.LossOutput(loss=loss, metrics=metrics, forward_passes=passes)
