"""d1's training rewards and evaluation parsers, reproduced for paper parity, bugs included.

Re-implemented from the behaviour of dllm-reasoning/d1 ``diffu-grpo/reward_func.py``,
``math500_utils.py`` and ``eval/parse_and_get_acc.py`` (spec verifiers.md §1.3, algorithms.md §5).
Every function returns what d1's returns on the same input, with these documented exceptions, all
on inputs where d1 itself hangs or is quadratic:

* countdown: d1 ``eval``s ``**`` (its regex allows it), so ``44**19**35`` hangs the trainer. Here
  the same expression language is evaluated by a bounded AST walker; a power whose result would
  exceed :data:`POWER_BITS` bits counts as "could not evaluate" (d1's own fallback: 0.1).
* regexes d1 runs with lazy ``.*?`` are replaced by linear scans with the same match set, so a
  hostile completion cannot make a reward quadratic.

The bugs kept on purpose (see docs/rewards.md): no ``re.DOTALL`` in the soft format check, the
single-line reasoning of the strict check, ``"\\b"`` (a backspace) in the boxed check, the whole
completion compared when there is no ``<answer>``/``\\boxed``, the ``\\text{ }`` unit cut in
``is_equiv``, the first-``<answer>`` read of the MATH format reward, the sudoku zero padding.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Sequence
from typing import Any

#: a ``**`` whose exact result would have more bits than this is "could not evaluate"
POWER_BITS = 100_000

# --------------------------------------------------------------------------------------------
# GSM8K training rewards
# --------------------------------------------------------------------------------------------


def extract_xml_answer(text: str) -> str:
    """Text after the *last* ``<answer>`` up to the next ``</answer>``, stripped (whole text if none)."""
    return text.split("<answer>")[-1].split("</answer>")[0].strip()


def hash_answer(solution: str) -> str | None:
    """Gold of a GSM8K solution: the text after the *first* ``####``, stripped."""
    if "####" not in solution:
        return None
    return solution.split("####")[1].strip()


def gsm8k_correctness(text: str, answer: str) -> float:
    """2.0 iff the extracted answer is string-equal to the gold (``72.0``, ``$72`` score 0)."""
    return 2.0 if extract_xml_answer(text) == answer else 0.0


def int_reward(text: str) -> float:
    """0.5 iff the extracted answer ``.isdigit()`` (negative and decimal answers never qualify)."""
    return 0.5 if extract_xml_answer(text).isdigit() else 0.0


def strict_format(text: str) -> float:
    """0.5 iff ``^<reasoning>\\n.*?\\n</reasoning>\\n<answer>\\n.*?\\n</answer>\\n$`` matches (no DOTALL).

    Without DOTALL ``.`` stops at newlines, so the reasoning and the answer must each be exactly one
    line; ``$`` also matches before one final newline.
    """
    lines = text.split("\n")
    ok = (
        len(lines) in (7, 8)
        and lines[0] == "<reasoning>" and lines[2] == "</reasoning>" and lines[3] == "<answer>"
        and lines[5] == "</answer>" and all(x == "" for x in lines[6:])
    )
    return 0.5 if ok else 0.0


def soft_format(text: str) -> float:
    """0.5 iff ``re.match(r"<reasoning>.*?</reasoning>\\s*<answer>.*?</answer>", text)`` (no DOTALL).

    Linear-time equivalent: the text starts with ``<reasoning>``; some ``</reasoning>`` on that first
    line is followed by whitespace, ``<answer>``, and a ``</answer>`` before the next newline.
    """
    if not text.startswith("<reasoning>"):
        return 0.0
    first_nl = text.find("\n")
    line_end = len(text) if first_nl < 0 else first_nl
    pos = len("<reasoning>")
    close_cache = -1
    while True:
        r = text.find("</reasoning>", pos, line_end)
        if r < 0:
            return 0.0
        k = r + len("</reasoning>")
        while k < len(text) and text[k] in " \t\n\r\f\v":
            k += 1
        if text.startswith("<answer>", k):
            start = k + len("<answer>")
            if close_cache < start:
                close_cache = text.find("</answer>", start)
                if close_cache < 0:
                    return 0.0
            nl = text.find("\n", start, close_cache)
            if nl < 0:
                return 0.5
        pos = r + 1


