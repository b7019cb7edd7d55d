"""`code-tests`: function-writing problems from local HumanEval / MBPP-format jsonl files (no
downloads), or a small built-in set so tests and quickstarts run offline."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

import remask
from remask.errors import RemaskError

from .checks import extract_code

DEFAULT_TEMPLATE = (
    "{question}\n\nWrite the Python function `{entry_point}`. Answer with the complete code in one "
    "```python code block."
)

# name, statement, solution, assert tests (MBPP layout). Hand-written for the offline default.
_BUILTIN: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("add", "Return the sum of two integers a and b.", "def add(a, b):\n    return a + b",
     ("assert add(1, 2) == 3", "assert add(-4, 4) == 0", "assert add(10, 32) == 42")),
    ("square", "Return n squared.", "def square(n):\n    return n * n",
     ("assert square(3) == 9", "assert square(-2) == 4", "assert square(0) == 0")),
    ("is_even", "Return True when n is even.", "def is_even(n):\n    return n % 2 == 0",
     ("assert is_even(4) == True", "assert is_even(7) == False", "assert is_even(0) == True")),
    ("reverse_string", "Return the string s reversed.", "def reverse_string(s):\n    return s[::-1]",
     ("assert reverse_string('abc') == 'cba'", "assert reverse_string('') == ''",
      "assert reverse_string('ab a') == 'a ba'")),
    ("max_of_list", "Return the largest element of a non-empty list.", "def max_of_list(xs):\n    return max(xs)",
     ("assert max_of_list([1, 5, 2]) == 5", "assert max_of_list([-3, -1]) == -1", "assert max_of_list([7]) == 7")),
    ("count_vowels", "Count the vowels (aeiou, lower case) in s.",
     "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s)",
     ("assert count_vowels('hello') == 2", "assert count_vowels('xyz') == 0", "assert count_vowels('aeiou') == 5")),
    ("factorial", "Return n! for n >= 0.",
     "def factorial(n):\n    out = 1\n    for k in range(2, n + 1):\n        out *= k\n    return out",
     ("assert factorial(0) == 1", "assert factorial(5) == 120", "assert factorial(10) == 3628800")),
    ("fib", "Return the n-th Fibonacci number (fib(0) = 0, fib(1) = 1).",
     "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
     ("assert fib(0) == 0", "assert fib(1) == 1", "assert fib(10) == 55")),
    ("is_palindrome", "Return True when s reads the same backwards.",
     "def is_palindrome(s):\n    return s == s[::-1]",
     ("assert is_palindrome('abba') == True", "assert is_palindrome('abc') == False", "assert is_palindrome('') == True")),
    ("sum_digits", "Return the sum of the decimal digits of a non-negative integer n.",
     "def sum_digits(n):\n    return sum(int(d) for d in str(n))",
     ("assert sum_digits(0) == 0", "assert sum_digits(123) == 6", "assert sum_digits(9999) == 36")),
    ("unique_sorted", "Return the sorted list of distinct elements of xs.",
     "def unique_sorted(xs):\n    return sorted(set(xs))",
     ("assert unique_sorted([3, 1, 3, 2]) == [1, 2, 3]", "assert unique_sorted([]) == []",
      "assert unique_sorted([5, 5]) == [5]")),
    ("gcd", "Return the greatest common divisor of two positive integers.",
     "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a",
     ("assert gcd(12, 18) == 6", "assert gcd(7, 5) == 1", "assert gcd(10, 10) == 10")),
    ("count_words", "Return the number of whitespace-separated words in s.",
     "def count_words(s):\n    return len(s.split())",
     ("assert count_words('a b  c') == 3", "assert count_words('') == 0", "assert count_words(' one ') == 1")),
    ("min_max", "Return a tuple (smallest, largest) of a non-empty list.",
     "def min_max(xs):\n    return (min(xs), max(xs))",
     ("assert min_max([3, 1, 2]) == (1, 3)", "assert min_max([4]) == (4, 4)", "assert min_max([-1, 1]) == (-1, 1)")),
    ("char_count", "Return a dict mapping each character of s to its number of occurrences.",
     "def char_count(s):\n    out = {}\n    for c in s:\n        out[c] = out.get(c, 0) + 1\n    return out",
     ("assert char_count('aab') == {'a': 2, 'b': 1}", "assert char_count('') == {}",
      "assert char_count('zz') == {'z': 2}")),
    ("flatten", "Flatten a list of lists one level deep.",
     "def flatten(xss):\n    return [x for xs in xss for x in xs]",
     ("assert flatten([[1, 2], [3]]) == [1, 2, 3]", "assert flatten([]) == []", "assert flatten([[], [4]]) == [4]")),
    ("celsius_to_fahrenheit", "Convert degrees Celsius to Fahrenheit.",
     "def celsius_to_fahrenheit(c):\n    return c * 9 / 5 + 32",
     ("assert celsius_to_fahrenheit(0) == 32", "assert celsius_to_fahrenheit(100) == 212",
      "assert celsius_to_fahrenheit(-40) == -40")),
    ("second_largest", "Return the second largest distinct value of a list with at least two distinct values.",
     "def second_largest(xs):\n    return sorted(set(xs))[-2]",
     ("assert second_largest([1, 2, 3]) == 2", "assert second_largest([5, 5, 4]) == 4",
      "assert second_largest([-1, -2]) == -2")),
    ("binary_string", "Return the binary representation of a non-negative integer without the 0b prefix.",
     "def binary_string(n):\n    return bin(n)[2:]",
     ("assert binary_string(0) == '0'", "assert binary_string(5) == '101'", "assert binary_string(8) == '1000'")),
    ("merge_sorted", "Merge two sorted lists into one sorted list.",
     "def merge_sorted(a, b):\n    return sorted(a + b)",
     ("assert merge_sorted([1, 3], [2]) == [1, 2, 3]", "assert merge_sorted([], [1]) == [1]",
      "assert merge_sorted([], []) == []")),
)


def _fenced(code: str) -> str:
    return "```python\n" + code.rstrip() + "\n```"


def _row_from_record(rec: Mapping[str, Any], index: int, template: str) -> remask.Example:
    """Map one HumanEval, MBPP or native record to an :class:`~remask.Example`."""
    rid = str(rec.get("task_id", rec.get("id", index)))
    if "entry_point" in rec and "test" in rec:  # HumanEval
        prompt = str(rec.get("prompt", ""))
        ref = {"tests": rec["test"], "entry_point": rec["entry_point"]}
        if rec.get("canonical_solution") is not None:
            ref["completion"] = _fenced(prompt + str(rec["canonical_solution"]))
        question = prompt
        entry = str(rec["entry_point"])
    elif "test_list" in rec:  # MBPP (original or sanitized)
        tests = list(rec["test_list"])
        ref = {"tests": tests}
        imports = rec.get("test_imports") or rec.get("test_setup_code")
        if imports:
            ref["test_imports"] = imports if isinstance(imports, str) else "\n".join(imports)
        if rec.get("code"):
            ref["completion"] = _fenced(str(rec["code"]))
        text = str(rec.get("prompt", rec.get("text", "")))
        question = f"{text}\nYour code should pass these tests:\n" + "\n".join(tests[:1])
        entry = _entry_from_asserts(tests)
    elif any(k in rec for k in ("tests", "calls", "io")) and "prompt" in rec:  # native
        ref = {k: v for k, v in rec.items() if k not in ("prompt", "id", "task_id")}
        question = str(rec["prompt"])
        entry = str(rec.get("fn", rec.get("entry_point", "")))
    else:
        raise RemaskError(f"code-tests: record {rid} is neither HumanEval (prompt/test/entry_point), "
                          "MBPP (text/test_list) nor native (prompt + tests/calls/io)")
    return remask.Example(prompt=template.format(question=question.strip(), entry_point=entry),
                          reference=ref, id=rid)


def _entry_from_asserts(tests: Sequence[str]) -> str:
    import re

    for t in tests:
        m = re.search(r"assert\s+(?:not\s+)?(?:\w+\.)?(?:isclose\()?\s*([A-Za-z_]\w*)\s*\(", str(t))
        if m:
            return m.group(1)
    return ""


class CodeTestsTask(remask.Task):
    """Function-writing problems with unit tests, judged by the sandboxed `code` reward.

    Reads local HumanEval / MBPP / native jsonl files; with no path it serves a built-in set of 20
    small problems (deterministic train/test split). ``reference["completion"]`` holds the canonical
    solution in a ```python block for masked-diffusion SFT.
    """

    name = "code-tests"

    class Config(remask.ComponentConfig):
        path: str = Field("", description="jsonl (or json list) of HumanEval, MBPP or native rows; "
                          "empty = the built-in offline set.")
        test_path: str = Field("", description="Separate jsonl for the test split; empty = split "
                               "`path` by test_fraction.")
        test_fraction: float = Field(0.25, gt=0, lt=1, description="Share of rows held out as test "
                                     "when there is no test_path.")
        seed: int = Field(0, description="Seed of the train/test split shuffle.")
        template: str = Field(DEFAULT_TEMPLATE, description="Prompt template with {question} and "
                              "{entry_point} placeholders.")
        prefill: str = Field("", description="Text appended after the rendered prompt.")
        eval_timeout_s: float = Field(5.0, gt=0, description="Per-program time limit when "
                                      "is_correct runs the tests.")

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self._splits: dict[str, list[remask.Example]] | None = None
        self._reward = None
        self._lock = threading.Lock()

    def _load(self, path: str) -> list[Mapping[str, Any]]:
        p = Path(path).expanduser()
        if not p.is_file():
            raise RemaskError(f"code-tests: file {path!r} not found (task.path / task.test_path)")
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".json":
            rows = json.loads(text)
            if not isinstance(rows, list):
                raise RemaskError(f"code-tests: {path} must hold a JSON list of rows")
            return rows
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise RemaskError(f"code-tests: {path}:{n} is not valid JSON ({exc.msg})") from None
        return rows

    def _build(self) -> dict[str, list[remask.Example]]:
        c = self.config
        if c.path:
            records = self._load(c.path)
        else:
            records = [{"task_id": f"builtin/{name}", "text": text, "code": code, "test_list": list(tests)}
                       for name, text, code, tests in _BUILTIN]
        rows = [_row_from_record(r, i, c.template) for i, r in enumerate(records)]
        rows = [remask.Example(r.prompt, r.reference, c.prefill, r.id) for r in rows]
        if c.test_path:
            test = [_row_from_record(r, i, c.template) for i, r in enumerate(self._load(c.test_path))]
            test = [remask.Example(r.prompt, r.reference, c.prefill, r.id) for r in test]
            return {"train": rows, "test": test}
        order = list(range(len(rows)))
        random.Random(c.seed).shuffle(order)
        n_test = max(1, round(len(rows) * c.test_fraction)) if len(rows) > 1 else 0
        test_idx = set(order[:n_test])
        return {"train": [r for i, r in enumerate(rows) if i not in test_idx],
                "test": [r for i, r in enumerate(rows) if i in test_idx]}

    def examples(self, split: str) -> Sequence[remask.Example]:
        if split not in self.splits:
            raise RemaskError(f"code-tests: unknown split {split!r}; expected one of {self.splits}")
        with self._lock:
            if self._splits is None:
                self._splits = self._build()
        return self._splits[split]

    def is_correct(self, completion: str, reference: Mapping[str, Any]) -> float:
        """1.0 when the program in ``completion`` passes every test (run in the sandbox)."""
        if not isinstance(completion, str) or extract_code(completion) is None:
            return 0.0
        with self._lock:
            if self._reward is None:
                from .reward import CodeReward

                self._reward = CodeReward(CodeReward.Config(binary=True, timeout_s=self.config.eval_timeout_s))
        values, _ = self._reward.evaluate([completion], [reference])
        return 1.0 if values[0] == 1.0 else 0.0
