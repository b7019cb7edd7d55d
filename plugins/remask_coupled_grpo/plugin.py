"""Entry point of the remask_coupled_grpo plugin: the ``coupled-grpo`` objective and ``coupled`` estimator.

Coupled-GRPO composes registered pieces: advantage ``rloo`` (remask_grpo), the coupled views of
:mod:`remask.likelihood`, and its own token-mean clipped-surrogate loss.
"""

from __future__ import annotations

import remask

from .estimator import CoupledLogRatio
from .objective import CoupledGRPOObjective


@remask.hookimpl
def register_objectives(register):
    register(CoupledGRPOObjective)


@remask.hookimpl
def register_likelihood_estimators(register):
    register(CoupledLogRatio)
