"""``remask eval``, ``remask compare`` and ``remask diagnose``: the shared harness.

    remask eval CONFIG [--checkpoint PATH] [--out DIR] [--eval.limit 200 ...]
    remask compare SPEC.yaml [--out DIR] [--resume] [--jobs N] [--report-only]
    remask diagnose CONFIG [--checkpoint PATH] [--prompts 4] [--draws 64] [--perturb 0.02]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from ..cli import command, load_cli_config
from ..errors import RemaskError

__all__ = ["load_policy"]


def load_policy(pipeline: Any, config: Any, checkpoint: str | None) -> None:
    """Load trained weights (a ``checkpoint-N`` directory or a ``save_pretrained`` directory) into
    the pipeline's model, wrapping it in the config's LoRA adapter first when the checkpoint holds one."""
    if not checkpoint:
        return
    from ..engine import checkpoint as ckpt
    from ..engine.components import apply_lora

    path = Path(checkpoint)
    if not path.is_dir():
        raise RemaskError(f"--checkpoint {checkpoint}: no such directory")
    if (path / "adapter_model.safetensors").is_file() and not pipeline.model.has_adapter:
        if config.train.lora is None:
            raise RemaskError(f"--checkpoint {checkpoint}: holds a LoRA adapter but the config has no train.lora section")
        apply_lora(pipeline.model, config.train.lora)
    ckpt.load_model_weights(pipeline.model, path)


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline YAML (its model, task, sampler, rewards and eval sections are used)")
    p.add_argument("--checkpoint", help="trained weights: a checkpoint-N directory or a save_pretrained directory")
    p.add_argument("--out", help="output directory (default: <train.output_dir>/eval[-<checkpoint name>])")


@command("eval", "evaluate a base or trained model with one fixed protocol", _eval_args)
def _eval(args: argparse.Namespace, extra: list[str]) -> int:
    from ..engine.components import build_pipeline
    from ..engine.reporting import write_manifest
    from ..harness.evaluate import eval_markdown, evaluate_protocol, write_eval_outputs
    from ..registry import get_registry

    config = load_cli_config(args.config, extra)
    get_registry().raise_problems()
    out = Path(args.out) if args.out else Path(config.train.output_dir) / (
        f"eval-{Path(args.checkpoint).name}" if args.checkpoint else "eval-base")
    pipeline = build_pipeline(config)
    try:
        load_policy(pipeline, config, args.checkpoint)
        started = time.perf_counter()
        reports = evaluate_protocol(pipeline, config)
    finally:
        pipeline.close()
    manifest = write_manifest(out, config=config.dump(), command="eval",
                              extra={"checkpoint": args.checkpoint, "seconds": time.perf_counter() - started})
    title = f"{args.config}" + (f" @ {args.checkpoint}" if args.checkpoint else " (base model)")
    paths = write_eval_outputs(out, reports, title=title, manifest=json.loads(Path(manifest).read_text()))
    print(eval_markdown(reports, title), end="")
    print(f"\nwrote {paths['json']}, {paths['markdown']}, {paths['completions']} and {manifest}")
    return 0


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="comparison spec YAML (see docs/harness.md)")
    p.add_argument("--out", help="output directory (default: the spec's output_dir)")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished runs and resume interrupted ones from their checkpoint (refused if the spec "
                        "or the code changed)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs at once, each in its own process with cores/N torch threads (default 1: one at a time, "
                        "in this process)")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild report.md and the plots from results.json in the output directory, without training")


@command("compare", "train and evaluate several pipelines under one protocol and budget", _compare_args)
def _compare(args: argparse.Namespace, extra: list[str]) -> int:
    from ..harness.compare import run_compare
    from ..registry import get_registry

    if extra:
        raise RemaskError(f"compare takes no config overrides (got {' '.join(extra)}); edit the spec instead")
    get_registry().raise_problems()
    report = run_compare(args.spec, output_dir=args.out, resume=args.resume, jobs=args.jobs,
                         report_only=args.report_only)
    if int(os.environ.get("RANK", "0")) != 0:  # accelerate launch: the main process reports
        return 0
    print(report.read_text())
    print(f"wrote {report} (plots, results.json and manifest.json beside it)")
    return 0


def _diagnose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline YAML: model (reference), task and sampler")
    p.add_argument("--checkpoint", help="trained policy weights (default: the reference with --perturb noise)")
    p.add_argument("--prompts", type=int, default=4, help="test prompts to sample trajectories for")
    p.add_argument("--draws", type=int, default=64, help="draws of every estimator per trajectory")
    p.add_argument("--perturb", type=float, default=0.02,
                   help="without --checkpoint: std of Gaussian noise added to a copy of the weights as the policy")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and the estimators")
    p.add_argument("--json", action="store_true", help="print JSON")


@command("diagnose", "bias and variance of every likelihood estimator vs the exact trajectory log-ratio", _diagnose_args)
def _diagnose(args: argparse.Namespace, extra: list[str]) -> int:
    import torch

    from ..engine.components import build_pipeline, make_reference
    from ..engine.data import build_prompt_batch
    from ..harness.diagnose import diagnose_estimators
    from ..registry import get_registry

    config = load_cli_config(args.config, extra)
    reg = get_registry()
    reg.raise_problems()
    estimators = [(c.name, c.cls(c.cls.Config())) for c in reg.components("likelihood")]
    if not estimators:
        raise RemaskError("no likelihood estimators are registered (see `remask plugins`)")
    pipeline = build_pipeline(config)
    try:
        ref = make_reference(pipeline.model, lora=False)  # a frozen copy of the base, before any change
        load_policy(pipeline, config, args.checkpoint)
        policy = pipeline.model
        if not args.checkpoint:
            g = torch.Generator().manual_seed(args.seed)
            with torch.no_grad():
                for p in policy.module.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * args.perturb)
        policy.module.eval()
        examples = list(pipeline.task.examples(config.eval.split))[: args.prompts]
        prompts = build_prompt_batch(policy, examples, group_size=1)
        with torch.no_grad():
            rollout = pipeline.sampler.sample(policy, prompts, torch.Generator().manual_seed(args.seed))
        results, exact = diagnose_estimators(estimators, policy, ref, rollout, draws=args.draws, seed=args.seed)
    finally:
        pipeline.close()
    if args.json:
        from ..harness.evaluate import strict_json

        print(strict_json({"exact": exact.tolist(), "estimators": [r.as_dict() for r in results]}, indent=2))
        return 0
    print(f"{len(examples)} trajectories of {rollout.num_steps} steps; exact trajectory log-ratio per row: "
          + ", ".join(f"{v:.3f}" for v in exact.tolist()))
    head = (f"{'estimator':22} {'scale':10} {'mean bias':>9} {'mean|z|':>8} {'|z|>2':>6} {'|z|>3':>6} {'std':>9} "
            f"{'RMSE':>9} {'fwd/draw':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r.name:22} {r.scale:10} {r.bias:9.4f} {r.abs_bias_se:8.2f} {r.rows_over_2:6d} {r.rows_over_3:6d} "
              f"{r.std:9.4f} {r.rmse:9.4f} {r.forward_passes_per_draw:9.1f}")
    print(f"z = per-row bias / standard error of the row's mean over {args.draws} draws; {rollout.batch_size} rows. "
          "Unbiased: mean|z| ≈ 0.80, |z|>2 in ~5% of rows, |z|>3 in ~0.3% (docs/harness.md).")
    return 0
