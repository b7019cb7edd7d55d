"""d1's evaluation regexes, matched in linear time: same groups as the regexes, bounded time.

The originals are quadratic (``.*?`` under DOTALL restarts at every position); 65k characters
without ``</answer>`` took 99 s. Each linear scan is checked against the regex it replaces on
random token soups, then timed on hostile inputs.
"""

from __future__ import annotations

import random
import re
import time

import pytest

from remask_math import d1compat

TOKENS = ["<answer>", "</answer>", "```", "`", "\\boxed{", "}", "{", "=", "\n", " ", "\t", "1234567890123456",
          "12345678", "7", "0", ".", "+", "*", "(", ")", "-", "x", "a", "<|eot_id|>", "<|endoftext|>", "٣"]


def _soup(rng: random.Random) -> str:
    return "".join(rng.choice(TOKENS) for _ in range(rng.randint(0, 24)))


def _sudoku_regex(text: str) -> str:
    for pattern in d1compat.SUDOKU_EVAL_PATTERNS:
        m = re.search(pattern, text, re.DOTALL)
        if m and m.group(1).strip():
            return m.group(1).strip()
    return ""


def test_linear_scans_equal_the_regexes_on_random_inputs():
    rng = random.Random(0)
    for _ in range(6000):
        text = _soup(rng)
        assert d1compat.boxed_lazy_contents(text) == re.findall(r"\\boxed{(.*?)}", text), repr(text)
        m = re.search(r"([0-9+\-*/() ]+)=[0-9. ]+", text)
        assert d1compat.equation_lhs(text) == (m.group(1) if m else None), repr(text)
        assert d1compat._sudoku_search(text) == _sudoku_regex(text), repr(text)


HOSTILE = {
    "answer-no-close": "<answer>" + "1 " * 32_000,
    "many-answers": "<answer>" * 8_000,
    "digits": "1" * 65_000,
    "boxes-no-close": "\\boxed{" * 9_000,
    "fences": "<answer>```" + "1" * 65_000,
    "equation": "1" * 65_000 + "=",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_eval_parsers_are_fast_on_65k_hostile_inputs(name):
    text = HOSTILE[name][:65_536]
    t0 = time.process_time()
    d1compat.eval_sudoku_cells(text, "0" * 16, "1" * 16)
    d1compat.eval_gsm8k(text, 1.0)
    d1compat.eval_math(text, "1")
    d1compat.eval_countdown(text, [1, 2], 3)
    assert time.process_time() - t0 < 1.0  # the regexes took 99 s on the first of these
