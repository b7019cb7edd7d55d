"""Harness metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from remask.engine.evaluation import pass_at_k
from remask.harness.metrics import confidence_interval, distinct_correct, mean_std


@pytest.mark.parametrize(
    "n, c, k, want",
    [
        (10, 3, 1, 0.3),  # pass@1 is the fraction correct
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 2, 3, 1 - 1 / 10),  # 1 - C(3,3)/C(5,3)
        (5, 0, 5, 0.0),
        (3, 3, 1, 1.0),
        (6, 1, 6, 1.0),  # n - c < k: every draw of k contains the correct one
    ],
)
def test_pass_at_k_hand_cases(n, c, k, want):
    assert math.isclose(pass_at_k(n, c, k), want, abs_tol=1e-12)


def test_pass_at_k_is_monotone_in_k():
    vals = [pass_at_k(16, 3, k) for k in range(1, 17)]
    assert all(a <= b + 1e-12 for a, b in zip(vals, vals[1:])) and vals[-1] == 1.0


def test_distinct_correct_counts_unique_correct_texts():
    texts = ["12", "12 ", "13", "12", "7"]
    correct = [True, True, True, False, False]
    assert distinct_correct(texts, correct) == 2  # "12" (stripped twice) and "13"
    assert distinct_correct(texts, [False] * 5) == 0


def test_mean_std_and_confidence_interval():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    m, h = confidence_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and math.isclose(h, 4.303 * 1.0 / math.sqrt(3), rel_tol=1e-9)
    assert math.isnan(confidence_interval([5.0])[1])


def test_confidence_interval_between_tabulated_df_uses_the_wider_quantile():
    """df = 11 is not tabulated: the df = 10 quantile (2.228 > the exact 2.201) keeps the interval
    conservative; the next larger tabulated df (15: 2.131) would have made it too narrow."""
    values = [float(v) for v in range(12)]  # n = 12, df = 11
    m, h = confidence_interval(values)
    _, s = mean_std(values)
    assert h == pytest.approx(2.228 * s / math.sqrt(12))
    assert confidence_interval([float(v) for v in range(40)])[1] == pytest.approx(1.96 * mean_std(range(40))[1] / math.sqrt(40))
