"""Entry point of the remask_grpo plugin: registers GRPO, d1 / diffu-GRPO and group advantages."""

from __future__ import annotations

import remask

from .estimators import ElboLogRatio, OneStepLogRatio
from .advantages import GroupMeanAdvantage, GroupMeanStdAdvantage, RLOOAdvantage
from .objectives import D1Objective, GRPOObjective


@remask.hookimpl
def register_advantage_estimators(register) -> None:
    register(GroupMeanAdvantage)
    register(GroupMeanStdAdvantage)
    register(RLOOAdvantage)


@remask.hookimpl
def register_objectives(register) -> None:
    register(GRPOObjective)
    register(D1Objective)


@remask.hookimpl
def register_likelihood_estimators(register):
    register(OneStepLogRatio)
    register(ElboLogRatio)
