"""The `trafl` objective: squared relative trajectory-balance residual with a learned log Z head.

Spec algorithms.md §3.5 (TraFL, arXiv 2605.13935; the loss is a reconstruction — see
docs/algorithms/trafl.md for what is established and what is a choice)::

    a_M(y) = (1/|M|) Σ_{i∈M} [log p_θ(y_i | y_¬M, x) − log p_ref(y_i | y_¬M, x)]
    D̂(y)   = (1/K) Σ_k a_{M_k}(y)              K masks = complementary pairs (S, U∖S)
    δ_j    = D̂(y_j) − (β/u)·r̃_j + z_φ(x)        r̃ = group-centred reward (the advantage)
    L      = mean_j δ_j²

Per micro-batch, :meth:`TraflObjective.prepare` (no grad) draws the masks from
``context.generator``, runs the reference once per mask and once on the prompts for the
``LogZHead`` features; :meth:`TraflObjective.loss` runs the policy once per mask with gradients.
Gradients reach only the policy (through ``log p_θ``) and the head (through ``z_φ``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

import remask
from remask.errors import RemaskError
from remask.functional import full_sequence
from remask.likelihood import NoisyViews, view_logprobs

from .head import LogZHead, pool_prompt_states
from .losses import (
    mask_log_ratio,
    reward_tilt,
    sequence_surrogate,
    trafl_loss,
    trajectory_balance_residual,
)
from .masks import complementary_masks, completion_span

__all__ = ["TraflObjective", "TraflState", "infer_hidden_size"]


class TraflError(RemaskError):
    """A TraFL input problem (wrong advantage shape, no reference, no hidden states)."""


@dataclass
class TraflState:
    """What :meth:`TraflObjective.prepare` computed for one micro-batch (no grad)."""

    masked_inputs: Tensor  # [K, B, P+L] long: [prompt, completion with mask k applied]
    attention_mask: Tensor  # [B, P+L] bool padding mask
    completion_ids: Tensor  # [B, L] long
    masks: Tensor  # [K, B, L] bool, the masked positions M_k (a subset of the span)
    ref_logps: Tensor  # [K, B, L] float32, log p_ref(y_i | y_¬M_k, x)
    prompt_features: Tensor  # [B, H] float32, pooled reference hidden states of the prompt
    centred_reward: Tensor  # [B] float32, r̃ (the advantage)
    span_length: Tensor  # [B] long, u
    prepare_forwards: int  # reference forward passes spent in prepare


def infer_hidden_size(model: remask.DiffusionModel) -> int:
    """Width of ``model``'s last hidden state: from its config when it names one, else one dry forward."""
    cfg = getattr(getattr(model, "module", None), "config", None)
    for attr in ("hidden_size", "d_model", "n_embd"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    ids = torch.full((1, 1), int(model.eos_token_id), dtype=torch.long, device=model.device)
    with torch.no_grad():
        out = model.forward(ids, torch.ones_like(ids, dtype=torch.bool), output_hidden_states=True)
    if out.hidden_states is None:
        raise TraflError(
            f"objective trafl: model {model.name!r} returned no hidden_states with output_hidden_states=True; "
            "set objective.hidden_size explicitly or use an adapter that returns them"
        )
    return int(out.hidden_states.shape[-1])


class TraflObjective(remask.PolicyObjective):
    """TraFL: squared trajectory-balance residual on a masked-reconstruction surrogate, learned log Z."""

    name = "trafl"
    requires_whole_groups = False
    uses_reference = True

    class Config(remask.ComponentConfig):
        beta: float = Field(1.0, ge=0, description="β: strength of the reward tilt p* ∝ p_ref·exp(β r).")
        reward_scaling: Literal["per_token", "per_sequence"] = Field(
            "per_token",
            description="'per_token': tilt (β/u)·r̃ with u the span length (spec §3.5, intensive units); "
            "'per_sequence': β·r̃.",
        )
        num_mask_pairs: int = Field(
            2, ge=1, description="Complementary mask pairs (S, U∖S) per completion; K = 2 × this (paper: K = 4)."
        )
        span: Literal["eos", "all"] = Field(
            "eos",
            description="Completion span U the masks cover and u counts: 'eos' = through the first EOS "
            "(completion_mask), 'all' = every generated position including EOS padding.",
        )
        head: Literal["linear", "mlp"] = Field("linear", description="LogZHead architecture: linear or 2-layer MLP.")
        head_width: int = Field(64, ge=1, description="Hidden width of the 'mlp' LogZHead.")
        head_activation: Literal["gelu", "tanh"] = Field("gelu", description="Activation of the 'mlp' LogZHead.")
        hidden_size: int | Literal["infer"] = Field(
            "infer",
            description="Input width H of the LogZHead (the reference's last hidden size); 'infer' reads it "
            "from the model in setup() or, failing that, at the first prepare().",
        )
        head_learning_rate: float | None = Field(
            1e-3, gt=0, description="Learning rate of the LogZHead parameter group (None: the policy's)."
        )
        head_weight_decay: float = Field(0.0, ge=0, description="Weight decay of the LogZHead parameter group.")
        head_init_seed: int = Field(0, description="Seed of the LogZHead's hidden-layer initialisation.")
        z_features: Literal["prompt", "prompt_and_masked_completion"] = Field(
            "prompt",
            description="Reference input whose hidden states are pooled over the prompt tokens for z_φ(x): "
            "the prompt alone, or the prompt followed by a fully masked completion (the sampler's start).",
        )

        @field_validator("hidden_size")
        @classmethod
        def _positive(cls, value: int | str) -> int | str:
            if isinstance(value, int) and value < 1:
                raise ValueError("hidden_size must be a positive integer or 'infer'")
            return value

    def __init__(self, config: remask.ComponentConfig | None = None) -> None:
        super().__init__(config)
        c = self.config
        size = c.hidden_size if isinstance(c.hidden_size, int) else None
        self.head = LogZHead(size, kind=c.head, width=c.head_width, activation=c.head_activation,
                             init_seed=c.head_init_seed)

    # -- engine hooks ---------------------------------------------------------------------------

    def setup(self, *, policy: remask.DiffusionModel, reference: remask.DiffusionModel | None = None) -> None:
        """Size the LogZHead from the model before the optimizer is built (``hidden_size: infer``).

        Materialises the head's parameters in place, so calling it after the optimizer collected
        :meth:`extra_modules` is also safe. Without this call the head sizes itself at the first
        :meth:`prepare`.
        """
        if self.head.is_lazy:
            self.head._materialise(infer_hidden_size(reference or policy))
            self.head._initialise()

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"log_z_head": self.head}

    def extra_param_groups(self) -> list[dict[str, Any]]:
        group: dict[str, Any] = {"params": list(self.head.parameters()), "weight_decay": self.config.head_weight_decay}
        if self.config.head_learning_rate is not None:
            group["lr"] = self.config.head_learning_rate
        return [group]

    # -- per rollout ----------------------------------------------------------------------------

    def loss_passes(self, *, gen_length: int, block_length: int, steps: int,
                    selected_steps: int) -> tuple[remask.ForwardPass, ...]:
        """Both masks of every complementary pair (the log Z head adds no policy pass)."""
        return (remask.ForwardPass(),) * (2 * self.config.num_mask_pairs)

    def prepare(self, *, rollout: remask.Rollout, advantages: Tensor, selection: remask.StepSelection | None,
                context: remask.StepContext) -> TraflState:
        c = self.config
        reference = context.reference
        if reference is None:
            raise TraflError("objective trafl: needs the reference policy (context.reference is None)")
        if advantages.dim() != 1 or advantages.shape[0] != rollout.batch_size:
            raise TraflError(
                f"objective trafl: needs one centred reward per row [B]={rollout.batch_size}, got advantages "
                f"{tuple(advantages.shape)}; use a per-row advantage such as `group-mean` and no step_selector"
            )
        device = rollout.completion_ids.device
        completion_ids = rollout.completion_ids  # [B, L]
        ids, attn = full_sequence(rollout.prompts, completion_ids)  # [B, P+L] each
        p = rollout.prompts.prompt_length
        span = completion_span(rollout.completion_mask, c.span).to(device)  # [B, L]
        masks = complementary_masks(span, c.num_mask_pairs, context.generator)  # [K, B, L]
        mask_id = int(reference.mask_token_id)
        masked_inputs = ids.unsqueeze(0).repeat(masks.shape[0], 1, 1)  # [K, B, P+L]
        masked_inputs[:, :, p:] = torch.where(masks, torch.full_like(completion_ids, mask_id), completion_ids)
        views = NoisyViews(input_ids=masked_inputs, token_weights=masks.float(), seed=-1)  # seed: drawn above
        ref_logps = view_logprobs(reference, views, attn, completion_ids)  # [K, B, L]
        features = self._prompt_features(rollout, reference)  # [B, H]
        return TraflState(
            masked_inputs=masked_inputs,
            attention_mask=attn,
            completion_ids=completion_ids,
            masks=masks,
            ref_logps=ref_logps.detach(),  # [K, B, L]
            prompt_features=features.detach(),
            centred_reward=advantages.detach().to(device, torch.float32),
            span_length=span.sum(-1),
            prepare_forwards=masks.shape[0] + 1,
        )

    def _prompt_features(self, rollout: remask.Rollout, reference: remask.DiffusionModel) -> Tensor:
        """Mean reference hidden state over the prompt tokens, one forward per distinct prompt. # [B, H]"""
        prompts = rollout.prompts
        _, inverse, counts = torch.unique_consecutive(prompts.group_ids.cpu(), return_inverse=True,
                                                      return_counts=True)  # [B], [n]
        first = torch.cumsum(counts, 0) - counts  # [n] first row of each run of one prompt
        device = rollout.completion_ids.device
        first_d = first.to(device)
        prompt_ids = prompts.prompt_ids.to(device).index_select(0, first_d)  # [n, P]
        prompt_mask = prompts.attention_mask.to(device).index_select(0, first_d)  # [n, P]
        if self.config.z_features == "prompt":
            inputs, attn = prompt_ids, prompt_mask
        else:
            blank = torch.full((len(first), rollout.gen_length), int(reference.mask_token_id),
                               dtype=torch.long, device=device)
            inputs = torch.cat([prompt_ids, blank], 1)  # [n, P+L]
            attn = torch.cat([prompt_mask, torch.ones_like(blank, dtype=torch.bool)], 1)
        out = reference.forward(inputs, attn, output_hidden_states=True)
        if out.hidden_states is None:
            raise TraflError(
                f"objective trafl: model {reference.name!r} returned no hidden_states with "
                "output_hidden_states=True; the LogZHead needs the reference's last hidden states"
            )
        pooled = pool_prompt_states(out.hidden_states[:, : prompts.prompt_length], prompt_mask)  # [n, H]
        return pooled.index_select(0, inverse.to(device))  # [B, H]

    # -- per inner update -------------------------------------------------------------------------

    def log_partition(self, state: TraflState) -> Tensor:
        """``z_φ(x)`` for every row, with gradient into the head only. # [B]"""
        head_device = next(self.head.parameters()).device
        if not self.head.is_lazy and self.head.hidden_size != state.prompt_features.shape[-1]:
            raise TraflError(
                f"objective trafl: LogZHead expects hidden size {self.head.hidden_size} but the reference's "
                f"hidden states have {state.prompt_features.shape[-1]}; fix objective.hidden_size"
            )
        with torch.autocast(device_type=head_device.type, enabled=False):  # z in float32 under mixed precision
            z = self.head(state.prompt_features.to(head_device, torch.float32))  # [B]
        return z.float().to(state.centred_reward.device)

    def loss(self, state: TraflState, *, inner_step: int, context: remask.StepContext) -> remask.LossOutput:
        c = self.config
        policy = context.policy
        views = NoisyViews(input_ids=state.masked_inputs, token_weights=state.masks.float(), seed=-1)
        logps = view_logprobs(policy, views, state.attention_mask, state.completion_ids)  # [K, B, L]
        mask_ratios = mask_log_ratio(logps, state.ref_logps, state.masks)  # [K, B]
        d_hat = sequence_surrogate(mask_ratios)  # [B]
        z = self.log_partition(state)  # [B]
        span = state.span_length if c.reward_scaling == "per_token" else None
        tilt = reward_tilt(state.centred_reward, c.beta, span)  # [B]
        residual = trajectory_balance_residual(d_hat, tilt, z)  # [B]
        loss = trafl_loss(residual)
        forwards = state.masks.shape[0] + (state.prepare_forwards if inner_step == 0 else 0)
        with torch.no_grad():
            metrics = {
                "trafl/z_mean": float(z.mean()),
                "trafl/z_std": float(z.std(unbiased=False)),
                "trafl/residual_rms": float(residual.pow(2).mean().sqrt()),
                "trafl/residual_mean": float(residual.mean()),
                "trafl/d_hat_mean": float(d_hat.mean()),
                "trafl/d_hat_std": float(d_hat.std(unbiased=False)),
                "trafl/mask_ratio_std": float(mask_ratios.std(0, unbiased=False).mean()),
                "trafl/tilt_abs_mean": float(tilt.abs().mean()),
                "trafl/span_mean": float(state.span_length.float().mean()),
            }
        return remask.LossOutput(loss=loss, metrics=metrics, forward_passes=forwards)
