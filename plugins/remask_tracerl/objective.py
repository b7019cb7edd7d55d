"""The ``tracerl`` objective: PPO-clipped policy gradient on the recorded trace, k3 to the old policy,
and an optional objective-owned value model (TraceRL, arXiv 2509.06949; Gen-Verse/dLLM-RL @ 10b4fd1).

``prepare`` (no grad, eval mode, once per micro-batch) reads the chunks of the ``trace-shrink``
selection (without a step selector every recorded step is its own chunk, σ = 1); chunk ``g`` of row ``j`` is trained from the state before its first step (every position
with ``unmask_step ≥ start_g`` masked, prompt clean, full attention) on the completion positions it
committed. One batched forward per chunk index ``g`` gives ``ℓ_old`` of every position (each position
is read from its own chunk's state). With ``value.enabled`` the same forwards give ``V^old`` from the
value head, and the token advantages and returns of GAE over trace steps replace ``A_j``.
``loss`` recomputes ``ℓ_θ`` (and ``V_φ``) on the same states and applies
:func:`remask_tracerl.loss.tracerl_policy_loss` (+ ``value.coef ×`` :func:`~remask_tracerl.loss.clipped_value_loss`).

The value model is a zero-initialised ``Linear(H, 1, bias=False)`` on the policy's last hidden states
(detached), owned by the objective (``extra_modules``, its own learning rate), not the official full
copy of the base network (docs/algorithms/tracerl.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

import remask
from remask.errors import RemaskError
from remask.functional import full_sequence, gather_logprobs, row_advantages

from .loss import clipped_value_loss, gae_over_trace_steps, tracerl_policy_loss
from .trace import chunk_of_position, chunk_starts

__all__ = ["TraceRLObjective", "TraceRLState", "ValueSettings"]


class ValueSettings(BaseModel):
    """TraceRL's optional diffusion value model (token-level values, GAE over trace steps)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Train a value head and use its token-level GAE advantages.")
    hidden_size: int | None = Field(
        None, ge=1, description="Width H of the policy's hidden states; None reads it from the model at setup."
    )
    learning_rate: float = Field(5e-6, gt=0, description="Learning rate of the value head (dLLM-RL value_learning_rate 5e-6).")
    coef: float = Field(1.0, gt=0, description="Weight of the value loss added to the policy loss.")
    gamma: float = Field(1.0, ge=0, le=1, description="γ of the GAE over trace steps (dLLM-RL gam 1.0).")
    lam: float = Field(1.0, ge=0, le=1, description="λ of the GAE over trace steps (dLLM-RL lam 1.0).")
    clip: float | None = Field(
        None, gt=0, description="Value clip ε_V around V^old; None uses the objective's epsilon (dLLM-RL shares eps)."
    )


@dataclass(frozen=True)
class TraceRLState:
    """What ``prepare`` computed for one micro-batch."""

    prompt_ids: Tensor  # [B, P] long
    attention_mask: Tensor  # [B, P+L] bool
    completion_ids: Tensor  # [B, L] long
    unmask_step: Tensor  # [B, L] long
    starts: Tensor  # [B, K] long first step of each chunk
    valid: Tensor  # [B, K] bool
    chunk: Tensor  # [B, L] long chunk index of each position (−1: none)
    targets: Tensor  # [B, L] bool trainable positions (completion mask ∩ some chunk)
    old_logps: Tensor  # [B, L] ℓ_old
    advantages: Tensor  # [B] A_j, or [B, L] A_i with the value model
    old_values: Tensor | None  # [B, L] V^old
    returns: Tensor | None  # [B, L] R_i
    prepare_forward_passes: int


