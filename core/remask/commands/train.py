"""``remask train``, ``remask sft`` and ``remask rollouts``.

    remask train CONFIG [--resume [PATH]] [--section.field VALUE ...]
    remask sft CONFIG [--resume [PATH]] [--save-to DIR] [--section.field VALUE ...]
    remask rollouts CONFIG --out DIR [--batches N] [--section.field VALUE ...]

``remask`` with no subcommand runs ``train``; without a config it uses ``examples/quickstart.yaml``
when that file exists. Every command also runs under ``accelerate launch`` (``-m remask.cli``).

Exit codes: 0 done, 2 bad input (one line naming what and where), 130 / 143 stopped by SIGINT /
SIGTERM after saving a checkpoint (continue with ``--resume``).
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


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (it may have been replaced)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _setup_logging() -> None:
    level = os.environ.get("REMASK_LOG_LEVEL", "INFO").upper()
    logger = logging.getLogger("remask")
    if not logger.handlers:
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("remask: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="pipeline YAML file (default: examples/quickstart.yaml)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="PATH",
                   help="continue from the newest checkpoint of train.output_dir, or from PATH")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in a non-empty train.output_dir, deleting the earlier run's checkpoints "
                        "and logs (same as --train.overwrite_output_dir true)")


def _overrides(args: argparse.Namespace, extra: list[str]) -> dict:
    from ..config import parse_override_args

    overrides = parse_override_args(extra)
    if args.overwrite:
        overrides["train.overwrite_output_dir"] = True
    return overrides


def _plugins_must_be_healthy() -> None:
    """The rule of every command that runs a pipeline (train, sft, rollouts, eval, compare, diagnose):
    refuse to start while a plugin is broken, naming it and how to disable it."""
    from ..registry import get_registry

    get_registry().raise_problems()


def _finished(result: dict, what: str) -> int:
    """The last line of a training command (main process only) and its exit code: 0 when it ran to
    its end, 130 (SIGINT) or 143 (SIGTERM) when a signal stopped it after saving a checkpoint."""
    if result.get("interrupted"):
        code = {"SIGINT": 130, "SIGTERM": 143}.get(str(result.get("stop_signal")), 130)
        if result.get("is_main", True):
            print(f"interrupted by {result.get('stop_signal')} at step {result['global_step']}: "
                  f"checkpoint-{result['global_step']} saved in {result['output_dir']}; continue with --resume",
                  flush=True)
        return code
    if result.get("is_main", True):
        out = result["output_dir"]
        print(f"done: {result['global_step']} {what} in {out}: checkpoint-{result['global_step']}/, metrics.jsonl, "
              f"manifest.json; curves: tensorboard --logdir {out}", flush=True)
    return 0


@command("train", "RL post-training of a diffusion LM from a pipeline config", _train_args)
def _train(args: argparse.Namespace, extra: list[str]) -> int:
    from ..config import load_config
    from ..engine import train

    _setup_logging()
    _fix_resume_order(args)
    _plugins_must_be_healthy()
    cfg = load_config(_resolve_config(args.config), _overrides(args, extra))
    return _finished(train(cfg, resume=args.resume), "steps")


def _sft_args(p: argparse.ArgumentParser) -> None:
    _train_args(p)
    p.add_argument("--save-to", default=None, metavar="DIR",
                   help="write the final model with save_pretrained to DIR (same as --train.save_final_model DIR)")


@command("sft", "masked-diffusion supervised fine-tuning on the task's reference completions", _sft_args)
def _sft(args: argparse.Namespace, extra: list[str]) -> int:
    from ..engine import load_sft_config, sft

    _setup_logging()
    _fix_resume_order(args)
    _plugins_must_be_healthy()
    overrides = _overrides(args, extra)
    if args.save_to:
        overrides["train.save_final_model"] = args.save_to
    cfg = load_sft_config(_resolve_config(args.config), overrides)
    return _finished(sft(cfg, resume=args.resume), "SFT steps")


def _rollouts_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline YAML file")
    p.add_argument("--out", required=True, metavar="DIR", help="directory of the rollout store")
    p.add_argument("--batches", type=int, default=None, metavar="N",
                   help="batches to sample (default: the rollouts one training run would sample)")


@command("rollouts", "sample and score rollouts into a store for offline training", _rollouts_args)
def _rollouts(args: argparse.Namespace, extra: list[str]) -> int:
    from ..engine.offline import write_rollouts

    _setup_logging()
    _plugins_must_be_healthy()
    cfg = load_cli_config(args.config, extra)
    n = write_rollouts(cfg, args.out, batches=args.batches)
    print(f"wrote {n} rollout batches to {args.out}", flush=True)
    return 0
