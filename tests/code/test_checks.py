"""Trusted-side logic of the code reward: extraction, assert conversion, comparison (no sandbox)."""

from __future__ import annotations

import math

import pytest

from remask_code import checks
from remask_code.checks import (
    BadReference,
    CallsPlan,
    IOPlan,
    asserts_to_calls,
    case_passes,
    decode_value,
    extract_code,
    outputs_match,
    plan_for,
    values_equal,
)



def test_extract_code_conventions():
    text = "intro\n```python\nA = 1\n```\nmid\n```py\nB = 2\n```\n```\nC = 3\n```"
    assert extract_code(text) == "B = 2\n"  # last python-tagged block
    assert extract_code(text, "first_python_block") == "A = 1\n"
    assert extract_code("```\nonly = 1\n```") == "only = 1\n"  # untagged fallback
    assert extract_code("no fences at all") is None
    assert extract_code("```python\nunterminated") is None
    assert extract_code("x", "raw") == "x"


def test_mbpp_asserts_become_calls():
    fn, cases = asserts_to_calls("assert f(1, [2, 3]) == (4, 'x')\nassert not f(0, [])\nassert f(2, [1]) is True\n")
    assert fn == "f" and len(cases) == 3
    assert cases[0].args == (1, [2, 3]) and cases[0].expected == (4, "x") and cases[0].check == "eq"
    assert cases[1].check == "falsy" and cases[2].check == "is"


def test_humaneval_check_becomes_calls():
    tests = ("METADATA = {'author': 'x'}\n\ndef check(candidate):\n    assert candidate(1) == 2\n"
             "    assert True, 'always'\n    assert abs(candidate(0.5) - 1.5) < 1e-6\n")
    fn, cases = asserts_to_calls(tests, "inc")
    assert fn == "inc" and [c.check for c in cases] == ["eq", "abs_lt"]
    assert cases[1].bound == pytest.approx(1e-6)


def test_kodcode_pytest_functions_become_calls():
    tests = "from solution import g\n\ndef test_one():\n    assert g('a') == 'A'\n\ndef test_two():\n    assert g('') == ''\n"
    fn, cases = asserts_to_calls(tests)
    assert fn == "g" and [c.expected for c in cases] == ["A", ""]


def test_kodcode_bindings_are_followed():
    tests = ("from solution import f\n\ndef test_a():\n    nums = [3, 1]\n    expected = [1, 3]\n"
             "    result = f(nums)\n    assert result == expected\n\ndef test_b():\n    assert f([]) == []\n")
    fn, cases = asserts_to_calls(tests)
    assert fn == "f" and cases[0].args == ([3, 1],) and cases[0].expected == [1, 3]


@pytest.mark.parametrize("tests", [
    "f(1)\nassert x == 2\n",  # statements other than asserts and bindings
    "def test_a():\n    nums = [3, 1]\n    r = f(nums)\n    assert nums == [1, 3]\n",  # checks a mutation
    "def test_a():\n    r = f(1)\n    assert len(r) == 3\n",  # a computation on the result
    "def test_a():\n    x = g(1)\n    assert f(x) == 3\n",  # a non-literal argument
    "assert f(y) == 2\n",  # non-literal argument
    "assert f(1) == g(2)\n",  # non-literal expected value
    "assert f(1) == 2\nassert g(1) == 2\n",  # two different functions
    "def test_fixture(tmp_path):\n    assert f(1) == 2\n",  # pytest fixture argument
    "assert f(1) > 2\n",  # comparison we do not turn into data
])
def test_unconvertible_asserts_stay_code(tests):
    assert asserts_to_calls(tests) is None


def test_tests_to_units_splits_and_rewrites():
    plan = checks.tests_to_units("import math\nassert f(1) == 2\nassert f(2) in [3, 4]\nassert f(3)\n")
    assert isinstance(plan, checks.TestsPlan) and len(plan.units) == 3
    assert "import math" in plan.setup
    assert "__remask_cmp('Eq', f(1), 2)" in plan.units[0]
    assert "__remask_cmp('In'" in plan.units[1]
    assert "__remask_truth(f(3))" in plan.units[2]
    py = checks.tests_to_units("def test_a():\n    assert f() == 1\n\nclass TestB:\n    def test_c(self):\n        assert f()\n")
    assert py.units == ("test_a()", "TestB().test_c()")
    he = checks.tests_to_units("def check(candidate):\n    assert candidate(1) == 1\n\ncheck(foo)\n", "foo")
    assert he.units == ("check(foo)",)
    with pytest.raises(BadReference):
        checks.tests_to_units("def check(candidate):\n    assert candidate(1) == 1\n")  # no entry_point
    with pytest.raises(BadReference):
        checks.tests_to_units("x = = 1")


