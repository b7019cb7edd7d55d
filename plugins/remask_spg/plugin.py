"""Entry point of the remask_spg plugin: registers the ``spg`` objective.

SPG composes registered pieces: advantage ``group-mean`` (remask_grpo; SPG's ``r − group mean``),
seeded views and per-view log-probs from :mod:`remask.likelihood`, its own block-random masks and its
sandwiched loss.
"""

from __future__ import annotations

import remask

from .objective import SPGObjective


@remask.hookimpl
def register_objectives(register):
    register(SPGObjective)
