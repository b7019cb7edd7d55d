"""Digit scan: a generated task with long, line-structured answers for the tiny character dLLM.

The prompt is one line of ``width`` random digits; the answer is ``lines`` further lines of
``width`` digits, each computed from the line above ``x`` by a scan rule (all sums mod 10,
``y_{-1} = x_{-1} = 0``):

- ``count`` (default): ``y_j = y_{j-1} + (x_j mod 2)``, the running count of odd digits above;
- ``prefix``: ``y_j = y_{j-1} + x_j``, the running sum of the line above;
- ``pascal``: ``y_j = x_j + x_{j-1}``, Pascal's rule on the digits;
- ``step``: ``y_j = x_j + (x_{j-1} mod 2)``, the digit above plus the parity of its left neighbour.

Example (``width 5, lines 2``)::

    prompt      31415\\n          31415\\n
    completion  12234\\n (count)  34894\\n (prefix)
                11122               37548

Every answer digit depends only on tokens at fixed relative offsets (``-1`` and ``-(width+1)``; for
``step`` ``-(width+1)`` and ``-(width+2)``), so
a small bidirectional model with rotary positions can learn it, yet an exact answer needs every one
of ``width · lines`` digits right: per-digit accuracy p gives exact match about p^(width·lines).
That leaves room for RL between "layout right" and "all right", and the per-digit score is a dense,
checkable partial credit. With ``width: 15, lines: 4`` the completion is 63 characters plus EOS = 64
tokens, one line per 16-token block.

Why ``count`` is the default (measured, docs/benchmarks.md "Long-completion model"): under ``prefix``
and ``pascal`` an answer digit is a mod-10 sum of two uniform digits, so either input alone carries
no information about it (a parity-like target with no partial signal), and small models trained for
hundreds of steps stayed at chance. Under ``count`` the left neighbour alone predicts the digit up to
a 0/+1 step and the digit above decides the step, so the loss falls in stages.

``step`` is ``count``'s parallel twin: the same "digit plus a parity" structure, but both inputs are
in the line above, so every digit of a line is decided by the finished line above it and a line (one
block) can be decoded in parallel. Under ``count`` each digit also needs its left neighbour in the
same line, so a block is a chain of 15 decisions. ``step`` is meant for testing confidence-threshold
decoding (`fast-dllm`) where several tokens per step *can* be right (docs/benchmarks.md, "Threshold
decoding where tokens are parallel"; no checkpoint on it is shipped).

Splits: ``train``, ``validation`` and ``test`` come from three independent seeded streams, and a
row is kept only if its prompt is in no earlier split (test first, then validation, then train), so
the three are disjoint and the test split depends on neither other size. SFT stops on
``validation``; ``test`` is the reported split.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

import remask

from .text import too_long

__all__ = ["scan_lines", "DigitScanTask", "DigitScanCorrect", "DigitScanDigits", "scan_verdict", "scan_credit"]

Rule = Literal["count", "prefix", "pascal", "step"]


def scan_lines(digits: str, lines: int, rule: Rule) -> list[str]:
    """The ``lines`` answer lines below the prompt line ``digits`` (see the module docstring)."""
    out: list[str] = []
    above = [int(c) for c in digits]
    for _ in range(lines):
        row: list[int] = []
        for j, x in enumerate(above):
            if rule == "count":
                row.append(((row[j - 1] if j else 0) + x % 2) % 10)
                continue
            if rule == "step":
                row.append((x + (above[j - 1] if j else 0) % 2) % 10)
                continue
            prev = (row[j - 1] if j else 0) if rule == "prefix" else (above[j - 1] if j else 0)
            row.append((prev + x) % 10)
        out.append("".join(map(str, row)))
        above = row
    return out


def _answer_lines(completion: str) -> list[str]:
    return completion.strip().split("\n")


def scan_verdict(completion: str, answer: str) -> tuple[float, str]:
    """(1.0, "correct") iff the completion, stripped of outer whitespace, is exactly ``answer``."""
    if not answer:
        return 0.0, "no-reference"
    if too_long(completion):
        return 0.0, "too-long"
    got, want = _answer_lines(completion), answer.split("\n")
    if got == want:
        return 1.0, "correct"
    if len(got) != len(want):
        return 0.0, f"{len(got)}-lines"
    return 0.0, f"{sum(a == b for a, b in zip(got, want))}/{len(want)}-lines"


def scan_credit(completion: str, answer: str, unit: Literal["digits", "lines"] = "digits") -> tuple[float, str]:
    """Partial credit: the fraction of answer digits (or whole lines) the completion gets right.

    Digit ``j`` of line ``k`` counts when the completion's line ``k`` has the reference digit at
    index ``j``. The denominator is the larger of the reference's and the completion's digit count
    (line count), so extra output costs credit and cannot add any.
    """
    if not answer:
        return 0.0, "no-reference"
    if too_long(completion):
        return 0.0, "too-long"
    got, want = _answer_lines(completion), answer.split("\n")
    if unit == "lines":
        right = sum(a == b for a, b in zip(got, want))
        total = max(len(got), len(want))
    else:
        right = sum(sum(x == y for x, y in zip(a, b)) for a, b in zip(got, want))
        total = max(sum(len(x) for x in got), sum(len(x) for x in want))
    return right / total, f"{right}/{total}-{unit}"


class DigitScanTask(remask.Task):
    """Lines of digits below a random digit line, each a scan (running odd-count, prefix sum, Pascal
    rule or parity step, mod 10) of the line above."""

    name = "digit-scan"
    splits = ("train", "validation", "test")

    class Config(remask.ComponentConfig):
        width: int = Field(15, ge=2, le=64, description="Digits per line (the prompt line and every answer line).")
        lines: int = Field(4, ge=1, le=32, description="Answer lines below the prompt line.")
        rule: Rule = Field(
            "count",
            description="count: y_j = y_{j-1} + (x_j mod 2), the running count of odd digits in the line above x; "
            "prefix: y_j = y_{j-1} + x_j (running sum); pascal: y_j = x_j + x_{j-1}; "
            "step: y_j = x_j + (x_{j-1} mod 2), decidable in parallel from the line above. All mod 10.",
        )
        train_size: int = Field(50_000, ge=1, description="Rows of the train split.")
        validation_size: int = Field(500, ge=1, description="Rows of the validation split (SFT stops on it).")
        test_size: int = Field(1000, ge=1, description="Rows of the test split (the reported one; never trained on).")
        seed: int = Field(0, description="Seed of the three streams; the same seed gives the same splits.")

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._cache: dict[str, list[str]] | None = None

    def _prompts(self) -> dict[str, list[str]]:
        if self._cache is None:
            c = self.config
            seen: set[str] = set()
            out: dict[str, list[str]] = {}
            for split, size in (("test", c.test_size), ("validation", c.validation_size), ("train", c.train_size)):
                rng = random.Random(f"remask-digit-scan-{split}-{c.width}-{c.seed}")
                rows: list[str] = []
                while len(rows) < size:
                    digits = "".join(rng.choice("0123456789") for _ in range(c.width))
                    if digits not in seen:
                        seen.add(digits)
                        rows.append(digits)
                out[split] = rows
            self._cache = out
        return self._cache

    def examples(self, split: str) -> Sequence[remask.Example]:
        if split not in self.splits:
            raise remask.RemaskError(f"task digit-scan: unknown split {split!r}; use one of {self.splits}")
        c = self.config
        rows = []
        for i, digits in enumerate(self._prompts()[split]):
            answer = "\n".join(scan_lines(digits, c.lines, c.rule))
            rows.append(remask.Example(prompt=f"{digits}\n", reference={"answer": answer, "completion": answer},
                                       id=f"digit-scan-{split}-{i}"))
        return rows

    def is_correct(self, completion: str, reference: Mapping[str, Any]) -> float:
        return scan_verdict(completion, str(reference.get("answer", "")))[0]


class DigitScanCorrect(remask.RewardModel):
    """1.0 when every answer line of a `digit-scan` row is exactly right."""

    name = "digit-scan-correct"

    class Config(remask.ComponentConfig):
        answer_key: str = Field("answer", description="Reference key holding the expected answer lines.")

    def score(self, *, prompts: Sequence[str], completions: Sequence[str],
              references: Sequence[Mapping[str, Any]]) -> remask.Rewards:
        return _score_each(self.name, scan_verdict, completions, references, self.config.answer_key)


class DigitScanDigits(remask.RewardModel):
    """Fraction of a `digit-scan` answer's digits (or lines) that are right: dense partial credit."""

    name = "digit-scan-digits"

    class Config(remask.ComponentConfig):
        answer_key: str = Field("answer", description="Reference key holding the expected answer lines.")
        unit: Literal["digits", "lines"] = Field(
            "digits", description="digits: credit per correct digit position; lines: per entirely correct line."
        )

    def score(self, *, prompts: Sequence[str], completions: Sequence[str],
              references: Sequence[Mapping[str, Any]]) -> remask.Rewards:
        unit = self.config.unit
        return _score_each(self.name, lambda text, ans: scan_credit(text, ans, unit), completions, references,
                           self.config.answer_key)


def _score_each(name: str, verdict: Any, completions: Sequence[str], references: Sequence[Mapping[str, Any]],
                answer_key: str) -> remask.Rewards:
    """Apply ``verdict(text, answer) -> (value, reason)`` to every row; model output never raises."""
    values, reasons = [], []
    for text, ref in zip(completions, references):
        try:
            v, why = verdict(str(text), str(ref.get(answer_key, "")))
        except Exception as exc:  # noqa: BLE001 - model output never raises
            v, why = 0.0, f"error:{type(exc).__name__}"
        values.append(v)
        reasons.append(why)
    return remask.Rewards.from_scores(name, values, reasons)
