"""Exact verdicts in the trainer process for a LaTeX subset that math-verify would parse the same
way: sums of rational multiples of real radicals (``\\sqrt{2}``, ``\\sqrt[3]{24}``, ``2^{5/6}``), ``\\pi``,
``e`` and single-letter variables; intervals/tuples and finite sets (``\\{1, 2\\}``, ``1, 2``) of such
values; degrees (``30^\\circ``); and multiple-choice letters (``\\text{(B)}``, ``(B)``, ``B``).

math-verify spends ~2-15 ms per pair (ANTLR parsing, then sympy ``simplify``). Most MATH answers
that are not plain numbers are closed forms such as ``\\frac{3\\sqrt{2}}{4}``, ``2+3\\sqrt{5}``,
``\\frac{5\\pi}{6}``, ``2^{10}``, ``x^2+5x+6``, ``(-3, 5]`` or ``[2, \\infty)``. Each parses here into a
canonical value: a Laurent polynomial in the variables, ``\\pi`` and ``e`` whose coefficients are
rational combinations of radicals ``p_1^{e_1}···p_k^{e_k}`` (primes ``p_i``, rational ``0 < e_i < 1``).
Such radicals are linearly independent over Q (Besicovitch 1940; Mordell 1953: for real roots
``x_i`` of rationals no product of which is rational, the products ``∏ x_i^{k_i}``, ``0 <= k_i <
n_i``, are linearly independent), so two constants without ``\\pi``/``e`` are equal exactly when
their canonical forms are; with them, unequal forms are only declared unequal numerically (below).

:func:`exact_verdict` decides only when math-verify must agree (tested against plain math-verify
on generated pairs, ``tests/math/test_exact.py``): equal canonical forms → True (``simplify(g-p)``
is 0); constants that differ by more than 1e-4 relative → False (far outside math-verify's
6-decimal rounding); different polynomials → False. Finite sets are compared as math-verify does:
elements ordered by value, then pairwise (only when no two elements of a set are within 1e-6, so
sympy keeps them all and both orderings agree). Choice letters compare case-insensitively (math-verify
lower-cases the symbol). Everything else (decimals close to an irrational, equations, functions,
negative radicands under odd roots, whose principal root sympy takes as complex, mixed numbers
such as ``2\\frac{1}{4}``, reversed intervals, which math-verify reads as tuples, duplicated set
elements, a set against a scalar or an interval) returns None and goes to the worker pool.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import lru_cache

#: single letters read as variables; ``e`` (Euler's number to math-verify, :data:`CONSTANTS`),
#: ``i``/``j`` (imaginary units) and ``d`` (a differential in ``\frac{d}{dx}``) are not among them
VARIABLES = frozenset("abckmnpqrstuvwxyz")
#: transcendental constants, kept as monomial letters: ``\pi`` and ``e`` (``E`` in sympy)
CONSTANTS = frozenset({"pi", "E"})
_MAX_TERMS = 64
_MAX_EXPONENT = 40
_MAX_ROOT_INDEX = 12
_MAX_RADICAND = 10**6
_MAX_DIGITS = 300

Monomial = tuple[tuple[str, int], ...]  # sorted (variable, exponent != 0); "pi" and "E" count as variables
Radical = tuple[tuple[int, Fraction], ...]  # sorted (prime, exponent in (0, 1)): prod p^e
Value = dict[tuple[Monomial, Radical], Fraction]  # (monomial, radical) -> rational coefficient


class _Decline(Exception):
    """Outside the subset: the worker pool decides."""


@lru_cache(maxsize=4096)
def _factor(n: int) -> tuple[tuple[int, int], ...]:
    """Prime factorisation of ``1 <= n <=`` :data:`_MAX_RADICAND` as ``((p, a), ...)``."""
    if n > _MAX_RADICAND or n < 1:
        raise _Decline
    out, p = [], 2
    while p * p <= n:
        a = 0
        while n % p == 0:
            n //= p
            a += 1
        if a:
            out.append((p, a))
        p += 1 if p == 2 else 2
    if n > 1:
        out.append((n, 1))
    return tuple(out)


def _radical(n: int, e: Fraction) -> tuple[Fraction, Radical]:
    """``n^e`` for a positive integer ``n`` and ``0 <= e < 1`` as ``(rational, radical)``."""
    coeff, rad = Fraction(1), []
    for p, a in _factor(n):
        total = a * e
        whole = total.numerator // total.denominator
        coeff *= Fraction(p) ** whole
        if total - whole:
            rad.append((p, total - whole))
    return coeff, tuple(rad)


def _radical_mul(a: Radical, b: Radical, sign: int = 1) -> tuple[Fraction, Radical]:
    """``a * b^sign`` reduced: every exponent back in ``[0, 1)``, the whole parts moved into the rational."""
    exps: dict[int, Fraction] = dict(a)
    for p, e in b:
        exps[p] = exps.get(p, Fraction(0)) + sign * e
    coeff, rad = Fraction(1), []
    for p in sorted(exps):
        whole = exps[p].numerator // exps[p].denominator  # floor
        coeff *= Fraction(p) ** whole
        if exps[p] - whole:
            rad.append((p, exps[p] - whole))
    return coeff, tuple(rad)


def _clean(v: Value) -> Value:
    out = {key: c for key, c in v.items() if c}
    if len(out) > _MAX_TERMS:
        raise _Decline
    for c in out.values():
        if max(c.numerator.bit_length(), c.denominator.bit_length()) > _MAX_DIGITS * 3.33:
            raise _Decline
    return out


def _const(c: Fraction) -> Value:
    return _clean({((), ()): Fraction(c)})


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
            k, r = _radical_mul(ra, rb)
            key = (_mono_mul(ma, mb), r)
            out[key] = out.get(key, Fraction(0)) + ca * cb * k
    return _clean(out)


def _inverse(v: Value) -> Value:
    """1/v for a single term ``c R m`` (= ``R^-1 / c · m⁻¹``); anything else declines."""
    if len(v) != 1:
        raise _Decline
    ((m, r), c), = v.items()
    k, inv = _radical_mul((), r, -1)
    return _clean({(tuple((var, -e) for var, e in m), inv): k / c})


def _power(base: Value, k: int) -> Value:
    if abs(k) > _MAX_EXPONENT:
        raise _Decline
    if k < 0:
        base, k = _inverse(base), -k
    out = _const(Fraction(1))
    for _ in range(k):
        out = _mul(out, base)
    return out


def _root(v: Value, n: int) -> Value:
    """The real n-th root of a non-negative constant term ``c R`` (``(p/q)^{1/n} = (p q^{n-1})^{1/n} / q``);
    anything else (a sum, a variable, ``\\pi``, a negative radicand: sympy's principal root is
    complex) declines."""
    if not v:
        return {}
    if len(v) != 1 or not 2 <= n <= _MAX_ROOT_INDEX:
        raise _Decline
    ((m, r), c), = v.items()
    if m or c < 0:
        raise _Decline
    root_n = Fraction(1, n)
    k1, r1 = _radical(c.numerator, root_n)
    k2, r2 = _radical(c.denominator, (n - 1) * root_n)
    k3, r3 = _radical_mul(r1, r2)
    k4, r4 = _radical_mul(r3, tuple((p, e * root_n) for p, e in r))
    return _clean({((), r4): k1 * k2 * k3 * k4 / c.denominator})


def _sqrt(v: Value) -> Value:
    return _root(v, 2)


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
            elif tok is not None and (tok in ("(", "{", "\\sqrt", "\\pi", "\\exp", "e") or tok in VARIABLES):
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
        decimal, self.decimal = self.decimal, False
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
        if self.peek() == "^" or self.decimal:
            raise _Decline  # a^b^c, 4^{0.5}: left to math-verify
        self.decimal = decimal
        if set(exp) - {((), ())}:
            raise _Decline
        k = exp.get(((), ()), Fraction(0))
        if k.denominator != 1:  # 8^{2/3}: a rational power of a positive constant
            if abs(k.numerator) > _MAX_EXPONENT:
                raise _Decline
            return _power(_root(base, k.denominator), k.numerator)
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
            return {((("pi", 1),), ()): Fraction(1)}
        if tok == "e":
            if self.i >= 2 and self.t[self.i - 2][0].isdigit() and (self.peek() or " ")[0].isdigit():
                raise _Decline  # 2e5: left to math-verify
            return {((("E", 1),), ()): Fraction(1)}
        if tok == "\\exp":  # \exp(k) = e^k for an integer k
            if self.peek() not in ("(", "{"):
                raise _Decline
            k = self.atom()
            if set(k) - {((), ())} or k.get(((), ()), Fraction(0)).denominator != 1:
                raise _Decline
            return _power({((("E", 1),), ()): Fraction(1)}, int(k.get(((), ()), 0)))
        if tok in VARIABLES:
            return {(((tok, 1),), ()): Fraction(1)}
        if tok == "(":
            value = self.expr()
            self.take(")")
            return value
        if tok == "{":
            self.i -= 1
            return self.group()
        if tok == "\\sqrt":
            if self.peek() == "[":  # \sqrt[3]{24}
                self.take("[")
                index = self.take()
                self.take("]")
                if not index.isdigit() or self.peek() != "{":
                    raise _Decline
                return _root(self.group(), int(index))
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
        if any(var not in CONSTANTS for var, _ in m):
            raise _Decline
        size = float(c) * math.prod(p ** float(e) for p, e in r)
        for var, e in m:
            size *= (math.pi if var == "pi" else math.e) ** e
        total += size
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
    degrees = _DEGREES.sub("", span)
    if degrees != span:  # 30^\circ: math-verify drops the degree sign
        value = parse_exact(degrees)
        return value if value is not None and value[0] == "value" else None
    choice = _CHOICE.fullmatch(_DROP.sub("", span).strip())
    if choice:  # \text{(B)}, (B), B: a letter to math-verify, case-insensitively
        return ("choice", next(g for g in choice.groups() if g).lower())
    if "=" not in span:
        elements = _set_elements(span)
        if elements is not None:
            return ("set", elements)
    name, eq, rhs = span.partition("=")
    if eq:  # y = 2x+3: an assignment to one letter; the right-hand sides decide
        if not (len(name.strip()) == 1 and name.strip() in VARIABLES) or "=" in rhs or rhs.strip()[:1] in ("", "="):
            return None
        value = parse_exact(rhs)
        return None if value is None or value[0] != "value" else ("equation", name.strip(), value)
    try:
        tokens = _tokens(span)
        if not tokens or "\\" in "".join(t for t in tokens if t not in ("\\frac", "\\sqrt", "\\pi", "\\infty", "\\exp")):
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
                    values.append(frozenset({((("oo", 1),), ()): Fraction(sign)}.items()))
                    continue
                p = _Parser(item)
                v = p.expr()
                if p.peek() is not None or p.decimal:
                    return None
                values.append(frozenset(v.items()))
            return ("pair", tokens[0], tokens[-1], tuple(values))
        if "," in tokens or "\\infty" in tokens or any(t == "[" and tokens[k - 1:k] != ["\\sqrt"] for k, t in enumerate(tokens)):
            return None
        p = _Parser(tokens)
        v = p.expr()
        if p.peek() is not None:
            return None
        return ("value", frozenset(v.items()), p.decimal)
    except (_Decline, ZeroDivisionError, ValueError, RecursionError):
        return None


_DEGREES = re.compile(r"(?<=\d)\s*\^\s*(?:\\circ|\{\s*\\circ\s*\})\s*$")
_CHOICE = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{\s*\(?\s*([A-Ea-e])\s*\)?\s*\}|\(\s*([A-Ea-e])\s*\)|([A-E])")
_THOUSANDS = re.compile(r"\d,\d")


def _set_elements(span: str) -> tuple[frozenset, ...] | None:
    """The elements of ``\\{a, b, c\\}`` or of a bare list ``a, b, c`` (a FiniteSet to math-verify), when
    every element is an exact constant without decimals and no two are equal or within 1e-6 of each
    other (sympy must then keep them all, and math-verify's ordering by value pairs them as we do);
    else None. A bare ``1,234`` is a number with a thousands separator to math-verify: declined."""
    s = _DROP.sub("", span).strip()
    if s.startswith("\\{") and s.endswith("\\}"):
        inner = s[2:-2]
    elif s[:1] not in ("(", "[", "\\") and not _THOUSANDS.search(s):
        inner = s
    else:
        return None
    items, depth, start = [], 0, 0
    for k, ch in enumerate(inner):
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
            if depth < 0:
                return None
        elif ch == "," and depth == 0:
            items.append(inner[start:k])
            start = k + 1
    items.append(inner[start:])
    if len(items) < 2 or len(items) > _MAX_TERMS or depth != 0:
        return None
    values, floats = [], []
    for item in items:
        parsed = parse_exact(item)
        if parsed is None or parsed[0] != "value" or parsed[2]:
            return None
        try:
            floats.append(_float(dict(parsed[1])))
        except (_Decline, OverflowError):
            return None
        values.append(parsed[1])
    ordered = sorted(floats)
    if not all(math.isfinite(x) for x in ordered) or any(
            b - a <= 1e-6 * max(1.0, abs(a), abs(b)) for a, b in zip(ordered, ordered[1:])):
        return None
    return tuple(v for _, v in sorted(zip(floats, values), key=lambda fv: fv[0]))


def _values_verdict(g: Value, p: Value, decimal: bool) -> bool | None:
    if g == p:
        return True
    if not decimal and all(key == ((), ()) for key in list(g) + list(p)):
        return False  # two different rationals: the worker's exact-rational rule says the same
    symbolic = any(var not in CONSTANTS for (m, _), _ in list(g.items()) + list(p.items()) for var, _ in m)
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
    if g[0] == "choice":
        return g[1] == p[1]
    if g[0] == "set":  # both sorted by value, as math-verify orders FiniteSet elements before pairing them
        if len(g[1]) != len(p[1]):
            return False
        verdicts = [_values_verdict(dict(a), dict(b), False) for a, b in zip(g[1], p[1])]
        if all(v is True for v in verdicts):
            return True
        return False if any(v is False for v in verdicts) else None
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
