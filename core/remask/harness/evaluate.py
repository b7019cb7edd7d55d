"""``remask eval``: one fixed evaluation protocol for any model, base or trained.

For every generation length it runs two decodes of the task's held-out split with the pipeline's
sampler: a greedy one (temperature 0, reported as ``greedy_accuracy``) and a sampled one of
``eval.samples_per_prompt`` = n completions per prompt at the sampler's own temperature (unbiased
pass@k for k = 1..n, distinct correct completions per prompt). A metric named pass@k therefore
always comes from samples, never from the greedy decode. Accuracy is the task's own parser
(``Task.is_correct``); mean reward uses the pipeline's reward models. Every number is written with
the sampler settings and a manifest beside it, because dLLM numbers are not comparable without them
(spec algorithms.md §6–7). JSON outputs are strict (:func:`strict_json`): a value that does not
exist is ``null``, never ``NaN``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import EvalConfig, PipelineConfig
from ..engine.components import Pipeline, RewardScorer
from ..engine.data import build_prompt_batch, encode_text
from ..engine.evaluation import EvalResult, build_eval_sampler, evaluate
from ..interfaces import DiffusionModel
from .metrics import distinct_correct

__all__ = ["LengthReport", "evaluate_protocol", "write_eval_outputs", "eval_markdown", "strict_json", "json_safe"]


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by ``None``, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def strict_json(value: Any, **kwargs: Any) -> str:
    """RFC 8259 JSON: ``NaN`` and infinities become ``null`` (``json.dumps(allow_nan=False)``)."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)


@dataclass
class LengthReport:
    """Every metric of one generation length."""

    gen_length: int | None
    greedy_accuracy: float  # temperature 0, one completion per prompt
    pass_at_k: dict[str, float]  # {"k": unbiased pass@k} from n samples at the sampler's temperature
    distinct_correct: float  # mean over prompts of distinct correct sampled completions
    mean_reward: float  # of the greedy completions
    mean_length: float  # greedy completion length in tokens (through EOS)
    nfe_per_sample: float  # forward passes each greedy completion took (a batch shares its passes)
    seconds: float
    num_problems: int
    samples_per_prompt: int
    sampler: dict[str, Any] = field(default_factory=dict)
    completions: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("completions")
        return out


def _score_rewards(model: DiffusionModel, scorer: RewardScorer, result: EvalResult, examples: Sequence[Any]) -> list[float]:
    if not result.rows:
        return []
    refs = [examples[r["index"]] for r in result.rows]
    prompts = build_prompt_batch(model, refs, group_size=1)
    rewards = scorer(prompts, [r["completion"] for r in result.rows])
    return rewards.total.tolist()


