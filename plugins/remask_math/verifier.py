"""MathVerifier: our extraction and guards around math-verify running in a worker pool.

Per (gold, prediction) pair, in the trainer process: length cap, pre-normalisation
(:func:`~remask_math.normalize.pre_normalize`), power-tower and nesting pre-filters, nested boxes
and hedges (:mod:`~remask_math.hedges`) refused, then two exact fast paths: plain numbers and
simple fractions (:func:`~remask_math.normalize.exact_decision`, most GSM8K answers), and surds and
other radicals, pi, e, polynomials, intervals, finite sets, degrees and choice letters
(:func:`~remask_math.exact.exact_verdict`, most other MATH answers).
Identical pairs of one call are judged once, and verdicts are remembered across calls (bounded
LRU; timeouts, math-verify's own alarm and crashes are never remembered). Everything else goes to
:class:`~remask_math.pool.VerifierPool`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from .exact import exact_verdict
from .hedges import hedge_reason
from .normalize import exact_decision, exponent_depth, nesting_depth, pre_normalize
from .pool import Job, VerifierPool
from .text import MAX_SPAN_CHARS

#: spans whose power towers are at least this deep are refused before parsing (``9^{9^{9^{9}}}``)
MAX_EXPONENT_DEPTH = 3
#: spans nested deeper than this are refused (math-verify needs seconds to give up on them)
MAX_NESTING = 40


#: reasons that depend on load or luck, not on the pair: never remembered across calls
TRANSIENT_REASONS = frozenset({"timeout", "timeout-alarm", "verifier-crashed", "memory"})


def remembered(reason: str) -> bool:
    """Whether a verdict with this reason is a property of the pair (and may be cached)."""
    return reason not in TRANSIENT_REASONS and not reason.startswith("verifier-error")


@dataclass(frozen=True)
class Policy:
    """Documented verdict switches (spec verifiers.md §1.6)."""

    strip_percent: bool = True  # 50\% == 50, never 0.5
    interval_equals_set: bool = False  # (1,2) is an interval, not {1, 2}
    max_span_chars: int = MAX_SPAN_CHARS
    max_exponent_depth: int = MAX_EXPONENT_DEPTH  # 0 disables the pre-filter
    max_nesting: int = MAX_NESTING  # 0 disables the pre-filter
    alarm_s: int = 3  # math-verify's own SIGALRM inside the worker (first line of defence)
    fast_paths: bool = True  # decide plain numbers, radicals, pi, e, polynomials, intervals, sets, choices in-process


class MathVerifier:
    """Judges answer spans against gold spans; owns (lazily) one :class:`VerifierPool`."""

    def __init__(self, *, workers: int = 2, timeout_s: float = 5.0, memory_mb: int = 2048,
                 policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self._pool_args = {"workers": workers, "timeout_s": timeout_s, "memory_mb": memory_mb}
        self._pool: VerifierPool | None = None
        # verdicts are deterministic, and RL revisits the same (gold, answer) pairs every epoch
        self._memo: OrderedDict[tuple[str, str, str], tuple[float | None, str]] = OrderedDict()
        self.memo_size = 65_536

    @property
    def pool(self) -> VerifierPool:
        if self._pool is None:
            self._pool = VerifierPool(**self._pool_args)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _prepare(self, gold: str | None, pred: str | None) -> tuple[tuple[float | None, str] | None, Job | None]:
        p = self.policy
        if gold is None or not str(gold).strip():
            return (None, "no-reference"), None
        if len(str(gold)) > 10 * p.max_span_chars:
            return (None, "gold-too-long"), None
        if pred is None:
            return (0.0, "no-answer"), None
        if not pred.strip():
            return (0.0, "empty-answer"), None
        if len(pred) > p.max_span_chars:
            return (0.0, "span-too-long"), None
        g = pre_normalize(str(gold), strip_percent=p.strip_percent)
        q = pre_normalize(pred, strip_percent=p.strip_percent)
        if p.max_exponent_depth and max(exponent_depth(pred), exponent_depth(q)) >= p.max_exponent_depth:
            return (0.0, "exponent-tower"), None
        if p.max_nesting and nesting_depth(q) > p.max_nesting:
            return (0.0, "too-deep"), None
        if "\\boxed" in q or "\\fbox" in q:  # \boxed{4 \text{ or } \boxed{3}}: the outer box is the answer
            return (0.0, "nested-boxes"), None
        hedged = hedge_reason(q, g)
        if hedged is not None:
            return (0.0, hedged), None
        exact = exact_decision(g, q) if p.fast_paths else None  # plain numbers and simple fractions
        if exact is None and p.fast_paths:  # surds, pi, polynomials, intervals: when math-verify must agree
            exact = exact_verdict(g, q)
        if exact is not None:
            return ((1.0, "correct") if exact else (0.0, "wrong-answer")), None
        policy = {"interval_equals_set": p.interval_equals_set, "alarm_s": p.alarm_s}
        return None, Job(gold=g, pred=q, policy=policy)

    def decided_in_process(self, gold: str | None, pred: str | None) -> bool:
        """Whether :meth:`check` decides this pair in the trainer process (a refusal or an exact
        path), without a worker."""
        return self._prepare(gold, pred)[1] is None

    def check(self, pairs: Sequence[tuple[str | None, str | None]]) -> list[tuple[float | None, str]]:
        """``(value, reason)`` per pair: 1.0/0.0, or None when the gold itself cannot be judged."""
        out: list[tuple[float | None, str] | None] = []
        jobs: dict[tuple[str, str, str], list[int]] = {}
        job_of: dict[tuple[str, str, str], Job] = {}
        for i, (gold, pred) in enumerate(pairs):
            done, job = self._prepare(gold, pred)
            out.append(done)
            if job is not None:
                key = (job.gold, job.pred, repr(sorted(job.policy.items())))
                jobs.setdefault(key, []).append(i)
                job_of[key] = job
        for key in [k for k in jobs if k in self._memo]:
            self._memo.move_to_end(key)
            for i in jobs.pop(key):
                out[i] = self._memo[key]
        if jobs:
            keys = list(jobs)
            verdicts = self.pool.run([job_of[k] for k in keys])
            for key, (verdict, reason) in zip(keys, verdicts):
                value = None if verdict is None else (1.0 if verdict else 0.0)
                for i in jobs[key]:
                    out[i] = (value, reason)
                if remembered(reason):
                    self._memo[key] = (value, reason)
            while len(self._memo) > self.memo_size:
                self._memo.popitem(last=False)
        return [o if o is not None else (0.0, "verifier-crashed") for o in out]
