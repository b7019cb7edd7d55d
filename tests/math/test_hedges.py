"""Hedged answers and nested boxes score 0; plain answers with units still score 1."""

from __future__ import annotations

import pytest

from remask_math.hedges import hedge_reason, statement_sides
from remask_math.rewards import MathCorrect

CASES = [
    # (gold, pred, expected score)
    ("5", "5 or more", 0.0),
    ("5", "5 or fewer", 0.0),
    ("18", "18 is wrong", 0.0),
    ("5", "5\\text{ (maybe 6)}", 0.0),
    ("5", "5 \\text{ is the answer or } 6", 0.0),
    ("5", "\\text{The answer is } 5 \\text{ or more}", 0.0),
    ("5", "\\text{The answer is } 6 \\text{, not } 5", 0.0),
    ("5", "5\\text{ or more}", 0.0),
    ("5", "5 \\text{(approx.)}", 0.0),
    ("5", "\\text{at least } 5", 0.0),
    ("5", "5\\text{ (6)}", 0.0),
    ("\\sqrt{2}", "\\sqrt{2} \\text{ (maybe 1)}", 0.0),
    ("5", "6 = 5", 0.0),
    ("5", "x = 6 = 5", 0.0),
    ("\\sqrt{2}", "1 = \\sqrt{2}", 0.0),
    # true positives kept
    ("5", "5", 1.0),
    ("5", "5 \\text{ cm}", 1.0),
    ("5", "5\\text{ apples}", 1.0),
    ("18", "18 dollars", 1.0),
    ("13", "\\text{13}", 1.0),
    ("5", "x = 5", 1.0),
    ("5", "5 \\text{ is the answer}", 1.0),  # an affirmation, not a verdict
    ("5", "2+3=5", 1.0),
    ("5", "x = 2+3 = 5", 1.0),
    ("\\text{neither}", "\\text{neither}", 1.0),  # a hedge word the gold itself uses
    ("\\text{No}", "\\text{no}", 1.0),
]


@pytest.fixture(scope="module")
def reward():
    r = MathCorrect(MathCorrect.Config(workers=1))
    yield r
    r.close()


def test_hedges_score_zero_and_true_positives_stay(reward):
    texts = [f"<answer>\\boxed{{{pred}}}</answer>" for _, pred, _ in CASES]
    out = reward.score(prompts=[""] * len(CASES), completions=texts,
                       references=[{"answer": g} for g, _, _ in CASES])
    got = out.components["math-correct"].tolist()
    wrong = [(g, p, e, v, r) for (g, p, e), v, r in zip(CASES, got, out.reasons["math-correct"]) if v != e]
    assert not wrong, wrong


def test_nested_box_is_not_its_inner_answer(reward):
    out = reward.score(prompts=["", ""], completions=["\\boxed{4 \\text{ or } \\boxed{3}}", "\\boxed{\\boxed{3}}"],
                       references=[{"answer": "3"}, {"answer": "3"}])
    assert out.total.tolist() == [0.0, 1.0]
    assert out.reasons["math-correct"][0] == "nested-boxes"


def test_hedge_rules():
    assert hedge_reason("5 or more", "5") == "hedged-answer"
    assert hedge_reason("5 \\text{ cm}", "5") is None
    assert hedge_reason("\\text{neither}", "\\text{neither}") is None
    assert hedge_reason("\\operatorname{or}(5)", "5") == "hedged-answer"
    assert statement_sides("x = 5") is None
    assert statement_sides("6 = 5") == ["6", "5"]
    assert statement_sides("x = 2+3 = 5") == ["2+3", "5"]
    assert statement_sides("x \\geq 5") is None and statement_sides("x <= 5") is None
    assert statement_sides("f(x=1) = 2") is None  # '=' inside parentheses is not a top-level side
