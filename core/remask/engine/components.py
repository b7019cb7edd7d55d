"""Building a run's components from a :class:`~remask.config.PipelineConfig` through the registry,
applying LoRA, keeping the reference policy, and scoring completions robustly."""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import LoraSettings, PipelineConfig
from ..errors import RemaskError
from ..interfaces import (
    AdvantageEstimator,
    ComponentConfig,
    DataFilter,
    DiffusionModel,
    ModelOutput,
    PolicyObjective,
    RewardModel,
    Sampler,
    StepSelector,
    Task,
)
from ..records import PromptBatch, Rewards
from ..registry import Registry, get_registry

__all__ = [
    "Pipeline",
    "build_pipeline",
    "build_component",
    "apply_lora",
    "ReferenceModel",
    "make_reference",
    "RewardScorer",
]

log = logging.getLogger("remask.engine")


def build_component(kind: str, spec: Any, registry: Registry | None = None) -> Any:
    """Instantiate the registered class named by ``spec`` with its validated parameters."""
    return spec.build(registry or get_registry(), kind)


@dataclass
class Pipeline:
    """The components of one run, built from config."""

    model: DiffusionModel
    task: Task
    sampler: Sampler
    rewards: list[tuple[RewardModel, float, str]]  # (model, weight, label)
    advantage: AdvantageEstimator
    step_selector: StepSelector | None
    objective: PolicyObjective
    data_filter: DataFilter | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        for reward, _, _ in self.rewards:
            try:
                reward.close()
            except Exception as exc:  # noqa: BLE001 - closing must not hide the run's result
                log.warning("reward %s: close() raised %s: %s", reward.name, type(exc).__name__, exc)


def build_pipeline(config: PipelineConfig, registry: Registry | None = None) -> Pipeline:
    """Build every component named in ``config`` (the model is built first, on CPU)."""
    reg = registry or get_registry()
    return Pipeline(
        model=build_component("model", config.model, reg),
        task=build_component("task", config.task, reg),
        sampler=build_component("sampler", config.sampler, reg),
        rewards=[(build_component("reward", r, reg), float(r.weight), r.alias or r.name) for r in config.rewards],
        advantage=build_component("advantage", config.advantage, reg),
        step_selector=build_component("step_selector", config.step_selector, reg) if config.step_selector else None,
        objective=build_component("objective", config.objective, reg),
        data_filter=build_component("data_filter", config.data_filter, reg) if config.data_filter else None,
    )


# ---------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------


def apply_lora(model: DiffusionModel, settings: LoraSettings) -> None:
    """Wrap the policy in a PEFT LoRA adapter.

    Model adapters that know their architecture implement ``apply_lora(settings)``
    (``remask.modeling.HFDiffusionModel`` does); for any other adapter the engine wraps
    ``model.module`` with PEFT directly, which needs explicit ``target_modules`` for non-transformers
    modules.
    """
    own = getattr(model, "apply_lora", None)
    if callable(own):
        own(settings)
        return
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:  # pragma: no cover - peft is a dependency
        raise RemaskError(f"train.lora needs the `peft` package: {exc}") from None
    targets = settings.target_modules
    if targets == "all-linear":
        targets = sorted({name.split(".")[-1] for name, m in model.module.named_modules()
                          if isinstance(m, torch.nn.Linear)})
    lora = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=targets)
    try:
        model.module = get_peft_model(model.module, lora)
    except ValueError as exc:
        raise RemaskError(f"train.lora: PEFT could not wrap model {model.name!r}: {exc}") from None


def adapter_active(model: DiffusionModel) -> bool:
    """True when the policy carries a LoRA adapter (through the adapter API or a PEFT module)."""
    try:
        if model.has_adapter:
            return True
    except Exception:  # noqa: BLE001
        pass
    return _is_peft(model.module)


def _is_peft(module: torch.nn.Module) -> bool:
    peft = sys.modules.get("peft")  # never imported -> cannot be a PEFT module (and import is slow)
    return peft is not None and isinstance(module, peft.PeftModel)


# ---------------------------------------------------------------------------------------------
# Reference policy
# ---------------------------------------------------------------------------------------------


