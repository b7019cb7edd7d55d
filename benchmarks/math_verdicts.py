"""Math verdicts per second per core through the math-verify worker pool.

    python benchmarks/math_verdicts.py                 # 1 and 2 workers, default sizes
    python benchmarks/math_verdicts.py --workers 4 --pairs 2000

Workloads:

* ``pool: distinct LaTeX pairs``: every pair has its own gold in a form math-verify must parse
  (mixed numbers, roots, powers, pi): no gold-parse cache hits, no deduplication: the worst case;
* ``pool: GRPO batch``: 64 prompts x G=8 completions with root-expression golds shared within a
  group, every row sent to the workers (no fast path, no deduplication);
* ``end-to-end: GRPO batch, MATH-like mix``: the same batch shape through ``MathVerifier.check``
  with 70% integer/fraction golds (as in MATH-500): exact fast path and deduplication first, the
  rest through the pool;
* ``end-to-end: GSM8K numeric answers``: plain-number answers, decided in-process (no worker).

"per core" divides by the CPU seconds actually used by the workers (``utime+stime`` from /proc) and
the calling process, so the number does not depend on how busy a shared machine was; ``wall/s`` is end-to-end throughput.
Start-up (interpreter + math-verify import in the workers) is reported separately.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "plugins"))

from remask_math.pool import Job, VerifierPool  # noqa: E402
from remask_math.verifier import MathVerifier  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


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


def distinct_latex(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """Every pair its own gold; forms math-verify must parse (roots, powers, mixed numbers, sets)."""
    out = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(2, 99)
        kind = i % 4
        if kind == 0:
            out.append((f"\\frac{{{a}}}{{{b}}}", f"{a // b}\\frac{{{a % b}}}{{{b}}}" if a > b else f"\\frac{{{2 * a}}}{{{2 * b}}}"))
        elif kind == 1:
            out.append((f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}"))
        elif kind == 2:
            out.append((f"{a}^{{{b % 7 + 2}}}", f"{a}^{{{b % 7 + 2 + i % 2}}}"))
        else:
            out.append((f"\\frac{{\\pi}}{{{b}}}", f"\\frac{{{a}\\pi}}{{{a * b}}}"))
    return out


def grpo_batch(prompts: int, group: int, rng: random.Random, *, simple_share: float = 0.0) -> list[tuple[str, str]]:
    """``prompts`` x ``group`` rows, gold shared within a group, answers a mix of right and wrong forms.

    With ``simple_share`` = 0 every gold is a root expression (all rows need math-verify); otherwise
    that share of golds are integers/fractions, as in MATH-500 where most answers are numbers.
    """
    out = []
    for _ in range(prompts):
        a, b = rng.randint(1, 50), rng.randint(2, 50)
        if rng.random() < simple_share:
            gold = str(a * b) if rng.random() < 0.7 else f"\\frac{{{a}}}{{{b}}}"
            forms = [gold, f"{a * b + 1}", f"\\dfrac{{{a}}}{{{b}}}", f"{a}/{b}", f"{a * b}.0", f"x={gold}"]
        else:
            gold = f"\\frac{{{a}\\sqrt{{{b}}}}}{{2}}"
            forms = [gold, f"\\frac{{{a}}}{{2}}\\sqrt{{{b}}}", f"{a}\\sqrt{{{b}}}/2", f"\\frac{{{a + 1}\\sqrt{{{b}}}}}{{2}}",
                     f"\\sqrt{{{a * a * b}}}/2", f"\\frac{{{a}\\sqrt{{{b + 1}}}}}{{2}}", f"x = {gold}", f"{a / 2}\\sqrt{{{b}}}"]
        out.extend((gold, rng.choice(forms)) for _ in range(group))
    return out


def run_pool(pairs: list[tuple[str, str]], workers: int, through_verifier: bool) -> dict[str, float]:
    """Warm pool; ``through_verifier`` adds our fast paths and deduplication in front of it."""
    pool = VerifierPool(workers=workers, timeout_s=10)
    t0 = time.perf_counter()
    pool.run([Job("1", "1")] * workers)  # start-up: spawn, import, first call
    startup = time.perf_counter() - t0
    verifier = MathVerifier(workers=workers)
    verifier._pool = pool  # measure through the same warm pool
    cpu0, own0 = cpu_seconds(pool.pids), time.process_time()
    jobs0 = pool.stats["jobs"]
    t0 = time.perf_counter()
    if through_verifier:
        results = verifier.check(pairs)
    else:
        results = pool.run([Job(g, p) for g, p in pairs])
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(pool.pids) - cpu0 + (time.process_time() - own0)
    in_pool = pool.stats["jobs"] - jobs0
    pool.close()
    assert len(results) == len(pairs)
    return {"wall_rate": len(pairs) / wall, "per_core": len(pairs) / max(cpu, 1e-9), "startup": startup,
            "wall": wall, "cpu": cpu, "in_pool": in_pool}


def run_fast_path(n: int, rng: random.Random) -> dict[str, float]:
    verifier = MathVerifier(workers=1)
    pairs = [(str(v), rng.choice([f"{v}", f"{v}.00", f"${v:,}", f"{v} dollars", f"{v + 1}"]))
             for v in (rng.randint(1, 100000) for _ in range(n))]
    c0, t0 = time.process_time(), time.perf_counter()
    verifier.check(pairs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert verifier._pool is None  # never left the process
    return {"wall_rate": n / wall, "per_core": n / max(cpu, 1e-9), "startup": 0.0, "wall": wall, "cpu": cpu,
            "in_pool": 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--pairs", type=int, default=1000, help="pairs in the distinct-latex workload")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    rows = []
    for w in args.workers:
        pairs = distinct_latex(args.pairs, rng)
        rows.append(("pool: distinct LaTeX pairs", w, len(pairs), run_pool(pairs, w, through_verifier=False)))
        pairs = grpo_batch(64, 8, rng)
        rows.append(("pool: GRPO batch 64x8, root-expression golds", w, len(pairs), run_pool(pairs, w, through_verifier=False)))
        pairs = grpo_batch(64, 8, rng, simple_share=0.7)
        rows.append(("end-to-end: GRPO batch 64x8, MATH-like mix", w, len(pairs), run_pool(pairs, w, through_verifier=True)))
    rows.append(("end-to-end: GSM8K numeric answers", 0, 5000, run_fast_path(5000, rng)))
    print(f"cpu: {os.cpu_count()} cores visible, load average {os.getloadavg()[0]:.1f}, python {sys.version.split()[0]}")
    print("| workload | workers | verdicts | sent to workers | wall s | wall verdicts/s | CPU s | verdicts/s/core | start-up s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, w, n, r in rows:
        print(f"| {name} | {w or '-'} | {n} | {r['in_pool']} | {r['wall']:.2f} | {r['wall_rate']:.0f} | {r['cpu']:.2f} | "
              f"{r['per_core']:.0f} | {r['startup']:.2f} |")


if __name__ == "__main__":
    main()
