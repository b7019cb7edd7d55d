"""d1-compat twins reproduce d1's training rewards, bugs included; the fixed rewards do not.

Expected values were produced by running d1's own functions (dllm-reasoning/d1 at 837888f) on the
same strings; the module also passed a 20,000-string random differential test against them.
"""

from __future__ import annotations

import pytest

from remask.testing import HOSTILE_COMPLETIONS, check_component
from remask_math import d1compat
from remask_math.rewards import (
    D1_COMPAT,
    FIXED,
    AnswerInt,
    AnswerIntD1,
    FormatSoft,
    FormatSoftD1,
    FormatStrict,
    FormatStrictD1,
    GSM8KCorrectD1,
    MathCorrectD1,
    MathFormat,
    MathFormatD1,
    XMLCount,
    XMLCountD1,
)

ONE_LINE = "<reasoning>\nabc\n</reasoning>\n<answer>\n7\n</answer>\n"
NO_TRAIL = "<reasoning>\nabc\n</reasoning>\n<answer>\n7\n</answer>"
MULTI = "<reasoning>\na\nb\n</reasoning>\n<answer>\n7\n</answer>\n"
INLINE = "<reasoning>abc</reasoning> <answer>7</answer>"


def _one(cls, text, ref=None, prompt=""):
    out = cls().score(prompts=[prompt], completions=[text], references=[ref or {}])
    return out.total.item(), out.reasons[cls.name][0]


@pytest.mark.parametrize("text,strict,soft,xml", [
    (ONE_LINE, 0.5, 0.0, 0.5),
    (NO_TRAIL, 0.0, 0.0, 0.452),  # whole-text penalty bug: 0.001 per character when "\n</answer>\n" is absent
    (MULTI, 0.0, 0.0, 0.5),  # multi-line reasoning fails both format checks (no DOTALL)
    (INLINE, 0.0, 0.5, 0.0),  # only single-line completions pass the soft check
])
def test_d1_format_values(text, strict, soft, xml):
    assert _one(FormatStrictD1, text)[0] == pytest.approx(strict)
    assert _one(FormatSoftD1, text)[0] == pytest.approx(soft)
    assert _one(XMLCountD1, text)[0] == pytest.approx(xml)


def test_fixed_format_rewards_accept_the_prompted_format():
    for text in (ONE_LINE, NO_TRAIL, MULTI):
        assert _one(FormatStrict, text)[0] == 1.0
        assert _one(FormatSoft, text)[0] == 1.0
        assert _one(XMLCount, text)[0] == 1.0
    assert _one(FormatStrict, INLINE)[0] == 0.0
    assert _one(XMLCount, NO_TRAIL + " trailing")[0] == pytest.approx(1.0 - 0.008)
    # a <reasoning> pre-fill in the prompt counts as the opening tag
    prefilled = NO_TRAIL[len("<reasoning>"):]
    assert _one(FormatStrict, prefilled, prompt="...<reasoning>")[0] == 1.0
    assert _one(FormatStrict, prefilled, prompt="...")[0] == 0.0


def test_boxed_backspace_bug():
    boxed = "<answer>\n\\boxed{3}\n</answer>"
    plain = "<answer>\n3\n</answer>"
    # d1: '"\boxed" in r' tests for a backspace, so \boxed never earns the full 1.0
    assert _one(MathFormatD1, boxed)[0] == 0.75 and _one(MathFormatD1, plain)[0] == 0.75
    assert _one(MathFormatD1, "\\boxed{3}")[0] == 0.25
    assert d1compat.boxed_and_answer_tags_format("<answer>\x08oxed</answer>") == 1.0
    assert _one(MathFormat, boxed) == (1.0, "answer-boxed") and _one(MathFormat, plain)[0] == 0.5


def test_int_reward():
    assert _one(AnswerIntD1, "<answer>\n-3\n</answer>")[0] == 0.0  # .isdigit() refuses negatives
    assert _one(AnswerInt, "<answer>\n-3\n</answer>")[0] == 1.0
    assert _one(AnswerInt, "<answer>\n\u22123\n</answer>")[0] == 1.0
    assert _one(AnswerInt, "<answer>\n3.5\n</answer>")[0] == 0.0
    assert _one(AnswerIntD1, "7")[0] == 0.5  # no tags: d1 reads the whole completion


def test_gsm8k_string_equality():
    ref = {"answer": "72"}
    assert _one(GSM8KCorrectD1, "<answer>\n72\n</answer>", ref)[0] == 2.0
    assert _one(GSM8KCorrectD1, "72", ref)[0] == 2.0  # no tags: the whole completion is compared
    for text in ("<answer>72.0</answer>", "<answer>$72</answer>", "<answer>\\boxed{72}</answer>"):
        assert _one(GSM8KCorrectD1, text, ref)[0] == 0.0
    assert _one(GSM8KCorrectD1, "<answer>1,000</answer>", {"answer": "1000"})[0] == 0.0


def test_math_is_equiv_hedge_and_whole_completion():
    ref = {"solution": "Thus \\boxed{3}."}
    assert _one(MathCorrectD1, "\\boxed{3 \\text{ or } 4}", ref)[0] == 2.0  # remove_right_units hedge
    assert _one(MathCorrectD1, "3", ref)[0] == 2.0  # no box: the whole completion is compared
    assert _one(MathCorrectD1, "\\boxed{\\frac{1}{\\sqrt3}}", {"solution": "\\boxed{\\frac{\\sqrt{3}}{3}}"})[0] == 0.0
    assert _one(MathCorrectD1, "\\boxed{0.5}", {"solution": "\\boxed{\\frac12}"})[0] == 2.0


@pytest.mark.parametrize("text", [
    "\\boxed{\\frac}", "\\boxed{\\sqrt}", "\\boxed{a/b}", "\\text{ a}\\text{ b}", "\\boxed ", "\\fbox{1}",
])
def test_is_equiv_falls_back_like_d1(text):
    assert d1compat.is_equiv(text, text) is True  # strip_string raises; raw equality decides
    assert isinstance(d1compat.math_correctness(text, "3"), float)


def test_every_reward_conforms_and_survives_hostile_rows():
    ref = {"answer": "1", "solution": "\\boxed{1}", "numbers": [1, 2, 3], "target": 6,
           "puzzle": "1034000000000000", "solution_grid": ""}
    for cls in FIXED + D1_COMPAT:
        assert check_component(cls) == [], cls.name
        if cls.name in ("gsm8k-correct", "math-correct"):
            continue  # exercised through the pool in test_pool.py
        reward = cls()
        out = reward.score(prompts=[""] * len(HOSTILE_COMPLETIONS), completions=list(HOSTILE_COMPLETIONS),
                           references=[ref] * len(HOSTILE_COMPLETIONS))
        assert out.total.shape == (len(HOSTILE_COMPLETIONS),), cls.name
        assert len(out.reasons[cls.name]) == len(HOSTILE_COMPLETIONS)
        assert not any(r.startswith("error:") for r in out.reasons[cls.name]), (cls.name, out.reasons[cls.name])
