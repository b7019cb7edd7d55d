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
import re
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
    """math-verify's functions and our extraction configs, imported once per worker."""
    if not _CFG:
        from latex2sympy2_extended import NormalizationConfig
        from math_verify import LatexExtractionConfig, parse, verify

        norm = NormalizationConfig(basic_latex=True, units=True, malformed_operators=True, nits=True,
                                   boxed="all", equations=False)
        # The span is already extracted by us and wrapped in $...$: only LaTeX extraction, no
        # free-text number fallback (that is what rewards hedges such as "3 or 4").
        _CFG["pred"] = [LatexExtractionConfig(boxed_match_priority=0, normalization_config=norm)]
        _CFG["gold"] = [LatexExtractionConfig(normalization_config=norm)]
        _CFG["parse"], _CFG["verify"] = parse, verify
        _two_stage_antlr()
    return _CFG


def _two_stage_antlr() -> None:
    """Parse LaTeX with ANTLR's SLL prediction first and fall back to full LL only on failure.

    ANTLR guarantees that an SLL parse that succeeds returns the tree LL would return (SLL can only
    fail spuriously, never mis-parse), so verdicts are unchanged; parsing is 2-3x faster. The SLL
    stage bails out at the first error (``BailErrorStrategy``, no recovery bookkeeping in ``sync``,
    another ~15 % of a worker's time): latex2sympy2's error listener raises on any syntax error
    anyway, so a recovered SLL parse never counted. Installed in worker processes only; tested
    against the unpatched parser in ``tests/math/test_worker_parse.py``.
    """
    try:
        from antlr4.atn.PredictionMode import PredictionMode
        from antlr4.error.ErrorStrategy import BailErrorStrategy
        from latex2sympy2_extended import latex2sympy2 as l2s
    except ImportError:  # pragma: no cover - other antlr/latex2sympy layouts: keep LL
        return
    converter = getattr(l2s, "_Latex2Sympy", None)
    if converter is None or getattr(converter, "_remask_two_stage", False):
        return
    ll_parse, ll_create = converter.parse, converter.create_parser

    def create_sll(self: Any, latex: str) -> Any:
        parser = ll_create(self, latex)
        parser._interp.predictionMode = PredictionMode.SLL
        parser._errHandler = BailErrorStrategy()  # no recovery bookkeeping: any error means LL decides
        return parser

    def parse(self: Any, latex: str) -> Any:
        self.create_parser = create_sll.__get__(self)
        try:
            return ll_parse(self, latex)
        except Exception:  # noqa: BLE001 - SLL gave up (or the input is invalid): full LL decides
            del self.create_parser
            return ll_parse(self, latex)

    converter.parse = parse
    converter._remask_two_stage = True
    _direct_numbers(converter)


#: number tokens built directly: digits (leading zeros already stripped), or digits.digits
_INTEGER_TEXT = re.compile(r"[1-9][0-9]{0,3999}|0")
_DECIMAL_TEXT = re.compile(r"(?:[1-9][0-9]{0,99}|0)\.[0-9]{1,100}")


def _direct_numbers(converter: Any) -> None:
    """Build number tokens with ``sympy.Integer``/``sympy.Float`` instead of ``sympy.Number(text)``.

    latex2sympy2's ``parse_number`` calls ``sympy.Number(text)``, which runs ``sympify`` on the
    string: ``parse_expr`` executes ``from sympy import *`` into a fresh namespace, tokenizes and
    evals, ~0.7 ms per number and about a third of a worker's time. For a string of ASCII digits
    that yields ``Integer(int(text))``, and for ``digits.digits`` ``Float(text)`` (the parser's
    ``auto_number`` writes exactly ``Float('text')``); the same objects, tested in
    ``tests/math/test_math_verifier.py``. Any other text keeps the original path.
    """
    original = converter.parse_number
    if getattr(original, "_remask_direct", False):
        return
    import sympy

    def parse_number(self: Any, text: str) -> Any:
        digits = text.replace(",", "")
        if digits.isdigit():
            digits = digits.lstrip("0") or "0"
            if _INTEGER_TEXT.fullmatch(digits):
                return sympy.Integer(int(digits))
        elif _DECIMAL_TEXT.fullmatch(digits):
            return sympy.Float(digits)
        return original(self, text)

    parse_number._remask_direct = True  # type: ignore[attr-defined]
    converter.parse_number = parse_number


class AlarmTimeout(Exception):
    """math-verify's own SIGALRM fired: the verdict depends on load, so it is reported as
    ``timeout-alarm`` and never cached (math-verify alone returns ``[]``/``False`` for it)."""


