"""Entry point of the remask_math plugin: registers its rewards and tasks with remask."""

from __future__ import annotations

import remask

from .arithmetic import ArithmeticCorrect, ArithmeticDigits, ArithmeticTask
from .digit_scan import DigitScanCorrect, DigitScanDigits, DigitScanTask
from .rewards import D1_COMPAT, FIXED
from .tasks import TASKS


@remask.hookimpl
def register_rewards(register):
    register(ArithmeticCorrect)
    register(ArithmeticDigits)
    register(DigitScanCorrect)
    register(DigitScanDigits)
    for cls in FIXED + D1_COMPAT:
        register(cls)


@remask.hookimpl
def register_tasks(register):
    register(ArithmeticTask)
    register(DigitScanTask)
    for cls in TASKS:
        register(cls)
