"""Exact verdicts in the trainer process for a small LaTeX subset that math-verify would parse the
same way: sums of rational multiples of square roots, ``\\pi`` and single-letter variables, and
intervals/tuples of such values.

math-verify spends ~2-15 ms per pair (ANTLR parsing, then sympy ``simplify``). Most MATH answers
that are not plain numbers are closed forms such as ``\\frac{3\\sqrt{2}}{4}``, ``2+3\\sqrt{5}``,
``\\frac{5\\pi}{6}``, ``2^{10}``, ``x^2+5x+6``, ``(-3, 5]`` or ``[2, \\infty)``. Each parses here into a canonical
value: a Laurent polynomial in the variables and ``\\pi`` whose coefficients are in Q(√n) (one
rational per squarefree radicand). Distinct squarefree radicands are linearly independent over Q
and ``\\pi`` is transcendental, so two values are equal exactly when their canonical forms are.

:func:`exact_verdict` decides only when math-verify must agree (tested against plain math-verify
on generated pairs, ``tests/math/test_exact.py``): equal canonical forms → True (``simplify(g-p)``
is 0); constants that differ by more than 1e-4 relative → False (far outside math-verify's
6-decimal rounding); different polynomials → False. Everything else (decimals close to an
irrational, equations, sets, functions, mixed numbers such as ``2\\frac{1}{4}``, reversed
intervals, which math-verify reads as tuples) returns None and goes to the worker pool.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import lru_cache

#: single letters read as variables; ``e``/``i``/``j`` (constants to math-verify) and ``d``
#: (a differential in ``\frac{d}{dx}``) are not among them
VARIABLES = frozenset("abckmnpqrstuvwxyz")
_MAX_TERMS = 64
_MAX_EXPONENT = 40
_MAX_RADICAND = 10**6
_MAX_DIGITS = 300

Monomial = tuple[tuple[str, int], ...]  # sorted (variable, exponent != 0); "pi" counts as a variable
Value = dict[tuple[Monomial, int], Fraction]  # (monomial, squarefree radicand) -> rational coefficient


class _Decline(Exception):
    """Outside the subset: the worker pool decides."""


@lru_cache(maxsize=4096)
def _squarefree(n: int) -> tuple[int, int]:
    """``(k, s)`` with ``n = k^2 s`` and ``s`` squarefree (``n`` at most :data:`_MAX_RADICAND`)."""
    if n > _MAX_RADICAND:
        raise _Decline
    k, s, p = 1, 1, 2
    while p * p <= n:
        while n % (p * p) == 0:
            n //= p * p
            k *= p
        if n % p == 0:
            n //= p
            s *= p
        p += 1 if p == 2 else 2
    return k, s * n


def _clean(v: Value) -> Value:
    out = {key: c for key, c in v.items() if c}
    if len(out) > _MAX_TERMS:
        raise _Decline
    for c in out.values():
        if max(c.numerator.bit_length(), c.denominator.bit_length()) > _MAX_DIGITS * 3.33:
            raise _Decline
    return out


def _const(c: Fraction) -> Value:
    return _clean({((), 1): Fraction(c)})


def _mono_mul(a: Monomial, b: Monomial, sign: int = 1) -> Monomial:
    exps: dict[str, int] = dict(a)
    for var, e in b:
        exps[var] = exps.get(var, 0) + sign * e
    return tuple(sorted((v, e) for v, e in exps.items() if e))


def _add(a: Value, b: Value, sign: int = 1) -> Value:
    out = dict(a)
    for key, c in b.items():
        out[key] = out.get(key, Fraction(0)) + sign * c
    return _clean(out)


def _mul(a: Value, b: Value) -> Value:
    out: Value = {}
    for (ma, ra), ca in a.items():
        for (mb, rb), cb in b.items():
            k, s = _squarefree(ra * rb)
            key = (_mono_mul(ma, mb), s)
            out[key] = out.get(key, Fraction(0)) + ca * cb * k
    return _clean(out)


def _inverse(v: Value) -> Value:
    """1/v for a single term ``c √r m`` (= ``√r / (c r) · m⁻¹``); anything else declines."""
    if len(v) != 1:
        raise _Decline
    ((m, r), c), = v.items()
    return _clean({(tuple((var, -e) for var, e in m), r): 1 / (c * r)})


def _power(base: Value, k: int) -> Value:
    if abs(k) > _MAX_EXPONENT:
        raise _Decline
    if k < 0:
        base, k = _inverse(base), -k
    out = _const(Fraction(1))
    for _ in range(k):
        out = _mul(out, base)
    return out


def _sqrt(v: Value) -> Value:
    """√v for a non-negative rational ``v`` (``√(p/q) = √(pq)/q``); anything else declines."""
    if not v:
        return {}
    if set(v) != {((), 1)}:
        raise _Decline
    c = v[((), 1)]
    if c < 0:
        raise _Decline
    k, s = _squarefree(c.numerator * c.denominator)
    return _clean({((), s): Fraction(k, c.denominator)})


_TOKEN = re.compile(r"\s*(\d+\.?\d*|\.\d+|\\[A-Za-z]+|[A-Za-z]|[-+*/^(){}\[\],])")
_DROP = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\displaystyle")
_ALIASES = {"\\dfrac": "\\frac", "\\tfrac": "\\frac", "\\cdot": "*", "\\times": "*"}


def _tokens(span: str) -> list[str]:
    s = _DROP.sub(" ", span).strip()
    out, pos = [], 0
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if m is None:
            raise _Decline
        tok = _ALIASES.get(m.group(1), m.group(1))
        if out and tok[0].isdigit() and (out[-1][0].isdigit() or out[-1][-1:] == "."):
            raise _Decline  # "1 000": math-verify reads digit groups its own way
        out.append(tok)
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over the subset; every value is a :data:`Value`."""

    def __init__(self, tokens: list[str]) -> None:
        self.t, self.i = tokens, 0
        self.decimal = False

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise _Decline
        self.i += 1
        return tok

    def expr(self) -> Value:
        sign = -1 if self.peek() == "-" else 1
        if self.peek() in ("+", "-"):
            self.take()
        if self.peek() in ("+", "-"):
            raise _Decline  # "--5": left to math-verify
        value = self.term()
        if sign < 0:
            value = _mul(value, _const(Fraction(-1)))
        while self.peek() in ("+", "-"):
            op = self.take()
            value = _add(value, self.term(), -1 if op == "-" else 1)
        return value

    def term(self) -> Value:
        value = self.power()
        while True:
            tok = self.peek()
            if tok in ("*", "/"):
                self.take()
                nxt = self.power()
                value = _mul(value, nxt if tok == "*" else _inverse(nxt))
            elif tok is not None and (tok in ("(", "{", "\\sqrt", "\\pi") or tok in VARIABLES):
                value = _mul(value, self.power())  # juxtaposition: 3\sqrt{2}, 2x, (x+1)(x+2)
            elif tok == "\\frac" and self.t[self.i - 1][0].isdigit():
                raise _Decline  # 2\frac{1}{4} is a mixed number to math-verify
            elif tok == "\\frac":
                value = _mul(value, self.power())
            else:
                return value

    def power(self) -> Value:
        base = self.atom()
        if self.peek() != "^":
            return base
        self.take("^")
        if self.peek() == "{":
            self.take("{")
            exp = self.expr()
            self.take("}")
        else:
            tok = self.take()
            if not tok.isdigit():
                raise _Decline
            exp = _const(Fraction(int(tok[0])))  # x^23 is x^2 * 3 in LaTeX
            if len(tok) > 1:
                rest = _const(Fraction(int(tok[1:])))
                return _mul(_power(base, int(tok[0])), rest)
        if self.peek() == "^":
            raise _Decline  # a^b^c: left to math-verify
        if set(exp) - {((), 1)}:
            raise _Decline
        k = exp.get(((), 1), Fraction(0))
        if k.denominator != 1:
            raise _Decline
        return _power(base, int(k))

    def group(self) -> Value:
        self.take("{")
        value = self.expr()
        self.take("}")
        return value

    def atom(self) -> Value:
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            if "." in tok:
                self.decimal = True
            if len(tok) > _MAX_DIGITS:
                raise _Decline
            return _const(Fraction(tok.rstrip(".") or "0"))
        if tok == "\\pi":
            return {((("pi", 1),), 1): Fraction(1)}
        if tok in VARIABLES:
            return {(((tok, 1),), 1): Fraction(1)}
        if tok == "(":
            value = self.expr()
            self.take(")")
            return value
        if tok == "{":
            self.i -= 1
            return self.group()
        if tok == "\\sqrt":
            if self.peek() == "[":
                raise _Decline  # n-th roots
            if self.peek() == "{":
                return _sqrt(self.group())
            digit = self.take()
            if not digit.isdigit():
                raise _Decline
            value = _sqrt(_const(Fraction(int(digit[0]))))  # \sqrt23 is \sqrt{2}3
            return _mul(value, _const(Fraction(int(digit[1:])))) if len(digit) > 1 else value
        if tok == "\\frac":
            if self.peek() == "{":
                num = self.group()
            else:
                digits = self.take()
                if not digits.isdigit() or len(digits) > 2:
                    raise _Decline
                if len(digits) == 2:  # \frac34
                    return _const(Fraction(int(digits[0]), int(digits[1])))
                num = _const(Fraction(int(digits)))
            den = self.group() if self.peek() == "{" else _digit_value(self.take())
            return _mul(num, _inverse(den))
        raise _Decline


