"""Tasks: GSM8K, MATH-500, countdown and 4x4 sudoku with d1's prompts and evaluation parsers.

Data come from local ``.jsonl``/``.json``/``.parquet``/``.csv`` files through ``datasets`` or, when
the machine is online, from a Hub dataset name. Countdown and sudoku also have seeded generators
(``source: generate``, the default) with disjoint train/test splits, so nothing is downloaded.

Prompt templates (``template``): ``d1-train`` is d1's training prompt (instruction and question in
one user message, no pre-fill); ``d1-eval`` is d1's evaluation prompt (``\\boxed{}`` inside
``<answer>``) with the ``<reasoning>`` pre-fill; ``auto`` uses the first for ``train`` and the second
for ``test``, as d1 does. ``is_correct`` is d1's evaluation parser for the task (spec algorithms.md
§5), so accuracies are comparable with the papers; training rewards are separate components.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

import remask

from . import d1compat
from .countdown import generate_problem
from .prompts import (
    COUNTDOWN_EVAL_PROMPT,
    GSM8K_EVAL_PROMPT,
    MATH500_EVAL_PROMPT,
    MATH_TRAIN_INSTRUCTION,
    REASONING_PREFILL,
    SUDOKU_PROMPT,
    TRAIN_FORMAT_PROMPT,
    Template,
    countdown_train_question,
    resolve_template,
    user_message,
    xml_completion,
)
from .sudoku import generate_puzzle
from .text import MAX_COMPLETION_CHARS, clip, last_boxed

_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_rows(source: str, *, hub_config: str | None, hub_split: str, task: str) -> list[dict[str, Any]]:
    """Rows of a local data file, or of a Hub dataset split (online only)."""
    import datasets

    ext = os.path.splitext(source)[1].lower()
    if os.path.exists(source):
        builder = _BUILDERS.get(ext)
        if builder is None:
            raise remask.RemaskError(f"task {task}: {source!r} is not a .jsonl/.json/.parquet/.csv file")
        try:
            ds = datasets.load_dataset(builder, data_files=source, split="train")
        except Exception as exc:  # noqa: BLE001
            raise remask.RemaskError(f"task {task}: cannot read {source!r}: {exc}") from exc
        return [dict(r) for r in ds]
    if ext in _BUILDERS or source.startswith((".", "/")) or "/" not in source:
        raise remask.RemaskError(f"task {task}: data file {source!r} does not exist")
    try:
        ds = datasets.load_dataset(source, hub_config, split=hub_split)
    except Exception as exc:  # noqa: BLE001
        raise remask.RemaskError(
            f"task {task}: cannot load Hub dataset {source!r} (split {hub_split!r}); offline machines "
            f"need a local .jsonl/.parquet/.csv path: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from exc
    return [dict(r) for r in ds]


def _column(row: Mapping[str, Any], names: Sequence[str], task: str) -> Any:
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    raise remask.RemaskError(f"task {task}: a data row has none of the columns {list(names)}; it has {sorted(row)}")


class _DataTask(remask.Task):
    """Shared loading, caching and templating of the file/Hub-backed tasks."""

    def __init__(self, config: remask.ComponentConfig | None = None) -> None:
        super().__init__(config)
        self._cache: dict[str, list[remask.Example]] = {}

    def raw_rows(self, split: str) -> list[dict[str, Any]]:
        c = self.config
        path = c.train_path if split == "train" else c.test_path
        hub_split = c.hub_train_split if split == "train" else c.hub_test_split
        return load_rows(path, hub_config=c.hub_config, hub_split=hub_split, task=self.name)

    def build(self, row: Mapping[str, Any], template: str, index: int, split: str) -> remask.Example:
        raise NotImplementedError

    def rows(self, split: str) -> list[dict[str, Any]]:
        return self.raw_rows(split)

    def examples(self, split: str) -> Sequence[remask.Example]:
        if split not in self.splits:
            raise remask.RemaskError(f"task {self.name}: unknown split {split!r}; use one of {self.splits}")
        if split not in self._cache:
            template = resolve_template(self.config.template, split)
            rows = self.rows(split)
            if self.config.limit:
                rows = rows[: self.config.limit]
            self._cache[split] = [self.build(r, template, i, split) for i, r in enumerate(rows)]
        return self._cache[split]


_COMMON_DOC = {
    "limit": "Keep only the first N rows of each split (0 = all).",
    "template": "Prompt template: auto (d1-train for train, d1-eval for test), d1-train or d1-eval.",
}


def _strip_calculator(text: str) -> str:
    """GSM8K solutions carry calculator annotations ``<<48/2=24>>``; drop them from SFT targets."""
    return re.sub(r"<<[^<>]*>>", "", text)


class GSM8KTask(_DataTask):
    """GSM8K word problems (question / answer with ####), d1 prompts and eval parser."""

    name = "gsm8k"

    class Config(remask.ComponentConfig):
        train_path: str = Field("openai/gsm8k", description="Train data: a local .jsonl/.json/.parquet/.csv file or a Hub dataset name.")
        test_path: str = Field("openai/gsm8k", description="Test data: a local file or a Hub dataset name.")
        hub_config: str | None = Field("main", description="Hub dataset config name (ignored for local files).")
        hub_train_split: str = Field("train", description="Hub split read for `train`.")
        hub_test_split: str = Field("test", description="Hub split read for `test`.")
        limit: int = Field(0, ge=0, description=_COMMON_DOC["limit"])
        template: Template = Field("auto", description=_COMMON_DOC["template"])

    def build(self, row, template, index, split):
        question = str(_column(row, ("question", "problem"), self.name))
        solution = str(_column(row, ("answer", "solution"), self.name))
        gold = d1compat.hash_answer(solution) if "####" in solution else solution.strip()
        reasoning = _strip_calculator(solution.split("####")[0]).strip() or "..."
        ref = {"answer": gold, "solution": solution}
        if template == "d1-train":
            prompt, prefill = user_message(TRAIN_FORMAT_PROMPT + "\n\n" + question), ""
            ref["completion"] = xml_completion(reasoning, gold, prefilled=False)
        else:
            prompt, prefill = user_message(GSM8K_EVAL_PROMPT + "\n\n" + question), REASONING_PREFILL
            ref["completion"] = xml_completion(reasoning, f"\\boxed{{{gold}}}", prefilled=True)
        return remask.Example(prompt=prompt, reference=ref, prefill=prefill, id=f"gsm8k-{split}-{index}")

    def is_correct(self, completion: str, reference: Mapping[str, Any]) -> float:
        try:
            gold = float(str(reference.get("answer", "")).replace(",", ""))
            return float(d1compat.eval_gsm8k(clip(str(completion), MAX_COMPLETION_CHARS), gold))
        except Exception:  # noqa: BLE001 - never raises
            return 0.0


class Math500Task(_DataTask):
    """MATH problems (problem / solution / answer), d1 prompts, Hendrycks is_equiv eval parser."""

    name = "math500"

    class Config(remask.ComponentConfig):
        train_path: str = Field("ankner/math-500", description="Train data: a local .jsonl/.json/.parquet/.csv file or a Hub dataset name.")
        test_path: str = Field("HuggingFaceH4/MATH-500", description="Test data: a local file or a Hub dataset name.")
        hub_config: str | None = Field(None, description="Hub dataset config name (ignored for local files).")
        hub_train_split: str = Field("train", description="Hub split read for `train`.")
        hub_test_split: str = Field("test", description="Hub split read for `test`.")
        limit: int = Field(0, ge=0, description=_COMMON_DOC["limit"])
        template: Template = Field("auto", description=_COMMON_DOC["template"])

    def build(self, row, template, index, split):
        problem = str(_column(row, ("problem", "question"), self.name))
        solution = str(row.get("solution") or "")
        answer = row.get("answer")
        gold = str(answer).strip() if answer not in (None, "") else (last_boxed(solution) or "")
        ref = {"answer": gold, "solution": solution}
        if template == "d1-train":
            prompt = user_message(f"{TRAIN_FORMAT_PROMPT}\n\n{MATH_TRAIN_INSTRUCTION}\n\n{problem}")
            prefill = ""
        else:
            prompt, prefill = user_message(MATH500_EVAL_PROMPT + "\n\n" + problem), REASONING_PREFILL
        if solution:
            ref["completion"] = xml_completion(solution.strip(), f"\\boxed{{{gold}}}", prefilled=bool(prefill))
        return remask.Example(prompt=prompt, reference=ref, prefill=prefill, id=f"math500-{split}-{index}")

    def is_correct(self, completion: str, reference: Mapping[str, Any]) -> float:
        try:
            return float(d1compat.eval_math(clip(str(completion), MAX_COMPLETION_CHARS), str(reference.get("answer", ""))))
        except Exception:  # noqa: BLE001
            return 0.0


def _disjoint_draw(make, key, test_size: int, train_size: int, seed: int, task: str) -> dict[str, list[Any]]:
    """Draw test rows first, then train rows whose key is not in test (and no duplicates)."""
    rng = random.Random(f"remask-{task}-{seed}")
    seen: set[Any] = set()
    out: dict[str, list[Any]] = {"test": [], "train": []}
    for split, size in (("test", test_size), ("train", train_size)):
        misses = 0
        while len(out[split]) < size:
            item = make(rng)
            k = key(item)
            if k in seen:
                misses += 1
                if misses > 50 * (size + 100):
                    raise remask.RemaskError(
                        f"task {task}: cannot draw {size} distinct {split} problems; lower train_size/test_size")
                continue
            seen.add(k)
            out[split].append(item)
    return out


class CountdownTask(_DataTask):
    """Countdown (reach the target with +-*/ using each number once): generated or from files."""

    name = "countdown"

    class Config(remask.ComponentConfig):
        source: Literal["generate", "files"] = Field("generate", description="generate: seeded "
                            "problems (no download); files: read train_path/test_path.")
        numbers: int = Field(3, ge=2, le=6, description="Numbers per generated problem (d1 trains on 3).")
        max_number: int = Field(99, ge=2, description="Largest generated number.")
        train_size: int = Field(2000, ge=1, description="Generated train problems.")
        test_size: int = Field(256, ge=1, description="Generated test problems (disjoint from train).")
        seed: int = Field(0, description="Seed of the generator.")
        train_path: str = Field("Jiayi-Pan/Countdown-Tasks-3to4", description="Train data (source: files): a local file or a Hub dataset name.")
        test_path: str = Field("countdown_cd3_test.jsonl", description="Test data (source: files): d1's countdown_cd3_test.jsonl or any file with nums/target or input/output columns.")
        hub_config: str | None = Field(None, description="Hub dataset config name (ignored for local files).")
        hub_train_split: str = Field("train", description="Hub split read for `train`.")
        hub_test_split: str = Field("test", description="Hub split read for `test`.")
        limit: int = Field(0, ge=0, description=_COMMON_DOC["limit"])
        template: Template = Field("auto", description=_COMMON_DOC["template"])

    def rows(self, split):
        c = self.config
        if c.source == "files":
            return self.raw_rows(split)
        drawn = _disjoint_draw(
            lambda rng: generate_problem(rng, count=c.numbers, high=c.max_number),
            lambda p: (tuple(sorted(p[0])), p[1]), c.test_size, c.train_size, c.seed, self.name)
        return [{"nums": n, "target": t, "expression": e, "steps": s} for n, t, e, s in drawn[split]]

    def build(self, row, template, index, split):
        if "nums" in row or "numbers" in row:
            numbers = [int(x) for x in _column(row, ("nums", "numbers"), self.name)]
            target = int(_column(row, ("target",), self.name))
        else:  # d1's test jsonl: {"input": "a,b,c", "output": target}
            numbers = [int(x) for x in str(_column(row, ("input",), self.name)).split(",")]
            target = int(_column(row, ("output",), self.name))
        ref: dict[str, Any] = {"numbers": numbers, "target": target}
        if template == "d1-train":
            prompt = user_message(f"{TRAIN_FORMAT_PROMPT}\n{countdown_train_question(numbers, target)}")
            prefill = ""
        else:
            prompt = user_message(f"{COUNTDOWN_EVAL_PROMPT}\n\nNumbers: {numbers}\nTarget: {target}")
            prefill = REASONING_PREFILL
        if row.get("expression"):
            answer = row["expression"] if template == "d1-train" else f"\\boxed{{{row['expression']}}}"
            ref["completion"] = xml_completion(str(row.get("steps") or row["expression"]), answer, prefilled=bool(prefill))
        return remask.Example(prompt=prompt, reference=ref, prefill=prefill, id=f"countdown-{split}-{index}")

    def is_correct(self, completion: str, reference: Mapping[str, Any]) -> float:
        try:
            numbers = [int(x) for x in reference["numbers"]]
            return float(d1compat.eval_countdown(clip(str(completion), MAX_COMPLETION_CHARS), numbers, int(reference["target"])))
        except Exception:  # noqa: BLE001
            return 0.0


def _grid(value: Any) -> str:
    """A 16-cell grid string; CSV readers turn ``0123…`` into an int and drop the leading zero."""
    s = str(value).strip()
    return s.zfill(16) if s.isdigit() else s


class SudokuTask(_DataTask):
    """4x4 sudoku with a unique solution: generated or from d1's CSV files (Puzzle, Solution)."""

    name = "sudoku"

    class Config(remask.ComponentConfig):
        source: Literal["generate", "files"] = Field("generate", description="generate: seeded "
                            "puzzles (no download); files: read train_path/test_path.")
        min_empty: int = Field(6, ge=1, le=12, description="Fewest empty cells of a generated puzzle.")
        max_empty: int = Field(10, ge=1, le=12, description="Most empty cells of a generated puzzle.")
        train_size: int = Field(2000, ge=1, description="Generated train puzzles.")
        test_size: int = Field(256, ge=1, description="Generated test puzzles (disjoint from train).")
        seed: int = Field(0, description="Seed of the generator.")
        train_path: str = Field("4x4_sudoku_unique_puzzles.csv", description="Train data (source: files): d1's CSV or any file with Puzzle/Solution columns.")
        test_path: str = Field("4x4_test_sudoku.csv", description="Test data (source: files): d1's CSV or any file with Puzzle/Solution columns.")
        hub_config: str | None = Field(None, description="Hub dataset config name (ignored for local files).")
        hub_train_split: str = Field("train", description="Hub split read for `train`.")
        hub_test_split: str = Field("test", description="Hub split read for `test`.")
        limit: int = Field(0, ge=0, description=_COMMON_DOC["limit"])
        template: Template = Field("auto", description=_COMMON_DOC["template"])

    def rows(self, split):
        c = self.config
        if c.source == "files":
            return self.raw_rows(split)
        if c.min_empty > c.max_empty:
            raise remask.RemaskError("task sudoku: min_empty must be <= max_empty")
        drawn = _disjoint_draw(lambda rng: generate_puzzle(rng, c.min_empty, c.max_empty), lambda p: p[0],
                               c.test_size, c.train_size, c.seed, self.name)
        return [{"Puzzle": p, "Solution": s} for p, s in drawn[split]]

    def build(self, row, template, index, split):
        puzzle = _grid(_column(row, ("Puzzle", "puzzle"), self.name))
        solution = _grid(_column(row, ("Solution", "solution"), self.name))
        question = f"Solve the following Sudoku puzzle: {puzzle}\n"
        prompt = user_message(SUDOKU_PROMPT + "\n\n" + question)
        prefill = "" if template == "d1-train" else REASONING_PREFILL
        reasoning = "Fill each empty cell so that every row, column and 2x2 box holds 1-4 once."
        ref = {"puzzle": puzzle, "solution": solution,
               "completion": xml_completion(reasoning, solution, prefilled=bool(prefill))}
        return remask.Example(prompt=prompt, reference=ref, prefill=prefill, id=f"sudoku-{split}-{index}")

    def is_correct(self, completion: str, reference: Mapping[str, Any]) -> float:
        """Cell accuracy of this row with d1's extraction cascade (d1 pools it over all puzzles)."""
        try:
            right, empty = d1compat.eval_sudoku_cells(clip(str(completion), MAX_COMPLETION_CHARS),
                                                      str(reference["puzzle"]), str(reference["solution"]))
            return right / empty if empty else 0.0
        except Exception:  # noqa: BLE001
            return 0.0


TASKS = (GSM8KTask, Math500Task, CountdownTask, SudokuTask)
