"""Answer extraction we own: the last ``\\boxed{}``, the last ``<answer>`` pair, GSM8K ``####``.

Every function here is linear in the input, never raises on model output and returns ``None``
when there is no well-formed answer; reward mode has **no free-text fallback** (a completion
without an answer span scores 0 with reason ``no-answer``). Length caps bound the work a hostile
completion can cause downstream.
"""

from __future__ import annotations

import re

#: completions longer than this are not parsed at all (reason ``too-long``)
MAX_COMPLETION_CHARS = 65_536
#: answer spans longer than this are not handed to the verifier (reason ``span-too-long``)
MAX_SPAN_CHARS = 1_000

_BOXED_HEADS = ("\\boxed", "\\fbox")


def too_long(text: str, limit: int = MAX_COMPLETION_CHARS) -> bool:
    return len(text) > limit


def clip(text: str, limit: int = MAX_COMPLETION_CHARS) -> str:
    """The text itself, or its last ``limit`` characters (final answers sit at the end)."""
    return text if len(text) <= limit else text[-limit:]


def answer_tag_span(text: str) -> str | None:
    """Content of the last complete ``<answer>…</answer>`` pair, stripped; None if there is none."""
    end = text.rfind("</answer>")
    if end < 0:
        return None
    start = text.rfind("<answer>", 0, end)
    if start < 0:
        return None
    return text[start + len("<answer>") : end].strip()


def count_answer_tags(text: str) -> int:
    return text.count("<answer>")


def _match_braces(text: str, open_at: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_at`` (escaped ``\\{``/``\\}`` skipped)."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _next_box(text: str, start: int) -> tuple[int, str]:
    """Position and head of the first ``\\boxed``/``\\fbox`` at or after ``start`` (-1 if none)."""
    best, head = -1, ""
    for h in _BOXED_HEADS:
        k = text.find(h, start)
        if k >= 0 and (best < 0 or k < best):
            best, head = k, h
    return best, head


def _box_at(text: str, at: int, head: str) -> tuple[str | None, int]:
    """Content of the box whose head starts at ``at`` and the index just after it.

    ``(None, len(text))`` for an unbalanced box (it runs to the end of the text); the
    ``\\boxed 5`` form ends at the next whitespace or ``$``.
    """
    i = at + len(head)
    if i < len(text) and text[i] == "{":
        close = _match_braces(text, i)
        if close is None:
            return None, len(text)
        return text[i + 1 : close].strip(), close + 1
    if i < len(text) and text[i] == " ":
        m = re.match(r" +([^\s$]+)", text[i:])
        if m:
            return m.group(1), i + m.end()
    return None, i


def last_boxed(text: str) -> str | None:
    """Content of the last *outermost* ``\\boxed{…}`` / ``\\fbox{…}`` (brace-matched), or ``\\boxed 5``.

    Boxes are read left to right at the top level, so in ``\\boxed{4 \\text{ or } \\boxed{3}}`` the
    outer box wins and its whole content (a hedge, scored 0 downstream) is returned, never the
    inner ``3``. A box whose entire content is one box (``\\boxed{\\boxed{3}}``) is unwrapped. Returns
    None when there is no box or the last one is unbalanced (a truncated completion): an earlier
    box is *not* used instead, because the model's final word is the last one. Linear in the text.
    """
    found: str | None = None
    seen = False
    pos = 0
    while True:
        at, head = _next_box(text, pos)
        if at < 0:
            break
        seen = True
        found, pos = _box_at(text, at, head)
        if found is None and pos >= len(text):
            return None  # unbalanced: it swallows everything after it
    if not seen or found is None:
        return None
    while True:  # \boxed{\boxed{3}}: one box inside, nothing else
        at, head = _next_box(found, 0)
        if at != 0:
            return found
        inner, end = _box_at(found, 0, head)
        if inner is None or found[end:].strip():
            return found
        found = inner


def has_boxed(text: str) -> bool:
    return any(h in text for h in _BOXED_HEADS)


def hash_answer(text: str) -> str | None:
    """Text after the last GSM8K ``####`` marker up to the end of its line, stripped."""
    k = text.rfind("####")
    if k < 0:
        return None
    rest = text[k + 4 :].strip()
    return rest.splitlines()[0].strip() if rest else None


def final_answer_span(text: str, *, boxed: bool = True, tags: bool = True, hashes: bool = True) -> tuple[str | None, str]:
    """The model's final answer span and where it came from, in reward mode (no free-text fallback).

    Order: a box inside the last ``<answer>`` pair, else that pair's text; with no answer pair, the
    last box anywhere; then the last ``####``. Returns ``(span, source)`` with ``source`` one of
    ``answer-boxed``, ``answer``, ``boxed``, ``hash``, or ``(None, "no-answer")``.
    """
    if tags:
        tag = answer_tag_span(text)
        if tag is not None:
            if boxed and has_boxed(tag):
                inner = last_boxed(tag)
                if inner is not None:
                    return inner, "answer-boxed"
            return tag, "answer"
    if boxed:
        box = last_boxed(text)
        if box is not None:
            return box, "boxed"
    if hashes:
        h = hash_answer(text)
        if h is not None:
            return h, "hash"
    return None, "no-answer"
