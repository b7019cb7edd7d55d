"""Entry point of the remask_espo plugin: registers the ``espo`` objective.

ESPO composes registered pieces: advantage ``rloo`` (remask_grpo; ESPO's leave-one-out baseline with
``scale_rewards: false``), the fixed-count ELBO with complementary views (:mod:`remask.likelihood`;
the registered ``elbo`` likelihood estimator measures it for ``remask diagnose``), and its own loss.
"""

from __future__ import annotations

import remask

from .objective import ESPOObjective


@remask.hookimpl
def register_objectives(register):
    register(ESPOObjective)
