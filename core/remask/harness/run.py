"""One run of a comparison: train (or resume) one pipeline for one seed, evaluate it, record it.

``remask compare`` calls :func:`execute_run` in its own process with ``--jobs 1``, and starts one
worker process per run with ``--jobs N``::

    python -m remask.harness.run RUN_DIR/job.json

A run directory holds, besides the engine's own files (checkpoints, TensorBoard logs, metrics):

- ``job.json`` — what to run: the raw pipeline config, whether to train, whether to resume, the
  code revision it was started under, and the torch thread count;
- ``history.jsonl`` — one line per optimizer step (the step's metrics and cumulative forward passes
  and seconds), cut back to the checkpoint's step when the run resumes;
- ``progress.json`` — the latest step and the fraction of the budget spent, for the progress line;
- ``result.json`` — written last and atomically: ``status`` is ``finished`` (with the evaluation)
  or ``interrupted`` (with the step it stopped at and no evaluation). A run without ``result.json``
  did not get as far as its first checkpoint or was killed.

Only a ``finished`` result is ever reported.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["FINISHED", "INTERRUPTED", "EXIT_INTERRUPTED", "execute_run", "read_json", "write_json_atomic",
           "checkpoint_step"]

FINISHED = "finished"
INTERRUPTED = "interrupted"
#: exit code of a worker whose run was stopped by a signal (BSD EX_TEMPFAIL: "try again later")
EXIT_INTERRUPTED = 75

Progress = Callable[[Mapping[str, Any]], None]


def write_json_atomic(path: Path, data: Any) -> None:
    """Strict JSON written to a temporary file and renamed, so a reader never sees half a file."""
    from .evaluate import strict_json

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(strict_json(data, indent=2, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or ``None`` if it is missing or unreadable (e.g. a partial write of an old version)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def checkpoint_step(run_dir: Path) -> int | None:
    """Step of the newest complete checkpoint in ``run_dir`` (``None`` if there is none)."""
    from ..engine.checkpoint import latest_checkpoint

    latest = latest_checkpoint(run_dir)
    return int(latest.name.rsplit("-", 1)[1]) if latest is not None else None


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class RunHistory:
    """A lifecycle-hook plugin recording every optimizer step of one run in ``history.jsonl``.

    ``resume_step``: the checkpoint the run resumes from; lines after it are dropped (the resumed
    run recomputes those steps) and the cumulative counters continue from the last kept line."""

    def __init__(self, run_dir: Path, *, budget: Mapping[str, Any], resume_step: int | None,
                 on_progress: Progress | None = None) -> None:
        self.path = run_dir / "history.jsonl"
        self.progress_path = run_dir / "progress.json"
        self.budget = dict(budget)
        self.on_progress = on_progress
        self.rows: list[dict[str, float]] = []
        if resume_step is not None and self.path.is_file():
            for line in self.path.read_text().splitlines():
                row = json.loads(line)
                if row["step"] <= resume_step:
                    self.rows.append(row)
        self._fwd = self.rows[-1]["forward_passes"] if self.rows else 0.0
        self._seconds_before = self.rows[-1].get("seconds", 0.0) if self.rows else 0.0
        self._started = time.perf_counter()
        if _is_main_process():
            run_dir.mkdir(parents=True, exist_ok=True)
            self._rewrite()

    def _rewrite(self) -> None:
        from .evaluate import strict_json

        self.path.write_text("".join(strict_json(r) + "\n" for r in self.rows))

    def restart_clock(self) -> None:
        """Count training seconds from now (not the model loading before it)."""
        self._started = time.perf_counter()

    def seconds(self) -> float:
        """Training seconds so far, over every invocation of this run."""
        return self._seconds_before + time.perf_counter() - self._started

    def after_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        from .evaluate import strict_json

        self._fwd += float(metrics.get("diffusion/nfe", 0.0)) + float(metrics.get("diffusion/forward_passes", 0.0))
        row = {"step": float(step), "forward_passes": self._fwd, "seconds": self.seconds()}
        row.update({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        self.rows.append(row)
        if not _is_main_process():
            return
        with self.path.open("a") as fh:
            fh.write(strict_json(row) + "\n")
        self.report("train", step=step)

    def report(self, phase: str, *, step: int | None = None) -> None:
        """Write ``progress.json`` (and tell the in-process progress line)."""
        step = int(step if step is not None else (self.rows[-1]["step"] if self.rows else 0))
        b = self.budget
        if b.get("optimizer_steps"):
            fraction = step / b["optimizer_steps"]
        elif b.get("forward_passes"):
            fraction = self._fwd / b["forward_passes"]
        else:
            fraction = self.seconds() / b["wall_seconds"]
        info = {"phase": phase, "step": step, "forward_passes": self._fwd, "fraction": min(max(fraction, 0.0), 1.0),
                "time": time.time()}
        if phase != "train":
            info["fraction"] = 1.0
        write_json_atomic(self.progress_path, info)
        if self.on_progress is not None:
            self.on_progress(info)


def _hook_plugin(history: RunHistory) -> Any:
    from ..hookspecs import hookimpl

    class Plugin:
        @hookimpl
        def after_step(self, step, metrics):
            history.after_step(step, metrics)

    return Plugin()


def execute_run(job: Mapping[str, Any], *, on_progress: Progress | None = None) -> dict[str, Any]:
    """Train (optionally, resuming from the run's newest checkpoint when ``job["resume"]``) and
    evaluate one pipeline; writes and returns its result record (``status`` finished or interrupted).

    A signal during training stops at the next rollout boundary with a checkpoint (the engine's
    own handling) and gives an ``interrupted`` record without evaluation."""
    from ..config import parse_config
    from ..engine.components import build_pipeline
    from ..engine.trainer import train
    from ..registry import get_registry
    from .evaluate import evaluate_protocol, write_eval_outputs

    run_dir = Path(job["run_dir"])
    result_path = run_dir / "result.json"
    if result_path.exists() and _is_main_process():
        result_path.unlink()
    resume_step = checkpoint_step(run_dir) if job.get("resume") else None
    raw = json.loads(json.dumps(job["raw"]))
    # a fresh run replaces what an earlier attempt left (the comparison decided that it is not resumed)
    raw["train"]["overwrite_output_dir"] = resume_step is None
    if job.get("threads"):
        raw["train"]["torch_threads"] = int(job["threads"])
    config = parse_config(raw, source=job["source"])
    history = RunHistory(run_dir, budget=job["budget"], resume_step=resume_step, on_progress=on_progress)
    reg = get_registry()
    pipeline = build_pipeline(config, reg)
    base = {"pipeline": job["pipeline"], "seed": job["seed"], "differs": job.get("differs", {}),
            "protocol": job["raw"], "code": job["code"]}
    try:
        steps = 0
        if job["train"]:
            name = f"compare-history-{id(history)}"
            reg.register_plugin(_hook_plugin(history), name=name)
            history.restart_clock()
            try:
                result = train(config, resume="latest" if resume_step is not None else None, registry=reg,
                               pipeline=pipeline)
            finally:
                reg.unregister_plugin(name)
            steps = int(result.get("global_step", 0))
            if result.get("interrupted"):
                record = {**base, "status": INTERRUPTED,
                          "train": {"steps": steps, "forward_passes": history._fwd, "seconds": history.seconds()}}
                if _is_main_process():
                    write_json_atomic(result_path, record)
                return record
        seconds = history.seconds() if job["train"] else 0.0
        history.report("eval", step=steps)
        reports = evaluate_protocol(pipeline, config)
    finally:
        pipeline.close()
    record = {
        **base,
        "status": FINISHED,
        "eval": reports[0].summary(),
        "evals": [r.summary() for r in reports],
        "train": {"steps": steps, "forward_passes": history._fwd, "seconds": seconds, "history": history.rows},
    }
    if _is_main_process():
        write_eval_outputs(run_dir / "eval", reports, title=job["source"])
        if not job["train"]:  # a training run's config.yaml is the engine's
            (run_dir / "config.yaml").write_text(config.to_yaml())
        write_json_atomic(result_path, record)
    return record


def _stop_outside_training(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: run the job in ``argv[0]``; exit 0 (finished), 75 (interrupted) or 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    job = json.loads(Path(argv[0]).read_text())
    # before and after training a signal stops at once (the run is resumed from its checkpoint);
    # during training the engine installs its own handler and checkpoints first
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_outside_training)
    if not os.environ.get("REMASK_DEBUG"):  # as the CLI: no per-file loading bars from transformers
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        record = execute_run(job)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0 if record["status"] == FINISHED else EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover - exercised through `remask compare --jobs N`
    sys.exit(main())