def _parse(text: str, config_key: str, alarm_s: int) -> tuple[Any, ...]:
    """math-verify's ``parse`` with its default error handling, except that its timeout raises.

    ``raise_on_error=True`` makes a timeout visible; every other error is turned back into ``()``
    exactly as ``raise_on_error=False`` would.
    """
    from math_verify.errors import TimeoutException

    c = _configs()
    try:
        return tuple(c["parse"](text, c[config_key], parsing_timeout=alarm_s or None, raise_on_error=True))
    except TimeoutException as exc:
        raise AlarmTimeout("parse") from exc
    except Exception:  # noqa: BLE001 - what math-verify itself does with raise_on_error=False
        return ()


@lru_cache(maxsize=8192)
def _parse_gold(gold: str, alarm_s: int) -> tuple[Any, ...]:
    return _parse(f"${gold}$", "gold", alarm_s)  # a timeout raises, so it is never cached here


@lru_cache(maxsize=8192)
def _parse_pred(pred: str, alarm_s: int) -> tuple[Any, ...]:
    return _parse(f"${pred}$", "pred", alarm_s)


def _facts(parsed: tuple[Any, ...]) -> tuple[tuple[Any, ...], bool, Any]:
    """``(parsed, too_large, exact rational value or None)`` of one parsed span: the size bound is
    checked before anything is evaluated."""
    if not parsed:
        return parsed, False, None
    if max(map(log10_bound, parsed)) > MAX_DIGITS:
        return parsed, True, None
    return parsed, False, _exact_rational(parsed[0])


@lru_cache(maxsize=8192)
def _gold_facts(gold: str, alarm_s: int) -> tuple[tuple[Any, ...], bool, Any]:
    """Parsed once per gold (a GRPO group shares it) with its size and exact value; a timeout raises
    and is never cached."""
    return _facts(_parse_gold(gold, alarm_s))


@lru_cache(maxsize=8192)
def _pred_facts(pred: str, alarm_s: int) -> tuple[tuple[Any, ...], bool, Any]:
    return _facts(_parse_pred(pred, alarm_s))


def _verify(gold: tuple[Any, ...], pred: tuple[Any, ...], alarm_s: int) -> bool:
    """math-verify's ``verify`` (any gold/pred pair equal), with a timeout raised, not read as False."""
    from math_verify.errors import TimeoutException

    verify = _configs()["verify"]
    timed_out = False
    for g in gold:
        for p in pred:
            try:
                if verify([g], [p], timeout_seconds=alarm_s or None, raise_on_error=True):
                    return True
            except TimeoutException:
                timed_out = True
            except Exception:  # noqa: BLE001 - math-verify's own handling: this pair is unequal
                pass
    if timed_out:
        raise AlarmTimeout("verify")
    return False


#: closed-form numbers with more digits than this are never evaluated (``10^{10^{10}}``)
MAX_DIGITS = 20_000
_LOG10_2 = 0.30103


def log10_bound(expr: Any, _depth: int = 0) -> float:
    """Upper bound on the decimal digits of the numbers evaluating ``expr`` would materialise.

    Walks the tree without evaluating anything large: ``Pow(b, e)`` costs ``|e| * digits(b)``,
    ``factorial(n)`` ``n log10 n``, a product the sum of its factors, a sum the largest term plus one.
    A power of a symbol counts its base as 1 digit (``(x+1)^{10^9}`` would expand). ``inf`` when an
    exponent or factorial argument is itself beyond 10^8.
    """
    import math

    import sympy

    inf = float("inf")
    if _depth > 200:
        return inf
    if isinstance(expr, sympy.Integer):
        return max(1, int(expr.p).bit_length()) * _LOG10_2
    if isinstance(expr, sympy.Rational):
        return max(int(expr.p).bit_length(), int(expr.q).bit_length(), 1) * _LOG10_2
    if isinstance(expr, (sympy.Float, sympy.NumberSymbol, sympy.Symbol)) or expr in (sympy.I, sympy.oo, -sympy.oo):
        return 1.0
    if not isinstance(expr, sympy.Basic):
        return 0.0
    args = getattr(expr, "args", ())

    def small_value(arg: Any) -> float:
        """|value| of an exponent/argument, when it is a number below 10^8; else inf."""
        if log10_bound(arg, _depth + 1) > 8 or getattr(arg, "free_symbols", True):
            return inf
        try:
            return abs(complex(arg.evalf(20)))
        except Exception:  # noqa: BLE001
            return inf

    if isinstance(expr, sympy.Pow):
        base, exp = args
        if exp.free_symbols:
            return max(log10_bound(base, _depth + 1), log10_bound(exp, _depth + 1))
        if base in (sympy.Integer(0), sympy.Integer(1), sympy.Integer(-1)):
            return 1.0
        e = small_value(exp)
        return e * max(log10_bound(base, _depth + 1), _LOG10_2) + 1
    if isinstance(expr, (sympy.factorial, sympy.factorial2, sympy.subfactorial, sympy.gamma,
                         sympy.binomial, sympy.fibonacci, sympy.lucas, sympy.RisingFactorial,
                         sympy.FallingFactorial, sympy.bell, sympy.catalan)):
        n = max((small_value(a) for a in args), default=inf)
        return n * math.log10(n + 2) + 1
    parts = [log10_bound(a, _depth + 1) for a in args]
    if not parts:
        return 1.0
    if isinstance(expr, sympy.Mul):
        return sum(parts)
    return max(parts) + 1


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


