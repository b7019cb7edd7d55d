"""The code rewards: `code` (fraction of tests passed, sandboxed) and `code-egspo` (EGSPO / wd1's
``coding_reward`` semantics on the same sandbox)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

import remask

from .checks import (
    BadReference,
    CallsPlan,
    IOPlan,
    TestsPlan,
    case_passes,
    decode_value,
    extract_code,
    outputs_match,
    plan_for,
    python_block_span,
)
from .sandbox import Job, JobResult, Limits, SandboxPool, SandboxSpec

logger = logging.getLogger("remask.code")

#: EGSPO / wd1 reject programs containing any of these substrings (spec algorithms.md §5)
EGSPO_BANNED = (" os", " sys", " subprocess", " shutil", " socket", " psutil", " ctypes", " pathlib",
                " builtins", "__import__")


class CodeReward(remask.RewardModel):
    """Fraction of a row's tests that a completion's program passes, run in the sandbox.

    The test mode comes from the reference row (``calls`` / ``io`` / ``tests``, docs/sandbox.md).
    A row without tests scores None ("cannot judge"); model output never raises.
    """

    name = "code"

    class Config(remask.ComponentConfig):
        mode: Literal["auto", "calls", "io", "tests"] = Field(
            "auto", description="Which reference key drives the tests; auto = the first present of "
            "calls, io, tests.")
        extract: Literal["last_block", "first_python_block", "raw"] = Field(
            "last_block", description="How the program is taken from the completion: the last fenced "
            "python block, the first ```python block (EGSPO/wd1), or the whole text.")
        convert_asserts: bool = Field(
            True, description="Turn `assert f(<literals>) == <literal>` tests into trusted-side "
            "call-and-compare (defeats __eq__/builtins hacks and test peeking); false runs every "
            "assert test in-process (mode (a)).")
        unconvertible_tests: Literal["in-process", "refuse"] = Field(
            "in-process", description="Test code that cannot be converted to call-and-compare "
            "(helpers, loops, fixtures): `in-process` runs it as rewritten asserts inside the sandbox "
            "(mode (a): weaker against a program that introspects the runner; logged as a warning "
            "the first time), `refuse` scores such rows None (`bad_reference: not convertible`).")
        binary: bool = Field(False, description="1 only when every test passes (else the pass fraction).")
        tag_bonus: float = Field(
            0.0, ge=0, description="Added when the program block sits inside <answer>...</answer> "
            "(EGSPO/wd1 use 0.5).")
        rename_first_def: bool = Field(
            False, description="Rename the program's first `def` to the tested function's name "
            "(EGSPO/wd1 behaviour).")
        banned_substrings: tuple[str, ...] = Field(
            (), description="Programs containing any of these score 0 (plus the tag bonus) without "
            "running (EGSPO/wd1's keyword filter; the sandbox does not need it).")
        timeout_s: float = Field(5.0, gt=0, le=600, description="Wall-clock limit per program run "
                                 "(per stdin case in io mode), in seconds.")
        memory_mb: int = Field(1024, ge=64, description="RLIMIT_AS of each program, in MiB.")
        file_mb: int = Field(16, ge=1, description="RLIMIT_FSIZE (largest file a program may write), MiB.")
        max_processes: int = Field(64, ge=4, description="RLIMIT_NPROC for the sandbox uid.")
        max_open_files: int = Field(128, ge=64, description="RLIMIT_NOFILE of each program.")
        max_output_mb: int = Field(4, ge=1, description="A program is killed once its stdout, "
                                   "stderr and results exceed this many MiB in total (reason "
                                   "`output_limit`); nothing it wrote is parsed.")
        max_result_values: int = Field(
            50_000, ge=100, description="Results of a program holding more JSON values than this "
            "are not parsed (reason `output_limit`): this bounds the trainer's memory per program.")
        max_code_chars: int = Field(200_000, ge=100, description="Longer programs score 0 unrun.")
        workers: int = Field(0, ge=0, description="Sandboxes run in parallel (0 = two per usable CPU "
                             "core, at most 32).")
        tmpfs_mb: int = Field(64, ge=8, description="Size cap of the sandbox's writable /tmp, MiB.")
        python: str = Field("", description="Interpreter inside the sandbox (empty = /usr/bin/python3, "
                            "else this process's interpreter if the sandbox uid can run it).")
        sandbox_uid: int = Field(65534, ge=1, description="Unprivileged uid (and gid) the sandbox runs "
                                 "as when remask runs as root.")
        isolation: Literal["bwrap", "unsafe-none"] = Field(
            "bwrap", description="bwrap = the bubblewrap sandbox (required by default). unsafe-none "
            "runs programs as plain processes with rlimits only, logged loudly: disposable machines only.")

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        c = self.config
        self.limits = Limits(timeout_s=c.timeout_s, memory_bytes=c.memory_mb << 20,
                             file_bytes=c.file_mb << 20, open_files=c.max_open_files,
                             processes=c.max_processes, output_bytes=c.max_output_mb << 20,
                             result_values=c.max_result_values)
        self.spec = SandboxSpec(isolation=c.isolation, python=c.python, uid=c.sandbox_uid,
                                tmpfs_bytes=c.tmpfs_mb << 20)
        if c.isolation == "unsafe-none":
            logger.warning("reward %r: isolation=unsafe-none: model code will run UNSANDBOXED", self.name)
        else:
            self.spec.command(0)  # refuse now, with a clear message, when bwrap is missing
        if not c.convert_asserts:
            logger.warning("reward %r: convert_asserts is false: every assert test runs in-process in "
                           "the sandbox (mode (a), see docs/sandbox.md)", self.name)
        self._warned_in_process = not c.convert_asserts
        self._pool: SandboxPool | None = None
        self._cpu_closed = 0.0
        self._lock = threading.Lock()
        #: wall-clock seconds of the longest program run of each row in the last evaluate()
        self.last_wall_s: list[float] = []

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def pool(self) -> SandboxPool:
        with self._lock:
            if self._pool is None:
                self._pool = SandboxPool(self.spec, self.limits, workers=self.config.workers)
            return self._pool

    def cpu_seconds(self) -> float:
        """CPU seconds spent inside this reward's sandboxes so far (:meth:`SandboxPool.cpu_seconds`;
        not part of this process's ``getrusage``)."""
        with self._lock:
            return self._cpu_closed + (self._pool.cpu_seconds() if self._pool is not None else 0.0)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._cpu_closed += self._pool.cpu_seconds()
                self._pool = None

    # -- scoring -----------------------------------------------------------------------------
    def score(self, *, prompts: Sequence[str], completions: Sequence[str],
              references: Sequence[Mapping[str, Any]]) -> remask.Rewards:
        values, reasons = self.evaluate(completions, references)
        return remask.Rewards.from_scores(self.name, values, reasons)

    def evaluate(self, completions: Sequence[str], references: Sequence[Mapping[str, Any]]
                 ) -> tuple[list[float | None], list[str]]:
        """(value, reason) per row; all programs of the batch run in parallel across sandboxes."""
        c = self.config
        n = len(completions)
        values: list[float | None] = [0.0] * n
        reasons = [""] * n
        bonus = [0.0] * n
        jobs: list[Job] = []
        owners: list[tuple[int, Any, int]] = []  # (row, plan, io case index)
        in_process = 0  # rows whose tests could not be converted and run in-process
        plans: dict[int, tuple[Any, Any]] = {}  # id(reference) -> (reference kept alive, its plan)
        for row, (text, ref) in enumerate(zip(completions, references)):
            text = text if isinstance(text, str) else ""
            ref = ref if isinstance(ref, Mapping) else {}
            try:
                if id(ref) not in plans:  # rows of one group share their reference object
                    plans[id(ref)] = (ref, plan_for(ref, c.mode, convert_asserts=c.convert_asserts))
                plan = plans[id(ref)][1]
            except BadReference as exc:
                values[row], reasons[row] = None, f"bad_reference: {exc}"
                continue
            except Exception as exc:  # noqa: BLE001 - a malformed reference must not stop training
                values[row], reasons[row] = None, f"bad_reference: {type(exc).__name__}"
                continue
            if plan is None:
                values[row], reasons[row] = None, "no_tests"
                continue
            if isinstance(plan, TestsPlan) and c.convert_asserts:
                if c.unconvertible_tests == "refuse":
                    values[row], reasons[row] = None, "bad_reference: not convertible to call-and-compare"
                    continue
                in_process += 1
            if c.tag_bonus:
                bonus[row] = c.tag_bonus if _block_in_answer(text) else 0.0
            code = extract_code(text, c.extract)
            if code is None or not code.strip():
                values[row], reasons[row] = bonus[row], "no_code"
                continue
            if len(code) > c.max_code_chars:
                values[row], reasons[row] = bonus[row], "code_too_long"
                continue
            if any(s in code for s in c.banned_substrings):
                values[row], reasons[row] = bonus[row], "banned_substring"
                continue
            prefix = ref.get("prefix")
            if isinstance(prefix, str) and prefix:
                code = prefix + "\n" + code
            if c.rename_first_def:
                code = _rename_first_def(code, _tested_name(plan, ref))
            if isinstance(plan, CallsPlan):
                jobs.append(Job("calls", code, {"fn": plan.fn, "cases": [k.sources() for k in plan.cases]}))
                owners.append((row, plan, -1))
            elif isinstance(plan, IOPlan):
                for i, (stdin, _) in enumerate(plan.cases):
                    jobs.append(Job("io", code, {}, stdin=stdin))
                    owners.append((row, plan, i))
            else:
                jobs.append(Job("tests", code, {"setup": plan.setup, "units": list(plan.units)}))
                owners.append((row, plan, -1))
        if in_process and not self._warned_in_process:
            self._warned_in_process = True
            logger.warning("reward %r: %d row(s) have tests that cannot be converted to call-and-compare;"
                           " running them as in-process asserts (mode (a), weaker against adversarial "
                           "programs; set unconvertible_tests: refuse to score them None instead)",
                           self.name, in_process)
        results = self.pool.run_many(jobs) if jobs else []
        self.last_wall_s = [0.0] * n
        for (row, _, _), result in zip(owners, results):
            self.last_wall_s[row] = max(self.last_wall_s[row], result.wall_s)
        io_tally: dict[int, list[int]] = {}
        io_why: dict[int, str] = {}
        for (row, plan, case), result in zip(owners, results):
            if isinstance(plan, IOPlan):
                ok = (result.stopped == "" and result.exit == 0  # ended normally (never enough alone)
                      and outputs_match(plan.cases[case][1], result.stdout.decode("utf-8", "replace")))
                tally = io_tally.setdefault(row, [0, len(plan.cases)])
                tally[0] += int(ok)
                if not ok and row not in io_why:
                    io_why[row] = _why(result, "wrong_output")
                continue
            if isinstance(plan, CallsPlan):
                passed, total, why = _score_calls(plan, result)
            else:
                passed, total, why = _score_tests(plan, result)
            values[row], reasons[row] = self._value(passed, total, bonus[row], why)
        for row, (passed, total) in io_tally.items():
            values[row], reasons[row] = self._value(passed, total, bonus[row], io_why.get(row, ""))
        return values, reasons

    def _value(self, passed: int, total: int, bonus: float, why: str) -> tuple[float, str]:
        if total <= 0:
            return bonus, why or "no_tests"
        if passed == total:
            return 1.0 + bonus, "passed"
        frac = 0.0 if self.config.binary else passed / total
        return frac + bonus, f"failed {total - passed}/{total}" + (f": {why}" if why else "")