class ReferenceModel(DiffusionModel):
    """The reference policy as a :class:`DiffusionModel` whose forward never builds a graph.

    Either the policy's own network with its LoRA adapter disabled (no second copy of the weights),
    or a frozen copy of the initial policy when there is no adapter.
    """

    name = "reference"

    def __init__(self, base: DiffusionModel, *, disable_adapter: bool) -> None:
        super().__init__(ComponentConfig())
        self.base = base
        self.uses_disabled_adapter = disable_adapter
        self.tokenizer = base.tokenizer
        self.mask_token_id = base.mask_token_id
        self.eos_token_id = base.eos_token_id
        self.pad_token_id = base.pad_token_id
        self.supports_4d_mask = base.supports_4d_mask  # type: ignore[misc]
        self.supports_kv_cache = base.supports_kv_cache  # type: ignore[misc]
        self.shift_logits = base.shift_logits  # type: ignore[misc]
        self.supports_logits_to_keep = base.supports_logits_to_keep  # type: ignore[misc]

    @property
    def module(self) -> torch.nn.Module:  # type: ignore[override]
        return self.base.module

    def _adapter_off(self) -> Any:
        if not self.uses_disabled_adapter:
            import contextlib

            return contextlib.nullcontext()
        if self.base.has_adapter:
            return self.base.disable_adapter()
        return self.base.module.disable_adapter()  # a PEFT module wrapped by the engine

    def forward(self, input_ids, attention_mask=None, **kwargs: Any) -> ModelOutput:
        self.nfe += 1
        with torch.no_grad(), self._adapter_off():
            out = self.base.forward(input_ids, attention_mask, **kwargs)
        if not self.uses_disabled_adapter:
            return out
        # the shared base counts this pass too; keep the policy's own count honest
        self.base.nfe -= 1
        return out

    def render_prompt(self, example):  # noqa: D102 - same rendering as the policy
        return self.base.render_prompt(example)


def make_reference(policy: DiffusionModel, *, lora: bool) -> ReferenceModel:
    """The reference for ``policy``: its adapter disabled when it has one, else a frozen deep copy."""
    if lora:
        return ReferenceModel(policy, disable_adapter=True)
    frozen = copy.deepcopy(policy)
    frozen.module.requires_grad_(False)
    frozen.module.eval()
    frozen.nfe = 0
    return ReferenceModel(frozen, disable_adapter=False)


def sync_reference(reference: ReferenceModel, policy: DiffusionModel, alpha: float = 1.0) -> None:
    """Move a frozen-copy reference towards the policy (``train.ref_update_every``), as TRL's
    ``SyncRefModelCallback`` (Gorbatovski et al. 2024, TR-DPO soft update):
    ``θ_ref ← α·θ_policy + (1 − α)·θ_ref``; ``alpha = 1`` copies the policy."""
    if reference.uses_disabled_adapter:
        return
    with torch.no_grad():
        for dst, src in zip(reference.base.module.parameters(), policy.module.parameters()):
            if alpha == 1.0:
                dst.copy_(src)
            else:
                dst.mul_(1.0 - alpha).add_(src.to(dst.dtype), alpha=alpha)


# ---------------------------------------------------------------------------------------------
# Rewards
# ---------------------------------------------------------------------------------------------


class RewardScorer:
    """Runs the pipeline's reward models and combines them with their weights.

    A reward model that raises does not stop the run: its rows count 0 with the reason
    ``error: <Type>: <message>``, and the failure is logged (once per distinct message).
    """

    def __init__(self, rewards: Sequence[tuple[RewardModel, float, str]]) -> None:
        self.rewards = list(rewards)
        self.errors: list[str] = []
        self._seen: set[str] = set()

    def __call__(self, prompts: PromptBatch, texts: Sequence[str]) -> Rewards:
        parts: list[tuple[Rewards, float]] = []
        n = len(texts)
        for reward, weight, label in self.rewards:
            try:
                out = reward.score(prompts=list(prompts.texts), completions=list(texts),
                                   references=list(prompts.references))
                if out.total.shape != (n,):
                    raise ValueError(f"returned {tuple(out.total.shape)} values for {n} completions")
            except Exception as exc:  # noqa: BLE001 - a broken reward must not end the run
                why = f"error: {type(exc).__name__}: {exc}"[:300]
                if why not in self._seen:
                    self._seen.add(why)
                    log.warning("reward %r raised; its rows count 0 (%s)", label, why)
                self.errors.append(f"{label}: {why}")
                out = Rewards.from_scores(label, [0.0] * n, [why] * n)
            parts.append((_relabel(out, reward.name, label), weight))
        return Rewards.combine(parts)

    def pop_errors(self) -> list[str]:
        errors, self.errors = self.errors, []
        return errors


def _relabel(rewards: Rewards, name: str, label: str) -> Rewards:
    """Name a reward's single component after its config alias."""
    if label == name or name not in rewards.components or len(rewards.components) != 1:
        return rewards
    return Rewards(
        total=rewards.total,
        components={label: rewards.components[name]},
        reasons={label: rewards.reasons.get(name, ("",) * rewards.batch_size)},
        weights={label: rewards.weights.get(name, 1.0)},
    )