def _digit_value(tok: str) -> Value:
    if not tok.isdigit() or len(tok) != 1:
        raise _Decline
    return _const(Fraction(int(tok)))


def _float(v: Value) -> float:
    if len(v) == 1 and next(iter(v))[0] == (("oo", 1),):  # an interval's end at infinity
        return math.inf * float(next(iter(v.values())))
    total = 0.0
    for (m, r), c in v.items():
        if any(var != "pi" for var, _ in m):
            raise _Decline
        total += float(c) * math.sqrt(r) * math.pi ** sum(e for _, e in m)
    return total


_MIXED = re.compile(r"(-?)(\d{1,9})\s*\\[dt]?frac\{(\d{1,9})\}\{(\d{1,9})\}")


@lru_cache(maxsize=65_536)
def parse_exact(span: str) -> tuple | None:
    """Canonical form of ``span``: ``("value", terms, has_decimal)`` or ``("pair", open, close, values)``
    for a two-or-more element interval/tuple; None outside the subset. Cached per string."""
    mixed = _MIXED.fullmatch(span.strip())
    if mixed:  # 2\frac{1}{4}: math-verify reads a mixed number, 2 + 1/4
        sign, whole, num, den = mixed.groups()
        if int(den) == 0:
            return None
        value = int(whole) + Fraction(int(num), int(den))
        return ("value", frozenset(_const(-value if sign else value).items()), False)
    name, eq, rhs = span.partition("=")
    if eq:  # y = 2x+3: an assignment to one letter; the right-hand sides decide
        if not (len(name.strip()) == 1 and name.strip() in VARIABLES) or "=" in rhs or rhs.strip()[:1] in ("", "="):
            return None
        value = parse_exact(rhs)
        return None if value is None or value[0] != "value" else ("equation", name.strip(), value)
    try:
        tokens = _tokens(span)
        if not tokens or "\\" in "".join(t for t in tokens if t not in ("\\frac", "\\sqrt", "\\pi", "\\infty")):
            return None
        if tokens[0] in ("(", "[") and tokens[-1] in (")", "]") and "," in tokens:
            items, depth, start = [], 0, 1
            for k, tok in enumerate(tokens[1:-1], start=1):
                depth += tok in ("(", "{", "[") and 1 or 0
                depth -= tok in (")", "}", "]") and 1 or 0
                if depth < 0:
                    return None
                if tok == "," and depth == 0:
                    items.append(tokens[start:k])
                    start = k + 1
            items.append(tokens[start:-1])
            values = []
            for k, item in enumerate(items):
                if "\\infty" in item:  # (-\infty, 3], [2, \infty): an open end at infinity only
                    sign = {("\\infty",): 1, ("+", "\\infty"): 1, ("-", "\\infty"): -1}.get(tuple(item))
                    if len(items) != 2 or sign != (1 if k else -1) or (tokens[0] if k == 0 else tokens[-1]) not in "()":
                        return None
                    values.append(frozenset({((("oo", 1),), 1): Fraction(sign)}.items()))
                    continue
                p = _Parser(item)
                v = p.expr()
                if p.peek() is not None or p.decimal:
                    return None
                values.append(frozenset(v.items()))
            return ("pair", tokens[0], tokens[-1], tuple(values))
        if "," in tokens or "[" in tokens or "\\infty" in tokens:
            return None
        p = _Parser(tokens)
        v = p.expr()
        if p.peek() is not None:
            return None
        return ("value", frozenset(v.items()), p.decimal)
    except (_Decline, ZeroDivisionError, ValueError, RecursionError):
        return None


