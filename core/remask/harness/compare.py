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
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import EvalConfig, apply_overrides, parse_config, read_yaml
from ..errors import ConfigError
from .report import markdown_table, summary_rows, write_plots

__all__ = ["Budget", "PipelineEntry", "CompareSpec", "load_compare_spec", "pipeline_raw_config", "run_compare",
           "LOCKED_SECTIONS"]

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
        return self


def load_compare_spec(path: str | Path) -> tuple[CompareSpec, dict[str, Any]]:
    """The validated spec and the raw base pipeline it points at."""
    from pydantic import ValidationError

    raw = read_yaml(path)
    try:
        spec = CompareSpec.model_validate(raw or {})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"{path}: {loc}: {err['msg']}")
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


class _History:
    """A lifecycle-hook plugin recording the metrics of every optimizer step of one run."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._fwd = 0.0

    def after_step(self, step: int, metrics: dict[str, float]) -> None:
        self._fwd += float(metrics.get("diffusion/nfe", 0.0)) + float(metrics.get("diffusion/forward_passes", 0.0))
        row = {"step": float(step), "forward_passes": self._fwd}
        row.update({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        self.rows.append(row)


def _hook_plugin(history: _History) -> Any:
    from ..hookspecs import hookimpl

    class Plugin:
        @hookimpl
        def after_step(self, step, metrics):
            history.after_step(step, metrics)

    return Plugin()


def _run_one(raw: dict[str, Any], source: str, *, train_it: bool) -> dict[str, Any]:
    """Train (optionally) and evaluate one pipeline; returns the result record."""
    from ..engine.components import build_pipeline
    from ..engine.trainer import train
    from ..registry import get_registry
    from .evaluate import evaluate_protocol

    config = parse_config(raw, source=source)
    reg = get_registry()
    pipeline = build_pipeline(config, reg)
    history = _History()
    started = time.perf_counter()
    try:
        if train_it:
            name = f"compare-history-{id(history)}"
            reg.register_plugin(_hook_plugin(history), name=name)
            try:
                train(config, registry=reg, pipeline=pipeline)
            finally:
                reg.unregister_plugin(name)
        seconds = time.perf_counter() - started
        reports = evaluate_protocol(pipeline, config)
    finally:
        pipeline.close()
    first = reports[0]
    out_dir = Path(config.train.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from .evaluate import write_eval_outputs

    write_eval_outputs(out_dir / "eval", reports, title=source)
    (out_dir / "config.yaml").write_text(config.to_yaml())
    last = history.rows[-1] if history.rows else {}
    return {
        "eval": first.summary(),
        "evals": [r.summary() for r in reports],
        "train": {"steps": int(last.get("step", 0)), "forward_passes": last.get("forward_passes", 0.0),
                  "seconds": seconds if train_it else 0.0, "history": history.rows},
    }


def run_compare(spec_path: str | Path, *, output_dir: str | None = None) -> Path:
    """Run every pipeline for every seed, then write ``report.md``, plots and manifests."""
    from ..environment import env_info
    from ..engine.reporting import git_revision

    spec, base = load_compare_spec(spec_path)
    out = Path(output_dir or spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ev = EvalConfig.model_validate({**(base.get("eval") or {}), **spec.eval})
    ks = sorted({1, *[k for k in (2, 4, 8, 16, 32, 64) if k <= ev.samples_per_prompt], ev.samples_per_prompt})
    runs: list[dict[str, Any]] = []
    entries: list[PipelineEntry | None] = ([None] if spec.evaluate_base else []) + list(spec.pipelines)
    total = len(entries) * len(spec.seeds)
    done = 0
    for seed in spec.seeds:
        for entry in entries:
            name = entry.name if entry is not None else "base (untrained)"
            run_dir = out / "runs" / name.split(" ")[0] / f"seed-{seed}"
            raw = pipeline_raw_config(base, spec, entry, seed, run_dir)
            done += 1
            print(f"[{done}/{total}] {name} seed {seed}", flush=True)
            record = _run_one(raw, f"{spec_path}:{name}", train_it=entry is not None)
            record.update({"pipeline": name, "seed": seed,
                           "differs": {"set": entry.set, "override": entry.override} if entry else {}})
            runs.append(record)
            (run_dir / "result.json").write_text(json.dumps(record, indent=2, default=str))
    rows = summary_rows(runs, ks)
    plots = write_plots(runs, out, ks)
    manifest = {"spec": str(spec_path), "spec_resolved": spec.model_dump(mode="json"), "env": env_info(),
                "git": git_revision(Path(spec_path).resolve().parent)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    (out / "results.json").write_text(json.dumps(runs, indent=2, default=str))
    sampler = runs[0]["eval"]["sampler"] if runs else {}
    lines = [
        f"# Comparison: {Path(spec_path).name}",
        "",
        f"Base pipeline `{spec.base}`; budget {spec.budget.describe()} per run; seeds {spec.seeds}; "
        f"cells are mean ± sample std over seeds [95% Student-t half-width].",
        f"Evaluation: split `{ev.split}`, {ev.limit or 'all'} problems, greedy accuracy plus "
        f"{ev.samples_per_prompt} samples per prompt for pass@k; sampler `{json.dumps(sampler, sort_keys=True)}`.",
        "",
        markdown_table(rows),
        "## What each pipeline changes",
        "",
    ]
    for entry in spec.pipelines:
        lines.append(f"- **{entry.name}**: set `{json.dumps(entry.set, sort_keys=True)}`, "
                     f"override `{json.dumps(entry.override, sort_keys=True)}`")
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    lines += ["", f"Reproduce: `remask compare {spec_path}`. Machine: {manifest['env'].get('device')}, "
              f"torch {manifest['env'].get('torch')}, remask {manifest['env'].get('remask')}."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"
