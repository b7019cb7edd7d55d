"""Countdown: a safe exact evaluator for the fixed reward and a seeded problem generator.

The fixed reward reads the model's final expression (a box inside the last ``<answer>``, else that
block's text, else the last box), maps ``×``/``÷``/``\\times``/``\\cdot``/``\\div``/Unicode minus
to ASCII, drops a trailing ``= <number>`` (a claimed value other than the target is wrong), checks
that the integers used are exactly the given multiset, and evaluates with exact fractions through
an AST walker that knows only ``+ - * /``, unary minus and parentheses. ``**`` and ``//`` are
refused (d1's regex lets ``**`` through and ``44**19**35`` hangs its trainer), nothing is ever
``eval``'d, and the value must be within 1e-5 of the target.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Sequence
from fractions import Fraction

from .normalize import pre_normalize
from .text import answer_tag_span, has_boxed, last_boxed

TOLERANCE = Fraction(1, 100_000)
MAX_EXPRESSION_CHARS = 200

_OPERATOR_MAP = {"×": "*", "÷": "/", "\\times": "*", "\\cdot": "*", "\\div": "/", "·": "*", "∗": "*"}
_ALLOWED = re.compile(r"^[0-9+\-*/()\s]+$")
_CLAIM = re.compile(r"=\s*(-?\d+(?:\.\d+)?)\s*\.?\s*$")


def countdown_span(text: str) -> str | None:
    tag = answer_tag_span(text)
    if tag is not None:
        if has_boxed(tag):
            inner = last_boxed(tag)
            if inner is not None:
                return inner
        return tag
    return last_boxed(text)


def _frac(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _frac(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _frac(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        a, b = _frac(node.left), _frac(node.right)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        return a / b  # ZeroDivisionError handled by the caller
    raise ValueError(type(node).__name__)


def evaluate(expression: str) -> tuple[Fraction | None, str]:
    """Exact value of a ``+ - * / ( )`` integer expression, or ``(None, reason)``."""
    if "**" in expression or "//" in expression:
        return None, "operator-not-allowed"
    if not _ALLOWED.match(expression):
        return None, "invalid-characters"
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None, "syntax-error"
    try:
        return _frac(tree), "evaluated"
    except ZeroDivisionError:
        return None, "division-by-zero"
    except (ValueError, RecursionError, MemoryError):
        return None, "syntax-error"


def countdown_verdict(text: str, numbers: Sequence[int], target: int, format_value: float = 0.1) -> tuple[float, str]:
    """Fixed countdown reward: 1.0 correct, ``format_value`` for a well-formed but wrong expression."""
    span = countdown_span(text)
    if span is None:
        return 0.0, "no-answer"
    expr = pre_normalize(span, strip_percent=False)
    for k, v in _OPERATOR_MAP.items():
        expr = expr.replace(k, v)
    if not expr.strip():
        return 0.0, "empty-answer"
    if len(expr) > MAX_EXPRESSION_CHARS:
        return 0.0, "span-too-long"
    claim = _CLAIM.search(expr)
    claimed = None
    if claim:
        claimed = claim.group(1)
        expr = expr[: claim.start()]
    value, why = evaluate(expr)
    if value is None:
        return 0.0, why
    used = sorted(int(n) for n in re.findall(r"\d+", expr))
    if used != sorted(int(n) for n in numbers):
        return format_value, "wrong-numbers"
    if claimed is not None and Fraction(claimed) != Fraction(int(target)):
        return format_value, "wrong-claimed-target"
    if abs(value - int(target)) < TOLERANCE:
        return 1.0, "correct"
    return format_value, "wrong-value"


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------


def _combine(a: Fraction, b: Fraction, op: str) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return None if b == 0 else a / b


def generate_problem(rng: random.Random, count: int = 3, low: int = 1, high: int = 99,
                     max_target: int = 999) -> tuple[list[int], int, str, str]:
    """A solvable problem: ``(numbers, target, expression, reasoning)`` with an integer target.

    A random left-nested expression over a shuffled copy of the numbers; division only when exact.
    """
    while True:
        numbers = [rng.randint(low, high) for _ in range(count)]
        order = numbers[:]
        rng.shuffle(order)
        value = Fraction(order[0])
        expr = str(order[0])
        steps = []
        ok = True
        for n in order[1:]:
            op = rng.choice("+-*/")
            nxt = _combine(value, Fraction(n), op)
            if nxt is None or nxt.denominator != 1 or nxt <= 0:
                ok = False
                break
            steps.append(f"{value}{op}{n}={nxt}")
            expr = f"({expr}){op}{n}" if op in "*/" and any(c in expr for c in "+-") else f"{expr}{op}{n}"
            value = nxt
        if ok and 0 < value <= max_target:
            return numbers, int(value), expr, ", ".join(steps)
