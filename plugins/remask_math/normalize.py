"""Pre-normalisation and cheap pre-filters applied to an answer span before math-verify sees it.

Fixes the math-verify 0.9.0 failures recorded in spec verifiers.md §1.5 that happen before parsing:
thin spaces inside numbers (``7\\,000`` parsed as ``7*0 = 0``, a false positive against gold 0),
Unicode minus (plain ``−18`` parses to nothing), markdown bold (``**73**``), ``{,}`` separators.
Also home of the exact numeric fast path used for plain-number answers (GSM8K): no worker round
trip when both sides are plain decimal numbers.
"""

from __future__ import annotations

import re
from fractions import Fraction

_MINUS = dict.fromkeys(map(ord, "\u2212\u2012\u2013\u2014\ufe63\uff0d"), "-")
_SPACES = "\u00a0\u2007\u2009\u202f\u2008\u200a\u2002\u2003\u2004\u2005\u2006"
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"), None)
_DIGIT_GAP = re.compile(r"(?<=\d)(?:\\[,;:! ]|\{,\}|[" + _SPACES + r"]|\\thinspace|~)(?=\d)")
_BOLD = re.compile(r"(?<![\w)}\]])\*\*(?=\S)(.+?)(?<=\S)\*\*(?![\w({\[])", re.DOTALL)
_PERCENT = re.compile(r"\\?%|\\text\{\s*percent\s*\}|\bpercent\b")
_REPEATING = re.compile(r"(?<![\d.])(-?)(\d*)\.(\d*)\\overline\{(\d{1,50})\}")


def _repeating_to_frac(m: re.Match[str]) -> str:
    sign, whole, fixed, period = m.group(1), m.group(2) or "0", m.group(3), m.group(4)
    if len(whole) + len(fixed) > 50:
        return m.group(0)
    value = Fraction(int(whole + fixed + period) - int(whole + fixed), 10 ** len(fixed) * (10 ** len(period) - 1))
    return f"{sign}\\frac{{{value.numerator}}}{{{value.denominator}}}"


def pre_normalize(span: str, *, strip_percent: bool = True) -> str:
    """Textual clean-up that never changes a well-formed answer's meaning.

    * Unicode minus / dashes → ``-``; invisible and bidi control characters removed;
    * ``\\,``, ``\\;``, ``\\!``, ``{,}``, ``~`` and Unicode thin/no-break spaces *between digits* removed
      (``1\\,000\\,000`` → ``1000000``); elsewhere Unicode spaces become plain spaces;
    * markdown bold ``**x**`` → ``x``;
    * with ``strip_percent`` (default policy): ``%``/``\\%``/``percent`` dropped, so ``50\\%`` is 50 and
      never 0.5 (math-verify alone accepts both);
    * a repeating decimal ``0.1\\overline{6}`` → ``\\frac{1}{6}`` (math-verify cannot read it).
    """
    s = span.translate(_MINUS).translate(_INVISIBLE)
    s = _BOLD.sub(r"\1", s)
    s = _REPEATING.sub(_repeating_to_frac, s)
    s = _DIGIT_GAP.sub("", s)
    s = s.translate(dict.fromkeys(map(ord, _SPACES), " "))
    if strip_percent:
        s = _PERCENT.sub("", s)
    return s.strip()


def nesting_depth(span: str) -> int:
    """Deepest nesting of ``{}``/``()``/``[]`` (math-verify spends seconds on 400 nested parens)."""
    depth = deepest = 0
    for ch in span:
        if ch in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "})]":
            depth = max(0, depth - 1)
    return deepest


