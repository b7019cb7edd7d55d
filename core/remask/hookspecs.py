"""Every hook remask calls. Hooks are called with keyword arguments only; new arguments are only
ever appended, so a plugin written today keeps working.

The ``register_*`` hooks receive a ``register(cls, name=None)`` callback; a plugin calls it once
per component class. The lifecycle hooks let a plugin observe training without subclassing the
engine.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("remask")
hookimpl = pluggy.HookimplMarker("remask")


@hookspec
def register_models(register: Any) -> None:
    """Register model adapters (subclasses of ``remask.DiffusionModel``)."""


@hookspec
def register_samplers(register: Any) -> None:
    """Register samplers (subclasses of ``remask.Sampler``)."""


@hookspec
def register_objectives(register: Any) -> None:
    """Register policy objectives (subclasses of ``remask.PolicyObjective``)."""


@hookspec
def register_advantage_estimators(register: Any) -> None:
    """Register advantage estimators (subclasses of ``remask.AdvantageEstimator``)."""


@hookspec
def register_rewards(register: Any) -> None:
    """Register reward models (subclasses of ``remask.RewardModel``)."""


@hookspec
def register_step_selectors(register: Any) -> None:
    """Register step selectors (subclasses of ``remask.StepSelector``)."""


@hookspec
def register_tasks(register: Any) -> None:
    """Register tasks (subclasses of ``remask.Task``)."""


@hookspec
def register_likelihood_estimators(register: Any) -> None:
    """Register likelihood(-ratio) estimators (subclasses of ``remask.LikelihoodEstimator``)."""


@hookspec
def register_data_filters(register: Any) -> None:
    """Register training-data filters (subclasses of ``remask.DataFilter``)."""


@hookspec
def after_rollout(rollout: Any, rewards: Any, step: int) -> None:
    """Called on every process after a rollout has been sampled and scored."""


@hookspec
def after_step(step: int, metrics: dict[str, float]) -> None:
    """Called on every process after each optimizer step with the step's metrics."""


@hookspec
def on_train_end(output_dir: str, metrics: dict[str, float]) -> None:
    """Called once on every process when training ends (also after an interruption)."""
