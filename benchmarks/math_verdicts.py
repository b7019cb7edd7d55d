"""Math verdicts per second per core: remask's verifier side by side with plain math-verify.

    python benchmarks/math_verdicts.py                    # 512 rows per workload, 1 worker
    python benchmarks/math_verdicts.py --rows 2000 --workers 2 --seed 3

Rows are a MATH-like mix of answers that all reach math-verify in a verifier without fast paths
(none is a plain number or a simple fraction): surds (``\\frac{3\\sqrt{2}}{4}``), multiples of pi,
integer powers, surd sums, quadratics, intervals, tuples, line equations and mixed numbers, each
with equivalent and wrong predicted forms (:data:`MIX` gives the shares). Workloads:

* ``distinct``: every row has its own gold (no deduplication or cache can help);
* ``GRPO 64x8``: 8 completions per prompt sharing a gold, as a trainer sees them;
* ``newly exact``: kinds the in-process exact path reads since issue 14 item 8 and that all
  went to the workers before (:data:`NEWLY_EXACT`: finite sets, cube roots, powers of e,
  multiple-choice letters, degrees, rational powers);
* ``beyond the exact subset``: kinds the exact path does not read (:data:`BEYOND`: complex
  numbers, logarithms, trigonometric values, inequalities, rational functions, decimals close to
  an irrational, units, plus-minus, binomials), keeping only the rows that the verifier sends to
  a worker (:meth:`~remask_math.verifier.MathVerifier.decided_in_process` is false): the cost when
  every row reaches math-verify, with distinct golds and with GRPO groups of 8 sharing a gold.

Each workload is judged three ways on the same rows, in one run:

* ``plain math-verify``: ``verify(parse("$gold$"), parse("$pred$"))`` in this process, default
  configs, every row, with its SIGALRM timeouts off (``None``): they count wall-clock seconds, and
  on a loaded machine a stalled process would read as False;
* ``remask``: :class:`remask_math.verifier.MathVerifier` (in-process exact paths, then the worker
  pool); a fresh verifier per workload, its pool already started;
* ``remask, pool only``: the same verifier with its in-process fast paths switched off.

"per core" divides rows by all CPU seconds spent: this process (``time.process_time``) plus the
workers (``utime+stime`` from ``/proc``), so the number does not depend on how busy a shared
machine was. Verdicts that differ from plain math-verify are printed (0 expected).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "plugins"))

from remask_math.pool import Job  # noqa: E402
from remask_math.verifier import MathVerifier, Policy  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")
_SQUAREFREE = (2, 3, 5, 6, 7, 10, 11, 13, 14, 15, 17, 19, 21, 22, 23)

#: share (percent) of each answer kind among the rows
MIX = {"surd": 25, "pi": 15, "power": 10, "surd-sum": 10, "polynomial": 10, "interval": 10, "tuple": 10,
       "equation": 5, "mixed-number": 5, "infinite-interval": 5}
#: answer kinds the in-process exact path reads since issue 14 item 8 (they went to the workers
#: before), equal shares
NEWLY_EXACT = {"set": 1, "cube-root": 1, "exponential": 1, "choice": 1, "degrees": 1, "rational-power": 1}
#: answer kinds outside the in-process exact subset: every row reaches math-verify, equal shares
BEYOND = {"complex": 1, "logarithm": 1, "trig": 1, "inequality": 1, "rational-function": 1,
          "decimal-approximation": 1, "unit": 1, "plus-minus": 1, "binomial": 1}


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, IndexError):
            pass
    return total / _TICK


def answer_forms(kind: str, rng: random.Random) -> tuple[str, list[str]]:
    """A gold of ``kind`` and predicted forms of it, equivalent and wrong."""
    a, b, c = rng.randint(1, 12), rng.choice(_SQUAREFREE), rng.randint(2, 9)
    if kind == "surd":
        gold = f"\\frac{{{a}\\sqrt{{{b}}}}}{{{c}}}"
        return gold, [gold, f"\\frac{{{a}}}{{{c}}}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}/{c}", f"\\dfrac{{{a}\\sqrt{b}}}{{{c}}}",
                      f"\\frac{{{a + 1}\\sqrt{{{b}}}}}{{{c}}}", f"\\frac{{{a}\\sqrt{{{b}}}}}{{{c + 1}}}", f"{a}\\sqrt{{{b}}}"]
    if kind == "pi":
        gold = f"\\frac{{{a}\\pi}}{{{c}}}"
        return gold, [gold, f"\\frac{{{a}}}{{{c}}}\\pi", f"\\frac{{{2 * a}\\pi}}{{{2 * c}}}", f"{a}\\pi/{c}",
                      f"\\frac{{{a}\\pi}}{{{c + 1}}}", f"{a}\\pi"]
    if kind == "power":
        k, base = rng.randint(2, 9), rng.randint(2, 9)
        gold = f"{base}^{{{k}}}"
        return gold, [gold, str(base**k), f"{base}^{k}", f"{base}^{{{k + 1}}}", str(base**k + 1), f"{base * base}^{{{k}}}"]
    if kind == "surd-sum":
        gold = f"{a}+{c}\\sqrt{{{b}}}"
        return gold, [gold, f"{c}\\sqrt{{{b}}}+{a}", f"{a}+\\sqrt{{{c * c * b}}}", f"{a}-{c}\\sqrt{{{b}}}",
                      f"{a + 1}+{c}\\sqrt{{{b}}}"]
    if kind == "polynomial":
        p, q = rng.randint(1, 9), rng.randint(1, 9)
        gold = f"x^2+{p + q}x+{p * q}"
        return gold, [gold, f"(x+{p})(x+{q})", f"{p * q}+{p + q}x+x^2", f"x^2+{p + q + 1}x+{p * q}", f"(x+{p})(x-{q})"]
    if kind == "interval":
        gold = f"({-a}, {c}]"
        return gold, [gold, f"({-a},{c}]", f"\\left({-a}, {c}\\right]", f"[{-a}, {c}]", f"({-a}, {c})"]
    if kind == "tuple":
        gold = f"({a}, {c})"
        return gold, [gold, f"({a},{c})", f"\\left({a}, {c}\\right)", f"({c}, {a})", f"({a}, {c + 1})"]
    if kind == "equation":
        gold = f"y={a}x+{c}"
        return gold, [gold, f"y = {a}x + {c}", f"y={c}+{a}x", f"y={a}x-{c}", f"y={a + 1}x+{c}"]
    if kind == "set":
        if a == c:
            c += 1
        gold = f"\\{{{a}, {c}\\}}" if b % 2 else f"\\{{{a}, \\sqrt{{{b}}}, -{c}\\}}"
        if b % 2:
            return gold, [gold, f"\\{{{c},{a}\\}}", f"{c}, {a}", f"\\{{{a}, {c + 1}\\}}", f"\\{{{a}\\}}",
                          f"\\{{{a}, {a}, {c}\\}}", f"\\{{{a}, {c}, {a + c}\\}}", f"\\{{\\frac{{{2 * c}}}{{2}}, {a}\\}}"]
        return gold, [gold, f"\\{{-{c}, {a}, \\sqrt{{{b}}}\\}}", f"\\sqrt{{{b}}}, {a}, -{c}", f"\\{{{a}, \\sqrt{{{b}}}, {c}\\}}",
                      f"\\{{{a}, \\sqrt{{{b + 1}}}, -{c}\\}}", f"\\{{{a}, -{c}\\}}"]
    if kind == "infinite-interval":
        gold = f"[{a}, \\infty)"
        return gold, [gold, f"[{a},\\infty)", f"({a}, \\infty)", f"[{a + 1}, \\infty)", f"(-\\infty, {a}]"]
    if kind == "cube-root":
        gold = f"{a}\\sqrt[3]{{{b}}}"
        return gold, [gold, f"\\sqrt[3]{{{a ** 3 * b}}}", f"{a}{b}^{{1/3}}", f"\\sqrt[3]{{{b}}}\\cdot {a}",
                      f"{a + 1}\\sqrt[3]{{{b}}}", f"{a}\\sqrt{{{b}}}", f"\\sqrt[3]{{{a ** 3 * b + 1}}}", f"{a}\\sqrt[4]{{{b}}}"]
    if kind == "exponential":
        gold = f"{c}e^{{{a}}}" if b % 3 == 0 else f"e^{{{a}}}"
        same = gold.replace("e^{", "\\exp(").replace("}", ")") if b % 3 else f"{c}\\exp({a})"
        return gold, [gold, same, f"\\frac{{{c if b % 3 == 0 else 1}}}{{e^{{-{a}}}}}", f"e^{{{a + 1}}}", f"{a}e",
                      f"e^{{{a}}}+1", f"{c + 1}e^{{{a}}}"]
    if kind == "degrees":
        k = rng.choice((15, 30, 36, 45, 60, 72, 90, 108, 120, 135, 150, 180, 210, 270))
        gold = f"{k}^\\circ"
        return gold, [gold, str(k), f"{k}^{{\\circ}}", f"{k + 5}^\\circ", str(180 - k) if k != 90 else "45"]
    if kind == "rational-power":
        base, q = rng.choice((2, 3, 5, 6, 7)), rng.choice((2, 3, 4, 5))
        k = rng.choice([k for k in range(1, 2 * q) if math.gcd(k, q) == 1])
        gold = f"{base}^{{{k}/{q}}}"
        return gold, [gold, f"{base}^{{\\frac{{{k}}}{{{q}}}}}", f"\\sqrt[{q}]{{{base ** k}}}", f"{base}^{{{k + 1}/{q}}}",
                      f"\\sqrt[{q}]{{{base ** k + 1}}}"]
    if kind == "choice":
        letter, other = "ABCDE"[a % 5], "ABCDE"[(a + c) % 5]
        gold = f"\\text{{({letter})}}"
        return gold, [gold, f"({letter})", letter, f"\\textbf{{({letter})}}", f"({letter.lower()})", f"\\text{{{letter}}}",
                      f"\\text{{({other})}}", f"({other})"]
    if kind == "complex":
        gold = f"{a}+{c}i"
        return gold, [gold, f"{c}i+{a}", f"{a}-{c}i", f"{a + 1}+{c}i", f"{a}+{c}\\sqrt{{-1}}"]
    if kind == "logarithm":
        k = rng.randint(2, 6)
        gold = f"\\log_{{2}} {2 ** k}"
        return gold, [gold, str(k), f"\\log_2({2 ** k})", str(k + 1), f"\\frac{{\\ln {2 ** k}}}{{\\ln 2}}"]
    if kind == "trig":
        gold = rng.choice(("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}", "\\frac{\\sqrt{2}}{2}"))
        angle = {"\\frac{\\sqrt{3}}{2}": "\\frac{\\pi}{3}", "\\frac{1}{2}": "\\frac{\\pi}{6}", "\\frac{\\sqrt{2}}{2}": "\\frac{\\pi}{4}"}[gold]
        return f"\\sin {angle}", [f"\\sin\\left({angle}\\right)", gold, f"\\cos {angle}", f"\\sin {angle} + 1"]
    if kind == "inequality":
        gold = f"x > {a}"
        return gold, [gold, f"x>{a}", f"{a} < x", f"x \\geq {a}", f"x < {a}", f"x > {a + 1}"]
    if kind == "rational-function":
        gold = f"\\frac{{1}}{{x+{a}}}"
        return gold, [gold, f"(x+{a})^{{-1}}", f"\\frac{{2}}{{2x+{2 * a}}}", f"\\frac{{1}}{{x-{a}}}", f"\\frac{{1}}{{x}}+{a}"]
    if kind == "decimal-approximation":
        gold = f"\\frac{{{a}\\pi}}{{{c}}}"
        value = a * math.pi / c
        return gold, [f"{value:.6f}", f"{value:.5f}", f"{value + 0.01:.6f}", f"{value:.2f}"]
    if kind == "unit":
        unit = rng.choice(("cm", "meters", "inches", "dollars", "square units", "degrees"))
        gold = f"{a * c}"
        return gold, [f"{a * c}\\text{{ {unit}}}", f"{a * c} \\text{{{unit}}}", f"{a * c + 1}\\text{{ {unit}}}",
                      f"\\text{{{a * c} {unit}}}"]
    if kind == "plus-minus":
        gold = f"{a} \\pm \\sqrt{{{b}}}"
        return gold, [gold, f"\\{{{a} + \\sqrt{{{b}}}, {a} - \\sqrt{{{b}}}\\}}", f"{a}\\pm\\sqrt{{{b}}}", f"{a} + \\sqrt{{{b}}}",
                      f"{a + 1} \\pm \\sqrt{{{b}}}"]
    if kind == "binomial":
        n, k = rng.randint(4, 12), rng.randint(1, 3)
        gold = f"\\binom{{{n}}}{{{k}}}"
        return gold, [gold, str(math.comb(n, k)), f"\\dbinom{{{n}}}{{{k}}}", f"\\binom{{{n}}}{{{k + 1}}}", str(math.comb(n, k) + 1)]
    gold = f"\\frac{{{a * c + 1}}}{{{c}}}"  # mixed numbers
    return gold, [f"{a}\\frac{{1}}{{{c}}}", f"{a}\\frac{{2}}{{{c}}}", f"{a + 1}\\frac{{1}}{{{c}}}"]


def math_like_rows(prompts: int, group: int, rng: random.Random,
                   mix: dict[str, int] = MIX) -> list[tuple[str, str, str]]:
    """``prompts`` x ``group`` rows ``(kind, gold, pred)``; the gold is shared within a group."""
    kinds = [k for k, share in mix.items() for _ in range(share)]
    rows = []
    for _ in range(prompts):
        kind = rng.choice(kinds)
        gold, forms = answer_forms(kind, rng)
        rows.extend((kind, gold, rng.choice(forms)) for _ in range(group))
    return rows


def run_plain(rows: list[tuple[str, str, str]]) -> tuple[list[bool], dict[str, float]]:
    from math_verify import parse, verify

    c0, t0 = time.process_time(), time.perf_counter()
    # no SIGALRM timeouts: they fire on wall-clock time, so on a loaded machine they turn verdicts
    # into False (issue 14, item 1) and the reference would depend on the load
    verdicts = [bool(verify(parse(f"${g}$", parsing_timeout=None), parse(f"${p}$", parsing_timeout=None),
                            timeout_seconds=None)) for _, g, p in rows]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return verdicts, {"wall": wall, "cpu": cpu, "sent": len(rows)}


def run_remask(rows: list[tuple[str, str, str]], workers: int, fast: bool,
               warmup: list[tuple[str, str, str]]) -> tuple[list[bool], dict[str, float]]:
    verifier = MathVerifier(workers=workers, timeout_s=30, policy=Policy(fast_paths=fast))
    verifier.pool.run([Job(g, p) for _, g, p in warmup])  # start-up and parser warm-up are not measured
    pids = verifier.pool.pids
    jobs0 = verifier.pool.stats["jobs"]
    w0, c0, t0 = cpu_seconds(pids), time.process_time(), time.perf_counter()
    out = verifier.check([(g, p) for _, g, p in rows])
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0 + cpu_seconds(pids) - w0
    sent = verifier.pool.stats["jobs"] - jobs0
    assert verifier.pool.pids == pids, "a worker was replaced during the measurement"
    verifier.close()
    return [v == 1.0 for v, _ in out], {"wall": wall, "cpu": cpu, "sent": sent}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=512, help="rows per workload")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)  # math-verify logs every unparsable span
    rng = random.Random(args.seed)
    warm_rng = random.Random(args.seed + 1000)  # other golds: warms ANTLR on every kind, no cache hits
    warmup = [row for mix, n in ((MIX, 100), (NEWLY_EXACT, 30), (BEYOND, 60)) for row in math_like_rows(n, 1, warm_rng, mix)]
    run_plain(warmup)  # import and parser warm-up are not measured
    probe = MathVerifier()  # only asks which rows reach a worker; never starts its pool
    groups = max(1, args.rows // 16)
    workloads = {
        "distinct": math_like_rows(args.rows, 1, rng),
        f"GRPO {max(1, args.rows // 8)}x8": math_like_rows(max(1, args.rows // 8), 8, rng),
        "newly exact, distinct": math_like_rows(max(1, args.rows // 2), 1, rng, NEWLY_EXACT),
        "beyond the exact subset, distinct": [row for row in math_like_rows(args.rows // 2 + args.rows // 8, 1, rng, BEYOND)
                                              if not probe.decided_in_process(row[1], row[2])][: max(1, args.rows // 2)],
        f"beyond the exact subset, GRPO {groups}x8": [row for row in math_like_rows(groups, 8, rng, BEYOND)
                                                      if not probe.decided_in_process(row[1], row[2])],
    }
    table, disagreements = [], []
    for name, rows in workloads.items():
        plain, plain_stats = run_plain(rows)
        table.append((name, "plain math-verify", len(rows), plain_stats, 0))
        for label, fast in (("remask", True), ("remask, pool only", False)):
            ours, stats = run_remask(rows, args.workers, fast, warmup)
            differ = [(kind, g, p, a, b) for (kind, g, p), a, b in zip(rows, plain, ours) if a != b]
            disagreements.extend((name, label, *d) for d in differ)
            table.append((name, label, len(rows), stats, len(differ)))
    print(f"cpu: {os.cpu_count()} cores visible, load average {os.getloadavg()[0]:.1f}, python {sys.version.split()[0]}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, workers={args.workers}, seed={args.seed}")
    print("| rows | judged by | verdicts | sent to workers | wall s | CPU s (all processes) | verdicts/s/core | "
          "x plain (per core) | verdicts differing from plain |")
    print("|---|---|---|---|---|---|---|---|---|")
    base: dict[str, float] = {}
    for name, label, n, s, differ in table:
        per_core = n / max(s["cpu"], 1e-9)
        base.setdefault(name, per_core)
        print(f"| {name} | {label} | {n} | {s['sent']} | {s['wall']:.2f} | {s['cpu']:.2f} | {per_core:.0f} | "
              f"{per_core / base[name]:.1f} | {differ} |")
    for d in disagreements:
        print("disagreement:", d)


if __name__ == "__main__":
    main()
