"""The `digit-scan` task (long, line-structured answers) and its two rewards."""

from __future__ import annotations

import pytest

import remask
from remask_math.digit_scan import DigitScanDigits, DigitScanTask, scan_credit, scan_lines, scan_verdict


def test_scan_rules_by_hand():
    # count: running count of odd digits above; prefix: running sum of the line above; pascal: x_j + x_{j-1}
    assert scan_lines("31415", 2, "count") == ["12234", "11122"]
    assert scan_lines("99999999999", 1, "count") == ["12345678901"]  # mod 10
    assert scan_lines("31415", 2, "prefix") == ["34894", "37548"]
    assert scan_lines("31415", 2, "pascal") == ["34556", "37901"]
    assert scan_lines("9", 3, "prefix") == ["9", "9", "9"]
    # step: x_j + (x_{j-1} mod 2); 9 + 1 wraps to 0
    assert scan_lines("31415", 2, "step") == ["32516", "33527"]
    assert scan_lines("99", 1, "step") == ["90"]


def test_step_digits_depend_only_on_the_line_above():
    # the parallel twin of count: changing a digit of line k moves only digits j and j+1 of line k+1
    # (no chain along the line), whereas under count it moves every digit to its right
    import random

    rng = random.Random(0)
    for _ in range(50):
        x = "".join(rng.choice("0123456789") for _ in range(12))
        j = rng.randrange(11)
        y = x[:j] + str((int(x[j]) + 1) % 10) + x[j + 1:]  # flips the parity of digit j
        a, b = scan_lines(x, 1, "step")[0], scan_lines(y, 1, "step")[0]
        assert {i for i in range(12) if a[i] != b[i]} == {j, j + 1}
        a, b = scan_lines(x, 1, "count")[0], scan_lines(y, 1, "count")[0]
        assert {i for i in range(12) if a[i] != b[i]} == set(range(j, 12))


def _task(**kw):
    params = {"train_size": 300, "validation_size": 50, "test_size": 80, **kw}
    return DigitScanTask(DigitScanTask.Config(**params))


def test_splits_are_disjoint_deterministic_and_test_ignores_the_other_sizes():
    task = _task()
    prompts = {s: [e.prompt for e in task.examples(s)] for s in task.splits}
    assert {s: len(p) for s, p in prompts.items()} == {"train": 300, "validation": 50, "test": 80}
    assert not set(prompts["train"]) & set(prompts["test"])
    assert not set(prompts["validation"]) & set(prompts["test"])
    assert not set(prompts["train"]) & set(prompts["validation"])
    again = _task(train_size=10, validation_size=7)
    assert [e.prompt for e in again.examples("test")] == prompts["test"]
    assert [e.prompt for e in _task(seed=1).examples("test")] != prompts["test"]


def test_rows_have_64_completion_tokens_with_the_char_tokenizer():
    from remask_diffusion.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    ex = _task().examples("test")[3]
    digits = ex.prompt.rstrip("\n")
    assert len(digits) == 15 and digits.isdigit()
    lines = ex.reference["completion"].split("\n")
    assert lines == scan_lines(digits, 4, "count")  # the default rule
    assert len(tok.encode(ex.reference["completion"], add_special_tokens=False)) + 1 == 64  # + EOS
    assert _task().is_correct(ex.reference["answer"] + "\n", ex.reference) == 1.0


def test_unknown_split_is_one_clear_error():
    with pytest.raises(remask.RemaskError, match="unknown split 'dev'"):
        _task().examples("dev")


def test_verdict_and_partial_credit():
    ans = "123\n456"
    assert scan_verdict(" 123\n456\n", ans) == (1.0, "correct")
    assert scan_verdict("123\n457", ans) == (0.0, "1/2-lines")
    assert scan_verdict("123", ans) == (0.0, "1-lines")
    assert scan_credit("123\n457", ans) == (5 / 6, "5/6-digits")
    assert scan_credit("123\n457", ans, "lines") == (0.5, "1/2-lines")
    assert scan_credit("123\n456\n789", ans)[0] == pytest.approx(6 / 9)  # extra output costs credit
    assert scan_credit("", ans)[0] == 0.0
    assert scan_credit("x" * 70_000, ans) == (0.0, "too-long")
    assert scan_credit("123", "") == (0.0, "no-reference")


def test_rewards_are_registered_and_score_rows():
    from remask.registry import get_registry

    reg = get_registry()
    assert "digit-scan" in reg.names("task")
    assert {"digit-scan-correct", "digit-scan-digits"} <= set(reg.names("reward"))
    refs = [{"answer": "12\n34"}] * 3
    r = DigitScanDigits().score(prompts=[""] * 3, completions=["12\n34", "12\n30", "nonsense"], references=refs)
    assert r.total.tolist() == pytest.approx([1.0, 0.75, 0.0])
    exact = reg.get("reward", "digit-scan-correct")()
    assert exact.score(prompts=[""] * 2, completions=["12\n34", "12\n30"], references=refs[:2]).total.tolist() == [1.0, 0.0]
