"""Entry point of the remask_dtrpo plugin: registers dTRPO's components with remask.

* step selector ``one-per-block``: one uniform step per block (usable by any objective);
* advantage ``raw-reward``: the total reward unchanged, to rank completions into pairs;
* objective ``dtrpo``: DPO on trajectory log-ratios from one re-masked step per block;
* likelihood estimators ``dtrpo-trajectory`` (exact sampler states, N_B passes) and
  ``dtrpo-single-pass`` (one block-causal pass): that log-ratio estimate alone (``remask diagnose``).
"""

from __future__ import annotations

import remask

from .components import (
    DTRPOObjective,
    DTRPOSinglePassEstimator,
    DTRPOTrajectoryEstimator,
    OnePerBlockSelector,
    RawRewardAdvantage,
)


@remask.hookimpl
def register_step_selectors(register):
    register(OnePerBlockSelector)


@remask.hookimpl
def register_advantage_estimators(register):
    register(RawRewardAdvantage)


@remask.hookimpl
def register_objectives(register):
    register(DTRPOObjective)


@remask.hookimpl
def register_likelihood_estimators(register):
    register(DTRPOTrajectoryEstimator)
    register(DTRPOSinglePassEstimator)
