"""``remask estimate CONFIG [--accelerate-config F] [--gpu-memory 80GB] [--prompt-length N]``

Predicts the peak memory per process of each phase of a training step (rollout, prepare, loss) from
the model's ``config.json`` and the objective's forward passes per loss call on the meta device — no weights are loaded or downloaded — says whether
the largest fits in ``--gpu-memory``, and names the largest ``train.micro_batch_size`` that does.
How the prediction is made and how close it came to measured peaks: :mod:`remask.planner` and
``docs/training.md`` (Memory).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..cli import command, load_cli_config
from ..errors import ConfigError


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline YAML file")
    p.add_argument("--accelerate-config", default=None,
                   help="the accelerate YAML the run will be launched with (processes, FSDP / DeepSpeed ZeRO stage)")
    p.add_argument("--gpu-memory", default="80GB", help="memory of one device, e.g. 80GB, 24GiB (default 80GB)")
    p.add_argument("--prompt-length", type=int, default=256,
                   help="prompt tokens per row after the chat template (default 256; the task decides the real one)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


@command("estimate", "predict peak memory per process of each training phase (no weights loaded)", _args)
def _estimate(args: argparse.Namespace, extra: list[str]) -> int:
    from ..planner import describe_passes, format_bytes, parse_bytes, plan_from_config, sharding_from_accelerate

    try:
        budget = parse_bytes(args.gpu_memory)
    except ValueError as exc:
        raise ConfigError([f"--gpu-memory: {exc}"]) from None
    if args.prompt_length < 1:
        raise ConfigError([f"--prompt-length: must be at least 1, got {args.prompt_length}"])
    config = load_cli_config(args.config, extra)
    sharding = sharding_from_accelerate(args.accelerate_config)
    if config.train.prompts_per_step % sharding.processes:
        raise ConfigError([f"{args.config}: train.prompts_per_step {config.train.prompts_per_step} is not divisible "
                           f"by the {sharding.processes} processes of {args.accelerate_config}"])
    plan = plan_from_config(config, sharding=sharding, prompt_length=args.prompt_length)
    largest = plan.largest_micro_batch(budget)
    peak = plan.peak
    if args.json:
        print(json.dumps({
            "config": args.config, "budget": budget, "processes": sharding.processes, "sharding": sharding.kind,
            "parameters": plan.params, "trainable": plan.trainable, "objective": plan.inputs.objective,
            "loss_passes": [list(plan.inputs.pass_shape(p)) for p in plan.inputs.loss_passes],
            "phases": {k: {"total": v.total, **v.parts} for k, v in plan.phases.items()},
            "fits": peak.total <= budget, "largest_micro_batch": largest,
        }, indent=2))
        return 0
    i = plan.inputs
    t = config.train
    print(f"{args.config}: {config.model.name} {config.model.params.path}, {plan.params / 1e9:.2f}B parameters "
          f"({plan.trainable / 1e6:.1f}M trainable), {i.dtype}"
          f"{', 4-bit NF4 base' if i.load_in_4bit else ''}{f', LoRA r={i.lora_r}' if i.lora_r else ''}"
          f"{', gradient checkpointing' if i.gradient_checkpointing else ''}")
    print(f"per process: {sharding.processes} process(es), sharding {sharding.kind}; rollout {i.rollout_rows} rows, "
          f"micro-batch {i.micro_batch} rows, S = {i.prompt_length} prompt + {i.gen_length} generated, "
          f"KV cache {i.kv_cache}")
    print(f"objective {i.objective}: {describe_passes(i)} with gradients per loss call; reference "
          f"{'a frozen copy of the weights' if i.reference_copy else 'none, or the disabled adapter'}")
    print(f"{'phase':<9} {'peak':>11}   made of")
    for phase in plan.phases.values():
        parts = ", ".join(f"{k} {format_bytes(v)}" for k, v in phase.parts.items() if v)
        print(f"{phase.name:<9} {format_bytes(phase.total):>11}   {parts}")
    verdict = "fits" if peak.total <= budget else "does NOT fit"
    print(f"peak {format_bytes(peak.total)} ({peak.name}) {verdict} in {format_bytes(budget)}; "
          f"largest micro-batch that fits the loss phase: {largest} (train.micro_batch_size is "
          f"{t.micro_batch_size or 'all rows'})")
    if plan.phases["rollout"].total > budget:
        print("the rollout itself does not fit: fewer prompts per step per process, a shorter gen_length, "
              "or more processes", file=sys.stderr)
    return 0