#: points at which two expressions in free symbols are compared (positive reals, away from the
#: integers and simple fractions where rational functions tend to have poles)
_PROBES = ((0.6180339887, 1.3247179572, 0.7548776662), (1.4142135624, 0.5772156649, 1.2020569032))


def _moderate(expr: Any) -> bool:
    """Every number in ``expr`` lies between 1e-9 and 1e9 in size (or is 0): evaluating it in
    floating point cannot turn a real difference into a rounding-level one."""
    import sympy

    for number in expr.atoms(sympy.Number):
        size = abs(float(number))
        if size and not 1e-9 <= size <= 1e9:
            return False
    return True


def _clearly_different(g: Any, p: Any) -> bool:
    """True when no rule of math-verify's ``verify`` can find ``g`` equal to ``p``, decided without
    its ``simplify(g - p)`` (the slow path for wrong answers). Both must be plain expressions (no
    relation, set, tuple, lone symbol, percentage, matrix), so math-verify compares them by string,
    then numerically, then by ``simplify``:

    * constants: their 30-digit values differ by more than 1e-9 relative, and with a decimal on
      either side also by more than 1.01e-6: math-verify rounds a float to 6 decimals (each value
      moves by at most 5e-7, so the rounded values differ too), and ``simplify`` cannot cancel it;
    * finite sets of real constants (a lone constant counts as a set of one, as math-verify makes
      it), each set's elements more than 1e-6 apart: different sizes, or, ordered by value as
      math-verify orders them, one pair of elements clearly different as above. The sets are then
      unequal as sets too, so neither sympy's set equality nor math-verify's pairwise rule can
      find them equal;
    * expressions in free symbols (exact numbers only, none tiny or huge, no symbol assumed an
      integer): ``g - p`` is at least 1e-4 (relative) away from 0 at two positive real points. An
      identity that ``simplify`` proves holds at every such point, and a non-zero difference
      cannot become 0 under ``evalf(chop=True)``.
    """
    import sympy

    try:
        if isinstance(g, sympy.FiniteSet) or isinstance(p, sympy.FiniteSet):
            return _sets_clearly_different(g, p)
        if not (isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr)):
            return False
        if isinstance(g, sympy.Symbol) or isinstance(p, sympy.Symbol):
            return False
        if _has_unevaluated(g) or _has_unevaluated(p) or _has_limit_process(g) or _has_limit_process(p):
            return False
        floats = bool(g.atoms(sympy.Float) or p.atoms(sympy.Float))
        symbols = g.free_symbols | p.free_symbols
        if not symbols:
            gv, pv = complex(g.evalf(30)), complex(p.evalf(30))
            return _far(gv, pv, 1e-9) and (not floats or abs(gv - pv) > 1.01e-6)
        if floats or len(symbols) > len(_PROBES[0]) or not (_moderate(g) and _moderate(p)):
            return False
        if any(not isinstance(x, sympy.Symbol) or x.is_integer is not False and x.is_integer is not None
               for x in symbols):
            return False
        names = sorted(symbols, key=lambda x: x.name)
        for probe in _PROBES:
            point = dict(zip(names, map(sympy.Float, probe)))
            gv, pv = complex(g.evalf(30, subs=point)), complex(p.evalf(30, subs=point))
            if not _far(gv, pv, 1e-4):
                return False
        return True
    except Exception:  # noqa: BLE001 - anything unusual goes to math-verify
        return False


def _has_limit_process(expr: Any) -> bool:
    """Integrals, sums, products, limits, derivatives: evaluating them numerically can take seconds."""
    import sympy

    return bool(expr.has(sympy.Integral, sympy.Sum, sympy.Product, sympy.Limit, sympy.Derivative))


