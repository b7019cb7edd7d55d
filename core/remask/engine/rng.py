"""Seeded random-number streams of a run.

Every source of randomness the engine hands out has its own ``torch.Generator``, so that adding a
dropout layer, an extra mask draw or another process never shifts the draws of another stream
(spec algorithms.md §8 trap 4: d1 reseeds the global RNG inside its loss; we never do):

* ``sampling``   — the sampler's draws (Gumbel noise, random remasking); one per process;
* ``selector``   — the step selector's draws; one per process;
* ``likelihood`` — seeded masks of likelihood estimators (``StepContext.generator``); one per process;
* ``data``       — the order of the training prompts; the same on every process.

Every stream, plus the global torch / Python / NumPy state (dropout), is checkpointed, so that a
resumed run draws exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import random
from typing import Any

import torch

__all__ = ["RngStreams", "stream_seed", "STREAMS"]

#: per-process streams (the data-order stream lives in :class:`remask.engine.data.DataOrder`)
STREAMS: tuple[str, ...] = ("sampling", "selector", "likelihood")


def stream_seed(seed: int, stream: str, rank: int = 0) -> int:
    """A 63-bit seed for ``stream`` on process ``rank``, distinct for every (seed, stream, rank).

    Deterministic across Python runs (no ``hash()`` randomisation).
    """
    code = sum((i + 1) * ord(c) for i, c in enumerate(stream))
    return (seed * 1_000_003 + code * 7_919 + rank * 104_729) % (2**63 - 1)


#: streams created on the accelerator device (the sampler's noise can be [B, L, V]); the others
#: draw small tensors and live on the CPU, where every ``torch.rand(..., generator=g)`` works
DEVICE_STREAMS: tuple[str, ...] = ("sampling",)


class RngStreams:
    """The per-process generators of one run (``sampling`` on ``device``, the others on the CPU)."""

    def __init__(self, seed: int, *, rank: int = 0, device: torch.device | str = "cpu") -> None:
        self.seed = seed
        self.rank = rank
        self.device = torch.device(device)
        self.generators: dict[str, torch.Generator] = {}
        for name in STREAMS:
            g = torch.Generator(device=self.device if name in DEVICE_STREAMS else "cpu")
            g.manual_seed(stream_seed(seed, name, rank))
            self.generators[name] = g

    @property
    def sampling(self) -> torch.Generator:
        return self.generators["sampling"]

    @property
    def selector(self) -> torch.Generator:
        return self.generators["selector"]

    @property
    def likelihood(self) -> torch.Generator:
        return self.generators["likelihood"]

    def state_dict(self) -> dict[str, Any]:
        """Every stream plus the global torch, CUDA, Python and NumPy states (dropout and friends)."""
        state: dict[str, Any] = {name: g.get_state() for name, g in self.generators.items()}
        state["torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        state["python"] = random.getstate()
        try:
            import numpy as np

            state["numpy"] = np.random.get_state()
        except ImportError:  # pragma: no cover - numpy ships with torch wheels
            pass
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, g in self.generators.items():
            if name in state:
                g.set_state(state[name])
        if "torch" in state:
            torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        if "python" in state:
            random.setstate(state["python"])
        if "numpy" in state:
            import numpy as np

            np.random.set_state(state["numpy"])
