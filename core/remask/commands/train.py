"""``remask train``, ``remask sft`` and ``remask rollouts``.

    remask train CONFIG [--resume [PATH]] [--section.field VALUE ...]
    remask sft CONFIG [--resume [PATH]] [--save-to DIR] [--section.field VALUE ...]
    remask rollouts CONFIG --out DIR [--batches N] [--section.field VALUE ...]

``remask`` with no subcommand runs ``train``; without a config it uses ``examples/quickstart.yaml``
when that file exists. Every command also runs under ``accelerate launch`` (``-m remask.cli``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..cli import command, load_cli_config
from ..errors import ConfigError

DEFAULT_CONFIG = Path("examples") / "quickstart.yaml"


def _fix_resume_order(args: argparse.Namespace) -> None:
    """``remask train --resume CONFIG.yaml``: argparse hands the config to --resume; give it back."""
    resume = getattr(args, "resume", None)
    if args.config is None and resume and resume != "latest" and resume.endswith((".yaml", ".yml")):
        args.config, args.resume = resume, "latest"


def _resolve_config(path: str | None) -> str:
    if path:
        return path
    if DEFAULT_CONFIG.is_file():
        return str(DEFAULT_CONFIG)
    raise ConfigError([f"no config given and {DEFAULT_CONFIG} does not exist here; run `remask train CONFIG`"])


def _setup_logging() -> None:
    level = os.environ.get("REMASK_LOG_LEVEL", "INFO").upper()
    logger = logging.getLogger("remask")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("remask: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="pipeline YAML file (default: examples/quickstart.yaml)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="PATH",
                   help="continue from the newest checkpoint of train.output_dir, or from PATH")


@command("train", "RL post-training of a diffusion LM from a pipeline config", _train_args)
def _train(args: argparse.Namespace, extra: list[str]) -> int:
    from ..engine import train

    _setup_logging()
    _fix_resume_order(args)
    cfg = load_cli_config(_resolve_config(args.config), extra)
    result = train(cfg, resume=args.resume)
    if not result.get("summary"):
        print(f"done: {result['global_step']} steps in {result['output_dir']}", flush=True)
    return 0


def _sft_args(p: argparse.ArgumentParser) -> None:
    _train_args(p)
    p.add_argument("--save-to", default=None, metavar="DIR",
                   help="write the final model with save_pretrained to DIR (same as --train.save_final_model DIR)")


@command("sft", "masked-diffusion supervised fine-tuning on the task's reference completions", _sft_args)
def _sft(args: argparse.Namespace, extra: list[str]) -> int:
    from ..config import parse_override_args
    from ..engine import load_sft_config, sft

    _setup_logging()
    _fix_resume_order(args)
    overrides = parse_override_args(extra)
    if args.save_to:
        overrides["train.save_final_model"] = args.save_to
    cfg = load_sft_config(_resolve_config(args.config), overrides)
    result = sft(cfg, resume=args.resume)
    if not result.get("summary"):
        print(f"done: {result['global_step']} SFT steps in {result['output_dir']}", flush=True)
    return 0


def _rollouts_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline YAML file")
    p.add_argument("--out", required=True, metavar="DIR", help="directory of the rollout store")
    p.add_argument("--batches", type=int, default=None, metavar="N",
                   help="batches to sample (default: the rollouts one training run would sample)")


@command("rollouts", "sample and score rollouts into a store for offline training", _rollouts_args)
def _rollouts(args: argparse.Namespace, extra: list[str]) -> int:
    from ..engine.offline import write_rollouts

    _setup_logging()
    cfg = load_cli_config(args.config, extra)
    n = write_rollouts(cfg, args.out, batches=args.batches)
    print(f"wrote {n} rollout batches to {args.out}", flush=True)
    return 0
