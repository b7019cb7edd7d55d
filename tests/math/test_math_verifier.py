"""The tricky answer pairs of spec verifiers.md §1.7 through `math-correct` and `gsm8k-correct`.

Each row asserts what *our* verifier returns, including the math-verify false positives we fix
(thin spaces, 1/2004! vs 1/2006!, interval vs set, percent as a fraction).
"""

from __future__ import annotations

import pytest

from remask_math.rewards import GSM8KCorrect, MathCorrect

MATH_PAIRS = [
    # (gold, pred, expected)
    ("\\frac{1}{2}", "0.5", 1.0),
    ("1000", "1,000", 1.0),
    ("1000", "1{,}000", 1.0),
    ("1000000", "1\\,000\\,000", 1.0),  # math-verify alone: 1*0*0 (false negative)
    ("0", "7\\,000", 0.0),  # math-verify alone: 7*0 = 0 (false positive)
    ("3", "x=3", 1.0),
    ("x=3", "3", 1.0),
    ("a=1", "b=1", 0.0),
    ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", 1.0),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt2}{2}", 1.0),  # lenient malformed-operator policy
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", 1.0),
    ("\\frac{3}{4}", "\\tfrac34", 1.0),
    ("\\frac{2}{3}", "2/3", 1.0),
    ("-\\frac{1}{2}", "\\frac{-1}{2}", 1.0),
    ("18", "18.00", 1.0),
    ("18.9", "\\$18.90", 1.0),
    ("13", "\\text{13}", 1.0),
    ("10", "10\\text{ cm}", 1.0),
    ("30", "30^\\circ", 1.0),
    ("50", "50\\%", 1.0),
    ("0.5", "50\\%", 0.0),  # policy: a percentage is not its fraction
    ("1024", "2^{10}", 1.0),
    ("(x+1)^2", "x^2+2x+1", 1.0),
    ("2\\pi", "6.283185", 1.0),
    ("\\pi", "3.14", 0.0),
    ("\\frac{1}{3}", "0.333", 0.0),
    ("\\frac{1}{3}", "0.\\overline{3}", 1.0),  # repeating decimal pre-normalised
    ("\\frac{9}{4}", "2\\frac{1}{4}", 1.0),
    ("\\frac{1}{2}", "2\\frac{1}{4}", 0.0),
    ("1, 2, 3", "3, 2, 1", 1.0),
    ("\\frac{1}{2004!}", "\\frac{1}{2006!}", 0.0),  # MV issue #14, fixed by the exact-rational guard
    ("\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}", 0.0),  # MV issue #14
    ("(1,2)", "\\{1,2\\}", 0.0),  # interval is not a finite set
    ("3", "3 \\text{ or } 4", 0.0),  # a hedge is a set, not 3
    ("-18", "\u221218", 1.0),  # Unicode minus
    ("73", "**73**", 1.0),  # markdown bold (MV issue #76)
    ("123456789012345678901", "123456789012345678902", 0.0),  # big integers compare exactly
]


@pytest.fixture(scope="module")
def math_reward():
    reward = MathCorrect()
    yield reward
    reward.close()


@pytest.fixture(scope="module")
def gsm_reward():
    reward = GSM8KCorrect()
    yield reward
    reward.close()


def test_tricky_math_pairs(math_reward):
    completions = [f"<reasoning>\nwork\n</reasoning>\n<answer>\n\\boxed{{{pred}}}\n</answer>" for _, pred, _ in MATH_PAIRS]
    refs = [{"answer": gold} for gold, _, _ in MATH_PAIRS]
    out = math_reward.score(prompts=[""] * len(refs), completions=completions, references=refs)
    got = out.components["math-correct"].tolist()
    reasons = out.reasons["math-correct"]
    wrong = [(g, p, e, v, r) for (g, p, e), v, r in zip(MATH_PAIRS, got, reasons) if v != e]
    assert not wrong, wrong
    assert any(r.startswith("interval-vs-set") for r in reasons)
    import sys

    assert "math_verify" not in sys.modules  # math-verify only ever runs in the worker processes


@pytest.mark.parametrize("text,reason", [
    ("The answer is 3.", "no-answer"),  # no free-text fallback in reward mode
    ("<answer>\n\n</answer>", "empty-answer"),
    ("\\boxed{3", "no-answer"),  # unbalanced last box
    ("<answer>" + "1" * 2000 + "</answer>", "span-too-long"),
    ("<answer>\\boxed{9^{9^{9^{9}}}}</answer>", "exponent-tower"),
    ("x" * 70000 + "\\boxed{3}", "too-long"),
])
def test_math_refusals(math_reward, text, reason):
    out = math_reward.score(prompts=[""], completions=[text], references=[{"answer": "3"}])
    assert out.total.tolist() == [0.0]
    assert out.reasons["math-correct"] == (reason,)


def test_math_gold_from_solution_and_missing_gold(math_reward):
    out = math_reward.score(prompts=["", ""], completions=["\\boxed{\\frac{1}{2}}", "\\boxed{1}"],
                            references=[{"solution": "so it is \\boxed{\\dfrac{1}{2}}."}, {}])
    assert out.components["math-correct"][0].item() == 1.0
    assert out.components["math-correct"][1].isnan() and out.reasons["math-correct"][1] == "no-reference"


def test_last_box_and_last_answer_block_count(math_reward):
    texts = ["\\boxed{3} no wait \\boxed{4}", "<answer>3</answer> ... <answer>4</answer>",
             "<answer>\\boxed{5} then \\boxed{4}</answer>"]
    out = math_reward.score(prompts=[""] * 3, completions=texts, references=[{"answer": "4"}] * 3)
    assert out.total.tolist() == [1.0, 1.0, 1.0]


GSM_CASES = [
    ("<answer>\n$18.00\n</answer>", "18", 1.0),
    ("<answer>\n**18**\n</answer>", "18", 1.0),
    ("<answer>\n18.\n</answer>", "18", 1.0),
    ("<answer>\n18 dollars\n</answer>", "18", 1.0),
    ("<answer>\n1 000\n</answer>", "1000", 1.0),
    ("<answer>\n1,000\n</answer>", "1000", 1.0),
    ("so the total is\n#### 5", "5", 1.0),
    ("<answer>\n7%\n</answer>", "7", 1.0),
    ("<answer>\n\u221218\n</answer>", "-18", 1.0),
    ("<answer>\n2 apples and 3 oranges\n</answer>", "2", 0.0),
    ("<answer>\n2 apples and 3 oranges\n</answer>", "3", 0.0),
    ("<answer>72</answer>", "72", 1.0),
    ("<answer>\n72\n</answer>", "72", 1.0),
    ("<answer>\n\\boxed{72}\n</answer>", "72", 1.0),
    ("<answer>\n72.5\n</answer>", "72", 0.0),
    ("The answer is 72", "72", 0.0),
]


def test_gsm8k_cases(gsm_reward):
    texts = [t for t, _, _ in GSM_CASES]
    refs = [{"answer": g} for _, g, _ in GSM_CASES]
    out = gsm_reward.score(prompts=[""] * len(texts), completions=texts, references=refs)
    got = out.total.tolist()
    wrong = [(t, g, e, v) for (t, g, e), v in zip(GSM_CASES, got) if v != e]
    assert not wrong, wrong


def test_gsm8k_gold_may_be_a_full_solution(gsm_reward):
    out = gsm_reward.score(prompts=[""], completions=["<answer>\n1000\n</answer>"],
                           references=[{"answer": "48/2 = 24 ...\n#### 1,000"}])
    assert out.total.tolist() == [1.0]
