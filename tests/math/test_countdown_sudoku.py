"""Countdown and sudoku rewards: the cases of spec verifiers.md §1.7, fixed vs d1-compat."""

from __future__ import annotations

import time

import pytest

from remask.testing import check_component
from remask_math.countdown import evaluate
from remask_math.rewards import Countdown, CountdownD1, Sudoku, SudokuD1

NUMS, TARGET = [44, 19, 35], 28


def _cd(reward, texts, numbers=NUMS, target=TARGET):
    out = reward.score(prompts=[""] * len(texts), completions=texts,
                       references=[{"numbers": numbers, "target": target}] * len(texts))
    return list(zip(out.total.tolist(), out.reasons[reward.name]))


@pytest.mark.parametrize("text,value,reason", [
    ("<answer>44+19-35</answer>", 1.0, "correct"),  # exact multiset use
    ("<answer>\n(44 + 19) - 35\n</answer>", 1.0, "correct"),
    ("<answer>44+44-35</answer>", 0.1, "wrong-numbers"),  # a reused number
    ("<answer>44-19</answer>", 0.1, "wrong-numbers"),  # a missing number
    ("<answer>44+19-35=28</answer>", 1.0, "correct"),  # "= target" suffix dropped
    ("<answer>44+19-35 = 98</answer>", 0.1, "wrong-claimed-target"),
    ("<answer>44×19÷35</answer>", 0.1, "wrong-value"),  # Unicode operators understood
    ("<answer>\\boxed{44 + 19 - 35}</answer>", 1.0, "correct"),
    ("<answer>44 \\times 19 \\div 35</answer>", 0.1, "wrong-value"),
    ("<answer>44/(19-19)+35</answer>", 0.0, "division-by-zero"),
    ("<answer>44**19**35</answer>", 0.0, "operator-not-allowed"),  # no ** towers, ever
    ("<answer>44//19+35</answer>", 0.0, "operator-not-allowed"),
    ("<answer>__import__('os').system('true')</answer>", 0.0, "invalid-characters"),
    ("<answer></answer>", 0.0, "empty-answer"),
    ("no tags 44+19-35", 0.0, "no-answer"),
    ("<answer>1+1</answer> then <answer>44+19-35</answer>", 1.0, "correct"),  # the last block counts
    ("<answer>44+19-35</answer> then <answer>1+1</answer>", 0.1, "wrong-numbers"),
])
def test_countdown_fixed(text, value, reason):
    assert _cd(Countdown(), [text]) == [(pytest.approx(value), reason)]


def test_countdown_division_tolerance_and_non_integer_intermediate():
    # 7/3*6 has a non-integer intermediate (7/3) but is exactly 14
    assert _cd(Countdown(), ["<answer>7/3*6</answer>"], numbers=[7, 3, 6], target=14) == [(1.0, "correct")]
    assert evaluate("1/3*3") == (1, "evaluated")


def test_countdown_d1_compat_keeps_d1_verdicts_and_never_hangs():
    d1 = CountdownD1()
    got = _cd(d1, ["<answer>44+19-35</answer>", "<answer>44+19-35=28</answer>", "no tags",
                   "<answer>44**0+19-35</answer>", "<answer>-44+19*35</answer>"])
    assert [v for v, _ in got] == pytest.approx([1.0, 0.1, 0.0, 0.1, 0.1])  # "= 28" counts 28 as a number in d1
    t0 = time.monotonic()
    (v, why), = _cd(d1, ["<answer>44**19**35</answer>"])  # hangs d1's trainer; bounded here
    assert time.monotonic() - t0 < 2 and v == pytest.approx(0.1) and why == "power-too-large"


PUZZLE, SOLUTION = "1034000000000000", "1234432121433412"  # 13 empty cells


@pytest.mark.parametrize("answer,fixed,d1", [
    (SOLUTION, 1.0, 1.0),
    ("1234 4321\n2143 3412", 1.0, 1.0),  # spaces / newlines
    ("1,2,3,4|4,3,2,1|2,1,4,3|3,4,1,2", 1.0, 1.0),
    (SOLUTION[:8], 0.0, 5 / 13),  # too short: d1 pads with zeros and gives partial credit
    (SOLUTION + "1234", 0.0, 1.0),  # too long: d1 truncates
    ("4" + SOLUTION[1:], 0.0, 1.0),  # changes a given cell: d1 only looks at empty cells
    ("", 0.0, 0.0),
    ("1234432121433411", 12 / 13, 12 / 13),
])
def test_sudoku_fixed_and_d1(answer, fixed, d1):
    ref = [{"puzzle": PUZZLE, "solution": SOLUTION}]
    text = [f"<reasoning>\nx\n</reasoning>\n<answer>\n{answer}\n</answer>"]
    assert Sudoku().score(prompts=[""], completions=text, references=ref).total.item() == pytest.approx(fixed)
    assert SudokuD1().score(prompts=[""], completions=text, references=ref).total.item() == pytest.approx(d1)


def test_sudoku_last_block_and_missing_reference():
    texts = [f"<answer>{SOLUTION}</answer><answer>1111111111111111</answer>", "no answer"]
    out = Sudoku().score(prompts=["", ""], completions=texts, references=[{"puzzle": PUZZLE, "solution": SOLUTION}] * 2)
    assert out.total.tolist() == [0.0, 0.0]
    assert out.reasons["sudoku"] == ("changed-given", "no-answer")
    out = Sudoku().score(prompts=[""], completions=[SOLUTION], references=[{}])
    assert out.components["sudoku"].isnan().all()


@pytest.mark.parametrize("cls", [Countdown, CountdownD1, Sudoku, SudokuD1])
def test_contract_and_hostile(cls):
    assert check_component(cls) == []
    from remask.testing import HOSTILE_COMPLETIONS
    ref = {"numbers": NUMS, "target": TARGET, "puzzle": PUZZLE, "solution": SOLUTION}
    out = cls().score(prompts=[""] * len(HOSTILE_COMPLETIONS), completions=list(HOSTILE_COMPLETIONS),
                      references=[ref] * len(HOSTILE_COMPLETIONS))
    assert out.total.shape == (len(HOSTILE_COMPLETIONS),)
    assert all(0.0 <= v <= 1.0 for v in out.total.tolist())
