"""MDPO's per-block transfer schedules (autonomousvision/mdpo @ e6ae439, ``src/llada/generate.py``).

MaskGIT schedule (Chang et al. 2022, eq. for the mask ratio ``γ``): with ``n`` masked positions in a
block and ``S`` steps, the number still masked after step ``s`` is ``⌊n · clip(γ((s+1)/S), 1e-6, 1)⌋``,
so the count committed at step ``s`` is ``k_s = C_s − C_{s−1}`` with ``C_s = n − ⌊n γ((s+1)/S)⌋``.
``γ(r) = 1 − r`` (linear) or ``cos(π r / 2)`` (cosine). ``llada`` is LLaDA's even split
(``n // S`` each, the remainder to the first steps).
"""

from __future__ import annotations

import math

__all__ = ["transfer_counts"]


def _gamma(r: float, mode: str) -> float:
    if mode == "linear":
        ratio = 1.0 - r
    elif mode == "cosine":
        ratio = math.cos(r * math.pi / 2)
    else:
        raise ValueError(f"unknown MaskGIT schedule {mode!r}")
    return min(max(ratio, 1e-6), 1.0)


def transfer_counts(n: int, steps: int, schedule: str = "maskgit-linear") -> list[int]:
    """Positions to commit at each of ``steps`` steps of a block with ``n`` masked positions.

    ``(32, 5)`` -> ``[7, 6, 7, 6, 6]`` (maskgit-linear) and ``[7, 7, 6, 6, 6]`` (llada).
    """
    if steps <= 0:
        raise ValueError("steps must be positive")
    if schedule == "llada":
        base, extra = divmod(n, steps)
        return [base + (1 if s < extra else 0) for s in range(steps)]
    mode = schedule.removeprefix("maskgit-")
    cumulative = [n - math.floor(n * _gamma((s + 1) / steps, mode)) for s in range(steps)]  # C_s
    return [cumulative[0]] + [cumulative[s] - cumulative[s - 1] for s in range(1, steps)]
