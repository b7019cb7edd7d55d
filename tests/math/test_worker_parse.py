"""The worker's parser patches leave every parse (and so every verdict) unchanged: the direct number
construction (`_worker._direct_numbers`) builds the same sympy objects as latex2sympy2's own
``sympy.Number(text)``, and the two-stage parse (SLL with a bail-out error strategy, then full LL)
gives the same expression as latex2sympy2's LL parse, or the same failure, on every answer kind of
the benchmark and on malformed spans.

Runs in a subprocess: math-verify and latex2sympy2 are never imported in the trainer process.
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

_PLUGINS = pathlib.Path(__file__).resolve().parents[2] / "plugins"

_SCRIPT = r"""
import json, logging, random, sys
logging.disable(logging.CRITICAL)
import sympy
from latex2sympy2_extended import latex2sympy2 as l2s
from math_verify import parse
from remask_math import _worker

conv = l2s._Latex2Sympy
texts = ["0", "00", "007", "1", "10", "1,000", "123456789012345678901234567890", "0.5", "1.50", "00.5",
         "3.14159265358979323846264338327950288", "10.000", "0.000001", "1e5", "1.", ".5", "٣", "²", "1" * 4000,
         "12,34", "1,234,567.891"]
rng = random.Random(7)
texts += [str(rng.randint(0, 10 ** rng.randint(1, 60))) for _ in range(300)]
texts += [f"{rng.randint(0, 10 ** rng.randint(1, 20))}.{rng.randint(0, 10 ** rng.randint(1, 20))}" for _ in range(300)]
spans = json.loads(sys.argv[1])

def run(text):
    try:
        v = conv.parse_number(None, text)
        return [sympy.srepr(v), getattr(v, "_prec", None)]
    except Exception as exc:
        return ["error", type(exc).__name__]

before = [run(t) for t in texts]
def parsed_all():
    from math_verify.parser import parse_latex_cached
    parse_latex_cached.cache_clear()
    out = []
    for s in spans:
        try:
            direct = sympy.srepr(l2s.latex2sympy(s))
        except Exception as exc:
            direct = "error: " + type(exc).__name__
        out.append([direct] + [sympy.srepr(x) if isinstance(x, sympy.Basic) else repr(x)
                               for x in parse(f"${s}$", parsing_timeout=None)])
    return out

parsed_before = parsed_all()
_worker._configs()  # installs the two-stage ANTLR parse and the direct numbers
assert getattr(conv.parse_number, "_remask_direct", False)
after = [run(t) for t in texts]
parsed_after = parsed_all()
print(json.dumps({"texts": texts, "before": before, "after": after,
                  "parsed_before": parsed_before, "parsed_after": parsed_after}))
"""

SPANS = ["1", "0.5", "1,000", "3.14", "\\frac{1}{2}", "2^{10}", "\\{1, 2\\}", "(3, 4]", "007", "10\\%", "1.5e3",
         "x^2+5x+6", "\\sqrt[3]{24}", "e^{2}", "12.50", "0.333333", "123456789012345678901234567890",
         # malformed: both paths must fail (or recover) the same way
         "\\frac{1}{", "x^", "((1)", "1 +", "\\sqrt", "\\frac12", "\\sqrt2", "2x+", "a = = b", "\\left( 1, 2", "}{", "3!!",
         "x \\geq", "\\begin{pmatrix} 1 & 2 \\end{pmatrix}", "\\int_0^1 x dx", "\\lim_{x\\to 0} x", "f(x) = 2x", "|x-1|"]


def _generated_spans() -> list[str]:
    spec = importlib.util.spec_from_file_location("math_verdicts_bench", _PLUGINS.parent / "benchmarks" / "math_verdicts.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng, spans = random.Random(3), []
    for mix in (bench.MIX, bench.NEWLY_EXACT, bench.BEYOND):
        for kind in mix:
            for _ in range(4):
                gold, forms = bench.answer_forms(kind, rng)
                spans.extend([gold, *forms])
    return sorted(set(spans))


@pytest.mark.slow
def test_worker_parses_like_latex2sympy2():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_PLUGINS), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(SPANS + _generated_spans())], capture_output=True, text=True,
                         timeout=300, env=env, check=True)
    got = json.loads(out.stdout)
    differ = [(t, b, a) for t, b, a in zip(got["texts"], got["before"], got["after"]) if b != a]
    assert not differ, differ[:5]
    differ = [(s, b, a) for s, b, a in zip(SPANS + _generated_spans(), got["parsed_before"], got["parsed_after"]) if b != a]
    assert not differ, differ[:5]
    assert sum(b[0].startswith("error") for b in got["parsed_before"]) >= 5  # malformed spans were tried
    assert any(b[0].startswith("Float") for b in got["before"]) and any(b[0].startswith("Integer") for b in got["before"])