class EgspoCodeReward(CodeReward):
    """EGSPO / wd1's ``coding_reward`` (spec algorithms.md §5) on the sandbox: first ```python
    block, +0.5 when it sits inside ``<answer>``, first ``def`` renamed to the tested function,
    keyword filter, reward = passed/total + bonus (max 1.5). Pair it with a `xmlcount`-style format
    reward to reproduce their full reward."""

    name = "code-egspo"

    class Config(CodeReward.Config):
        extract: Literal["last_block", "first_python_block", "raw"] = Field(
            "first_python_block", description="How the program is taken from the completion "
            "(EGSPO/wd1: the first ```python block).")
        tag_bonus: float = Field(0.5, ge=0, description="Bonus when the block sits inside "
                                 "<answer>...</answer> (EGSPO/wd1: 0.5).")
        rename_first_def: bool = Field(True, description="Rename the first `def` to the tested "
                                       "function's name (EGSPO/wd1 behaviour).")
        banned_substrings: tuple[str, ...] = Field(
            EGSPO_BANNED, description="EGSPO/wd1's keyword filter: programs containing any of these "
            "score only the tag bonus.")
        timeout_s: float = Field(1.0, gt=0, le=600, description="Wall-clock limit per program (EGSPO: 1 s).")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _why(result: JobResult, default: str) -> str:
    if result.stopped:
        return result.stopped
    if result.exit not in (0, None):
        return "runtime_error"
    return default