def _sets_clearly_different(g: Any, p: Any) -> bool:
    import sympy

    sides = []
    for side in (g, p):
        elements = list(side.args) if isinstance(side, sympy.FiniteSet) else [side]
        if not elements or not all(isinstance(x, sympy.Expr) and not isinstance(x, sympy.Symbol) and not x.free_symbols
                                   and not _has_unevaluated(x) and not _has_limit_process(x) for x in elements):
            return False
        values = [complex(x.evalf(30)) for x in elements]
        if any(v.imag != 0 or v.real != v.real or abs(v.real) == float("inf") for v in values):
            return False  # complex, infinite or undefined elements: math-verify's ordering is not plain numeric
        reals = sorted(v.real for v in values)
        if any(b - a <= 1e-6 * max(1.0, abs(a), abs(b)) for a, b in zip(reals, reals[1:])):
            return False
        sides.append((reals, any(x.atoms(sympy.Float) for x in elements)))
    (gv, g_floats), (pv, p_floats) = sides
    if len(gv) != len(pv):
        return True
    floats = g_floats or p_floats
    return any(_far(a, b, 1e-9) and (not floats or abs(a - b) > 1.01e-6) for a, b in zip(gv, pv))


def _far(gv: complex, pv: complex, tolerance: float) -> bool:
    if not all(z == z and abs(z) != float("inf") for z in (gv, pv)):
        return False
    return abs(gv - pv) > tolerance * max(1.0, abs(gv))


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
    """Verdict on two pre-normalised spans: exact when both are closed-form rationals, otherwise
    math-verify followed by the post-guards. An equation chain whose sides are values (``6 = 5``,
    ``x = 2+3 = 5``) is correct only when every such side is (:func:`remask_math.hedges.statement_sides`)."""
    from remask_math.hedges import statement_sides

    sides = statement_sides(pred)
    if sides is None:
        return _judge_one(gold, pred, policy)
    for side in sides:
        verdict, reason = _judge_one(gold, side, policy)
        if verdict is not True:
            return verdict, ("false-equation" if reason == "wrong-answer" else reason)
    return True, "correct"


def _judge_one(gold: str, pred: str, policy: dict[str, Any]) -> tuple[bool | None, str]:
    alarm = int(policy.get("alarm_s", 0))
    gold_parsed, gold_too_large, gr = _gold_facts(gold, alarm)
    if not gold_parsed:
        return None, "gold-unparsable"
    if gold_too_large:
        return None, "gold-too-large"
    pred_parsed, pred_too_large, pr = _pred_facts(pred, alarm)
    if not pred_parsed:
        return False, "unparsable"
    if pred_too_large:  # 10^{10^{10}}: never evaluated, by us or by sympy
        return False, "number-too-large"
    if gr is not None and pr is not None:  # 1/2004! vs 1/2006!, big integers: exact, no evalf
        return (True, "correct") if gr == pr else (False, "wrong-answer")
    if _clearly_different(gold_parsed[0], pred_parsed[0]):
        return False, "wrong-answer"  # skips math-verify's simplify(), the slow path for wrong answers
    if not _verify(gold_parsed, pred_parsed, alarm):
        return False, "wrong-answer"
    overturn = _guard(gold_parsed, pred_parsed, policy)
    if overturn is not None:
        return False, overturn
    return True, "correct"


_WARMUP = (  # the constructs most answers use; each costs a few ms once per worker
    ("1", "1"), ("\\frac{1}{2}", "\\dfrac{2}{4}"), ("2\\sqrt{3}", "\\sqrt{12}"), ("2^{10}", "1024"),
    ("x=3", "3"), ("\\{1,2\\}", "\\{2,1\\}"),
)


def _serve() -> None:
    import logging

    logging.disable(logging.CRITICAL)  # math-verify logs every unparsable span
    memory_mb = int(os.environ.get("REMASK_MATH_WORKER_MB", "2048"))
    _limit_self(memory_mb)
    out = sys.stdout
    import warnings

    warnings.filterwarnings("ignore")
    _configs()
    for gold, pred in _WARMUP:  # warm the ANTLR caches so the first real jobs are not charged for it
        try:
            judge(gold, pred, {})
        except Exception:  # noqa: BLE001
            pass
    for cache in (_parse_gold, _parse_pred, _gold_facts, _pred_facts):
        cache.cache_clear()
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
        except AlarmTimeout:
            verdict, reason = False, "timeout-alarm"
        except BaseException as exc:  # noqa: BLE001 - includes a TimeoutException raised outside parse/verify
            name = type(exc).__name__
            verdict, reason = False, ("timeout-alarm" if "Timeout" in name else f"verifier-error:{name}")
        out.write(json.dumps({"id": job.get("id"), "verdict": verdict, "reason": reason}) + "\n")
        out.flush()


if __name__ == "__main__":
    _serve()
