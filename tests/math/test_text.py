"""Answer extraction and pre-normalisation (pure functions, no workers)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from remask_math.normalize import exact_decision, exponent_depth, plain_number, pre_normalize
from remask_math.text import answer_tag_span, final_answer_span, hash_answer, last_boxed


@pytest.mark.parametrize("text,expected", [
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("a \\boxed{1} b \\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # last box, escaped braces skipped
    ("\\fbox{7}", "7"),
    ("so \\boxed 5 done", "5"),
    ("\\boxed{\\frac{1}{2}", None),  # unbalanced last box: no answer, not an earlier one
    ("\\boxed{3} then \\boxed{", None),
    ("no box", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_answer_tags_and_hash():
    assert answer_tag_span("<answer> 1 </answer> x <answer>\n2\n</answer>") == "2"
    assert answer_tag_span("<answer>unclosed") is None
    assert answer_tag_span("</answer><answer>") is None
    assert hash_answer("work\n#### 1,000\nextra") == "1,000"
    assert final_answer_span("<answer>\\boxed{4}</answer>") == ("4", "answer-boxed")
    assert final_answer_span("x #### 5", hashes=False) == (None, "no-answer")
    assert final_answer_span("The answer is 5.") == (None, "no-answer")


@pytest.mark.parametrize("raw,clean", [
    ("\u221218", "-18"),
    ("7\\,000", "7000"),
    ("1\u2009234", "1234"),
    ("1{,}000", "1000"),
    ("**73**", "73"),
    ("9**9**9", "9**9**9"),  # a power is not markdown bold
    ("50\\%", "50"),
    ("0.1\\overline{6}", "\\frac{1}{6}"),
    ("\u202e12", "12"),
])
def test_pre_normalize(raw, clean):
    assert pre_normalize(raw) == clean


def test_exponent_depth_and_plain_numbers():
    assert exponent_depth("2^{10}") == 1
    assert exponent_depth("9^{9^{9^{9}}}") == 3
    assert exponent_depth("9**9**9**9") == 3
    assert exponent_depth("5^{\\left(5^{\\left(5^{5}\\right)}\\right)}") == 3
    assert plain_number("$1,000.50") == Fraction(200100, 200)
    assert plain_number("2 apples and 3 oranges") is None
    assert exact_decision("\\frac{1}{3}", "0.3333333") is None  # left to math-verify's 6 dp rule
    assert exact_decision("\\frac{1}{4}", "0.25") is True
    assert exact_decision("\\frac{1}{0}", "1") is None


@pytest.mark.parametrize("text,expected", [
    ("\\boxed{4 \\text{ or } \\boxed{3}}", "4 \\text{ or } \\boxed{3}"),  # outermost box wins
    ("\\boxed{\\boxed{3}}", "3"),  # a box that only wraps a box is unwrapped
    ("\\boxed{1} and \\boxed{2 + \\fbox{3}}", "2 + \\fbox{3}"),
    ("\\boxed{\\boxed{3} 4}", "\\boxed{3} 4"),
])
def test_last_boxed_is_the_last_outermost_box(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("span,depth", [
    ("x^2y^2z^2", 1), ("a^2b^2c^2", 1), ("x^{2}y^{2}z^{2}", 1), ("x^2 y^2", 1), ("(2^3)^4", 1),
    ("a^b^c", 2), ("e^{x^2}", 2), ("10^{10^{10}}", 2), ("2^{3}^{4}^{5}", 3), ("2^-3^4^5", 3),
])
def test_exponent_depth_reads_superscript_structure(span, depth):
    assert exponent_depth(span) == depth