def evaluate_protocol(
    pipeline: Pipeline,
    config: PipelineConfig,
    *,
    eval_config: EvalConfig | None = None,
    accelerator: Any = None,
) -> list[LengthReport]:
    """Run the protocol of ``eval_config`` (default: the config's ``eval`` section)."""
    ev = eval_config or config.eval
    model, task = pipeline.model, pipeline.task
    scorer = RewardScorer(pipeline.rewards)
    examples = list(task.examples(ev.split))
    if ev.limit is not None:
        examples = examples[: ev.limit]
    lengths: list[int | None] = list(ev.gen_lengths) or [None]
    reports = []
    for gen_length in lengths:
        start = time.perf_counter()
        greedy_cfg = ev.model_copy(update={"greedy": True, "samples_per_prompt": 1})
        greedy_sampler = build_eval_sampler(config.sampler, greedy_cfg, gen_length=gen_length)
        greedy = evaluate(model, task, greedy_sampler, greedy_cfg, accelerator=accelerator)
        rewards = _score_rewards(model, scorer, greedy, examples)
        toks = [len(encode_text(model.tokenizer, r["completion"])) + 1 for r in greedy.rows]  # + EOS
        n = ev.samples_per_prompt
        batches = max(1, -(-greedy.num_problems // ev.batch_size))
        sampled_cfg = ev.model_copy(update={"greedy": False})
        sampler = build_eval_sampler(config.sampler, sampled_cfg, gen_length=gen_length)
        sampled = evaluate(model, task, sampler, sampled_cfg, accelerator=accelerator)
        pak = {str(k): v for k, v in sampled.pass_at_k.items()}
        by_problem: dict[int, list[dict[str, Any]]] = {}
        for r in sampled.rows:
            by_problem.setdefault(r["index"], []).append(r)
        distinct = sum(
            distinct_correct([r["completion"] for r in rs], [r["score"] >= 1.0 for r in rs])
            for rs in by_problem.values()
        ) / max(len(by_problem), 1)
        sampled_rows = [dict(r, mode="sampled") for r in sampled.rows]
        settings = greedy_sampler.config.model_dump(mode="json")
        reports.append(LengthReport(
            gen_length=getattr(greedy_sampler.config, "gen_length", gen_length),
            greedy_accuracy=greedy.accuracy,
            pass_at_k=pak,
            distinct_correct=distinct,
            mean_reward=sum(rewards) / len(rewards) if rewards else float("nan"),
            mean_length=sum(toks) / len(toks) if toks else float("nan"),
            nfe_per_sample=greedy.nfe / batches,
            seconds=time.perf_counter() - start,
            num_problems=greedy.num_problems,
            samples_per_prompt=n,
            sampler={"name": greedy_sampler.name, **settings, "sampled_temperature": getattr(
                sampler.config, "temperature", None)},
            completions=[dict(r, mode="greedy", reward=rw) for r, rw in zip(greedy.rows, rewards)] + sampled_rows,
        ))
    return reports


def eval_markdown(reports: Sequence[LengthReport], title: str = "Evaluation") -> str:
    ks = sorted({int(k) for r in reports for k in r.pass_at_k})
    show = [k for k in ks if k in (1, 2, 4, 8, 16, 32, 64) or k == ks[-1]]
    head = ["L", "greedy accuracy %"] + [f"pass@{k} %" for k in show] + ["distinct correct", "mean reward",
                                                                     "length", "NFE/sample", "problems", "s"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in reports:
        cells = [str(r.gen_length), f"{100 * r.greedy_accuracy:.1f}"]
        cells += [f"{100 * r.pass_at_k[str(k)]:.1f}" if str(k) in r.pass_at_k else "–" for k in show]
        cells += [_fmt(r.distinct_correct, "{:.2f}"), _fmt(r.mean_reward, "{:.3f}"), _fmt(r.mean_length, "{:.1f}"),
                  f"{r.nfe_per_sample:.1f}",
                  str(r.num_problems), f"{r.seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if reports:
        n = reports[0].samples_per_prompt
        lines += ["", f"Greedy accuracy: one temperature-0 completion per problem. pass@k: unbiased estimate "
                      f"(Chen et al. 2021, eq. 1) from {n} sample{'s' if n > 1 else ''} per problem at the sampler's "
                      f"temperature ({reports[0].sampler.get('sampled_temperature')}).",
                  "", "Sampler settings: `" + json.dumps(reports[0].sampler, sort_keys=True) + "`"]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, spec: str) -> str:
    return spec.format(value) if value is not None and math.isfinite(value) else "–"


def write_eval_outputs(out_dir: Path, reports: Sequence[LengthReport], *, title: str,
                       manifest: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """``eval.json``, ``eval.md`` and ``completions.jsonl`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "eval.json", "markdown": out_dir / "eval.md", "completions": out_dir / "completions.jsonl"}
    paths["json"].write_text(strict_json({"title": title, "results": [r.summary() for r in reports],
                                          **({"manifest": dict(manifest)} if manifest else {})}, indent=2, default=str))
    paths["markdown"].write_text(eval_markdown(reports, title))
    with paths["completions"].open("w") as fh:
        for r in reports:
            for row in r.completions:
                fh.write(strict_json({"gen_length": r.gen_length, **row}) + "\n")
    return paths
