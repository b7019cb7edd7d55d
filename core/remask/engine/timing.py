"""Wall time per phase of a training round, logged as ``timing/<phase>``."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

__all__ = ["PhaseTimer"]


class PhaseTimer:
    """Accumulates wall time per phase (logged as ``timing/<phase>``)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.last: dict[str, float] = {}  # seconds of each phase's most recent interval

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.last[phase] = time.perf_counter() - t0
            self.totals[phase] += self.last[phase]

    def pop(self) -> dict[str, float]:
        out = {f"timing/{k}": v for k, v in self.totals.items()}
        self.totals.clear()
        return out

