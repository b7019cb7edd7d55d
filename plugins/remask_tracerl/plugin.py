"""Entry point of the remask_tracerl plugin: selector ``trace-shrink``, advantage ``tracerl-zscore``, objective ``tracerl``.

TraceRL composes registered pieces: any sampler that records ``unmask_step`` (``llada``, ``dream``),
its shrinkage selector and z-score advantage, and its own chunked PPO loss with an optional value head.
"""

from __future__ import annotations

import remask

from .components import TraceRLZScoreAdvantage, TraceShrinkSelector
from .objective import TraceRLObjective


@remask.hookimpl
def register_step_selectors(register):
    register(TraceShrinkSelector)


@remask.hookimpl
def register_advantage_estimators(register):
    register(TraceRLZScoreAdvantage)


@remask.hookimpl
def register_objectives(register):
    register(TraceRLObjective)