def test_plan_for_picks_the_mode_from_the_reference():
    assert plan_for({}) is None
    assert isinstance(plan_for({"tests": ["assert f(1) == 1"]}), CallsPlan)
    assert isinstance(plan_for({"tests": ["assert f(1) == 1"]}, convert_asserts=False), checks.TestsPlan)
    assert isinstance(plan_for({"tests": "assert f(1) == 1", "test_imports": ["import math"]}), checks.TestsPlan)
    calls = plan_for({"fn": "f", "calls": [{"args": [1, [2]], "expected": [3]}]})
    assert isinstance(calls, CallsPlan) and calls.cases[0].args == (1, [2]) and calls.tuple_equals_list
    assert isinstance(plan_for({"io": [{"input": "1", "output": "2"}]}), IOPlan)
    with pytest.raises(BadReference):
        plan_for({"calls": [{"args": [1], "expected": 1}]})  # no fn
    with pytest.raises(BadReference):
        plan_for({"io": [{"input": "1"}]})


@pytest.mark.parametrize("value", [None, True, 3, -2**200, 1.5, float("inf"), 1 + 2j, "s\udcff", b"\x00\xff",
                                   [1, (2, 3)], {1, 2}, frozenset({4}), {"a": [1.0], 2: None}])
def test_decode_inverts_the_sandbox_encoder(value):
    from remask_code.zygote import _make_encoder

    assert decode_value(_make_encoder()(value)) == value


def test_encoder_refuses_user_classes_and_decoder_refuses_junk():
    from remask_code.zygote import _make_encoder

    class Sneaky(int):
        def __eq__(self, other):
            return True

    enc = _make_encoder()
    for bad in (Sneaky(3), [Sneaky(1)], object(), (x for x in ())):
        with pytest.raises(TypeError):
            enc(bad)
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ValueError):
        enc(deep)
    for junk in ({"i": 3}, {"zz": []}, {"i": "g"}, {"a": 1, "b": 2}):
        with pytest.raises(ValueError):
            decode_value(junk)
    assert math.isnan(decode_value(enc(float("nan"))))


def test_values_equal_is_python_equality_on_plain_values():
    assert values_equal(1, 1.0) and values_equal([1, 2], [1, 2]) and not values_equal([1, 2], (1, 2))
    assert values_equal([1, 2], (1, 2), tuple_equals_list=True)
    assert not values_equal(0.1 + 0.2, 0.3)
    assert values_equal(0.1 + 0.2, 0.3, rel_tol=1e-9)
    assert not values_equal({"a": 1}, {"a": 1, "b": 2})
    assert not values_equal("1", 1)


def test_case_checks():
    from remask_code.checks import Case

    assert case_passes(Case((), {}, 0.5, "close", 0.0, 1e-3), 0.5004)
    assert not case_passes(Case((), {}, 0.5, "close", 0.0, 1e-6), 0.5004)
    assert case_passes(Case((), {}, True, "truthy"), [1]) and not case_passes(Case((), {}, True, "truthy"), [])
    assert case_passes(Case((), {}, None, "is"), None) and not case_passes(Case((), {}, None, "is"), 0)


def test_outputs_match_line_wise_and_decimal_aware():
    assert outputs_match("1 2\n3\n", "1 2  \n3")
    assert outputs_match("0.5\n", "0.50\n")  # Decimal-equal tokens
    assert outputs_match("\n3\n\n", "3")
    assert not outputs_match("1\n2\n", "1\n")  # no zip truncation: missing line
    assert not outputs_match("1\n", "1\n2\n")  # extra line
    assert not outputs_match("0.3\n", "0.30000000000000004\n")  # exact decimals, no float fuzz
    assert not outputs_match("50000000000000000", "50000000000000001")
    assert not outputs_match("nan", "NaN")
    assert not outputs_match("1 2", "1 2 3")
