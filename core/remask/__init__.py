"""remask: reinforcement-learning post-training for masked diffusion language models.

The public API a plugin may use is what this module exports (plus ``remask.testing`` for tests).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import ConfigError, PluginError, RemaskError, UnknownComponentError
from .hookspecs import hookimpl
from .interfaces import (
    COMPONENT_KINDS,
    AdvantageEstimator,
    Component,
    ComponentConfig,
    DataFilter,
    DataFilterContext,
    DiffusionModel,
    ForwardPass,
    LikelihoodEstimator,
    ModelOutput,
    PolicyObjective,
    RewardModel,
    RewardName,
    RewardRef,
    Sampler,
    StepContext,
    StepSelector,
    Task,
)
from .records import Example, LossOutput, PromptBatch, Rewards, Rollout, StepSelection, take
from .trajectory import block_step_table, newly_unmasked, state_before_step, states_before_steps
from . import functional, likelihood  # noqa: E402  public building blocks (docs/api.md)

try:
    __version__ = version("remask")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "__version__",
    "hookimpl",
    "COMPONENT_KINDS",
    "AdvantageEstimator",
    "Component",
    "ComponentConfig",
    "DataFilter",
    "DataFilterContext",
    "DiffusionModel",
    "ForwardPass",
    "LikelihoodEstimator",
    "ModelOutput",
    "PolicyObjective",
    "RewardModel",
    "RewardName",
    "RewardRef",
    "Sampler",
    "StepContext",
    "StepSelector",
    "Task",
    "Example",
    "LossOutput",
    "PromptBatch",
    "Rewards",
    "Rollout",
    "StepSelection",
    "take",
    "state_before_step",
    "states_before_steps",
    "newly_unmasked",
    "block_step_table",
    "functional",
    "likelihood",
    "RemaskError",
    "ConfigError",
    "PluginError",
    "UnknownComponentError",
]
