"""Hedged answers: words or relations around a number that change what the answer claims.

math-verify drops ``\\text{…}`` as a unit (``5\\text{ (maybe 6)}`` parses to 5) and takes the last
side of an equation (``6 = 5`` parses to 5), and a fast path that reads "a number followed by unit
words" reads ``5 or more`` as 5. Each of these scored 1 against gold 5. The rule here is one class:
an answer span may carry units, but not *function words* (alternatives, comparisons, negations,
uncertainty, verdicts: ``or``, ``more``, ``is``, ``not``, ``maybe``, ``wrong`` …) nor a number inside
a ``\\text{}`` aside next to the answer. A word the gold itself uses is allowed (``\\text{neither}``,
``\\text{no}`` are real MATH answers).

Equations are split into their sides by :func:`statement_sides` so the worker can require every
side that is a value (not a name such as ``x`` or ``f(3)``) to equal the gold: ``x = 5`` and
``2+3=5`` stay correct, ``6 = 5`` and ``x = 6 = 5`` do not.
"""

from __future__ import annotations

import re

#: words that make a number a hedge, a range, a comparison or a verdict rather than an answer
HEDGE_WORDS = frozenset("""
or nor either neither otherwise else alternatively
more fewer less least most than over under above below between within exceeding exceeds
at up beyond
is are was were be been isn't aren't wasn't not no never none cannot can't
wrong incorrect false true correct right invalid
maybe perhaps possibly probably likely unlikely approximately approx approximate about around roughly
nearly almost circa estimate estimated guess unsure uncertain unknown undetermined
if unless except but however although though
""".split())

_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathit|mbox|operatorname)\s*\{([^{}]*)\}")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z][A-Za-z']*")


def _words(span: str) -> set[str]:
    """Lower-cased words of a span: inside ``\\text{}``-like groups and bare letter runs (not commands)."""
    words = set()
    for m in _TEXT_CMD.finditer(span):
        words.update(w.lower() for w in _WORD.findall(m.group(1)))
    bare = _COMMAND.sub(" ", _TEXT_CMD.sub(" ", span))
    words.update(w.lower() for w in _WORD.findall(bare))
    return words


#: phrases that only assert the answer ("the answer is 5", "5 is the final answer"); removed before
#: looking for hedge words, so their "is" does not count as a verdict
_AFFIRMATION = re.compile(
    r"(?i)(?:\b(?:so|thus|hence|therefore)\s*,?\s*)?\b(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is\b|[:=])"
    r"|\bis\s+(?:the\s+)?(?:final\s+|correct\s+)?answer\b"
)


def hedge_reason(pred: str, gold: str) -> str | None:
    """``"hedged-answer"`` when ``pred`` carries words or asides that qualify its value, else None.

    * a word of :data:`HEDGE_WORDS` that the gold does not contain (``5 or more``, ``18 is wrong``),
      after phrases that only assert the answer are removed (``The answer is 5`` and
      ``5 \\text{ is the answer}`` are plain answers; ``The answer is 5 or more`` is still a hedge);
    * a ``\\text{}`` group holding a digit next to other content (``5\\text{ (6)}``); a span that is
      only ``\\text{13}`` is an answer, not an aside.
    """
    extra = (_words(_AFFIRMATION.sub(" ", pred)) & HEDGE_WORDS) - _words(gold)
    if extra:
        return "hedged-answer"
    for m in _TEXT_CMD.finditer(pred):
        if any(ch.isdigit() for ch in m.group(1)) and (pred[: m.start()] + pred[m.end() :]).strip():
            return "hedged-answer"
    return None


def _has_name(side: str) -> bool:
    """A side names something (``x``, ``f(3)``, ``a_n``) when it has a letter outside LaTeX commands."""
    return bool(re.search(r"[A-Za-z]", _COMMAND.sub("", _TEXT_CMD.sub("", side))))


def statement_sides(pred: str) -> list[str] | None:
    """The sides of ``pred`` that must each equal the gold, or None when ``pred`` is not an equation
    chain that needs it.

    Splits on top-level ``=`` (not inside braces/brackets, not part of ``<=``, ``>=``, ``==``, ``!=``).
    ``x = 5`` → None (an assignment: math-verify handles it); ``6 = 5`` → ``["6", "5"]``;
    ``x = 2+3 = 5`` → ``["2+3", "5"]`` (every value after the name).
    """
    if "=" not in pred:
        return None
    sides, depth, start = [], 0, 0
    for i, ch in enumerate(pred):
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth = max(0, depth - 1)
        elif ch == "=" and depth == 0:
            before, after = pred[i - 1 : i], pred[i + 1 : i + 2]
            if before in ("<", ">", "!", "=") or after == "=" or pred[max(0, i - 4) : i] in ("\\leq", "\\geq"):
                return None  # a comparison, not an equation chain: math-verify decides
            sides.append(pred[start:i])
            start = i + 1
    sides.append(pred[start:])
    if len(sides) < 2 or any(not s.strip() for s in sides):
        return None
    if _has_name(sides[0]):
        return [s.strip() for s in sides[1:]] if len(sides) >= 3 else None
    return [s.strip() for s in sides]
