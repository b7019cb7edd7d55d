"""n-digit arithmetic: the quickstart task for a tiny character-level dLLM, and its reward.

With ``template: plain`` a row is ``Example(prompt="12+34=", reference={"answer": "46",
"completion": "46"})``; ``reference["completion"]`` is the masked-diffusion SFT target. With
``template: d1`` the question is wrapped in d1's training prompt and the SFT target is a
``<reasoning>…</reasoning><answer>…</answer>`` completion after the ``<reasoning>`` pre-fill.

Train, validation and test problems are disjoint: every (a, b) operand pair is drawn without
replacement from one seeded stream; the first ``test_size`` pairs are the test split, the next
``train_size`` the train split and the next ``validation_size`` the validation split. The test split
therefore depends on neither other size, and adding the validation split (after train) left the
test and train splits exactly the problems they were before it existed. SFT stops on
``validation``; ``test`` is the reported split.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

import remask

from .prompts import REASONING_PREFILL, TRAIN_FORMAT_PROMPT, user_message, xml_completion
from .text import answer_tag_span, too_long

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_LEADING_INT = re.compile(r"-?\d+")


def operand_range(digits: int) -> tuple[int, int]:
    """Inclusive range of ``digits``-digit operands (1 digit includes 0)."""
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return low, 10**digits - 1


def draw_operand_pairs(digits: int, count: int, seed: int, *, plan_count: int | None = None) -> list[tuple[int, int]]:
    """``count`` distinct operand pairs in a fixed seeded order (no pair repeats).

    The order is prefix-stable: a longer draw starts with the pairs of a shorter one, provided both
    choose the same draw method, which ``plan_count`` (default ``count``) decides. Passing the same
    ``plan_count`` to draws of different lengths keeps their common prefix identical.
    """
    low, high = operand_range(digits)
    width = high - low + 1
    space = width * width
    if count > space:
        raise remask.RemaskError(
            f"task arithmetic: {count} distinct problems requested but only {space} exist with "
            f"digits={digits}; lower train_size/validation_size/test_size or raise digits"
        )
    plan = count if plan_count is None else plan_count
    rng = random.Random(f"remask-arithmetic-{digits}-{seed}")
    if space <= 4 * plan or space <= 1_000_000:
        order = list(range(space))
        rng.shuffle(order)
        picks = order[:count]
    else:  # sparse: rejection sampling keeps memory O(count)
        seen: set[int] = set()
        picks = []
        while len(picks) < count:
            k = rng.randrange(space)
            if k not in seen:
                seen.add(k)
                picks.append(k)
    return [(low + k // width, low + k % width) for k in picks]


def leading_integer(text: str) -> str | None:
    """The integer token the stripped text starts with (``"46 apples"`` -> ``"46"``), else None."""
    m = _LEADING_INT.match(text.strip())
    return m.group(0) if m else None


def arithmetic_verdict(completion: str, answer: str) -> tuple[float, str]:
    """(1.0, "correct") iff the completion's first integer token equals ``answer``.

    If the completion has an ``<answer>`` tag (``template: d1``), the last tag's content is read
    instead of the whole text. The integer must start the (stripped) text: ``"x=46"`` is not read as
    46, and ``"460"`` is not ``"46"``.
    """
    if not answer:
        return 0.0, "no-reference"
    if too_long(completion):
        return 0.0, "too-long"
    text = completion
    span = answer_tag_span(text)
    got = leading_integer(span if span is not None else text)
    if got is None:
        return 0.0, "no-integer"
    try:
        same = int(got) == int(answer)
    except ValueError:
        return 0.0, "bad-reference"
    return (1.0, "correct") if same else (0.0, "wrong-answer")


class ArithmeticTask(remask.Task):
    """Generated n-digit arithmetic problems (``12+34=``), disjoint train/validation/test splits."""

    name = "arithmetic"
    splits = ("train", "validation", "test")

    class Config(remask.ComponentConfig):
        digits: int = Field(2, ge=1, le=18, description="Digits per operand (1 digit includes 0).")
        operation: Literal["+", "-", "*"] = Field("+", description="The operator of every problem.")
        train_size: int = Field(2000, ge=1, description="Problems in the train split.")
        test_size: int = Field(200, ge=1, description="Problems in the test split (disjoint from train).")
        validation_size: int = Field(
            200, ge=1,
            description="Problems in the validation split (disjoint from train and test; SFT stops on it). "
            "Drawn after train, so it never changes the test or train split; only drawn when asked for.",
        )
        seed: int = Field(0, description="Seed of the problem draw; the same seed gives the same splits.")
        template: Literal["plain", "d1"] = Field(
            "plain",
            description="plain: prompt '12+34=', target '46'. d1: d1's training prompt, "
            "'<reasoning>' pre-fill and an XML target.",
        )

    def _pairs(self, split: str) -> list[tuple[int, int]]:
        c = self.config
        head = c.test_size + c.train_size  # the draw the test and train splits always came from
        if split == "validation":
            pairs = draw_operand_pairs(c.digits, head + c.validation_size, c.seed, plan_count=head)
            return pairs[head:]
        pairs = draw_operand_pairs(c.digits, head, c.seed)
        return pairs[: c.test_size] if split == "test" else pairs[c.test_size :]

    def examples(self, split: str) -> Sequence[remask.Example]:
        if split not in self.splits:
            raise remask.RemaskError(f"task arithmetic: unknown split {split!r}; use one of {self.splits}")
        op = self.config.operation
        rows = []
        for i, (a, b) in enumerate(self._pairs(split)):
            expr = f"{a}{op}{b}"
            answer = str(_OPS[op](a, b))
            if self.config.template == "plain":
                rows.append(remask.Example(prompt=f"{expr}=", reference={"answer": answer, "completion": answer},
                                           id=f"arithmetic-{split}-{i}"))
            else:
                target = xml_completion(f"{expr}={answer}", answer, prefilled=True)
                rows.append(remask.Example(
                    prompt=user_message(f"{TRAIN_FORMAT_PROMPT}\n\nWhat is {expr}?"),
                    reference={"answer": answer, "completion": target},
                    prefill=REASONING_PREFILL, id=f"arithmetic-{split}-{i}"))
        return rows

    def is_correct(self, completion: str, reference: Mapping[str, Any]) -> float:
        return arithmetic_verdict(completion, str(reference.get("answer", "")))[0]


class ArithmeticCorrect(remask.RewardModel):
    """1.0 when the completion starts with the reference integer (the `arithmetic` task's reward)."""

    name = "arithmetic-correct"

    class Config(remask.ComponentConfig):
        answer_key: str = Field("answer", description="Reference key holding the expected integer.")

    def score(self, *, prompts: Sequence[str], completions: Sequence[str],
              references: Sequence[Mapping[str, Any]]) -> remask.Rewards:
        return _score_each(self.name, arithmetic_verdict, completions, references, self.config.answer_key)


def digit_credit(completion: str, answer: str) -> tuple[float, str]:
    """Fraction of digit places right, aligned from the units digit, over the longer of the two
    numbers: ``153`` vs ``143`` scores 2/3, ``53`` vs ``153`` scores 2/3, ``1530`` vs ``153`` 0/4.

    A dense shaping signal for small models: an exact-match reward gives a group of completions
    no gradient until one of them is entirely right.
    """
    if not answer:
        return 0.0, "no-reference"
    if too_long(completion):
        return 0.0, "too-long"
    span = answer_tag_span(completion)
    got = leading_integer(span if span is not None else completion)
    if got is None:
        return 0.0, "no-integer"
    want = answer.strip()
    if got.startswith("-") != want.startswith("-"):
        return 0.0, "wrong-sign"
    a, b = got.lstrip("-")[::-1], want.lstrip("-")[::-1]
    right = sum(1 for x, y in zip(a, b) if x == y)
    width = max(len(a), len(b))
    return right / width, f"{right}/{width}-digits"


class ArithmeticDigits(remask.RewardModel):
    """Fraction of the answer's digit places the completion gets right (dense shaping for `arithmetic`)."""

    name = "arithmetic-digits"

    class Config(remask.ComponentConfig):
        answer_key: str = Field("answer", description="Reference key holding the expected integer.")

    def score(self, *, prompts: Sequence[str], completions: Sequence[str],
              references: Sequence[Mapping[str, Any]]) -> remask.Rewards:
        return _score_each(self.name, digit_credit, completions, references, self.config.answer_key)


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
