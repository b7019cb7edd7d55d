"""The `code` / `code-egspo` rewards and the `code-tests` task through the real sandbox."""

from __future__ import annotations

import logging
import shutil

import pytest

import remask
from remask.testing import check_component

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

ADD_OK = "```python\ndef add(a, b):\n    return a + b\n```"
ADD_HALF = "```python\ndef add(a, b):\n    return a + b if a > 0 else -99\n```"


@pytest.fixture(scope="module")
def reward():
    from remask_code.reward import CodeReward

    r = CodeReward(CodeReward.Config(timeout_s=3.0, workers=2))
    yield r
    r.close()


def test_components_are_registered():
    from remask.registry import get_registry

    reg = get_registry()
    assert {"code", "code-egspo"} <= set(reg.names("reward"))
    assert "code-tests" in reg.names("task")


@needs_bwrap
def test_contracts():
    from remask_code.reward import CodeReward, EgspoCodeReward
    from remask_code.task import CodeTestsTask

    for cls in (CodeReward, EgspoCodeReward, CodeTestsTask):
        assert check_component(cls) == [], cls.name


@needs_bwrap
def test_calls_mode_fraction_and_json_tuples(reward):
    ref = {"fn": "pair", "calls": [{"args": [1], "expected": [1, 1]}, {"args": [2], "expected": [2, 2]},
                                   {"args": [3], "kwargs": {}, "expected": [3, 4]}]}
    code = "```python\ndef pair(x):\n    return (x, x)\n```"
    values, reasons = reward.evaluate([code], [ref])
    assert values == [pytest.approx(2 / 3)] and reasons[0].startswith("failed 1/3")


@needs_bwrap
def test_assert_tests_partial_credit_and_failures(reward):
    tests = {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]}
    values, reasons = reward.evaluate([ADD_OK, ADD_HALF, "no code here", "```python\n```"], [tests] * 4)
    assert values[0] == 1.0 and reasons[0] == "passed"
    assert values[1] == pytest.approx(2 / 3)
    assert (values[2], reasons[2]) == (0.0, "no_code")
    assert (values[3], reasons[3]) == (0.0, "no_code")


@needs_bwrap
def test_in_process_tests_with_helpers_and_pytest_functions(reward):
    tests = {"tests": "import math\n\ndef helper(x):\n    return x * 2\n\n"
                      "def test_one():\n    total = add(1, 2)\n    assert total == 3\n\n"
                      "def test_two():\n    assert helper(add(1, 1)) == 4\n\n"
                      "def test_three():\n    assert math.isclose(add(0.1, 0.2), 0.3)\n\n"
                      "def test_four():\n    assert add(-1, 1) == 0\n"}
    values, reasons = reward.evaluate([ADD_OK, ADD_HALF], [tests, tests])
    assert values[0] == 1.0, reasons[0]
    assert values[1] == 0.75 and "test_four" in reasons[1]


@needs_bwrap
def test_io_mode_is_strict_about_lines(reward):
    io = {"io": [{"input": "1 2\n", "output": "3\n"}, {"input": "4 5\n", "output": "9\n"}]}
    right = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    extra = "```python\na, b = map(int, input().split())\nprint(a + b)\nprint('debug')\n```"
    crash = "```python\na, b = map(int, input().split())\nprint(a + b)\nraise ValueError\n```"
    values, reasons = reward.evaluate([right, extra, crash], [io] * 3)
    assert values == [1.0, 0.0, 0.0], reasons
    assert "runtime_error" in reasons[2]


@needs_bwrap
def test_rows_without_tests_cannot_be_judged(reward):
    values, reasons = reward.evaluate([ADD_OK, ADD_OK, ADD_OK],
                                      [{}, {"tests": "def check(candidate):\n    assert candidate(1)\n"},
                                       {"io": [{"input": "1"}]}])
    assert values == [None, None, None]
    assert reasons[0] == "no_tests" and all(r.startswith("bad_reference") for r in reasons[1:])
    rewards = reward.score(prompts=["p"] * 3, completions=[ADD_OK] * 3, references=[{}] * 3)
    assert rewards.total.tolist() == [0.0, 0.0, 0.0] and rewards.components["code"].isnan().all()