def exponent_depth(span: str) -> int:
    """Number of stacked exponents in the deepest power tower (``2^{10}`` → 1, ``9^{9^{9^{9}}}`` → 3,
    ``9**9**9**9`` → 3; ``**`` counts as ``^``).

    Reads the superscript structure: the exponent after ``^`` is one token (a ``{…}``/``(…)`` group,
    a run of digits, one letter or one ``\\command``). A ``^`` right after an exponent token stacks on
    it (``a^b^c``); anything else after the token returns to the base level, so ``x^2y^2z^2`` and
    ``a^2b^2c^2`` are products of depth 1, not towers. ``\\left``/``\\right`` are ignored. Linear.
    """
    s = span.replace("**", "^")
    n = len(s)
    groups: list[tuple[int, bool]] = [(0, False)]  # (exponent level, opened as an exponent) per open group
    after_exponent: int | None = None  # level of the exponent token that just ended, if any
    deepest = 0
    i = 0
    while i < n:
        ch = s[i]
        if ch == "\\" and s.startswith(("\\left", "\\right"), i):
            i += 5 if s.startswith("\\left", i) else 6
            continue
        if ch.isspace():
            i += 1
            continue
        if ch == "^":
            level = (after_exponent if after_exponent is not None else groups[-1][0]) + 1
            deepest = max(deepest, level)
            i += 1
            while i < n and (s[i].isspace() or s[i] in "+-"):
                i += 1
            if i < n and s[i] == "\\" and s.startswith(("\\left", "\\right"), i):
                i += 5 if s.startswith("\\left", i) else 6
            if i < n and s[i] in "{(":
                groups.append((level, True))
                after_exponent = None
                i += 1
                continue
            if i < n and s[i] == "\\":  # ^\circ, ^\prime: one command
                i += 1
                while i < n and s[i].isalpha():
                    i += 1
            elif i < n and s[i].isdigit():
                while i < n and (s[i].isdigit() or s[i] == "."):
                    i += 1
            elif i < n:
                i += 1
            after_exponent = level
            continue
        if ch in "{(":
            groups.append((groups[-1][0], False))
            after_exponent = None
        elif ch in "})":
            level, was_exponent = groups.pop() if len(groups) > 1 else (0, False)
            after_exponent = level if was_exponent else None
        else:
            after_exponent = None
        i += 1
    return deepest


_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_THOUSANDS = re.compile(r"(?<!\d)(\d{1,3})((?:,\d{3})+)(?![\d,])")
_PLAIN = re.compile(
    r"(?:\\\$|\$)?\s*(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*"
    r"(?:\\?%|\\?\$|(?:\\text\{[^{}]*\}|\\mathrm\{[^{}]*\}|[A-Za-z]+)(?:\s+[A-Za-z]+)*)?\s*\.?"
)


def plain_number(span: str) -> Fraction | None:
    """Exact value of a span that is one plain decimal number (currency, %, unit words, a final
    period and thousands separators allowed: ``$1,000.00``, ``18 dollars``, ``7%``); else None.

    ``2 apples and 3 oranges`` is *not* a plain number (two numbers): it goes to math-verify.
    """
    s = _THOUSANDS.sub(lambda m: m.group(1) + m.group(2).replace(",", ""), span.strip())
    s = re.sub(r"(?<=\d) (?=\d{3}(?!\d))", "", s)  # "1 000"
    m = _PLAIN.fullmatch(s)
    if m is None or len(_NUMBER.findall(s)) != 1:
        return None
    num = m.group("num")
    if len(num) > 400:
        return None
    try:
        return Fraction(num.rstrip(".") or "0")
    except (ValueError, ZeroDivisionError):
        return None


_SIMPLE_FRAC = re.compile(r"(-?)\\frac\{(-?\d{1,200})\}\{(-?\d{1,200})\}|(-?)(\d{1,200})/(\d{1,200})")


def _terminating(value: Fraction) -> bool:
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def simple_rational(span: str) -> tuple[Fraction, bool] | None:
    """``(value, is_decimal)`` for a plain number or a simple fraction (``\\frac{3}{4}``, ``-\\dfrac{1}{2}``,
    ``3/4``, ``\\frac{-1}{2}``), else None. Decided exactly in the trainer process, no worker."""
    s = span.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\left", "").replace("\\right", "")
    s = s.replace(" ", "")
    if s.startswith("$") and s.endswith("$") and len(s) > 1:
        s = s.strip("$")
    m = _SIMPLE_FRAC.fullmatch(s)
    if m:
        sign = m.group(1) or m.group(4)
        num, den = (m.group(2), m.group(3)) if m.group(2) is not None else (m.group(5), m.group(6))
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return (-value if sign else value), False
    value = plain_number(span)
    if value is None:
        return None
    return value, "." in span


def exact_decision(gold: str, pred: str) -> bool | None:
    """True/False when both spans are plain rationals and an exact comparison is the same verdict
    math-verify's 6-decimal rule would give; None to defer to math-verify."""
    g, p = simple_rational(gold), simple_rational(pred)
    if g is None or p is None:
        return None
    (gv, g_dec), (pv, p_dec) = g, p
    if g_dec != p_dec and not _terminating(pv if g_dec else gv):
        return None  # 0.3333333 vs 1/3: math-verify's rounding policy decides
    return gv == pv
