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


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` / ``\\fbox{…}`` (brace-matched), or ``\\boxed 5`` form.

    Returns None when there is no box or the last one is unbalanced (a truncated completion): an
    earlier box is *not* used instead, because the model's final word is the last one.
    """
    head_at, head = -1, ""
    for h in _BOXED_HEADS:
        k = text.rfind(h)
        if k > head_at:
            head_at, head = k, h
    if head_at < 0:
        return None
    i = head_at + len(head)
    if i < len(text) and text[i] == "{":
        close = _match_braces(text, i)
        return None if close is None else text[i + 1 : close].strip()
    if i < len(text) and text[i] == " ":
        m = re.match(r" +([^\s$]+)", text[i:])
        return m.group(1) if m else None
    return None


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
