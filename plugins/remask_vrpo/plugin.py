"""Entry point of the remask_vrpo plugin: the ``vrpo`` objective and the ``vrpo-elbo`` estimator.

VRPO composes registered pieces: advantage ``raw-reward`` (remask_dtrpo) to rank rows, the per-row
stratified fixed-count ELBO views of :mod:`remask.likelihood`, and its own DPO-on-ELBO loss.
"""

from __future__ import annotations

import remask

from .estimator import VRPOElboLogRatio
from .objective import VRPOObjective


@remask.hookimpl
def register_objectives(register):
    register(VRPOObjective)


@remask.hookimpl
def register_likelihood_estimators(register):
    register(VRPOElboLogRatio)
