"""The partial-credit arithmetic reward used by the quickstart."""

from __future__ import annotations

import pytest

from remask_math.arithmetic import ArithmeticDigits, digit_credit


@pytest.mark.parametrize(
    "completion, answer, value",
    [("153", "153", 1.0), ("143", "153", 2 / 3), ("53", "153", 2 / 3), ("1530", "153", 0.0),
     ("-12", "12", 0.0), ("x12", "12", 0.0), ("", "5", 0.0), ("46 apples", "46", 1.0), ("45", "46", 0.5)],
)
def test_digit_credit(completion, answer, value):
    assert digit_credit(completion, answer)[0] == pytest.approx(value)


def test_reward_rows_and_reasons():
    out = ArithmeticDigits().score(prompts=["1+2=", "3+4="], completions=["3", "8"],
                                   references=[{"answer": "3"}, {"answer": "7"}])
    assert out.total.tolist() == [1.0, 0.0]
    assert out.reasons["arithmetic-digits"] == ("1/1-digits", "0/1-digits")
