"""Evaluation metrics that every algorithm is judged by (pure functions, no model in here)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["distinct_correct", "mean_std", "confidence_interval"]

# pass@k lives with the evaluation loop: remask.engine.evaluation.pass_at_k


def distinct_correct(texts: Sequence[str], correct: Sequence[bool]) -> int:
    """Number of distinct correct completions among one prompt's samples (TraFL's diagnostic of
    "trajectory locking": RL that concentrates mass on few paths drives it towards 1)."""
    return len({t.strip() for t, ok in zip(texts, correct) if ok})


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


# Two-sided 95% Student-t quantiles for small samples (df = n - 1); normal beyond the table.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def confidence_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t confidence interval of the mean (nan for n < 2)."""
    m, s = mean_std(values)
    n = len(values)
    if n < 2:
        return m, float("nan")
    df = n - 1
    # between tabulated df, the next smaller df's quantile (a slightly wider, conservative interval)
    t = _T95.get(df) or ([v for d, v in sorted(_T95.items()) if d <= df][-1] if df <= 30 else 1.96)
    return m, t * s / math.sqrt(n)
