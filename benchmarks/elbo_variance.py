"""Variance of the ELBO log-ratio views of remask.likelihood at equal forward passes, on the tiny model.

    OMP_NUM_THREADS=1 python benchmarks/elbo_variance.py                  # examples/tiny-arith-espo.yaml
    OMP_NUM_THREADS=1 python benchmarks/elbo_variance.py --prompts 32 --draws 128

Like ``remask diagnose``: the reference is the config's model (builtin:tiny-arith), the policy a copy
with N(0, 0.02²) noise on every weight, trajectories are sampled from the policy, and every variant of
the registered ``elbo`` estimator is drawn ``--draws`` times per trajectory with the same seed. One
draw of every variant below costs 2 forward passes per model, so the standard deviations are
compared at equal cost. "bias" is against the exact trajectory log-ratio (the ELBO is a different
quantity, so a bias is expected; it is printed for scale). Prints a markdown table
(docs/benchmarks.md, section "ELBO views").
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from remask_grpo.estimators import ElboLogRatio

from remask.config import load_config
from remask.engine.components import build_pipeline, make_reference
from remask.engine.data import build_prompt_batch
from remask.harness.diagnose import diagnose_estimators

VARIANTS = [
    ("random-t, 2 draws", dict(masking="random-t", n_mc=2)),
    ("random-t, antithetic pair", dict(masking="random-t", n_mc=2, antithetic=True)),
    ("random-t + complement", dict(masking="random-t", n_mc=1, complementary=True)),
    ("fixed-count, 2 draws", dict(masking="fixed-count", n_mc=2)),
    ("fixed-count + complement", dict(masking="fixed-count", n_mc=1, complementary=True)),
    ("fixed-count, stratified + complement (ESPO)", dict(masking="fixed-count", n_mc=1, complementary=True,
                                                        stratified=True)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="examples/tiny-arith-espo.yaml")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--draws", type=int, default=64)
    ap.add_argument("--perturb", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    config = load_config(args.config)
    pipeline = build_pipeline(config)
    try:
        ref = make_reference(pipeline.model, lora=False)
        policy = pipeline.model
        g = torch.Generator().manual_seed(args.seed)
        with torch.no_grad():
            for p in policy.module.parameters():
                p.add_(torch.randn(p.shape, generator=g) * args.perturb)
        policy.module.eval()
        examples = list(pipeline.task.examples("test"))[: args.prompts]
        prompts = build_prompt_batch(policy, examples, group_size=1)
        with torch.no_grad():
            rollout = pipeline.sampler.sample(policy, prompts, torch.Generator().manual_seed(args.seed))
        estimators = [(name, ElboLogRatio(ElboLogRatio.Config(**kw))) for name, kw in VARIANTS]
        start = time.perf_counter()
        results, exact = diagnose_estimators(estimators, policy, ref, rollout, draws=args.draws, seed=args.seed)
        seconds = time.perf_counter() - start
    finally:
        pipeline.close()
    base = results[0].std
    print(f"{rollout.batch_size} trajectories, L = {rollout.gen_length}, {args.draws} draws each; "
          f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {seconds:.0f} s")
    print()
    print("| ELBO view | fwd/draw (both models) | std of one draw | std / random-t std | mean bias vs exact |")
    print("|---|---|---|---|---|")
    for name, r in zip([n for n, _ in VARIANTS], results):
        print(f"| {name} | {r.forward_passes_per_draw:.0f} | {r.std:.4f} | {r.std / base:.2f} | {r.bias:+.4f} |")
    print(f"\nexact trajectory log-ratio, mean over rows: {float(exact.mean()):+.4f}")


if __name__ == "__main__":
    main()
