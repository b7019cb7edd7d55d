"""Entry point of the remask_wd1 plugin: registers the ``wd1`` objective.

wd1 composes registered pieces: advantage ``group-mean`` (remask_grpo), d1's one-step likelihood
(:mod:`remask.likelihood`), and its own weighted-likelihood loss.
"""

from __future__ import annotations

import remask

from .objective import WD1Objective


@remask.hookimpl
def register_objectives(register):
    register(WD1Objective)
