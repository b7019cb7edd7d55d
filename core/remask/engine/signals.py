"""Stopping a run cleanly on SIGINT / SIGTERM: checkpoint at the next rollout boundary, then exit."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

__all__ = ["StopRequest"]

log = logging.getLogger("remask.engine")


class StopRequest:
    """SIGINT/SIGTERM: the first signal asks the loop to checkpoint and stop at the next rollout
    boundary; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.reason = ""
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.reason = signal.Signals(signum).name
        log.warning("%s received: saving a checkpoint after this step (Ctrl-C again to abort at once)", self.reason)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):  # pragma: no cover - not allowed here
                pass

    def restore(self) -> None:
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except (ValueError, OSError):  # pragma: no cover
                pass
        self._old.clear()

