"""Entry point of the remask_egspo plugin: registers its components with remask.

* step selectors `entropy-topk`, `random`, `uniform`;
* advantage estimator `egspo-stepwise` (EGSPO, and EGSPO-SA with λ > 0);
* objective `egspo`.
"""

from __future__ import annotations

import remask

from .advantage import EGSPOStepwiseAdvantage
from .objective import EGSPOObjective
from .selection import EntropyTopKSelector, RandomStepSelector, UniformStepSelector


@remask.hookimpl
def register_step_selectors(register):
    register(EntropyTopKSelector)
    register(RandomStepSelector)
    register(UniformStepSelector)


@remask.hookimpl
def register_advantage_estimators(register):
    register(EGSPOStepwiseAdvantage)


@remask.hookimpl
def register_objectives(register):
    register(EGSPOObjective)
