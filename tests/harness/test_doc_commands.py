"""Every command the docs tell a reader to run exists and parses.

Commands are collected from ```bash blocks and from inline code spans of README.md and docs/**/*.md:
``remask …`` (also ``python -m remask …`` and ``accelerate launch … -m remask.cli|remask.engine …``)
must name an existing subcommand, every flag must be one of its flags or a dotted config override of
a real section (``--train.max_steps 3``), and a command in a bash block must parse completely
(inline spans such as `remask eval` are mentions, so their positional arguments are not required); ``python benchmarks/x.py …`` must name an
existing script whose ``--help`` lists every flag used; files under ``examples/`` or ``benchmarks/``
that a command names must exist. Nothing is run except ``--help`` of the benchmark scripts.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from remask.cli import build_parser
from remask.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *ROOT.joinpath("docs").rglob("*.md")])
_FENCE = re.compile(r"^```(\w*)\s*$")
_INLINE = re.compile(r"`([^`]+)`")
_STARTS = ("remask ", "python -m remask ", "python benchmarks/", "accelerate launch ")
_ENV = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+")  # OMP_NUM_THREADS=1 python benchmarks/x.py
_SECTIONS = set(PipelineConfig.model_fields)


def _commands(path: Path) -> list[tuple[int, str, bool]]:
    """(line number, command, from a bash block) for every command in ``path``."""
    found: list[tuple[int, str, bool]] = []
    lang = None
    pending = ""
    prose: list[tuple[int, str]] = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        fence = _FENCE.match(line.strip())
        if fence:
            lang = None if lang is not None else fence.group(1) or "text"
            continue
        if lang in ("bash", "sh", "shell", "console"):
            text = pending + line.strip().removeprefix("$ ")
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            text = re.split(r"\s+#\s", text, maxsplit=1)[0].strip()  # a trailing comment
            for part in text.split("&&"):
                part = _ENV.sub("", part.strip())
                if part.startswith(_STARTS):
                    found.append((no, part, True))
        elif lang is None and line.startswith("    ") and _ENV.sub("", line.strip()).startswith(_STARTS):
            found.append((no, _ENV.sub("", line.strip()), True))  # an indented code block
        elif lang is None:
            prose.append((no, line))
    # inline spans, which may wrap onto the next line of a paragraph
    paragraph: list[tuple[int, str]] = []
    for no, line in [*prose, (-1, "")]:
        if paragraph and (not line.strip() or line.startswith("|") or no != paragraph[-1][0] + 1):
            text = "\n".join(t for _, t in paragraph)
            for m in _INLINE.finditer(text):
                span = _ENV.sub("", " ".join(m.group(1).split()))
                if span.startswith(_STARTS) and " " in span:
                    found.append((paragraph[0][0] + text.count("\n", 0, m.start()), span, False))
            paragraph = []
        if line.strip():
            paragraph.append((no, line))
            if line.startswith("|"):  # a table row is a paragraph of its own
                paragraph = []
                for m in _INLINE.finditer(line):
                    span = _ENV.sub("", " ".join(m.group(1).split()))
                    if span.startswith(_STARTS) and " " in span:
                        found.append((no, span, False))
    return sorted(found)


ALL = [(path, no, cmd, block) for path in DOCS for no, cmd, block in _commands(path)]


def _tokens(cmd: str, block: bool) -> list[str]:
    # synopsis notation in inline spans: [--n N] optional parts, ... repetition
    if not block:
        cmd = cmd.replace("[", " ").replace("]", " ")
    return [t for t in shlex.split(cmd) if block or t not in ("...", "…")]


@lru_cache(maxsize=None)
def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _check_remask(args: list[str], where: str, block: bool) -> None:
    if not args or args[0].startswith("-") or args[0].endswith((".yaml", ".yml")) or args[0].isupper():
        args = ["train", *args]  # `remask CONFIG` means `remask train CONFIG`
    subs = _subparsers()
    assert args[0] in subs, f"{where}: `remask {args[0]}` is not a command (commands: {', '.join(sorted(subs))})"
    own = subs[args[0]]._option_string_actions
    for flag in (t for t in args[1:] if t.startswith("--")):
        key = flag.split("=", 1)[0]
        if key in own:
            continue
        key = key[2:]
        if key == "section.field":  # the synopsis placeholder of a dotted override
            continue
        assert key.split(".", 1)[0] in _SECTIONS, (  # --train.max_steps 3, or a whole section: --objective '{...}'
            f"{where}: `{flag}` is neither a flag of `remask {args[0]}` nor an override of a config "
            f"section ({', '.join(sorted(_SECTIONS))})")
    if block:  # a command to copy and run must parse completely
        try:
            build_parser().parse_known_args(args)
        except SystemExit as exc:
            pytest.fail(f"{where}: `remask {' '.join(args)}` does not parse (argparse exit {exc.code})")
    for token in args:
        if token.startswith(("examples/", "benchmarks/")):
            assert (ROOT / token).exists(), f"{where}: {token} does not exist"


@lru_cache(maxsize=None)
def _script_help(script: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, f"{script} --help failed: {proc.stderr[-500:]}"
    return proc.stdout


def _check_benchmark(args: list[str], where: str) -> None:
    script = args[0]
    assert (ROOT / script).is_file(), f"{where}: {script} does not exist"
    help_text = _script_help(script)
    for flag in args[1:]:
        if flag.startswith("--"):
            name = flag.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", help_text), (
                f"{where}: {script} has no flag {name} (see its --help)")


@pytest.mark.parametrize("path, line, cmd, block", ALL, ids=[f"{p.relative_to(ROOT)}:{n}" for p, n, _, _ in ALL])
def test_documented_command_exists_and_parses(path, line, cmd, block):
    where = f"{path.relative_to(ROOT)}:{line}"
    tokens = _tokens(cmd, block)
    if tokens[:3] == ["python", "-m", "remask"]:
        tokens = ["remask", *tokens[3:]]
    if tokens[0] == "accelerate":
        assert "-m" in tokens, f"{where}: accelerate launch without -m MODULE"
        i = tokens.index("-m")
        assert tokens[i + 1] in ("remask.cli", "remask.engine", "remask"), f"{where}: unknown module {tokens[i + 1]}"
        for j, token in enumerate(tokens[:i]):
            if token == "--config_file":
                assert (ROOT / tokens[j + 1]).is_file(), f"{where}: {tokens[j + 1]} does not exist"
        tokens = ["remask", *tokens[i + 2:]]
    if tokens[0] == "remask":
        _check_remask(tokens[1:], where, block)
    else:
        assert tokens[0] == "python"
        _check_benchmark(tokens[1:], where)


def test_the_docs_name_commands_at_all():
    # the collector itself: a regression here would make every test above vacuous
    assert len(ALL) >= 30
    assert any("remask compare" in c for _, _, c, _ in ALL) and any("benchmarks/" in c for _, _, c, _ in ALL)


_TABLE_RULE = re.compile(r"^\|[\s:|-]+\|$")
MEASURED = [ROOT / "docs" / "benchmarks.md"]


def _sections(path: Path) -> list[tuple[str, int, int]]:
    """(heading, first line, last line) of every section of ``path`` (1-based, inclusive)."""
    lines = path.read_text().splitlines()
    starts = [i for i, line in enumerate(lines, 1) if line.startswith("#")] + [len(lines) + 1]
    return [(lines[a - 1], a, b - 1) for a, b in zip(starts, starts[1:])]


def _tables(path: Path) -> list[int]:
    lines = path.read_text().splitlines()
    return [i for i, line in enumerate(lines, 1)
            if line.startswith("|") and i < len(lines) and _TABLE_RULE.match(lines[i].strip())]


@pytest.mark.parametrize("path", [p for p in DOCS if p in MEASURED or any(
    "measured" in h.lower() for h, _, _ in _sections(p))], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_measured_table_names_the_command_that_produced_it(path):
    """A table of measurements in docs/benchmarks.md, or under a heading saying "Measured", has a
    runnable command in its own section (checked to exist and parse by the test above)."""
    commands = [no for _, no, _, _ in (c for c in ALL if c[0] == path)]
    for heading, first, last in _sections(path):
        if path not in MEASURED and "measured" not in heading.lower():
            continue
        for table in (t for t in _tables(path) if first <= t <= last):
            assert any(first <= no <= last for no in commands), (
                f"{path.relative_to(ROOT)}:{table}: a table under {heading.strip()!r} names no command "
                "that produced it")


def test_committed_comparison_reports_name_their_command():
    for report in ROOT.joinpath("docs", "results").rglob("report.md"):
        assert any(c[0] == report and "remask compare" in c[2] for c in ALL), report