@needs_bwrap
def test_binary_option():
    from remask_code.reward import CodeReward

    r = CodeReward(CodeReward.Config(binary=True, workers=1))
    try:
        tests = {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]}
        assert r.evaluate([ADD_OK, ADD_HALF], [tests, tests])[0] == [1.0, 0.0]
    finally:
        r.close()


@needs_bwrap
def test_egspo_semantics():
    from remask_code.reward import EgspoCodeReward

    r = EgspoCodeReward(EgspoCodeReward.Config(workers=2))
    try:
        tests = {"tests": "from solution import add\n\ndef test_a():\n    assert add(1, 2) == 3\n"
                          "\ndef test_b():\n    assert add(0, 0) == 0\n"}
        renamed = "<answer>\n```python\ndef plus(a, b):\n    return a + b\n```\n</answer>"
        outside = "```python\ndef plus(a, b):\n    return a + b\n```\n<answer>done</answer>"
        first_wins = "```python\ndef plus(a, b):\n    return 0\n```\n```python\ndef add(a, b):\n    return a + b\n```"
        banned = "<answer>```python\nimport os\ndef add(a, b):\n    return a + b\n```</answer>"
        values, reasons = r.evaluate([renamed, outside, first_wins, banned], [tests] * 4)
        assert values[0] == 1.5 and values[1] == 1.0
        assert values[2] == 0.5  # first block, renamed to add, returns 0: passes add(0, 0) only
        assert (values[3], reasons[3]) == (0.5, "banned_substring")
    finally:
        r.close()


def test_refuses_without_bwrap(monkeypatch):
    from remask_code import sandbox
    from remask_code.reward import CodeReward

    real_which = shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None if name == "bwrap" else real_which(name))
    with pytest.raises(remask.RemaskError, match="bubblewrap"):
        CodeReward()


def test_unsandboxed_needs_opt_in_and_is_loud(caplog):
    from remask_code.reward import CodeReward

    with caplog.at_level(logging.WARNING, logger="remask.code"):
        r = CodeReward(CodeReward.Config(isolation="unsafe-none", workers=1, timeout_s=2.0))
        try:
            values, _ = r.evaluate([ADD_OK, "```python\nwhile True:\n    pass\n```"],
                                   [{"tests": ["assert add(1, 2) == 3"]}] * 2)
        finally:
            r.close()
    assert values == [1.0, 0.0]
    assert any("UNSANDBOXED" in m or "WITHOUT a sandbox" in m for m in caplog.messages)


@needs_bwrap
def test_code_tests_task_builtin_and_local_files(tmp_path):
    import json

    from remask_code.task import CodeTestsTask

    task = CodeTestsTask()
    train, test = task.examples("train"), task.examples("test")
    assert len(train) + len(test) == 20 and not {e.id for e in train} & {e.id for e in test}
    assert [e.id for e in CodeTestsTask().examples("test")] == [e.id for e in test]  # deterministic
    assert all(task.is_correct(e.reference["completion"], e.reference) == 1.0 for e in test)
    assert task.is_correct("```python\ndef nothing():\n    pass\n```", test[0].reference) == 0.0

    he = {"task_id": "HumanEval/0", "prompt": "def inc(x):\n    \"\"\"x + 1\"\"\"\n",
          "canonical_solution": "    return x + 1\n", "entry_point": "inc",
          "test": "def check(candidate):\n    assert candidate(1) == 2\n"}
    mbpp = {"task_id": 7, "text": "Double it.", "code": "def dbl(x):\n    return 2 * x",
            "test_list": ["assert dbl(2) == 4"], "test_imports": []}
    native = {"prompt": "Echo stdin.", "io": [{"input": "hi\n", "output": "hi\n"}]}
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (he, mbpp, native)) + "\n")
    local = CodeTestsTask(CodeTestsTask.Config(path=str(path), test_path=str(path)))
    rows = local.examples("test")
    assert [r.id for r in rows] == ["HumanEval/0", "7", "2"]
    assert "inc" in rows[0].prompt and "assert dbl(2) == 4" in rows[1].prompt
    assert local.is_correct(rows[0].reference["completion"], rows[0].reference) == 1.0
    assert local.is_correct(rows[1].reference["completion"], rows[1].reference) == 1.0
    assert local.is_correct("```python\nprint(input())\n```", rows[2].reference) == 1.0
    with pytest.raises(remask.RemaskError, match="not found"):
        CodeTestsTask(CodeTestsTask.Config(path=str(tmp_path / "missing.jsonl"))).examples("train")
