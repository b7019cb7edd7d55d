"""The math-verify worker process: one job at a time on its main thread.

Run by :class:`remask_math.pool.VerifierPool` as ``python -m remask_math._worker``. Protocol: one
JSON object per line on stdin (``{"id", "gold", "pred", "policy"}``), one JSON object per line on
stdout (``{"id", "verdict": true|false|null, "reason"}``); the first line written is
``{"ready": true}`` once math-verify is imported. The worker caps its own address space
(``RLIMIT_AS``), asks the kernel to kill it when its parent dies, and exits on EOF.

math-verify is imported only here, never in the trainer process: its SIGALRM timeout only works on
a main thread and cannot interrupt C-level big-integer work (math-verify issue #65), so the parent
enforces the real deadline by killing this process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from functools import lru_cache
from typing import Any


def _limit_self(memory_mb: int) -> None:
    try:
        import resource

        if memory_mb > 0:
            cap = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    try:  # die with the parent (Linux); EOF on stdin covers the rest
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_CFG: dict[str, Any] = {}


def _configs() -> dict[str, Any]:
    if not _CFG:
        from latex2sympy2_extended import NormalizationConfig
        from math_verify import LatexExtractionConfig

        norm = NormalizationConfig(basic_latex=True, units=True, malformed_operators=True, nits=True,
                                   boxed="all", equations=False)
        # The span is already extracted by us and wrapped in $...$: only LaTeX extraction, no
        # free-text number fallback (that is what rewards hedges such as "3 or 4").
        _CFG["pred"] = [LatexExtractionConfig(boxed_match_priority=0, normalization_config=norm)]
        _CFG["gold"] = [LatexExtractionConfig(normalization_config=norm)]
    return _CFG


@lru_cache(maxsize=4096)
def _parse_gold(gold: str, alarm_s: int) -> tuple[Any, ...]:
    from math_verify import parse

    return tuple(parse(f"${gold}$", _configs()["gold"], parsing_timeout=alarm_s or None))


def _has_unevaluated(expr: Any) -> bool:
    import sympy

    try:
        return bool(expr.atoms(sympy.UnevaluatedExpr)) or bool(expr.has(sympy.UnevaluatedExpr))
    except Exception:  # noqa: BLE001
        return True


def _exact_rational(expr: Any) -> Any:
    """The exact value of a closed-form rational number (factorials and powers evaluated), else None."""
    import sympy

    if not isinstance(expr, sympy.Basic) or expr.free_symbols or _has_unevaluated(expr):
        return None
    if expr.atoms(sympy.Float):
        return None
    if expr.is_rational is not True:
        return None
    value = expr.doit()
    return value if isinstance(value, sympy.Rational) else None


def _guard(gold: tuple[Any, ...], pred: tuple[Any, ...], policy: dict[str, Any]) -> str | None:
    """Reason to overturn a math-verify "equal", or None to keep it (spec verifiers.md §1.5)."""
    import sympy

    g, p = (gold[0] if gold else None), (pred[0] if pred else None)
    if not policy.get("interval_equals_set", False):
        kinds = {type(x).__name__ for x in (g, p)}
        if isinstance(g, sympy.Interval) and isinstance(p, sympy.FiniteSet) or (
            isinstance(p, sympy.Interval) and isinstance(g, sympy.FiniteSet)
        ):
            return f"interval-vs-set:{'/'.join(sorted(kinds))}"
    gr, pr = _exact_rational(g), _exact_rational(p)
    if gr is not None and pr is not None and gr != pr:
        return "exact-rational-mismatch"
    return None


def judge(gold: str, pred: str, policy: dict[str, Any]) -> tuple[bool | None, str]:
    """Verdict of math-verify on two pre-normalised spans, with the exact-rational post-guard."""
    from math_verify import parse, verify

    alarm = int(policy.get("alarm_s", 0))
    gold_parsed = _parse_gold(gold, alarm)
    if not gold_parsed:
        return None, "gold-unparsable"
    pred_parsed = parse(f"${pred}$", _configs()["pred"], parsing_timeout=alarm or None)
    if not pred_parsed:
        return False, "unparsable"
    ok = verify(list(gold_parsed), pred_parsed, timeout_seconds=alarm or None)
    if not ok:
        return False, "wrong-answer"
    overturn = _guard(gold_parsed, tuple(pred_parsed), policy)
    if overturn is not None:
        return False, overturn
    return True, "correct"


def _serve() -> None:
    import logging

    logging.disable(logging.CRITICAL)  # math-verify logs every unparsable span
    memory_mb = int(os.environ.get("REMASK_MATH_WORKER_MB", "2048"))
    _limit_self(memory_mb)
    out = sys.stdout
    import warnings

    warnings.filterwarnings("ignore")
    _configs()
    _parse_gold("1", 0)  # warm the parser so the first real job is not charged for imports
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            job = json.loads(line)
        except ValueError:
            continue
        try:
            verdict, reason = judge(job["gold"], job["pred"], job.get("policy", {}))
        except MemoryError:
            verdict, reason = False, "memory"
        except BaseException as exc:  # noqa: BLE001 - includes math-verify's TimeoutException
            name = type(exc).__name__
            verdict, reason = False, ("timeout" if "Timeout" in name else f"verifier-error:{name}")
        out.write(json.dumps({"id": job.get("id"), "verdict": verdict, "reason": reason}) + "\n")
        out.flush()


if __name__ == "__main__":
    _serve()
