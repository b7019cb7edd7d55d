"""Reward models of remask_math: fixed defaults and their ``*-d1-compat`` twins.

Fixed rewards are in [0, 1] (weights scale them; docs/rewards.md lists the weights that give d1's
sums); ``*-d1-compat`` twins return d1's own values (2.0 for correctness, 0.5 per format check, …)
bugs included. Every reward returns one value and one reason per row and never raises on model
output: a row whose scoring fails unexpectedly scores 0 with reason ``error:<Exception>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

import remask

from . import d1compat
from .countdown import countdown_verdict
from .normalize import pre_normalize
from .sudoku import sudoku_verdict
from .text import MAX_COMPLETION_CHARS, answer_tag_span, final_answer_span, has_boxed, hash_answer, last_boxed
from .verifier import MathVerifier, Policy

Verdict = tuple[float | None, str]

#: d1-compat rewards refuse completions longer than this (everything below is linear anyway)
D1_MAX_CHARS = 1_000_000


class _RowReward(remask.RewardModel):
    """A reward computed row by row with :meth:`judge`; exceptions become ``error:<name>``."""

    max_chars: int = MAX_COMPLETION_CHARS

    def judge(self, prompt: str, completion: str, reference: Mapping[str, Any]) -> Verdict:
        raise NotImplementedError

    def score(self, *, prompts: Sequence[str], completions: Sequence[str],
              references: Sequence[Mapping[str, Any]]) -> remask.Rewards:
        _check_lengths(self.name, prompts, completions, references)
        values: list[float | None] = []
        reasons: list[str] = []
        for prompt, text, ref in zip(prompts, completions, references):
            text = text if isinstance(text, str) else str(text)
            if len(text) > self.max_chars:
                v, why = 0.0, "too-long"
            else:
                try:
                    v, why = self.judge(str(prompt), text, ref or {})
                except Exception as exc:  # noqa: BLE001 - model output never raises
                    v, why = 0.0, f"error:{type(exc).__name__}"
            values.append(v)
            reasons.append(why)
        return remask.Rewards.from_scores(self.name, values, reasons)


def _check_lengths(name: str, prompts: Sequence[Any], completions: Sequence[Any], references: Sequence[Any]) -> None:
    if not len(prompts) == len(completions) == len(references):
        raise ValueError(f"reward {name!r}: {len(prompts)} prompts, {len(completions)} completions and "
                         f"{len(references)} references; they must be equal")


def _prefilled(prompt: str, text: str) -> str:
    """The completion as the model wrote it *including* a ``<reasoning>`` pre-fill from the prompt."""
    return "<reasoning>" + text if prompt.rstrip().endswith("<reasoning>") else text


def _gsm8k_gold(ref: Mapping[str, Any], key: str) -> str | None:
    gold = ref.get(key)
    if gold is None:
        return None
    gold = str(gold)
    return hash_answer(gold) if "####" in gold else gold.strip()


def _math_gold(ref: Mapping[str, Any], key: str) -> str | None:
    gold = ref.get(key)
    if gold is not None and str(gold).strip():
        return str(gold).strip()
    solution = ref.get("solution")
    return last_boxed(str(solution)) if solution else None


def _numbers(value: Any) -> list[int]:
    if isinstance(value, str):
        return [int(x) for x in re.findall(r"-?\d+", value)]
    return [int(x) for x in value]


# ---------------------------------------------------------------------------------------------
# Correctness through math-verify
# ---------------------------------------------------------------------------------------------


class _VerifierConfig(remask.ComponentConfig):
    answer_key: str = Field("answer", description="Reference key holding the gold answer.")
    workers: int = Field(2, ge=1, le=64, description="math-verify worker processes.")
    timeout_s: float = Field(5.0, gt=0, description="Hard wall-clock limit per verification; the "
                             "worker is killed and the row scores 0 with reason `timeout`.")
    memory_mb: int = Field(2048, ge=0, description="RLIMIT_AS of each worker in MiB (0 = no limit).")
    strip_percent: bool = Field(True, description="Read `50\\%` as 50 (never as 0.5).")
    interval_equals_set: bool = Field(False, description="Accept a finite set for an interval "
                                      "(math-verify's default) instead of refusing it.")


class _VerifiedCorrectness(remask.RewardModel):
    Config = _VerifierConfig
    use_hash = False

    def __init__(self, config: remask.ComponentConfig | None = None) -> None:
        super().__init__(config)
        c = self.config
        self.verifier = MathVerifier(workers=c.workers, timeout_s=c.timeout_s, memory_mb=c.memory_mb,
                                     policy=Policy(strip_percent=c.strip_percent,
                                                   interval_equals_set=c.interval_equals_set))

    def gold(self, ref: Mapping[str, Any]) -> str | None:
        raise NotImplementedError

    def score(self, *, prompts: Sequence[str], completions: Sequence[str],
              references: Sequence[Mapping[str, Any]]) -> remask.Rewards:
        _check_lengths(self.name, prompts, completions, references)
        pairs: list[tuple[str | None, str | None]] = []
        early: dict[int, Verdict] = {}
        for i, (text, ref) in enumerate(zip(completions, references)):
            try:
                text = text if isinstance(text, str) else str(text)
                if len(text) > MAX_COMPLETION_CHARS:
                    early[i] = (0.0, "too-long")
                    pairs.append((None, None))
                    continue
                span, source = final_answer_span(text, hashes=self.use_hash)
                pairs.append((self.gold(ref or {}), span))
                if span is None:
                    early[i] = (0.0, source) if self.gold(ref or {}) is not None else (None, "no-reference")
            except Exception as exc:  # noqa: BLE001
                early[i] = (0.0, f"error:{type(exc).__name__}")
                pairs.append((None, None))
        todo = [i for i in range(len(pairs)) if i not in early]
        try:
            verdicts = self.verifier.check([pairs[i] for i in todo])
        except remask.RemaskError:
            raise  # the verifier cannot start at all: an environment problem, not model output
        except Exception as exc:  # noqa: BLE001
            verdicts = [(0.0, f"error:{type(exc).__name__}")] * len(todo)
        results: dict[int, Verdict] = dict(early)
        results.update(zip(todo, verdicts))
        values = [results[i][0] for i in range(len(pairs))]
        reasons = [results[i][1] for i in range(len(pairs))]
        return remask.Rewards.from_scores(self.name, values, reasons)

    def close(self) -> None:
        self.verifier.close()


class GSM8KCorrect(_VerifiedCorrectness):
    """1.0 when the final answer (<answer>, \\boxed or ####) equals the GSM8K gold (math-verify)."""

    name = "gsm8k-correct"
    use_hash = True

    def gold(self, ref: Mapping[str, Any]) -> str | None:
        return _gsm8k_gold(ref, self.config.answer_key)


class MathCorrect(_VerifiedCorrectness):
    """1.0 when the last \\boxed / <answer> span is equivalent to the MATH gold (math-verify)."""

    name = "math-correct"

    def gold(self, ref: Mapping[str, Any]) -> str | None:
        return _math_gold(ref, self.config.answer_key)


# ---------------------------------------------------------------------------------------------
# Countdown and sudoku
# ---------------------------------------------------------------------------------------------


class Countdown(_RowReward):
    """1.0 for an expression using exactly the given numbers that hits the target (safe, exact)."""

    name = "countdown"

    class Config(remask.ComponentConfig):
        format_value: float = Field(0.1, ge=0, le=1, description="Reward of a well-formed expression "
                                    "that uses the wrong numbers or misses the target (d1: 0.1).")

    def judge(self, prompt, completion, reference):
        if "numbers" not in reference or "target" not in reference:
            return None, "no-reference"
        return countdown_verdict(completion, _numbers(reference["numbers"]), int(reference["target"]),
                                 self.config.format_value)


class Sudoku(_RowReward):
    """Fraction of the puzzle's empty cells solved; a 16-cell grid of 1-4 keeping the givens."""

    name = "sudoku"

    def judge(self, prompt, completion, reference):
        puzzle, solution = str(reference.get("puzzle", "")), str(reference.get("solution", ""))
        if len(puzzle) != 16 or len(solution) != 16:
            return None, "no-reference"
        return sudoku_verdict(completion, puzzle, solution)


# ---------------------------------------------------------------------------------------------
# Format rewards (fixed)
# ---------------------------------------------------------------------------------------------


class XMLCount(_RowReward):
    """0.25 per <reasoning>/</reasoning>/<answer>/</answer> tag present once, minus trailing text."""

    name = "xml-count"

    def judge(self, prompt, completion, reference):
        text = _prefilled(prompt, completion)
        score = sum(0.25 for tag in ("<reasoning>", "</reasoning>", "<answer>", "</answer>") if text.count(tag) == 1)
        end = text.rfind("</answer>")
        trailing = len(text[end + len("</answer>"):].strip()) if end >= 0 else 0
        score = max(0.0, score - 0.001 * trailing)
        return score, f"tags:{score:.3f}" + (f",trailing:{trailing}" if trailing else "")


def _structure(text: str) -> tuple[int, int, int, int] | None:
    """Positions of the four tags in order, each exactly once, or None."""
    tags = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")
    if any(text.count(t) != 1 for t in tags):
        return None
    pos = tuple(text.find(t) for t in tags)
    return pos if list(pos) == sorted(pos) else None  # type: ignore[return-value]


class FormatSoft(_RowReward):
    """1.0 when <reasoning>…</reasoning> is followed by <answer>…</answer> (multi-line allowed)."""

    name = "format-soft"

    def judge(self, prompt, completion, reference):
        text = _prefilled(prompt, completion).strip()
        pos = _structure(text)
        if pos is None or not text.startswith("<reasoning>"):
            return 0.0, "no-structure"
        between = text[pos[1] + len("</reasoning>"): pos[2]]
        return (1.0, "ok") if not between.strip() else (0.0, "text-between-blocks")


class FormatStrict(_RowReward):
    """1.0 for exactly `<reasoning>\\n…\\n</reasoning>\\n<answer>\\n…\\n</answer>` (nothing else)."""

    name = "format-strict"

    def judge(self, prompt, completion, reference):
        text = _prefilled(prompt, completion).rstrip()
        pos = _structure(text)
        if pos is None:
            return 0.0, "no-structure"
        ok = (text.startswith("<reasoning>\n") and "\n</reasoning>\n<answer>\n" in text
              and text.endswith("\n</answer>") and text[len("<reasoning>\n"): pos[1]].strip() != ""
              and text[pos[2] + len("<answer>\n"): pos[3]].strip() != "")
        return (1.0, "ok") if ok else (0.0, "not-strict")


class AnswerInt(_RowReward):
    """1.0 when the final answer is an integer (negative allowed; Unicode minus normalised)."""

    name = "answer-int"

    def judge(self, prompt, completion, reference):
        span, source = final_answer_span(completion, hashes=False)
        if span is None:
            return 0.0, source
        clean = pre_normalize(span, strip_percent=False).replace(",", "")
        return (1.0, "integer") if re.fullmatch(r"-?\d+", clean) else (0.0, "not-integer")


class MathFormat(_RowReward):
    """0.5 for an <answer>…</answer> block plus 0.5 for a \\boxed{} inside it."""

    name = "math-format"

    def judge(self, prompt, completion, reference):
        tag = answer_tag_span(completion)
        if tag is None:
            return 0.0, "no-answer-tag"
        boxed = has_boxed(tag) and last_boxed(tag) is not None
        return (1.0, "answer-boxed") if boxed else (0.5, "answer-unboxed")


# ---------------------------------------------------------------------------------------------
# d1-compat twins (d1's values and bugs; see d1compat.py)
# ---------------------------------------------------------------------------------------------


class _D1(_RowReward):
    max_chars = D1_MAX_CHARS


class GSM8KCorrectD1(_D1):
    """d1 `correctness_reward_func`: 2.0 iff the <answer> text string-equals the gold."""

    name = "gsm8k-correct-d1-compat"

    class Config(remask.ComponentConfig):
        answer_key: str = Field("answer", description="Reference key holding the gold answer.")

    def judge(self, prompt, completion, reference):
        gold = _gsm8k_gold(reference, self.config.answer_key)
        if gold is None:
            return None, "no-reference"
        v = d1compat.gsm8k_correctness(completion, gold)
        return v, ("match" if v else "no-match")


class MathCorrectD1(_D1):
    """d1 `correctness_reward_func_math`: 2.0 iff Hendrycks `is_equiv` on the last boxed answer."""

    name = "math-correct-d1-compat"

    class Config(remask.ComponentConfig):
        solution_key: str = Field("solution", description="Reference key of the gold solution "
                                  "(d1 takes its last \\boxed); falls back to `answer`.")

    def judge(self, prompt, completion, reference):
        if reference.get(self.config.solution_key):
            try:
                gold = d1compat.math_gold(str(reference[self.config.solution_key]))
            except Exception:  # noqa: BLE001 - d1 would crash; we cannot judge
                return None, "gold-unparsable"
        elif reference.get("answer") is not None:
            gold = str(reference["answer"])
        else:
            return None, "no-reference"
        v = d1compat.math_correctness(completion, gold)
        return v, ("match" if v else "no-match")


class CountdownD1(_D1):
    """d1 `countdown_reward_func`: 1.0 correct, 0.1 with an <answer>, 0 without (bounded `**`)."""

    name = "countdown-d1-compat"

    def judge(self, prompt, completion, reference):
        if "numbers" not in reference or "target" not in reference:
            return None, "no-reference"
        return d1compat.countdown_score(completion, int(reference["target"]), _numbers(reference["numbers"]))


class SudokuD1(_D1):
    """d1 `sudoku_reward_func`: digits of the last <answer>, zero-padded, accuracy on empty cells."""

    name = "sudoku-d1-compat"

    def judge(self, prompt, completion, reference):
        puzzle, solution = str(reference.get("puzzle", "")), str(reference.get("solution", ""))
        if len(puzzle) != 16 or len(solution) != 16:
            return None, "no-reference"
        return d1compat.sudoku_score(completion, puzzle, solution)


def _d1_simple(reg_name: str, fn, doc: str):
    class _Twin(_D1):
        __doc__ = doc
        name = reg_name

        def judge(self, prompt, completion, reference):
            v = fn(completion)
            return v, f"{v:g}"

    _Twin.__name__ = _Twin.__qualname__ = "".join(p.title() for p in reg_name.replace("-", " ").split())
    return _Twin


XMLCountD1 = _d1_simple("xml-count-d1-compat", d1compat.xmlcount,
                        "d1 `xmlcount_reward_func` (0.125 per tag; whole-text penalty bug kept).")
FormatSoftD1 = _d1_simple("format-soft-d1-compat", d1compat.soft_format,
                          "d1 `soft_format_reward_func`: 0.5, no DOTALL (multi-line reasoning fails).")
FormatStrictD1 = _d1_simple("format-strict-d1-compat", d1compat.strict_format,
                            "d1 `strict_format_reward_func`: 0.5 for one-line reasoning and answer.")
AnswerIntD1 = _d1_simple("answer-int-d1-compat", d1compat.int_reward,
                         "d1 `int_reward_func`: 0.5 iff the <answer> text .isdigit().")
MathFormatD1 = _d1_simple("math-format-d1-compat", d1compat.boxed_and_answer_tags_format,
                          "d1 `boxed_and_answer_tags_format_reward`: 0.25/0.75 (the \"\\b\" bug).")

FIXED = (GSM8KCorrect, MathCorrect, Countdown, Sudoku, XMLCount, FormatSoft, FormatStrict, AnswerInt, MathFormat)
D1_COMPAT = (GSM8KCorrectD1, MathCorrectD1, CountdownD1, SudokuD1, XMLCountD1, FormatSoftD1, FormatStrictD1,
             AnswerIntD1, MathFormatD1)
