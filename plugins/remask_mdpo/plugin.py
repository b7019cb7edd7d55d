"""Entry point of the remask_mdpo plugin: sampler ``mdpo``, advantage ``mdpo-stepwise``, objective ``mdpo``,
data filter ``over-denoising``.

MDPO (arXiv 2508.13148; autonomousvision/mdpo @ e6ae439) composes its own sampler (MaskGIT schedule,
categorical proposals, one-step predictions and confidences recorded at every step, optional Running
Confidence Remasking), an advantage over the intermediate one-step predictions, and a confidence-weighted
per-step policy-gradient loss on the top-K steps by |A|.
"""

from __future__ import annotations

import remask

from .advantage import MDPOStepwiseAdvantage
from .objective import MDPOObjective
from .over_denoising import OverDenoisingFilter
from .sampler import MDPOSampler


@remask.hookimpl
def register_samplers(register):
    register(MDPOSampler)


@remask.hookimpl
def register_advantage_estimators(register):
    register(MDPOStepwiseAdvantage)


@remask.hookimpl
def register_objectives(register):
    register(MDPOObjective)


@remask.hookimpl
def register_data_filters(register):
    register(OverDenoisingFilter)
