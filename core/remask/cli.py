"""The ``remask`` command line.

    remask plugins [--json]            every registered component, its distribution and version
    remask validate CONFIG [--a.b v]   check a pipeline config (exit 0, or 2 with one line per problem)
    remask env                         versions and device, to paste into bug reports

User mistakes print one line per problem on stderr and exit with code 2; no traceback. Set
``REMASK_DEBUG=1`` to see tracebacks anyway.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence

from .environment import env_info, namespace_shadowing
from .errors import ConfigError, RemaskError

__all__ = ["main", "COMMANDS", "env_info"]

#: subcommand name -> (help, add_arguments, run). Later modules add train, sft, eval, compare...
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace, list[str]], int]]] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    def deco(fn: Callable[[argparse.Namespace, list[str]], int]):
        COMMANDS[name] = (help, add_arguments, fn)
        return fn

    return deco


def _err(line: str) -> None:
    print(f"remask: error: {line}", file=sys.stderr)


def _warn(line: str) -> None:
    print(f"remask: warning: {line}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# plugins
# ---------------------------------------------------------------------------------------------


def _plugins_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


@command("plugins", "list every registered component with its distribution and version", _plugins_args)
def _plugins(args: argparse.Namespace, extra: list[str]) -> int:
    from .registry import get_registry

    reg = get_registry()
    comps = reg.components()
    problems = reg.all_problems()
    if args.json:
        print(json.dumps({
            "components": [c.as_dict() for c in comps],
            "problems": [{"plugin": p.plugin, "distribution": p.distribution, "version": p.version,
                          "message": p.message} for p in problems],
        }, indent=2))
    elif not sys.stdout.isatty():
        # piped or redirected: whole lines, tab-separated, never cut to a terminal width
        print("\t".join(("kind", "name", "distribution", "version", "summary")))
        for c in comps:
            print("\t".join((c.kind, c.name, c.distribution, c.version, c.summary)))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="remask components", show_lines=False)
        for col in ("kind", "name", "distribution", "version"):
            width = max([len(col)] + [len(str(c.as_dict()[col])) for c in comps])
            table.add_column(col, no_wrap=True, min_width=width)
        table.add_column("summary", no_wrap=True, overflow="ellipsis", max_width=60)
        for c in comps:
            table.add_row(c.kind, c.name, c.distribution, c.version, c.summary)
        console = Console(width=max(120, Console().width))
        console.print(table)
        console.print("[dim]remask schema KIND NAME shows a component's config fields[/dim]")
    for p in problems:
        _err(p.line())
    return 2 if problems else 0


# ---------------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------------


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline YAML file")


def load_cli_config(path: str, extra: list[str]):
    """Load a config with ``--section.field value`` overrides taken from the leftover arguments."""
    from .config import load_config, parse_override_args

    overrides = parse_override_args(extra)
    return load_config(path, overrides)


@command("validate", "check a pipeline config without running it", _config_args)
def _validate(args: argparse.Namespace, extra: list[str]) -> int:
    from .config import parse_override_args, read_yaml
    from .registry import get_registry

    raw = read_yaml(args.config)
    if isinstance(raw, dict) and "pipelines" in raw and "base" in raw:
        # a `remask compare` spec: the spec itself, then every pipeline it would run
        from .harness.compare import pipeline_configs

        spec, _ = pipeline_configs(args.config)
        print(f"{args.config}: OK (a comparison spec for `remask compare`) — {len(spec.pipelines)} pipelines x "
              f"{len(spec.seeds)} seeds, budget {spec.budget.describe()}")
        return 0
    if isinstance(raw, dict) and not any(raw.get(k) is not None for k in ("rewards", "advantage", "objective")):
        # a `remask sft` config: model, task, (sampler,) train, eval
        from .engine.sft import load_sft_config

        sft = load_sft_config(args.config, parse_override_args(extra))
        print(f"{args.config}: OK (an SFT config for `remask sft`) — model {sft.model.name}, task {sft.task.name}; "
              f"{sft.train.max_steps} steps of {sft.train.prompts_per_step} rows")
        return 0
    cfg = load_cli_config(args.config, extra)
    from .planner import runtime_problems  # settings this machine or the model adapter cannot run

    unrunnable = runtime_problems(cfg)
    if unrunnable:
        raise ConfigError([f"{args.config}: {p}" for p in unrunnable])
    for p in get_registry().all_problems():
        _warn(f"{p.line()} (commands that run a pipeline refuse to start until it is fixed or disabled)")
    steps = f"{cfg.train.max_steps} steps of {cfg.train.prompts_per_step} prompts x {cfg.train.group_size}"
    selector = f" + {cfg.step_selector.name}" if cfg.step_selector else ""
    print(
        f"{args.config}: OK — model {cfg.model.name}, task {cfg.task.name}, sampler {cfg.sampler.name}, "
        f"objective {cfg.objective.name} ({cfg.advantage.name}{selector}), "
        f"rewards {', '.join(r.alias or r.name for r in cfg.rewards)}; {steps}"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# env
# ---------------------------------------------------------------------------------------------


def _env_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


@command("env", "print versions and device for bug reports", _env_args)
def _env(args: argparse.Namespace, extra: list[str]) -> int:
    from .registry import get_registry

    info = env_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for k, val in info.items():
            if isinstance(val, dict):
                val = "; ".join(f"{d}: {', '.join(p)}" for d, p in val.items())
            print(f"- {k.ljust(width)}  {val}")
    for p in get_registry().all_problems():
        _warn(p.line())
    return 0


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def _load_command_modules() -> None:
    """Import every module of :mod:`remask.commands`; each registers its subcommands."""
    import importlib
    import pkgutil

    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}")


def _quiet_libraries() -> None:
    """remask prints its own progress; silence the per-file bars transformers shows when loading
    or saving tiny checkpoints, and bitsandbytes' import-time hint that its optional CPU kernel (a
    Hub download) is missing, printed on every command once bitsandbytes is installed (set
    REMASK_DEBUG=1 to keep both)."""
    if os.environ.get("REMASK_DEBUG"):
        return
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetics must never break a command
        pass


def build_parser() -> argparse.ArgumentParser:
    _load_command_modules()
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="remask",
        description="RL post-training for masked diffusion language models.",
        epilog="Config fields can be overridden after the command: --objective.beta 0.02 --train.max_steps 10",
    )
    parser.add_argument("--version", action="version", version=f"remask {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_args, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
    return parser


def _os_error(exc: OSError) -> str | None:
    """One line for an environment error a user can fix (full disk, read-only or missing place)."""
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device{where}; free some and continue with --resume "
                "(the last complete checkpoint is intact)")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write{where}: {exc.strerror}"
    if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.ENOENT):
        return f"{exc.strerror}{where}"
    return None


def _closed_pipe() -> int:
    """stdout's reader went away (``remask plugins | head``): stop quietly, as a SIGPIPE'd process does."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
    except (OSError, ValueError):
        pass
    return 141


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_libraries()
    try:
        shadow = namespace_shadowing()
        if shadow:
            raise RemaskError(shadow)
        parser = build_parser()
        # `remask CONFIG [--a.b v]` and a bare `remask` mean `remask train ...`
        if "train" in COMMANDS and (not argv or (argv[0] not in COMMANDS and not argv[0].startswith("-"))):
            argv = ["train", *argv]
        args, extra = parser.parse_known_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        _, _, run = COMMANDS[args.command]
        return int(run(args, extra) or 0)
    except ConfigError as exc:
        for line in exc.problems:
            _err(line)
        return exc.exit_code
    except RemaskError as exc:
        _err(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        return _closed_pipe()
    except OSError as exc:
        line = _os_error(exc)
        if line is None or os.environ.get("REMASK_DEBUG"):
            return _internal_error(exc)
        _err(line)
        return 2
    except Exception as exc:
        return _internal_error(exc)


def _internal_error(exc: BaseException) -> int:
    if os.environ.get("REMASK_DEBUG"):
        raise exc
    _err(f"internal error: {type(exc).__name__}: {exc} (this is a remask bug; rerun with REMASK_DEBUG=1 "
         "for the traceback and report it with the output of `remask env`)")
    return 1


if __name__ == "__main__":  # pragma: no cover - `python -m remask.cli`
    # Subcommand modules register into the importable `remask.cli`, not into this `__main__` copy.
    from remask.cli import main as _main

    sys.exit(_main())
