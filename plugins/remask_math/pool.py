"""A pool of math-verify worker processes with a hard wall-clock deadline enforced by the parent.

Each worker (:mod:`remask_math._worker`) is a fresh interpreter started with ``subprocess`` (no fork
of the trainer, so no torch threads or CUDA state are duplicated); it imports math-verify, reports
ready, then answers one job at a time. The parent hands each ready worker one job, waits on all
pipes with ``select``, and when a job outlives ``timeout_s`` it SIGKILLs that worker, reaps it,
answers ``(False, "timeout")`` and starts a replacement. A worker that dies (out of memory under
its ``RLIMIT_AS``, a crash) answers ``(False, "verifier-crashed")`` and is replaced the same way.
Job ids are unique for the pool's life (never batch positions), and a call that ends in an error
or an interrupt kills the workers it left busy, so a late answer can never be read as another
call's verdict.

Starting is cheap: :class:`VerifierPool` spawns nothing until the first job, and spawning returns
at once (imports happen in the children, in parallel). :meth:`VerifierPool.close` kills and reaps
every worker; an ``atexit`` hook and the kernel's parent-death signal cover abnormal exits.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import selectors
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import remask

_LIVE: weakref.WeakSet[VerifierPool] = weakref.WeakSet()


def _close_all() -> None:
    for pool in list(_LIVE):
        pool.close()


atexit.register(_close_all)


@dataclass(frozen=True)
class Job:
    """One verification: a gold span and a predicted span, both already pre-normalised."""

    gold: str
    pred: str
    policy: dict[str, Any] = field(default_factory=dict)


class _Worker:
    def __init__(self, memory_mb: int) -> None:
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA", "NCCL"))}
        env.update({
            "PYTHONPATH": os.pathsep.join([pkg_root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "REMASK_MATH_WORKER_MB": str(memory_mb),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "remask_math._worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, start_new_session=True, close_fds=True,
        )
        self.started = time.monotonic()
        self.ready = False
        self.job: int | None = None  # pool-wide unique id of the job in flight
        self.job_started = 0.0
        self.buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, job_id: int, job: Job) -> None:
        msg = json.dumps({"id": job_id, "gold": job.gold, "pred": job.pred, "policy": job.policy}) + "\n"
        assert self.proc.stdin is not None
        self.proc.stdin.write(msg.encode())
        self.proc.stdin.flush()
        self.job, self.job_started = job_id, time.monotonic()

    def read_lines(self) -> list[dict[str, Any]] | None:
        """Messages available now; None on EOF (the worker died)."""
        assert self.proc.stdout is not None
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def kill(self) -> None:
        """SIGKILL and reap; never raises."""
        try:
            self.proc.kill()
        except OSError:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL not delivered
            pass


class VerifierPool:
    """Worker processes running math-verify under a parent-enforced deadline."""

    def __init__(self, workers: int = 2, timeout_s: float = 5.0, memory_mb: int = 2048,
                 startup_timeout_s: float = 60.0) -> None:
        if workers < 1:
            raise remask.RemaskError(f"math verifier pool: workers must be >= 1, got {workers}")
        self.size = workers
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb)
        self.startup_timeout_s = float(startup_timeout_s)
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self._ids = itertools.count()  # job ids are unique for the pool's life, never batch indices
        self.stats = {"jobs": 0, "timeouts": 0, "crashes": 0, "respawns": 0}
        _LIVE.add(self)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def _spawn(self) -> _Worker:
        return _Worker(self.memory_mb)

    def start(self) -> None:
        """Spawn the workers now (otherwise the first :meth:`run` does)."""
        if self._closed:
            raise RuntimeError("math verifier pool is closed")
        while len(self._workers) < self.size:
            self._workers.append(self._spawn())

    def close(self) -> None:
        """Kill and reap every worker. Safe to call twice."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for w in workers:
            w.kill()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # -- running --------------------------------------------------------------------------------

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        fresh = self._spawn()
        self._workers[self._workers.index(w)] = fresh
        self.stats["respawns"] += 1
        return fresh

    def run(self, jobs: Sequence[Job]) -> list[tuple[bool | None, str]]:
        """Verdicts for ``jobs`` in order: ``(True|False|None, reason)``; never raises on job content."""
        if not jobs:
            return []
        with self._lock:
            if self._closed:
                raise RuntimeError("math verifier pool is closed")
            self.start()
            return self._run(jobs)

    def _run(self, jobs: Sequence[Job]) -> list[tuple[bool | None, str]]:
        results: list[tuple[bool | None, str] | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        index_of: dict[int, int] = {}  # job id -> position in ``jobs`` (this call only)
        remaining = len(jobs)
        sel = selectors.DefaultSelector()
        finished = False
        try:
            for w in self._workers:
                assert w.proc.stdout is not None
                sel.register(w.proc.stdout, selectors.EVENT_READ, w)

            def swap(old: _Worker) -> None:
                sel.unregister(old.proc.stdout)
                new = self._replace(old)
                sel.register(new.proc.stdout, selectors.EVENT_READ, new)

            def dispatch() -> None:
                for w in self._workers:
                    if w.ready and w.job is None and pending:
                        i = pending.popleft()
                        job_id = next(self._ids)
                        try:
                            w.send(job_id, jobs[i])
                        except OSError:  # broken pipe: the worker died between jobs
                            pending.appendleft(i)
                            swap(w)
                            continue
                        index_of[job_id] = i

            def settle(w: _Worker, verdict: tuple[bool | None, str]) -> None:
                nonlocal remaining
                i = index_of.pop(w.job) if w.job is not None else None
                w.job = None
                if i is not None and results[i] is None:
                    results[i] = verdict
                    remaining -= 1

            dispatch()
            while remaining:
                now = time.monotonic()
                deadlines = []
                for w in self._workers:
                    if w.job is not None:
                        deadlines.append(w.job_started + self.timeout_s)
                    elif not w.ready:
                        deadlines.append(w.started + self.startup_timeout_s)
                wait = max(0.0, min(deadlines) - now) if deadlines else 0.05
                for key, _ in sel.select(timeout=wait):
                    w = key.data
                    if w not in self._workers:  # replaced earlier in this round
                        continue
                    msgs = w.read_lines()
                    if msgs is None:  # EOF: the worker died
                        if w.job is not None:
                            settle(w, (False, "verifier-crashed"))
                            self.stats["crashes"] += 1
                        elif not w.ready:
                            raise remask.RemaskError(
                                "math verifier worker exited during start-up; check that "
                                "`python -c 'import math_verify'` works in this environment")
                        swap(w)
                        continue
                    for msg in msgs:
                        if msg.get("ready"):
                            w.ready = True
                        elif w.job is not None and msg.get("id") == w.job:
                            settle(w, (msg.get("verdict"), str(msg.get("reason", ""))))
                            self.stats["jobs"] += 1
                now = time.monotonic()
                for w in list(self._workers):
                    if w.job is not None and now - w.job_started > self.timeout_s:
                        settle(w, (False, "timeout"))
                        self.stats["timeouts"] += 1
                        swap(w)
                    elif not w.ready and now - w.started > self.startup_timeout_s:
                        raise remask.RemaskError(
                            f"math verifier worker did not start within {self.startup_timeout_s:.0f}s")
                dispatch()
            finished = True
        finally:
            sel.close()
            if not finished:  # an error or an interrupt left jobs in flight: their answers belong to no call
                for w in [w for w in self._workers if w.job is not None or not w.ready]:
                    w.kill()
                    self._workers.remove(w)
        return [r if r is not None else (False, "verifier-crashed") for r in results]
