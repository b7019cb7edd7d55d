"""``remask compare SPEC.yaml``: several pipelines, same everything else, several seeds.

A comparison spec names a base pipeline and, per entry, only what differs::

    base: tiny-arith-d1.yaml          # relative to the spec file
    output_dir: runs/compare-tiny
    seeds: [0, 1, 2]
    budget: {optimizer_steps: 30}     # or {forward_passes: N} or {wall_seconds: S}
    eval: {limit: 200, samples_per_prompt: 8}
    pipelines:
      - {name: d1}                                        # the base as it is
      - {name: grpo, set: {objective: {name: grpo}, advantage: {name: group-mean-std}}}
      - {name: dtrpo, set: {objective: {name: dtrpo}}, override: {train.learning_rate: 1e-4}}

Fairness rules, enforced: every pipeline keeps the base's model, task, evaluation protocol (the
spec's ``eval``, with the base sampler), data order and seeds; an entry may not touch ``model``,
``task``, ``eval``, ``train.seed`` or the budget. What an entry changes is printed in the report.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import EvalConfig, apply_overrides, parse_config, read_yaml
from ..errors import ConfigError, RemaskError
from .progress import EVAL_ONLY_WEIGHT, ComparisonProgress
from .report import BASE_LABEL, markdown_table, paired_rows, summary_rows, write_plots

__all__ = ["Budget", "PipelineEntry", "CompareSpec", "load_compare_spec", "pipeline_configs", "pipeline_raw_config", "run_compare",
           "write_report", "code_revision", "same_code", "protocol_difference", "ComparisonStopped", "LOCKED_SECTIONS"]

#: what a compared pipeline may not change (they define "the same experiment")
LOCKED_SECTIONS = ("model", "task", "eval")
LOCKED_FIELDS = ("train.seed", "train.max_steps", "train.max_forward_passes", "train.max_seconds",
                 "train.output_dir")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Budget(_Strict):
    """Training budget of every run; exactly one field."""

    optimizer_steps: int | None = Field(None, ge=1, description="Optimizer steps per run.")
    forward_passes: int | None = Field(None, ge=1, description="Model forward passes per run (sampling + losses).")
    wall_seconds: float | None = Field(None, gt=0, description="Wall-clock seconds of training per run.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Budget:
        given = [k for k in ("optimizer_steps", "forward_passes", "wall_seconds") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of optimizer_steps, forward_passes, wall_seconds")
        return self

    def describe(self) -> str:
        if self.optimizer_steps:
            return f"{self.optimizer_steps} optimizer steps"
        if self.forward_passes:
            return f"{self.forward_passes} model forward passes"
        return f"{self.wall_seconds:g} s of training"


class PipelineEntry(_Strict):
    """One compared pipeline: the base with whole sections replaced and dotted fields overridden."""

    name: str = Field(description="Label in tables and plots.")
    set: dict[str, Any] = Field(default_factory=dict, description="Sections replaced wholesale (objective, advantage, ...).")
    override: dict[str, Any] = Field(default_factory=dict, description="Dotted field overrides (train.learning_rate: 1e-4).")


class CompareSpec(_Strict):
    """A comparison: the base pipeline, the differences, seeds, budget and evaluation protocol."""

    base: str = Field(description="Base pipeline YAML (relative to the spec file).")
    output_dir: str = Field("runs/compare", description="Where runs, report.md, plots and manifests go.")
    seeds: list[int] = Field([0], min_length=1, description="Seeds; every pipeline runs once per seed.")
    budget: Budget = Field(description="Training budget per run.")
    eval: dict[str, Any] = Field(default_factory=dict, description="Evaluation protocol (EvalConfig fields), fixed for all.")
    evaluate_base: bool = Field(True, description="Also evaluate the untrained base model under the same protocol.")
    pipelines: list[PipelineEntry] = Field(min_length=1, description="The pipelines to compare.")
    reference: str | None = Field(
        None, description="A pipeline name (or `base`, the untrained model) that every other pipeline is "
        "compared with, paired by seed: the report adds the mean difference with its 95% interval.")

    @model_validator(mode="after")
    def _fair(self) -> CompareSpec:
        names = [p.name for p in self.pipelines]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline names must be unique: {names}")
        for p in self.pipelines:
            for section in p.set:
                if section in LOCKED_SECTIONS or section == "train":
                    raise ValueError(f"pipeline {p.name!r}: `set` may not replace {section!r} "
                                     f"(locked: {', '.join(LOCKED_SECTIONS)}; change train fields with `override`)")
            for key in p.override:
                if key.split(".")[0] in LOCKED_SECTIONS or key in LOCKED_FIELDS:
                    raise ValueError(f"pipeline {p.name!r}: may not override {key!r}; it is fixed for a fair comparison")
        if self.reference is not None:
            known = names + (["base"] if self.evaluate_base else [])
            if self.reference not in known:
                raise ValueError(f"reference: {self.reference!r} is not a pipeline of this comparison; "
                                 f"name one of: {', '.join(known)}")
        return self

    @property
    def reference_label(self) -> str | None:
        """The reference's label in run records (``base`` is the untrained model's row)."""
        return BASE_LABEL if self.reference == "base" else self.reference


def load_compare_spec(path: str | Path) -> tuple[CompareSpec, dict[str, Any]]:
    """The validated spec and the raw base pipeline it points at."""
    from pydantic import ValidationError

    raw = read_yaml(path)
    try:
        spec = CompareSpec.model_validate(raw or {})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")  # the spec's own checks name their field
            lines.append(f"{path}: {loc}: {msg}" if loc else f"{path}: {msg}")
        raise ConfigError(lines) from None
    base_path = (Path(path).parent / spec.base).resolve()
    base = read_yaml(base_path)
    if not isinstance(base, dict):
        raise ConfigError([f"{base_path}: the base pipeline must be a mapping of sections"])
    return spec, base


def pipeline_raw_config(base: Mapping[str, Any], spec: CompareSpec, entry: PipelineEntry | None, seed: int,
                        run_dir: Path) -> dict[str, Any]:
    """The raw pipeline config of one compared run: the base, the entry's changes, the spec's protocol."""
    raw = copy.deepcopy(dict(base))
    if entry is not None:
        for section, value in entry.set.items():
            raw[section] = copy.deepcopy(value)
        apply_overrides(raw, entry.override)
    raw.setdefault("train", {})
    raw["eval"] = {**(base.get("eval") or {}), **spec.eval}
    raw["eval"].update({"before_training": False, "after_training": False, "every_steps": 0})
    train = raw["train"]
    train["seed"] = seed
    train["output_dir"] = str(run_dir)
    train["save_steps"] = 0
    train["progress"] = False
    b = spec.budget
    if b.optimizer_steps:
        train["max_steps"] = b.optimizer_steps
    else:
        train["max_steps"] = max(int(train.get("max_steps", 100)), 10**9 if b.wall_seconds else 10**6)
        train["max_forward_passes" if b.forward_passes else "max_seconds"] = b.forward_passes or b.wall_seconds
    return raw


def pipeline_configs(spec_path: str | Path, *, seed: int | None = None) -> tuple[CompareSpec, dict[str, Any]]:
    """The spec and each pipeline's validated :class:`~remask.config.PipelineConfig` (as run for
    ``seed``, default the first): what ``remask validate SPEC`` checks and tests of a spec inspect."""
    spec, base = load_compare_spec(spec_path)
    seed = spec.seeds[0] if seed is None else seed
    return spec, {e.name: parse_config(pipeline_raw_config(base, spec, e, seed, Path(spec.output_dir)),
                                       source=f"{spec_path}: pipeline {e.name}")
                  for e in spec.pipelines}


# ---------------------------------------------------------------------------------------------
# Planning: which runs exist, which are finished, which resume, which are refused
# ---------------------------------------------------------------------------------------------


class ComparisonStopped(RemaskError):
    """A signal stopped the comparison; finished runs are kept, nothing is reported."""

    exit_code = 130


@dataclass
class RunPlan:
    """One (pipeline, seed) run of a comparison."""

    label: str  # "d1 seed 0"
    pipeline: str
    entry: PipelineEntry | None
    seed: int
    run_dir: Path
    raw: dict[str, Any]
    action: str = "run"  # run | resume | reuse
    resumed_from: int | None = None

    @property
    def trains(self) -> bool:
        return self.entry is not None


#: what is not code: changes here do not stop a comparison from resuming
_NOT_CODE = ("docs/", ".md")


def code_revision() -> dict[str, Any]:
    """What code a run was made with, as far as it can change the numbers: a hash of every tracked
    file of the work tree at HEAD except docs (sources, plugins, shipped checkpoints, example configs)
    and a hash of the uncommitted changes to them, plus the remask and torch versions. The commit is
    recorded for people; it is not compared, so a commit that only touches docs does not block a
    ``--resume``. Untracked files are not seen; outside a git work tree only the versions count."""
    import hashlib
    import subprocess

    from ..environment import package_version

    here = Path(__file__).resolve().parent
    out: dict[str, Any] = {"remask": package_version("remask"), "torch": package_version("torch")}

    def git(*args: str) -> bytes | None:
        try:
            proc = subprocess.run(["git", *args], cwd=here, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return out
    listing = git("ls-tree", "-r", "--full-tree", "HEAD") or b""
    kept = [line for line in listing.decode(errors="replace").splitlines()
            if not (line.split("\t", 1)[-1].startswith(_NOT_CODE[0]) or line.endswith(_NOT_CODE[1]))]
    diff = git("diff", "HEAD", "--", ":(top)", ":(top,exclude)docs", ":(top,exclude)*.md") or b""
    out.update(commit=commit.decode().strip(),
               tree_sha256=hashlib.sha256("\n".join(kept).encode()).hexdigest()[:16],
               uncommitted_sha256=hashlib.sha256(diff).hexdigest()[:16] if diff else None)
    return out


def same_code(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two :func:`code_revision` records describe the same code (the commit aside)."""
    keys = ("remask", "torch", "tree_sha256", "uncommitted_sha256")
    return all(a.get(k) == b.get(k) for k in keys)


