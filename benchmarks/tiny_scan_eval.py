"""Greedy exact match and per-digit credit of `digit-scan` checkpoints (the long-completion model).

    OMP_NUM_THREADS=1 python benchmarks/tiny_scan_eval.py builtin:tiny-scan --split test --limit 1000
    OMP_NUM_THREADS=1 python benchmarks/tiny_scan_eval.py runs/tiny-scan-sft/checkpoint-* --split validation
    OMP_NUM_THREADS=1 python benchmarks/tiny_scan_eval.py builtin:tiny-step --rule step --split test --limit 1000

Decodes with the sampler of examples/tiny-scan-sft.yaml (llada, gen_length 64, block_length 16, 64
steps, temperature 0): exact match is the task's own parser (`digit-scan` `is_correct`), "digits" is
the `digit-scan-digits` partial credit, "lines" the fraction of entirely right lines. Prints one
markdown row per checkpoint, in the order given.
"""

from __future__ import annotations

import argparse
import platform
import time
import typing
from pathlib import Path

import torch
from remask_math.digit_scan import Rule

ROOT = Path(__file__).resolve().parents[1]


def evaluate_checkpoint(path: str, split: str, limit: int, rule: str, batch: int) -> dict[str, float]:
    from remask.config import load_config
    from remask.engine.components import build_pipeline
    from remask.engine.evaluation import build_eval_sampler, evaluate
    from remask_math.digit_scan import scan_credit

    cfg = load_config(ROOT / "examples" / "tiny-scan-grpo.yaml", {
        "model.path": path, "task.rule": rule, "eval.split": split, "eval.limit": limit, "eval.batch_size": batch,
        "sampler.temperature": 0.0})
    pipe = build_pipeline(cfg)
    try:
        started = time.perf_counter()
        result = evaluate(pipe.model, pipe.task, build_eval_sampler(cfg.sampler, cfg.eval), cfg.eval)
        seconds = time.perf_counter() - started
        examples = pipe.task.examples(split)
    finally:
        pipe.close()
    n = len(result.rows)
    digits = sum(scan_credit(r["completion"], examples[r["index"]].reference["answer"])[0] for r in result.rows)
    lines = sum(scan_credit(r["completion"], examples[r["index"]].reference["answer"], "lines")[0]
                for r in result.rows)
    return {"exact": result.accuracy, "digits": digits / n, "lines": lines / n, "n": n, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="builtin:tiny-scan, builtin:tiny-step or save_pretrained / checkpoint directories")
    ap.add_argument("--split", default="test", choices=["train", "validation", "test"])
    ap.add_argument("--limit", type=int, default=1000, help="first N rows of the split")
    ap.add_argument("--rule", default="count", choices=list(typing.get_args(Rule)),
                    help="the digit-scan rule the checkpoints were trained on (builtin:tiny-step: step)")
    ap.add_argument("--batch", type=int, default=250, help="prompts per sampler call")
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); split {args.split}, first {args.limit} rows, rule {args.rule}")
    print("| checkpoint | rows | greedy exact match | digits right | lines right | eval seconds |")
    print("|---|---|---|---|---|---|")
    for path in args.checkpoints:
        r = evaluate_checkpoint(path, args.split, args.limit, args.rule, args.batch)
        print(f"| {path} | {r['n']} | {100 * r['exact']:.1f}% | {100 * r['digits']:.1f}% | {100 * r['lines']:.1f}% "
              f"| {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
