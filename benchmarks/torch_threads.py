"""Training-step time of the quickstart pipeline at several torch thread counts, side by side.

    python benchmarks/torch_threads.py                       # threads 1 and the engine default, 2 rounds
    python benchmarks/torch_threads.py --threads 1 2 4 --steps 8 --rounds 3

Each configuration runs ``--steps`` optimizer steps of ``examples/quickstart.yaml`` (evaluation
off, no TensorBoard) in this process with ``train.torch_threads`` set, and the configurations
alternate round by round so that a change in the machine's load hits all of them alike. The
table gives the median seconds per step and the ratio to the first configuration. The engine's
default (``train.torch_threads: null``) is the cores this process may use divided by the local
processes, unless ``OMP_NUM_THREADS`` is set; on a machine shared with other jobs, fewer threads
than that can be faster (docs/training.md, "CPU threads").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    os.environ.pop("OMP_NUM_THREADS", None)  # measure the engine's own default, not an inherited one
    from remask.config import load_config
    from remask.engine import train
    from remask.environment import available_cores, default_torch_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "quickstart.yaml"))
    parser.add_argument("--threads", type=int, nargs="*", default=None,
                        help="thread counts to compare (default: 1 and the engine default)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs per configuration, alternating")
    args = parser.parse_args()
    default, why = default_torch_threads()
    threads = args.threads or sorted({1, default})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {available_cores()} cores available, load average {load:.1f} at start; "
          f"engine default {default} thread(s) ({why})", flush=True)
    seconds: dict[int, list[float]] = {n: [] for n in threads}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for n in threads:
                cfg = load_config(args.config, {
                    "train.max_steps": args.steps, "train.torch_threads": n, "train.report_to": [],
                    "train.progress": False, "train.log_completions": 0, "train.output_dir": f"{tmp}/t{n}-r{r}",
                    "eval.before_training": False, "eval.after_training": False, "eval.every_steps": 0})
                t0 = time.perf_counter()
                train(cfg)
                seconds[n].append((time.perf_counter() - t0) / args.steps)
                print(f"  round {r + 1}: {n} thread(s) {seconds[n][-1]:.3f} s/step", flush=True)
    base = statistics.median(seconds[threads[0]])
    print(f"\n| torch threads | s/step (median of {args.rounds}) | vs {threads[0]} thread(s) |")
    print("|---|---|---|")
    for n in threads:
        med = statistics.median(seconds[n])
        print(f"| {n}{' (default)' if n == default else ''} | {med:.3f} | {med / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
