"""The worker's direct number construction (`_worker._direct_numbers`) builds the same sympy objects
as latex2sympy2's own ``sympy.Number(text)``, so every parse (and so every verdict) is unchanged.

Runs in a subprocess: math-verify and latex2sympy2 are never imported in the trainer process.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

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
parsed_before = [sympy.srepr(x) if isinstance(x, sympy.Basic) else repr(x) for s in spans for x in parse(f"${s}$")]
_worker._configs()  # installs the two-stage ANTLR parse and the direct numbers
assert getattr(conv.parse_number, "_remask_direct", False)
after = [run(t) for t in texts]
from math_verify.parser import parse_latex_cached
parse_latex_cached.cache_clear()
parsed_after = [sympy.srepr(x) if isinstance(x, sympy.Basic) else repr(x) for s in spans for x in parse(f"${s}$")]
print(json.dumps({"texts": texts, "before": before, "after": after,
                  "parsed_before": parsed_before, "parsed_after": parsed_after}))
"""

SPANS = ["1", "0.5", "1,000", "3.14", "\\frac{1}{2}", "2^{10}", "\\{1, 2\\}", "(3, 4]", "007", "10\\%", "1.5e3",
         "x^2+5x+6", "\\sqrt[3]{24}", "e^{2}", "12.50", "0.333333", "123456789012345678901234567890"]


def test_direct_numbers_build_the_same_objects():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_PLUGINS), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(SPANS)], capture_output=True, text=True,
                         timeout=300, env=env, check=True)
    got = json.loads(out.stdout)
    differ = [(t, b, a) for t, b, a in zip(got["texts"], got["before"], got["after"]) if b != a]
    assert not differ, differ[:5]
    assert got["parsed_before"] == got["parsed_after"]
    assert any(b[0].startswith("Float") for b in got["before"]) and any(b[0].startswith("Integer") for b in got["before"])
