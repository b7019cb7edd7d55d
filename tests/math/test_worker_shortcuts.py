"""The worker's shortcut for wrong answers (`_worker._clearly_different`) only fires where
math-verify's own ``verify`` says False, so skipping its ``simplify`` never changes a verdict.

Checked on the benchmark's answer kinds that reach math-verify (other seeds than the benchmark's)
plus edge cases chosen to trip a numeric test: identities, decimals near a value, tiny and huge
coefficients, integer-valued functions. Runs in a subprocess: math-verify is never imported in the
trainer process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import random
import subprocess
import sys

import pytest

_ROOT = pathlib.Path(__file__).resolve().parents[2]

EDGE = [
    ("\\frac{\\pi}{4}", "0.78540"), ("\\frac{\\pi}{4}", "0.785398"), ("\\frac{\\pi}{4}", "0.7854"), ("\\pi", "3.14159"),
    ("\\pi", "3.1416"), ("10^{-8}", "2 \\cdot 10^{-8}"), ("10^{-8}", "0.00000001"), ("x^2", "x \\cdot x"),
    ("\\frac{1}{x}", "x^{-1}"), ("\\sqrt{x^2}", "x"), ("|x|", "x"), ("\\log(x^2)", "2\\log x"), ("(-1)^{2n}", "1"),
    ("\\sin^2 x + \\cos^2 x", "1"), ("e^{i\\pi}", "-1"), ("\\frac{x^2-1}{x-1}", "x+1"), ("10^{-10}x", "0"),
    ("x + 10^{-12}", "x"), ("\\lfloor x \\rfloor", "0"), ("\\frac{1}{x+4}", "\\frac{2}{2x+8}"), ("\\frac{1}{x+4}", "\\frac{1}{x-4}"),
    ("x^2+2x+1", "(x+1)^2"), ("x^2+2x+1", "(x+1)^3"), ("\\frac{a}{b}", "\\frac{b}{a}"), ("2^{x}", "4^{x/2}"),
    ("\\binom{n}{2}", "\\frac{n(n-1)}{2}"), ("\\sin x", "\\cos(\\frac{\\pi}{2} - x)"), ("e^{\\ln x}", "x"),
    ("1000000000001", "1000000000000"), ("0.1", "\\frac{1}{10}"), ("\\frac{1}{3}", "0.333333"), ("\\frac{1}{3}", "0.3333"),
    ("3+4i", "3-4i"), ("\\sqrt{-1}", "i"), ("\\infty", "10^{100}"), ("x", "y"), ("2x", "x+x"), ("xy", "yx"),
    ("\\frac{\\sqrt{3}}{2}", "\\sin\\frac{\\pi}{3}"), ("\\frac{\\sqrt{3}}{2}", "\\cos\\frac{\\pi}{3}"), ("50\\%", "0.5"),
    ("x^{100}", "x^{99}"), ("\\frac{1}{10^{12}}", "0"), ("1.0000001", "1"), ("1.00001", "1"), ("1.0001", "1"),
    ("1.000002", "1"), ("1.0000015", "1"), ("0.0000015", "0"),
    # finite sets (a lone value counts as a set of one)
    ("9 \\pm \\sqrt{21}", "9 + \\sqrt{21}"), ("9 \\pm \\sqrt{21}", "10 \\pm \\sqrt{21}"), ("\\{1, 2\\}", "\\{1, 2.0000001\\}"),
    ("\\{1, 2\\}", "\\{1, 2.000002\\}"), ("\\{1, 2\\}", "3"), ("\\{1\\}", "1"), ("\\{1\\}", "2"), ("\\{1, 2\\}", "\\{2, 1, 1\\}"),
    ("\\{(1+\\sqrt{2})^2, 3+2\\sqrt{2}\\}", "\\{3+2\\sqrt{2}\\}"), ("\\{1, 2\\}", "\\{1, 2, 3\\}"), ("\\{i, -i\\}", "\\{1, -1\\}"),
    ("\\{\\frac{1}{3}, 2\\}", "\\{0.333333, 2\\}"), ("\\{\\frac{1}{3}, 2\\}", "\\{0.3333, 2\\}"), ("1, 2", "(1, 2)"),
    ("\\{1, 2\\}", "[1, 2]"), ("\\{-\\infty, 1\\}", "\\{1\\}"), ("\\{1, 10^{-12}\\}", "\\{1, 0\\}"),
    ("\\int_0^x t dt", "x^2"), ("\\sum_{n=1}^{10} n", "56"), ("\\frac{d}{dx} x^2", "3x"),
]

_SCRIPT = r"""
import json, logging, sys
logging.disable(logging.CRITICAL)
from math_verify import parse, verify
from remask_math import _worker
pairs = json.load(sys.stdin)
fired = agree = 0
differ = []
for gold, pred in pairs:
    for g, p in ((_worker._parse_gold(gold, 0), _worker._parse_pred(pred, 0)),
                 (tuple(parse("$" + gold + "$", parsing_timeout=None)), tuple(parse("$" + pred + "$", parsing_timeout=None)))):
        if not g or not p or not _worker._clearly_different(g[0], p[0]):
            continue
        fired += 1
        if verify(list(g), list(p), timeout_seconds=None):  # no wall-clock alarm: a loaded machine must not decide
            differ.append([gold, pred])
print(json.dumps({"fired": fired, "differ": differ}))
"""


def _bench():
    spec = importlib.util.spec_from_file_location("math_verdicts_bench", _ROOT / "benchmarks" / "math_verdicts.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.slow
def test_shortcut_only_where_math_verify_says_false():
    bench = _bench()
    pairs = list(EDGE)
    for seed in range(2, 8):
        rng = random.Random(seed)
        for mix in (bench.BEYOND, bench.MIX, bench.NEWLY_EXACT):
            for kind in mix:
                gold, forms = bench.answer_forms(kind, rng)
                pairs.extend((gold, form) for form in forms)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", _SCRIPT], input=json.dumps(pairs), capture_output=True, text=True,
                         timeout=900, env=env, check=True)
    got = json.loads(out.stdout)
    assert got["fired"] > 200  # the shortcut is used, not vacuous
    assert not got["differ"], got["differ"]