def _describe_code(code: Mapping[str, Any]) -> str:
    if not code.get("commit"):
        return f"remask {code.get('remask')}, torch {code.get('torch')} (no git work tree)"
    changes = f" + uncommitted changes {code['uncommitted_sha256']}" if code.get("uncommitted_sha256") else ""
    return (f"commit {code['commit'][:10]} (code tree {code.get('tree_sha256')}){changes}, remask {code.get('remask')}, "
            f"torch {code.get('torch')}")


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": 1, "pipelines[2].name": "grpo", "pipelines.length": 13}``: mappings and lists of
    mappings are flattened, so a difference names the one field that differs."""
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    if isinstance(data, list) and any(isinstance(v, Mapping) for v in data):
        out = {f"{prefix}length": len(data)}
        for i, v in enumerate(data):
            out.update(_flat(v, f"{prefix[:-1]}[{i}]."))
        return out
    return {prefix[:-1]: data}


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def protocol_difference(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """The first field in which two runs' pipeline configs differ, or ``None``. Where the run lives,
    whether it may replace an earlier attempt and its thread count are not part of the protocol."""
    a, b = _flat(json.loads(json.dumps(stored, default=str))), _flat(json.loads(json.dumps(current, default=str)))
    for key in sorted(set(a) | set(b)):
        if key in ("train.output_dir", "train.overwrite_output_dir", "train.torch_threads"):
            continue
        if a.get(key, "(unset)") != b.get(key, "(unset)"):
            return f"{key}: {_short(a.get(key, '(unset)'))} then, {_short(b.get(key, '(unset)'))} now"
    return None


def _plan_runs(spec: CompareSpec, base: Mapping[str, Any], out: Path) -> list[RunPlan]:
    entries: list[PipelineEntry | None] = ([None] if spec.evaluate_base else []) + list(spec.pipelines)
    plans = []
    for seed in spec.seeds:
        for entry in entries:
            name = entry.name if entry is not None else BASE_LABEL
            run_dir = out / "runs" / name.split(" ")[0] / f"seed-{seed}"
            plans.append(RunPlan(label=f"{name.split(' ')[0]} seed {seed}", pipeline=name, entry=entry, seed=seed,
                                 run_dir=run_dir, raw=pipeline_raw_config(base, spec, entry, seed, run_dir)))
    return plans


def _check_resumable(plans: list[RunPlan], code: Mapping[str, Any]) -> None:
    """With ``--resume``: finished runs are reused and interrupted runs resume, but only when they were
    made under the same protocol and the same code; otherwise refuse with every reason."""
    from .run import FINISHED, checkpoint_step, read_json

    problems = []
    for plan in plans:
        result = read_json(plan.run_dir / "result.json")
        job = read_json(plan.run_dir / "job.json")
        stored = result or job
        step = checkpoint_step(plan.run_dir) if plan.trains else None
        if stored is None:
            if step is not None:
                problems.append(f"{plan.run_dir}: holds checkpoint-{step} but no job.json to verify it against; "
                                "remove the directory to rerun it")
            continue  # never started: run it
        protocol = stored.get("protocol") or stored.get("raw") or {}
        diff = protocol_difference(protocol, plan.raw)
        if diff is not None:
            problems.append(f"{plan.run_dir}: made under a different protocol ({diff})")
            continue
        if not same_code(stored.get("code") or {}, code):
            problems.append(f"{plan.run_dir}: made with {_describe_code(stored.get('code') or {})}, "
                            f"this is {_describe_code(code)}")
            continue
        if result is not None and result.get("status") == FINISHED:
            plan.action = "reuse"
        elif step is not None:
            plan.action, plan.resumed_from = "resume", step
    if problems:
        raise RemaskError("--resume refused, the output directory does not match this spec and code:\n  "
                          + "\n  ".join(problems)
                          + "\n  (rerun without --resume to start over, or give another --out)")


# ---------------------------------------------------------------------------------------------
# Running: in this process (--jobs 1) or in worker processes (--jobs N)
# ---------------------------------------------------------------------------------------------


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _job(plan: RunPlan, spec: CompareSpec, spec_path: str | Path, code: Mapping[str, Any],
         threads: int | None) -> dict[str, Any]:
    return {"run_dir": str(plan.run_dir), "raw": plan.raw, "source": f"{spec_path}:{plan.pipeline}",
            "pipeline": plan.pipeline, "seed": plan.seed, "train": plan.trains, "resume": plan.action == "resume",
            "budget": spec.budget.model_dump(), "code": dict(code), "threads": threads,
            "differs": {"set": plan.entry.set, "override": plan.entry.override} if plan.entry else {}}


class _Signals:
    """While a comparison runs: the first SIGINT/SIGTERM stops it (runs checkpoint and end), a second
    SIGINT aborts at once. ``on_signal(signum, count)`` decides what that means."""

    def __init__(self, on_signal: Any) -> None:
        self.on_signal = on_signal
        self.count = 0
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        self.signum = self.signum or signum
        self.on_signal(signum, self.count)

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _run_in_process(plans: list[RunPlan], jobs: list[dict[str, Any]], progress: ComparisonProgress) -> list[str]:
    """One run after the other in this process; returns the labels of runs that did not finish."""
    from .run import FINISHED, execute_run

    def stop_now(signum: int, count: int) -> None:  # outside training (the engine handles its own)
        raise KeyboardInterrupt

    from .run import write_json_atomic

    stopped: list[str] = []
    with _Signals(stop_now):
        for plan, job in zip(plans, jobs):
            plan.run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(plan.run_dir / "job.json", job)
            progress.start(plan.label, weight=1.0 if plan.trains else EVAL_ONLY_WEIGHT,
                           max_steps=plan.raw["train"]["max_steps"] if plan.raw["train"]["max_steps"] < 10**6 else None,
                           resumed_from=plan.resumed_from)
            try:
                record = execute_run(job, on_progress=lambda info, label=plan.label: progress.update(label, info))
            except KeyboardInterrupt:
                progress.finish(plan.label, "stopped")
                stopped.append(plan.label)
                break
            if record["status"] != FINISHED:
                progress.finish(plan.label, f"stopped at step {record['train']['steps']} (checkpoint saved)")
                stopped.append(plan.label)
                break
            progress.finish(plan.label, "finished")
    return stopped


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the worker gets SIGTERM if the comparison process dies without stopping it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


def _run_in_workers(plans: list[RunPlan], jobs: list[dict[str, Any]], progress: ComparisonProgress,
                    n_jobs: int, threads: int) -> list[str]:
    """Up to ``n_jobs`` worker processes at once; returns the labels of runs that did not finish."""
    import subprocess

    from .run import EXIT_INTERRUPTED, FINISHED, read_json, write_json_atomic

    pending = list(zip(plans, jobs))
    running: dict[str, tuple[RunPlan, subprocess.Popen[bytes], Any]] = {}
    stopped: list[str] = []
    failed: list[str] = []
    state = {"stopping": False}

    def on_signal(signum: int, count: int) -> None:
        state["stopping"] = True
        for _, proc, _ in running.values():
            if proc.poll() is None:  # first: checkpoint and stop; second: abort at once
                proc.send_signal(signal.SIGTERM if count == 1 else signal.SIGINT)

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with _Signals(on_signal):
        while pending or running:
            while pending and not state["stopping"] and len(running) < n_jobs:
                plan, job = pending.pop(0)
                plan.run_dir.mkdir(parents=True, exist_ok=True)
                write_json_atomic(plan.run_dir / "job.json", job)
                (plan.run_dir / "progress.json").unlink(missing_ok=True)
                log = (plan.run_dir / "worker.log").open("ab")
                proc = subprocess.Popen([sys.executable, "-m", "remask.harness.run", str(plan.run_dir / "job.json")],
                                        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                        preexec_fn=_set_parent_death_signal)
                running[plan.label] = (plan, proc, log)
                progress.start(plan.label, weight=1.0 if plan.trains else EVAL_ONLY_WEIGHT,
                               max_steps=plan.raw["train"]["max_steps"] if plan.raw["train"]["max_steps"] < 10**6
                               else None, resumed_from=plan.resumed_from)
            time.sleep(0.2)
            for label, (plan, proc, log) in list(running.items()):
                info = read_json(plan.run_dir / "progress.json")
                if info:
                    progress.update(label, info)
                rc = proc.poll()
                if rc is None:
                    continue
                log.close()
                del running[label]
                result = read_json(plan.run_dir / "result.json") or {}
                if rc == 0 and result.get("status") == FINISHED:
                    progress.finish(label, "finished")
                elif (rc in (EXIT_INTERRUPTED, 130, -signal.SIGTERM, -signal.SIGINT) and state["stopping"]) \
                        or result.get("status") == "interrupted":
                    progress.finish(label, "stopped" + (f" at step {result['train']['steps']} (checkpoint saved)"
                                                        if result.get("train") else ""))
                    stopped.append(label)
                else:
                    progress.finish(label, f"failed (exit code {rc}; see {plan.run_dir / 'worker.log'})")
                    failed.append(f"{label}: exit code {rc}, log {plan.run_dir / 'worker.log'}")
                    on_signal(signal.SIGTERM, 1)  # one failure stops the comparison; the others checkpoint
    if failed:
        raise RemaskError("a run of the comparison failed: " + "; ".join(failed)
                          + " (finished runs are kept; fix the cause and continue with --resume)")
    return stopped + [p.label for p, _ in pending]


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------


def run_compare(spec_path: str | Path, *, output_dir: str | None = None, resume: bool = False, jobs: int = 1,
                report_only: bool = False, stream: Any = None) -> Path:
    """Run every pipeline for every seed, then write ``report.md``, plots and manifests.

    ``resume``: reuse finished runs and resume interrupted ones from their checkpoint, after checking
    that each was made under the same protocol and code. ``jobs``: runs at once, each in its own
    process with ``cores // jobs`` torch threads. ``report_only``: rebuild ``report.md`` and the plots
    from ``results.json`` and ``manifest.json`` in the output directory, without training.
    A signal stops the whole comparison (:class:`ComparisonStopped`); nothing is reported then."""
    from ..environment import env_info
    from ..engine.reporting import git_revision

    spec, base = load_compare_spec(spec_path)
    out = Path(output_dir or spec.output_dir)
    if report_only:
        return _report_from_disk(spec, spec_path, out)
    if jobs < 1:
        raise RemaskError(f"--jobs {jobs}: give at least 1")
    if jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RemaskError("--jobs N runs several single-process runs at once; under accelerate launch use --jobs 1")
    out.mkdir(parents=True, exist_ok=True)
    code = code_revision()
    plans = _plan_runs(spec, base, out)
    if resume:
        _check_resumable(plans, code)
    todo = [p for p in plans if p.action != "reuse"]
    threads = max(1, _cores() // jobs) if jobs > 1 else None
    if jobs > 1 and spec.budget.wall_seconds:
        print(f"note: --jobs {jobs} with a wall_seconds budget: runs that share the machine get fewer steps than "
              "one at a time", flush=True)
    if jobs > 1 and jobs > _cores():
        print(f"note: --jobs {jobs} on {_cores()} cores: each run gets 1 torch thread and they share cores", flush=True)
    main = int(os.environ.get("RANK", "0")) == 0  # under accelerate launch every rank runs this function
    progress = ComparisonProgress(len(plans), reused=len(plans) - len(todo),
                                  stream=stream if main else open(os.devnull, "w"), budget=spec.budget.describe())
    for p in todo:
        progress.add_work(1.0 if p.trains else EVAL_ONLY_WEIGHT)
    if len(plans) > len(todo):
        progress.message(f"reusing {len(plans) - len(todo)} finished runs (same protocol, {_describe_code(code)})")
    job_dicts = [_job(p, spec, spec_path, code, threads) for p in todo]
    started = time.perf_counter()
    if main:
        progress.start_ticking()
    try:
        if jobs == 1:
            stopped = _run_in_process(todo, job_dicts, progress)
        else:
            stopped = _run_in_workers(todo, job_dicts, progress, jobs, threads or 1)
    finally:
        progress.close()
    if stopped:
        finished = sum(1 for p in plans if (p.run_dir / "result.json").is_file()
                       and json.loads((p.run_dir / "result.json").read_text()).get("status") == "finished")
        raise ComparisonStopped(
            f"comparison stopped: {finished}/{len(plans)} runs finished, not run or interrupted: "
            f"{', '.join(stopped)}; nothing was reported. Continue with: remask compare {spec_path} --resume"
            + (f" --out {output_dir}" if output_dir else ""))
    if not main:  # the main process writes the results and the report
        return out / "report.md"
    from .run import read_json

    runs = [read_json(p.run_dir / "result.json") for p in plans]
    manifest = {"spec": str(spec_path), "spec_resolved": spec.model_dump(mode="json"), "env": env_info(),
                "git": git_revision(Path(spec_path).resolve().parent), "code": code, "jobs": jobs,
                "threads_per_run": threads, "seconds": time.perf_counter() - started,
                "reused_runs": len(plans) - len(todo)}
    from .run import write_json_atomic

    write_json_atomic(out / "manifest.json", manifest)
    write_json_atomic(out / "results.json", runs)
    return write_report(spec, spec_path, runs, manifest, out)


#: spec fields that a rebuilt report may change without running anything again
_PRESENTATION = ("output_dir", "reference")


def _report_from_disk(spec: CompareSpec, spec_path: str | Path, out: Path) -> Path:
    from .run import read_json

    runs, manifest = read_json(out / "results.json"), read_json(out / "manifest.json")
    if runs is None or manifest is None:
        raise RemaskError(f"--report-only: {out} holds no results.json and manifest.json of a finished comparison")
    stored = dict(manifest.get("spec_resolved") or {})
    current = spec.model_dump(mode="json")
    for key in _PRESENTATION:  # they change where the report goes and what it shows, not a number in it
        stored.pop(key, None)
        current.pop(key, None)
    diff = protocol_difference(stored, current)
    if diff is not None:
        raise RemaskError(f"--report-only: {out} was made from a different spec ({diff})")
    return write_report(spec, spec_path, runs, manifest, out)


def _eval_samplers(runs: list[dict[str, Any]]) -> str:
    """The evaluation sampler of the report's header: one, or one per pipeline where they differ
    (pipelines that train with other samplers evaluate with their own unless ``eval.sampler`` names one)."""
    by_pipeline: dict[str, str] = {}
    for r in runs:
        by_pipeline.setdefault(r["pipeline"], json.dumps(r["eval"]["sampler"], sort_keys=True))
    distinct = list(dict.fromkeys(by_pipeline.values()))
    if len(distinct) <= 1:
        return f"sampler `{distinct[0] if distinct else '{}'}`."
    return ("the evaluation sampler differs between pipelines (set `eval.sampler.name` to hold it fixed): "
            + "; ".join(f"**{name}** `{text}`" for name, text in by_pipeline.items()) + ".")


def write_report(spec: CompareSpec, spec_path: str | Path, runs: list[dict[str, Any]], manifest: Mapping[str, Any],
                 out: Path) -> Path:
    """``report.md`` and the plots from finished run records (no training, no evaluation)."""
    ev = EvalConfig.model_validate({**spec.eval})
    n = int(runs[0]["eval"]["samples_per_prompt"]) if runs else ev.samples_per_prompt
    ks = sorted({1, *[k for k in (2, 4, 8, 16, 32, 64) if k <= n], n})
    rows = summary_rows(runs, ks)
    plots = write_plots(runs, out, ks)
    sampler = runs[0]["eval"]["sampler"] if runs else {}
    env = manifest.get("env") or {}
    seconds = manifest.get("seconds")
    lines = [
        f"# Comparison: {Path(spec_path).name}",
        "",
        f"Base pipeline `{spec.base}`; budget {spec.budget.describe()} per run; seeds {spec.seeds}; "
        f"cells are mean ± sample std over seeds [95% Student-t half-width].",
        f"Evaluation: split `{ev.split}`, {ev.limit or 'all'} problems; greedy accuracy from one temperature-0 "
        f"completion per problem, pass@k from {n} samples per problem at the sampler's temperature "
        f"({sampler.get('sampled_temperature')}); " + _eval_samplers(runs),
        "",
        markdown_table(rows),
    ]
    if spec.reference_label is not None:
        lines += [
            f"## Paired by seed against `{spec.reference_label}`",
            "",
            "Each row: this pipeline minus the reference, seed by seed (same data order, initial weights and "
            "evaluation draws), as mean ± sample std of the per-seed differences with the 95% Student-t "
            "interval of the mean difference. An interval inside ±m resolves equality within m points; one "
            "that excludes 0 resolves a gap.",
            "",
            markdown_table(paired_rows(runs, spec.reference_label)),
        ]
    lines += [
        "## What each pipeline changes",
        "",
    ]
    for entry in spec.pipelines:
        lines.append(f"- **{entry.name}**: set `{json.dumps(entry.set, sort_keys=True)}`, "
                     f"override `{json.dumps(entry.override, sort_keys=True)}`")
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    timing = (f" The whole comparison took {seconds / 60:.1f} min of wall time"
              f" with --jobs {manifest.get('jobs', 1)}." if isinstance(seconds, (int, float)) else "")
    lines += ["", f"Reproduce: `remask compare {spec_path}`; rebuild this report and its plots from results.json "
              f"without training: `remask compare {spec_path} --report-only --out {out}`. Machine: "
              f"{env.get('device')}, torch {env.get('torch')}, remask {env.get('remask')}.{timing}"]
    report = out / "report.md"
    notes = ""
    if report.is_file():  # notes written by hand below the generated part survive a rebuild
        previous = report.read_text()
        at = previous.find("\n", previous.find("\nReproduce: `remask compare ") + 1)
        if previous.find("\nReproduce: `remask compare ") >= 0 and at >= 0:
            notes = previous[at + 1:]
    report.write_text("\n".join(lines) + "\n" + notes)
    return report