def xmlcount(text: str) -> float:
    """d1's ``count_xml``: 0.125 per tag string present exactly once, minus trailing-text penalties.

    Bug kept: when ``"\\n</answer>\\n"`` is absent (a completion that ends right after
    ``</answer>``), the ``<answer>`` term subtracts 0.001 per character of the *whole* text.
    """
    count = 0.0
    if text.count("<reasoning>\n") == 1:
        count += 0.125
    if text.count("\n</reasoning>\n") == 1:
        count += 0.125
    if text.count("\n<answer>\n") == 1:
        count += 0.125
        count -= len(text.split("\n</answer>\n")[-1]) * 0.001
    if text.count("\n</answer>") == 1:
        count += 0.125
        count -= (len(text.split("\n</answer>")[-1]) - 1) * 0.001
    return count


# --------------------------------------------------------------------------------------------
# MATH (Hendrycks is_equiv, as vendored by d1)
# --------------------------------------------------------------------------------------------


def last_boxed_only_string(text: str) -> str | None:
    """d1's ``last_boxed_only_string``: returns the *whole text* when there is no box at all."""
    idx = text.rfind("\\boxed")
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return text
    depth = 0
    for i in range(idx, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[idx : i + 1]
    return None


def remove_boxed(s: str) -> str:
    """d1's ``remove_boxed``; raises (TypeError/AssertionError) exactly where d1's does."""
    if "\\boxed " in s:
        if not s.startswith("\\boxed "):
            raise AssertionError("remove_boxed: text before '\\boxed '")
        return s[len("\\boxed ") :]
    if s.startswith("\\boxed{") and s[-1:] == "}" and len(s) > 0:
        return s[len("\\boxed{") : -1]
    return s


def _fix_fracs(s: str) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for sub in parts[1:]:
        out += "\\frac"
        if sub[0] == "{":  # IndexError on "\\frac" at the end, as in d1
            out += sub
            continue
        if len(sub) < 2:
            return s
        a, b = sub[0], sub[1]
        out += ("{" + a + "}{" + b + "}" if b != "{" else "{" + a + "}" + b) + sub[2:]
    return out


def _fix_a_slash_b(s: str) -> str:
    parts = s.split("/")
    if len(parts) != 2:
        return s
    a, b = int(parts[0]), int(parts[1])  # ValueError propagates, as in d1
    if s != f"{a}/{b}":
        return s
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _fix_sqrt(s: str) -> str:
    if "\\sqrt" not in s:
        return s
    parts = s.split("\\sqrt")
    out = parts[0]
    for sub in parts[1:]:
        out += "\\sqrt" + sub if sub[0] == "{" else "\\sqrt{" + sub[0] + "}" + sub[1:]
    return out


def strip_string(s: str) -> str:
    """Hendrycks/d1 answer normalisation (raises where d1's raises; ``is_equiv`` catches)."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:  # "remove_right_units": cuts at the unit, so "3 \text{ or } 4" becomes "3 "
        pieces = s.split("\\text{ ")
        if len(pieces) != 2:
            raise AssertionError("more than one '\\text{ '")
        s = pieces[0]
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    eq = s.split("=")
    if len(eq) == 2 and len(eq[0]) <= 2:
        s = eq[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


def is_equiv(a: str | None, b: str | None) -> bool:
    if a is None and b is None:
        return True
    if a is None or b is None:
        return False
    try:
        return strip_string(a) == strip_string(b)
    except Exception:  # noqa: BLE001 - d1 falls back to raw equality
        return a == b


def math_extract(text: str) -> str:
    """d1's MATH training extraction: ``remove_boxed(last_boxed_only_string(r))``; on error, ``r``."""
    try:
        return remove_boxed(last_boxed_only_string(text))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001
        return text


def math_gold(solution: str) -> str | None:
    """Gold of a MATH solution as d1 computes it (may raise, as d1's does)."""
    return remove_boxed(last_boxed_only_string(solution))  # type: ignore[arg-type]


def math_correctness(text: str, gold: str | None) -> float:
    return 2.0 if is_equiv(math_extract(text), gold) else 0.0


def boxed_and_answer_tags_format(text: str) -> float:
    """0.5 * (1[first <answer> block exists] + (1.0 if "\\x08oxed" in it else 0.5)) ∈ {0.25, 0.75}.

    d1 writes ``"\\boxed" in r`` in a non-raw string: ``\\b`` is a backspace, so the boxed branch
    practically never fires.
    """
    reward = 0.0
    pieces = text.split("<answer>")
    r = text
    if len(pieces) > 1:
        r = pieces[1].split("</answer>")[0]
        reward += 1.0
    reward += 1.0 if "\x08oxed" in r else 0.5
    return 0.5 * reward


# --------------------------------------------------------------------------------------------
# Countdown
# --------------------------------------------------------------------------------------------


def answer_blocks(text: str) -> list[str]:
    """``re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)`` in linear time."""
    out, pos = [], 0
    while True:
        i = text.find("<answer>", pos)
        if i < 0:
            return out
        j = text.find("</answer>", i + 8)
        if j < 0:
            return out
        out.append(text[i + 8 : j])
        pos = j + 9


def extract_solution(text: str) -> str | None:
    blocks = answer_blocks(text)
    return blocks[-1].strip() if blocks else None


def validate_equation(equation: str, numbers: Sequence[int]) -> bool:
    try:
        used = [int(n) for n in re.findall(r"\d+", equation)]
        return sorted(used) == sorted(numbers)
    except Exception:  # noqa: BLE001 - d1's bare except (huge digit strings)
        return False


class _TooBig(Exception):
    pass


_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b}


