"""The template's own tests: remask.testing's contract checks, run by the plugin on itself."""

from remask.testing import check_component

from remask_template.components import AdvantageWeightedLikelihood, LengthPenaltyReward


def test_reward_conforms():
    assert check_component(LengthPenaltyReward) == []


def test_objective_conforms():
    assert check_component(AdvantageWeightedLikelihood) == []
