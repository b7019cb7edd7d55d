"""Wall time of one comparison with ``--jobs 1`` and ``--jobs 2``, side by side, and whether the
numbers agree.

    OMP_NUM_THREADS=1 python benchmarks/compare_jobs.py --steps 30 --pipelines 2

The spec: the shipped ``builtin:tiny-arith`` model, 2-digit sums, ``--pipelines`` copies of d1 /
GRPO (alternating), one seed, ``--steps`` optimizer steps of 4 prompts x 4 completions each, an
evaluation on 16 test problems. Each mode runs in a fresh ``remask compare`` process; ``--jobs 1``
first, then ``--jobs 2``. Prints a markdown table (seconds of wall time, ratio, and whether every
per-step metric and evaluation is identical).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BASE = {
    "model": {"name": "tiny", "path": "builtin:tiny-arith"},
    "task": {"name": "arithmetic", "digits": 2, "train_size": 256, "test_size": 16},
    "sampler": {"name": "llada", "gen_length": 4, "block_length": 4, "steps": 4, "temperature": 1.0},
    "rewards": [{"name": "arithmetic-correct"}, {"name": "arithmetic-digits"}],
    "advantage": {"name": "group-mean"},
    "objective": {"name": "d1", "beta": 0.0},
    "train": {"prompts_per_step": 4, "group_size": 4, "learning_rate": 1.0e-4, "log_completions": 0},
}
GRPO = {"objective": {"name": "grpo", "beta": 0.0}, "advantage": {"name": "group-mean-std"}}


def _numbers(path: Path) -> list:
    runs = json.loads(path.read_text())
    return [(r["pipeline"], {k: v for k, v in r["eval"].items() if k != "seconds"},
             [{k: v for k, v in h.items() if k != "seconds" and not k.startswith(("perf/", "timing/"))}
              for h in r["train"]["history"]]) for r in runs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    ap.add_argument("--pipelines", type=int, default=2, help="pipelines (one seed each, no base evaluation)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "base.yaml").write_text(yaml.safe_dump(BASE))
        pipelines = [{"name": f"p{i}-{'d1' if i % 2 == 0 else 'grpo'}", **({} if i % 2 == 0 else {"set": GRPO})}
                     for i in range(args.pipelines)]
        rows = []
        for jobs in (1, 2):
            spec = {"base": "base.yaml", "output_dir": str(root / f"jobs-{jobs}"), "seeds": [0], "evaluate_base": False,
                    "budget": {"optimizer_steps": args.steps},
                    "eval": {"limit": 16, "samples_per_prompt": 2, "batch_size": 16}, "pipelines": pipelines}
            path = root / f"spec-{jobs}.yaml"
            path.write_text(yaml.safe_dump(spec))
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "remask", "compare", str(path), "--jobs", str(jobs)],
                                  capture_output=True, text=True)
            wall = time.perf_counter() - started
            if proc.returncode != 0:
                sys.exit(f"--jobs {jobs} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            rows.append((jobs, wall))
        same = _numbers(root / "jobs-1" / "results.json") == _numbers(root / "jobs-2" / "results.json")
    print(f"{args.pipelines} runs of {args.steps} steps; cores available: {len(os.sched_getaffinity(0))}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print("| --jobs | wall s | speed-up vs --jobs 1 | identical numbers |")
    print("|---|---|---|---|")
    for jobs, wall in rows:
        print(f"| {jobs} | {wall:.1f} | {rows[0][1] / wall:.2f}x | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