def _power(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
        if b * max(1, abs(a).bit_length()) > POWER_BITS:
            raise _TooBig
    return a**b


def _eval_node(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval_node(node.operand)
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp):
        a, b = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow):
            return _power(a, b)
        op = _BINOPS.get(type(node.op))
        if op is not None:
            return op(a, b)
    raise ValueError(f"node {type(node).__name__} not allowed")


def evaluate_equation(equation: str) -> tuple[Any, str]:
    """d1's ``evaluate_equation`` (regex ``^[\\d+\\-*/().\\s]+$`` then Python arithmetic), bounded.

    Returns ``(value or None, reason)``; ``None`` is d1's "could not evaluate".
    """
    if not re.match(r"^[\d+\-*/().\s]+$", equation):
        return None, "invalid-characters"
    if len(equation) > 10_000:
        return None, "too-long"
    try:
        tree = ast.parse(equation, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None, "syntax-error"
    try:
        return _eval_node(tree), "evaluated"
    except _TooBig:
        return None, "power-too-large"
    except (ArithmeticError, ValueError, TypeError, RecursionError, MemoryError):
        return None, "arithmetic-error"


def countdown_score(text: str, target: int, numbers: Sequence[int]) -> tuple[float, str]:
    """d1's ``compute_score``: 1.0 correct, 0.1 an <answer> that fails, 0.0 no <answer>."""
    equation = extract_solution(text)
    if equation is None:
        return 0.0, "no-answer"
    if not validate_equation(equation, numbers):
        return 0.1, "wrong-numbers"
    value, why = evaluate_equation(equation)
    if value is None:
        return 0.1, why
    try:
        return (1.0, "correct") if abs(value - target) < 1e-5 else (0.1, "wrong-value")
    except (ArithmeticError, TypeError, ValueError):
        return 0.1, "arithmetic-error"


# --------------------------------------------------------------------------------------------
# Sudoku
# --------------------------------------------------------------------------------------------


def sudoku_score(text: str, puzzle: str, solution: str) -> tuple[float, str]:
    """d1's sudoku reward: digits of the last <answer>, zero-padded/truncated to 16, accuracy on
    the puzzle's empty cells."""
    blocks = answer_blocks(text)
    if not blocks:
        return 0.0, "no-answer"
    digits = "".join(ch for ch in blocks[-1].strip() if ch.isdigit())
    if not digits:
        return 0.0, "empty-answer"
    digits = (digits + "0" * 16)[:16]
    empty = [i for i in range(16) if puzzle[i] == "0"]
    if not empty:
        return 0.0, "no-empty-cells"
    right = sum(1 for i in empty if digits[i] == solution[i])
    return right / len(empty), f"cells:{right}/{len(empty)}"


# --------------------------------------------------------------------------------------------
# Evaluation parsers (eval/parse_and_get_acc.py): used by the tasks' is_correct
# --------------------------------------------------------------------------------------------


def boxed_lazy_contents(text: str) -> list[str]:
    """``re.findall(r"\\\\boxed{(.*?)}", text)`` (no DOTALL) in linear time.

    At each ``\\boxed{`` the content runs to the first ``}``; when a newline comes first that
    attempt fails and the search resumes one character later. The next ``}``/newline positions
    only move forward, so each is found once.
    """
    out: list[str] = []
    n = len(text)
    close = newline = -1
    pos = 0
    while True:
        i = text.find("\\boxed{", pos)
        if i < 0:
            return out
        start = i + 7
        if close < start:
            close = text.find("}", start)
            close = n if close < 0 else close
        if newline < start:
            newline = text.find("\n", start)
            newline = n if newline < 0 else newline
        if close < n and close < newline:
            out.append(text[start:close])
            pos = close + 1
        else:
            pos = i + 1


_COUNTDOWN_LHS = frozenset("0123456789+-*/() ")
_COUNTDOWN_RHS = frozenset("0123456789. ")


def equation_lhs(equation: str) -> str | None:
    """Group 1 of ``re.search(r"([0-9+\\-*/() ]+)=[0-9. ]+", equation)`` in linear time.

    ``=`` is outside the left class, so a match ends its greedy run exactly at an ``=``; the leftmost
    match is the maximal run before the first ``=`` that has a left character before it and a
    right character after it.
    """
    k = equation.find("=")
    while k >= 0:
        if k > 0 and equation[k - 1] in _COUNTDOWN_LHS and equation[k + 1 : k + 2] in _COUNTDOWN_RHS and k + 1 < len(equation):
            start = k
            while start > 0 and equation[start - 1] in _COUNTDOWN_LHS:
                start -= 1
            return equation[start:k]
        k = equation.find("=", k + 1)
    return None


def eval_gsm8k(text: str, gold: float) -> bool:
    """First numeric ``\\boxed{…}`` (non-greedy, no nesting), else the last number in the first
    ``<answer>`` block; compared to the gold as floats with ``==``."""
    parsed = None
    for content in boxed_lazy_contents(text):
        content = content.strip()
        if content and content != "..." and not re.match(r"^\.+$", content):
            try:
                parsed = float(content)
                break
            except ValueError:
                nums = re.findall(r"-?\d+\.?\d*", content)
                if nums:
                    parsed = float(nums[0])
                    break
    if parsed is None:
        blocks = answer_blocks(text)
        if blocks:
            body = blocks[0].strip()
            if body:
                try:
                    parsed = float(body)
                except ValueError:
                    nums = re.findall(r"-?\d+\.?\d*", body)
                    if nums:
                        parsed = float(nums[-1])
    return parsed is not None and parsed == gold


def eval_math(text: str, gold: str) -> bool:
    """Last boxed answer, else the first ``<answer>`` text, compared with ``is_equiv``."""
    try:
        parsed: str | None = remove_boxed(last_boxed_only_string(text))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001
        parsed = None
    if not parsed:
        blocks = answer_blocks(text)
        if blocks:
            parsed = blocks[0].strip()
    return parsed is not None and is_equiv(parsed, gold)


def eval_countdown(text: str, numbers: Sequence[int], target: int) -> bool:
    """Boxed expression (or <answer>, or the text), ``\\div``/``\\times``/``\\cdot`` mapped, a
    trailing ``= number`` dropped, numbers validated, value within 1e-5."""
    try:
        equation = remove_boxed(last_boxed_only_string(text))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001
        blocks = answer_blocks(text)
        equation = blocks[0].strip() if blocks else text
    equation = equation.replace("\\div", "/").replace("\\times", "*").replace("\\cdot", "*")
    lhs = equation_lhs(equation)
    if lhs is not None:
        equation = lhs.strip()
    if not validate_equation(equation, numbers):
        return False
    value, _ = evaluate_equation(equation.strip())
    if value is None:
        return False
    try:
        return abs(value - target) < 1e-5
    except (ArithmeticError, TypeError):
        return False


#: d1's cascade, kept for reference and for the equivalence tests; each is matched by a linear scan
#: below (``.*?`` with DOTALL is quadratic on 65k characters without ``</answer>``)
SUDOKU_EVAL_PATTERNS = (
    r"<answer>.*?```\s*([\d\s]+)```",
    r"<answer>(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|</answer>)",
    r"</answer>\s*(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|$)",
    r".*?(\d{16})\s*</answer>",
    r"\b(\d{16})\b",
)
_TERMINATORS = ("<|eot_id|>", "<|endoftext|>")
_DIGITS_OR_SPACE = re.compile(r"[\d\s]*")
_SPACE = re.compile(r"\s*")


def _first(text: str, needles: Sequence[str], start: int) -> int:
    """Smallest index >= ``start`` where one of ``needles`` occurs, or -1."""
    hits = [k for k in (text.find(n, start) for n in needles) if k >= 0]
    return min(hits) if hits else -1


def _sudoku_fenced(text: str) -> str | None:
    """Group 1 of pattern 1: the first ````` after the first ``<answer>`` that is followed by a run of
    digits/whitespace and another `````."""
    a = text.find("<answer>")
    if a < 0:
        return None
    t = text.find("```", a + 8)
    while t >= 0:
        run = _DIGITS_OR_SPACE.match(text, t + 3).end()  # runs after different fences are disjoint
        if run > t + 3 and text.startswith("```", run):
            body = text[t + 3 : run]
            lead = _SPACE.match(body).end()
            return body[lead:] if lead < len(body) else body[-1:]  # \s* gives back one char if needed
        t = text.find("```", t + 1)
    return None


def _sudoku_until_terminator(text: str) -> str | None:
    """Group 1 of pattern 2: the first ``<answer>`` up to the first terminator after it."""
    a = text.find("<answer>")
    if a < 0:
        return None
    end = _first(text, (*_TERMINATORS, "</answer>"), a + 8)
    return None if end < 0 else text[a + 8 : end]


def _sudoku_after_answer(text: str) -> str | None:
    """Group 1 of pattern 3: after the first ``</answer>`` and its whitespace, up to a terminator or
    ``$`` (the end, or before a final newline)."""
    b = text.find("</answer>")
    if b < 0:
        return None
    start = _SPACE.match(text, b + 9).end()
    ends = [k for k in (text.find(t, start) for t in _TERMINATORS) if k >= 0]
    ends.append(len(text) - 1 if text.endswith("\n") and len(text) - 1 >= start else len(text))
    return text[start : min(ends)]


def _sudoku_digits_before_close(text: str) -> str | None:
    """Group 1 of pattern 4: the earliest 16 decimal digits followed by whitespace and ``</answer>``.

    The digits must end where the whitespace before some ``</answer>`` begins, so each
    ``</answer>`` has one candidate; the first that holds is the leftmost match.
    """
    q = text.find("</answer>")
    while q >= 0:
        r = q
        while r > 0 and text[r - 1].isspace():
            r -= 1
        if r >= 16 and all(ch.isdecimal() for ch in text[r - 16 : r]):
            return text[r - 16 : r]
        q = text.find("</answer>", q + 1)
    return None


def _sudoku_search(text: str) -> str:
    """The first non-blank group of d1's cascade, stripped; "" when none."""
    for find in (_sudoku_fenced, _sudoku_until_terminator, _sudoku_after_answer, _sudoku_digits_before_close):
        found = find(text)
        if found is not None and found.strip():
            return found.strip()
    m = re.search(SUDOKU_EVAL_PATTERNS[4], text)  # at most 16 steps per position: linear
    return m.group(1).strip() if m and m.group(1).strip() else ""


def eval_sudoku_cells(text: str, puzzle: str, solution: str) -> tuple[int, int]:
    """(correct, empty) cells with d1's cascade of 5 regexes (:data:`SUDOKU_EVAL_PATTERNS`, matched in
    linear time); accuracy is pooled over puzzles."""
    empty = [i for i in range(16) if puzzle[i] == "0"]
    found = re.sub(r"\s", "", _sudoku_search(text))
    if not found:
        return 0, len(empty)
    found = (found + "0" * 16)[:16]
    return sum(1 for i in empty if found[i] == solution[i]), len(empty)
