"""Entry point of the remask_math plugin: registers its rewards and tasks with remask."""

from __future__ import annotations

import remask

from .arithmetic import ArithmeticCorrect, ArithmeticTask


@remask.hookimpl
def register_rewards(register):
    register(ArithmeticCorrect)


@remask.hookimpl
def register_tasks(register):
    register(ArithmeticTask)
