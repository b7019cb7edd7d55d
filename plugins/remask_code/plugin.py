"""Entry point of the remask_code plugin: registers its components with remask."""

from __future__ import annotations

import remask

from .reward import CodeReward, EgspoCodeReward
from .task import CodeTestsTask


@remask.hookimpl
def register_rewards(register):
    register(CodeReward)
    register(EgspoCodeReward)


@remask.hookimpl
def register_tasks(register):
    register(CodeTestsTask)
