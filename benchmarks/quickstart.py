"""The quickstart's promise, measured: greedy accuracy lift and wall time over several seeds.

    python benchmarks/quickstart.py                      # seeds 0 1 2, examples/quickstart.yaml
    python benchmarks/quickstart.py --seeds 0 1 2 3 --config examples/quickstart.yaml

Each seed is one `remask train` run in a fresh process, exactly as a user runs it (model loading,
evaluation before and after, TensorBoard logging and the final checkpoint included in the wall
time). Prints a markdown table; targets: lift >= 25 points and wall time <= 5 minutes, every seed.
Also prints the torch thread count each run reported and the machine's 1-minute load average before
and after each seed: on a shared machine the wall times are only meaningful beside the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_seed(config: Path, seed: int, out: Path) -> dict[str, object]:
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "remask", "train", str(config), "--train.seed", str(seed),
         "--train.output_dir", str(out), "--train.progress", "false"],
        capture_output=True, text=True, cwd=ROOT,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed}: remask train failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    evals = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "eval/accuracy" in row:
            evals[int(row["step"])] = float(row["eval/accuracy"])
    steps = sorted(evals)
    threads = next((line.split(":", 1)[1].strip() for line in proc.stderr.splitlines()
                    if "torch threads per process" in line), "?")
    return {"seed": seed, "before": evals[steps[0]], "after": evals[steps[-1]], "wall": wall,
            "threads": threads, "load": f"{load_before:.1f} / {os.getloadavg()[0]:.1f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "quickstart.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="remask-quickstart-bench-") as tmp:
        for seed in args.seeds:
            r = run_seed(args.config, seed, Path(tmp) / f"seed-{seed}")
            rows.append(r)
            print(f"seed {seed}: {100 * r['before']:.1f}% -> {100 * r['after']:.1f}% in {r['wall']:.0f}s", flush=True)
    import torch

    print(f"\n{args.config.name}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}\n")
    print("| seed | greedy acc. before | after | lift (points) | wall time | lift >= 25 | time <= 5 min "
          "| torch threads | load avg before / after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lift = 100 * (r["after"] - r["before"])
        print(f"| {r['seed']} | {100 * r['before']:.1f}% | {100 * r['after']:.1f}% | {lift:+.1f} | "
              f"{int(r['wall'] // 60)}m{int(r['wall'] % 60):02d}s | {'yes' if lift >= 25 else 'NO'} | "
              f"{'yes' if r['wall'] <= 300 else 'NO'} | {r['threads']} | {r['load']} |")


if __name__ == "__main__":
    main()
