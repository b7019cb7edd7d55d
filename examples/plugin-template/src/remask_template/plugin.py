"""The module the `remask` entry point names: one hook per component kind it contributes."""

from __future__ import annotations

import remask

from .components import AdvantageWeightedLikelihood, LengthPenaltyReward


@remask.hookimpl
def register_objectives(register):
    register(AdvantageWeightedLikelihood)


@remask.hookimpl
def register_rewards(register):
    register(LengthPenaltyReward)