def _values_verdict(g: Value, p: Value, decimal: bool) -> bool | None:
    if g == p:
        return True
    if not decimal and all(key == ((), 1) for key in list(g) + list(p)):
        return False  # two different rationals: the worker's exact-rational rule says the same
    symbolic = any(var != "pi" for (m, _), _ in list(g.items()) + list(p.items()) for var, _ in m)
    if symbolic:
        return None if decimal else False
    try:
        gv, pv = _float(g), _float(p)
    except (_Decline, OverflowError):
        return None
    if not (math.isfinite(gv) and math.isfinite(pv)):
        return None
    return False if abs(gv - pv) > 1e-4 * max(1.0, abs(gv)) else None


def exact_verdict(gold: str, pred: str) -> bool | None:
    """True/False when both spans are in the subset and math-verify must give the same verdict;
    None otherwise (see the module docstring)."""
    g, p = parse_exact(gold), parse_exact(pred)
    if g is None or p is None or g[0] != p[0]:
        return None
    if g[0] == "value":
        return _values_verdict(dict(g[1]), dict(p[1]), g[2] or p[2])
    if g[0] == "equation":
        if g[1] != p[1]:
            return None
        g, p = g[2], p[2]
        return _values_verdict(dict(g[1]), dict(p[1]), g[2] or p[2])
    _, g_open, g_close, g_items = g
    _, p_open, p_close, p_items = p
    if len(g_items) != len(p_items):
        return None
    if len(g_items) == 2:  # an interval when its ends increase, a tuple otherwise (math-verify's reading)
        try:
            increasing = [float_values[0] < float_values[1] - 1e-9  # -inf < x < inf holds too
                          for float_values in ([_float(dict(x)) for x in items] for items in (g_items, p_items))]
        except _Decline:
            return None
        if increasing[0] != increasing[1]:
            return None
        if not increasing[0] and (g_open, g_close, p_open, p_close) != ("(", ")", "(", ")"):
            return None
    elif (g_open, g_close, p_open, p_close) != ("(", ")", "(", ")"):
        return None
    verdicts = [_values_verdict(dict(a), dict(b), False) for a, b in zip(g_items, p_items)]
    if any(v is False for v in verdicts):
        return False
    if all(v is True for v in verdicts):
        return (g_open, g_close) == (p_open, p_close) or (False if len(g_items) == 2 else None)
    return None