def _score_calls(plan: CallsPlan, result: JobResult) -> tuple[int, int, str]:
    total = len(plan.cases)
    got: dict[int, dict[str, Any]] = {}
    why = ""
    for rec in result.records:
        kind = rec.get("k")
        if kind == "load" and rec.get("error"):
            why = why or f"load_error {str(rec['error'])[:40]}"
        elif kind == "missing":
            why = why or "missing_function"
        elif kind == "r" and isinstance(rec.get("i"), int) and rec["i"] not in got:
            got[rec["i"]] = rec
    passed = 0
    for i, case in enumerate(plan.cases):
        rec = got.get(i)
        if rec is None or "v" not in rec:
            if rec is not None and not why:
                why = f"raised {str(rec.get('error', ''))[:40]}"
            continue
        try:
            actual = decode_value(rec["v"])
        except (ValueError, TypeError, OverflowError, RecursionError):
            why = why or "bad_result"
            continue
        if case_passes(case, actual, tuple_equals_list=plan.tuple_equals_list):
            passed += 1
    if passed < total and not why:
        why = _why(result, "wrong_answer")
    return passed, total, why


def _score_tests(plan: TestsPlan, result: JobResult) -> tuple[int, int, str]:
    total = len(plan.units)
    ok: dict[int, bool] = {}
    why = ""
    for rec in result.records:
        if rec.get("n") != result.nonce or not result.nonce:
            continue  # a record without the nonce was not written by the runner
        kind = rec.get("k")
        if kind in ("load", "setup") and rec.get("error"):
            why = f"{kind}_error {str(rec['error'])[:40]}"
        elif kind == "u" and isinstance(rec.get("i"), int) and 0 <= rec["i"] < total and rec["i"] not in ok:
            ok[rec["i"]] = rec.get("ok") is True
            if not ok[rec["i"]] and not why:
                why = f"{plan.names[rec['i']] if plan.names else rec['i']}: {str(rec.get('error', ''))[:40]}"
    passed = sum(ok.values())
    if passed < total and not why:
        why = _why(result, "no_result")
    return passed, total, why


_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _block_in_answer(text: str) -> bool:
    span = python_block_span(text)
    if span is None:
        return False
    return any(m.start(1) <= span[0] and span[1] <= m.end(1) for m in _ANSWER.finditer(text))


def _tested_name(plan: Any, ref: Mapping[str, Any]) -> str:
    if isinstance(plan, CallsPlan):
        return plan.fn
    tests = ref.get("tests", "")
    if isinstance(tests, (list, tuple)):
        tests = "\n".join(map(str, tests))
    tests = str(tests)
    m = re.search(r"from\s+solution\s+import\s+([A-Za-z_]\w*)", tests) or re.search(r"assert\s+([A-Za-z_]\w*)\s*\(", tests)
    return m.group(1) if m else ""


def _rename_first_def(code: str, name: str) -> str:
    if not name:
        return code
    return re.sub(r"^(\s*)def\s+[A-Za-z_]\w*\s*\(", lambda m: f"{m.group(1)}def {name}(", code, count=1,
                  flags=re.MULTILINE)
