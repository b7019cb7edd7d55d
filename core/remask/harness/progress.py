"""The progress line of a comparison: runs done/total, each running run's step, elapsed and ETA.

On a terminal the line is redrawn in place; in a log file (not a TTY) it is printed when a run starts
or ends and at most every ``every_seconds`` in between, so that a comparison that sits on one run for
13 minutes still says where it is.

The ETA assumes the remaining work goes as fast as the work done in this invocation: the work done
is the finished runs plus the budget fraction of the running ones (steps, forward passes or seconds,
whichever the budget counts); an evaluation-only run (the untrained base) weighs
``EVAL_ONLY_WEIGHT`` of a training run.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["ComparisonProgress", "format_seconds", "EVAL_ONLY_WEIGHT"]

EVAL_ONLY_WEIGHT = 0.2


def format_seconds(seconds: float) -> str:
    """``1h02m``, ``4m05s``, ``12s``."""
    s = int(round(max(seconds, 0.0)))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class ComparisonProgress:
    """Tracks the runs of one invocation and prints the progress line."""

    def __init__(self, total: int, *, reused: int = 0, stream: TextIO | None = None, every_seconds: float = 30.0,
                 budget: str = "") -> None:
        self.total = total
        self.done = reused
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every_seconds
        self.budget = budget
        self.started = time.perf_counter()
        self._last_print = 0.0
        self._work_total = 0.0
        self._work_done = 0.0
        self.running: dict[str, dict[str, Any]] = {}  # label -> {weight, fraction, step, phase, max_steps}
        self._drawn = False
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def start_ticking(self, every: float = 1.0) -> None:
        """Redraw from a background thread too, so that a long phase without steps (an evaluation of a
        large model) still updates the elapsed time and, in a log, prints every ``every_seconds``."""
        def tick() -> None:
            while not self._stop.wait(every):
                self.draw()

        self._ticker = threading.Thread(target=tick, name="remask-compare-progress", daemon=True)
        self._ticker.start()

    def add_work(self, weight: float) -> None:
        """Count one run still to do in this invocation (1 for training, ``EVAL_ONLY_WEIGHT`` for eval only)."""
        self._work_total += weight

    def start(self, label: str, *, weight: float, max_steps: int | None, resumed_from: int | None = None) -> None:
        self.running[label] = {"weight": weight, "fraction": 0.0, "step": resumed_from or 0, "phase": "starting",
                               "max_steps": max_steps}
        how = f" (resuming from step {resumed_from})" if resumed_from is not None else ""
        self.message(f"[{self.done + len(self.running)}/{self.total}] {label}: started{how}")

    def update(self, label: str, info: Mapping[str, Any]) -> None:
        run = self.running.get(label)
        if run is None:
            return
        run.update({k: info[k] for k in ("fraction", "step", "phase") if k in info})
        self.draw()

    def finish(self, label: str, outcome: str) -> None:
        run = self.running.pop(label, None)
        if run is not None and outcome == "finished":
            self._work_done += run["weight"]
            self.done += 1
        elif run is not None:
            self._work_done += run["weight"] * run["fraction"]
        self.message(f"[{self.done}/{self.total}] {label}: {outcome} ({format_seconds(self.elapsed())} elapsed)")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def eta(self) -> float | None:
        """Seconds left, or ``None`` before any work is done."""
        done = self._work_done + sum(r["weight"] * r["fraction"] for r in self.running.values())
        if done <= 0 or self._work_total <= 0:
            return None
        return self.elapsed() * (self._work_total - done) / done

    def line(self) -> str:
        parts = [f"runs {self.done}/{self.total} done"]
        for label, r in self.running.items():
            if r["phase"] == "train":
                steps = f"step {r['step']}/{r['max_steps']}" if r["max_steps"] else f"step {r['step']}"
                parts.append(f"{label}: {steps} ({100 * r['fraction']:.0f}% of {self.budget or 'budget'})")
            else:
                parts.append(f"{label}: {'evaluating' if r['phase'] == 'eval' else r['phase']}")
        eta = self.eta()
        parts.append(f"elapsed {format_seconds(self.elapsed())}")
        parts.append(f"ETA {format_seconds(eta)}" if eta is not None else "ETA –")
        return " · ".join(parts)

    def draw(self, force: bool = False) -> None:
        with self._lock:
            self._draw(force)

    def _draw(self, force: bool) -> None:
        now = time.perf_counter()
        if self.tty:
            if force or now - self._last_print >= 0.2:
                self.stream.write("\r\033[K" + self.line())
                self.stream.flush()
                self._drawn = True
                self._last_print = now
        elif force or now - self._last_print >= self.every:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._last_print = now

    def message(self, text: str) -> None:
        """A permanent line (a run started or ended), then the progress line again."""
        with self._lock:
            if self.tty and self._drawn:
                self.stream.write("\r\033[K")
            self.stream.write(text + "\n")
            self.stream.flush()
            self._drawn = False
            self._draw(force=self.tty)

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        with self._lock:
            if self.tty and self._drawn:
                self.stream.write("\n")
                self.stream.flush()
