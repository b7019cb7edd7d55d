"""Entry point of the remask_trafl plugin: registers its components with remask.

* objective ``trafl`` (:class:`remask_trafl.objective.TraflObjective`): TraFL's squared
  trajectory-balance residual with complementary-pair masks and a learned ``LogZHead``.

TraFL's centred reward is the per-row advantage of the ``group-mean`` estimator (r − mean of the
group, no std), registered by the GRPO plugin; this plugin adds no estimator of its own.
"""

from __future__ import annotations

import remask

from .estimator import TraflSurrogate
from .objective import TraflObjective


@remask.hookimpl
def register_objectives(register):  # noqa: ANN001
    register(TraflObjective)


@remask.hookimpl
def register_likelihood_estimators(register):
    register(TraflSurrogate)