class TraceRLObjective(remask.PolicyObjective):
    """TraceRL: clipped PG per trace chunk (mean), k3 to the old policy (sum), optional value model."""

    name = "tracerl"
    uses_reference = False  # the KL anchors to the old policy; there is no reference model

    class Config(remask.ComponentConfig):
        epsilon: float = Field(0.2, gt=0, description="ε: the ratio is clipped to [1 − ε, 1 + ε] (dLLM-RL eps 0.2).")
        beta: float = Field(0.01, ge=0, description="β: weight of the k3 KL to the OLD policy (dLLM-RL beta 0.01).")
        normalize: Literal["per_step_mean", "per_length"] = Field(
            "per_step_mean",
            description="per_step_mean: PG mean and KL sum over each chunk (dLLM-RL LLaDA/Dream scripts); "
            "per_length: both ÷ the completion length L (the TraDo/SDAR scripts).",
        )
        logratio_clamp: float | None = Field(
            None, gt=0, description="Clamp ℓ_θ − ℓ_old to [−c, c] before exp (the TraDo scripts use 10; None: no clamp)."
        )
        value: ValueSettings = Field(default_factory=ValueSettings, description="The optional value model.")

    def __init__(self, config: remask.ComponentConfig | None = None) -> None:
        super().__init__(config)
        v = self.config.value
        self.value_head: nn.Linear | None = self._make_head(v.hidden_size) if v.enabled and v.hidden_size else None

    @staticmethod
    def _make_head(hidden_size: int) -> nn.Linear:
        head = nn.Linear(hidden_size, 1, bias=False)
        nn.init.zeros_(head.weight)  # V ≡ 0 before the first value update (dLLM-RL)
        return head

    # -- engine hooks ---------------------------------------------------------------------------

    def setup(self, *, policy: remask.DiffusionModel, reference: remask.DiffusionModel | None = None) -> None:
        """Create the value head with the policy's hidden width before the optimizer is built."""
        if self.config.value.enabled and self.value_head is None:
            self.value_head = self._make_head(self._hidden_size(policy)).to(policy.device)

    @staticmethod
    def _hidden_size(model: remask.DiffusionModel) -> int:
        cfg = getattr(getattr(model, "module", None), "config", None)
        for attr in ("hidden_size", "d_model", "n_embd"):
            if isinstance(getattr(cfg, attr, None), int):
                return int(getattr(cfg, attr))
        with torch.no_grad():
            ids = torch.full((1, 2), model.mask_token_id, dtype=torch.long, device=model.device)
            hidden = model.forward(ids, output_hidden_states=True).hidden_states
        if hidden is None:
            raise RemaskError("objective tracerl: value.enabled needs a model that returns hidden states")
        return int(hidden.shape[-1])

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"value_head": self.value_head} if self.value_head is not None else {}

    def extra_param_groups(self) -> list[dict[str, Any]]:
        if self.value_head is None:
            return []
        return [{"params": list(self.value_head.parameters()), "lr": self.config.value.learning_rate, "weight_decay": 0.0}]

    # -- scoring --------------------------------------------------------------------------------

    def _score(self, model: remask.DiffusionModel, state_like: dict[str, Tensor], want_values: bool
               ) -> tuple[Tensor, Tensor | None, int]:
        """``ℓ(o_i | state of i's chunk)`` and ``V(i)`` for every position, one batched forward per chunk index.

        Returns ``(logps [B, L], values [B, L] or None, forward passes)``.
        """
        prompt_ids, attention = state_like["prompt_ids"], state_like["attention_mask"]
        comp, unmask = state_like["completion_ids"], state_like["unmask_step"]
        starts, valid, chunk, targets = state_like["starts"], state_like["valid"], state_like["chunk"], state_like["targets"]
        p, l = prompt_ids.shape[1], comp.shape[1]
        logps = torch.zeros(comp.shape, dtype=torch.float32, device=comp.device)
        values = torch.zeros(comp.shape, dtype=torch.float32, device=comp.device) if want_values else None
        passes = 0
        for g in range(starts.shape[1]):
            in_g = (chunk == g) & targets  # [B, L]
            rows = torch.nonzero(valid[:, g] & in_g.any(-1)).flatten()  # [B_g]
            if rows.numel() == 0:
                continue
            masked = unmask[rows] >= starts[rows, g].unsqueeze(-1)  # [B_g, L] positions not yet committed
            x = torch.where(masked, torch.full_like(comp[rows], model.mask_token_id), comp[rows])  # [B_g, L]
            out = model.forward_kept(torch.cat([prompt_ids[rows], x], dim=1), attention[rows], keep=slice(p, None),
                                     output_hidden_states=want_values)
            lp = gather_logprobs(out.logits, comp[rows])  # [B_g, L]
            sel = in_g[rows]
            logps[rows] = torch.where(sel, lp, logps[rows])
            if want_values:
                if out.hidden_states is None:
                    raise RemaskError("objective tracerl: value.enabled needs a model that returns hidden states")
                v = self.value_head(out.hidden_states[:, p:].detach().float()).squeeze(-1)  # [B_g, L]
                values[rows] = torch.where(sel, v, values[rows])
            passes += 1
        return logps, values, passes

    # -- per rollout ----------------------------------------------------------------------------

    def loss_passes(self, *, gen_length: int, block_length: int, steps: int,
                    selected_steps: int) -> tuple[remask.ForwardPass, ...]:
        """One batched pass per trace chunk (the selector's K; every step with no selector), at most M rows each."""
        return (remask.ForwardPass(),) * max(1, selected_steps or steps)

    def prepare(self, *, rollout, advantages, selection, context) -> TraceRLState:
        c = self.config
        if selection is None:  # no selector: every recorded step is its own chunk (σ = 1)
            steps, ok = chunk_starts(rollout.unmask_step, 1)
            selection = remask.StepSelection(steps=steps, valid=ok)
        advantages = row_advantages(advantages, rollout.batch_size, objective="tracerl",
                                    hint="use advantage: tracerl-zscore")
        if bool((rollout.unmask_step < 0).all(dim=-1).any()):
            raise RemaskError("objective tracerl: trains on the recorded trace, but some rows have no recorded "
                              "unmask_step (offline data); sample online or store rollouts with their trajectories")
        device = context.device
        if c.value.enabled and self.value_head is None:
            self.setup(policy=context.policy)
        comp = rollout.completion_ids.to(device)
        unmask = rollout.unmask_step.to(device)
        starts, valid = selection.steps.to(device), selection.valid.to(device)
        chunk = chunk_of_position(unmask, starts, valid)  # [B, L]
        targets = rollout.completion_mask.to(device).bool() & (chunk >= 0)
        _, attention = full_sequence(rollout.prompts, comp)  # [B, P+L]
        parts = dict(prompt_ids=rollout.prompts.prompt_ids.to(device), attention_mask=attention, completion_ids=comp,
                     unmask_step=unmask, starts=starts, valid=valid, chunk=chunk, targets=targets)
        with torch.no_grad():
            old, v_old, passes = self._score(context.policy, parts, c.value.enabled)
            adv = advantages.to(device).float()
            returns = None
            if c.value.enabled:
                returns, adv = gae_over_trace_steps(adv, v_old, chunk, targets, starts.shape[1],
                                                    gamma=c.value.gamma, lam=c.value.lam)
        return TraceRLState(**parts, old_logps=old, advantages=adv, old_values=v_old, returns=returns,
                            prepare_forward_passes=passes)

    def loss(self, state: TraceRLState, *, inner_step: int, context) -> remask.LossOutput:
        c = self.config
        parts = {k: getattr(state, k) for k in ("prompt_ids", "attention_mask", "completion_ids", "unmask_step",
                                               "starts", "valid", "chunk", "targets")}
        logp, values, passes = self._score(context.policy, parts, c.value.enabled)
        k = state.starts.shape[1]
        loss, metrics = tracerl_policy_loss(logp, state.old_logps, state.advantages, state.chunk, state.targets, k,
                                            epsilon=c.epsilon, beta=c.beta, normalize=c.normalize,
                                            logratio_clamp=c.logratio_clamp)
        if c.value.enabled:
            assert values is not None and state.old_values is not None and state.returns is not None
            v_loss = clipped_value_loss(values, state.old_values, state.returns, state.chunk, state.targets, k,
                                        clip=c.value.clip or c.epsilon, normalize=c.normalize)
            loss = loss + c.value.coef * v_loss
            metrics["tracerl/value_loss"] = float(v_loss.detach())
            metrics["tracerl/value_mean"] = float(values.detach()[state.targets].mean()) if state.targets.any() else 0.0
        metrics = {(k_ if "/" in k_ else f"tracerl/{k_}"): v for k_, v in metrics.items()}
        return remask.LossOutput(loss=loss, metrics=metrics,
                                 forward_passes=passes + (state.prepare_forward_passes if inner_step == 0 else 0))
