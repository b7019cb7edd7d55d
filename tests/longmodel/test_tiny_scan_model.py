"""The shipped long-completion models `builtin:tiny-scan` (rule count) and `builtin:tiny-step` (rule step)
and their example pipelines."""

from __future__ import annotations

from pathlib import Path

import pytest

from remask.cli import main

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVES = ("grpo", "d1", "dtrpo", "trafl", "egspo", "egspo-sa", "wd1", "spg", "espo", "coupled-grpo",
              "vrpo", "tracerl", "mdpo")
#: shipped model -> its digit-scan rule and its greedy exact match on the 1000 test rows (docs/models.md)
MODELS = {"tiny-scan": "count", "tiny-step": "step"}


def _evaluate(name: str, limit: int, **override):
    from remask.config import load_config
    from remask.engine.components import build_pipeline
    from remask.engine.evaluation import build_eval_sampler, evaluate

    cfg = load_config(ROOT / "examples" / f"{name}-grpo.yaml",
                      {"eval.limit": limit, "eval.batch_size": limit, **override})
    pipe = build_pipeline(cfg)
    try:
        result = evaluate(pipe.model, pipe.task, build_eval_sampler(cfg.sampler, cfg.eval), cfg.eval)
        examples = pipe.task.examples("test")
    finally:
        pipe.close()
    return result, examples


@pytest.mark.parametrize("name", list(MODELS))
def test_shipped_checkpoint_is_small_and_beats_chance_on_held_out_rows(name):
    from remask_math.digit_scan import scan_credit

    ckpt = ROOT / "plugins" / "remask_diffusion" / "checkpoints" / name
    assert sum(f.stat().st_size for f in ckpt.iterdir()) <= 40 * 2**20
    result, examples = _evaluate(name, 40)
    assert result.num_problems == 40 and result.split == "test"
    # chance: a random digit is right 1 time in 10, a whole 60-digit answer 1 time in 10^60
    digits = sum(scan_credit(r["completion"], ex.reference["answer"])[0] for r, ex in zip(result.rows, examples)) / 40
    assert digits >= 0.5, digits
    # and leaves room for RL (docs/models.md: 48.4 % and 45.1 % on the 1000 test rows)
    assert 0.05 <= result.accuracy <= 0.8, result.accuracy


def test_tiny_step_decodes_in_parallel_where_tiny_scan_cannot():
    """What `builtin:tiny-step` is shipped for: threshold decoding with the dual cache commits several right
    tokens per step on it (one batch: fewer than half of llada's 64 passes, no loss of exact match beyond row noise),
    while on `builtin:tiny-scan`'s sequential rule the same sampler loses most of its exact match."""
    fast = {"eval.sampler": {"name": "fast-dllm", "gen_length": 64, "block_length": 16, "steps": 64,
                             "threshold": 0.9, "cache": "dual"}}
    accuracy = {}
    for name in MODELS:
        llada, _ = _evaluate(name, 40)
        threshold, _ = _evaluate(name, 40, **fast)
        accuracy[name] = (llada.accuracy, threshold.accuracy, threshold.nfe)
    llada_acc, fast_acc, nfe = accuracy["tiny-step"]
    assert nfe < 32, accuracy
    assert fast_acc >= llada_acc - 0.1, accuracy
    llada_acc, fast_acc, _ = accuracy["tiny-scan"]
    assert fast_acc < llada_acc - 0.2, accuracy


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("algo", OBJECTIVES)
def test_every_objective_has_an_example_that_validates(name, algo, capsys):
    path = ROOT / "examples" / f"{name}-{algo}.yaml"
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert ": OK" in out and algo.split("-")[0] in out


@pytest.mark.parametrize("algo", (*OBJECTIVES, "sft"))
def test_tiny_step_examples_are_the_tiny_scan_examples_on_the_parallel_rule(algo):
    """Every tiny-step pipeline is its tiny-scan twin with the model, the rule and the run directory changed, so
    the two-step training of the tiny-scan examples below covers them and RL results compare like for like."""
    import yaml

    def body(name):
        raw = yaml.safe_load((ROOT / "examples" / f"{name}-{algo}.yaml").read_text())
        rule = raw["task"].pop("rule")
        path = raw["model"].pop("path")
        out = raw["train"].pop("output_dir")
        saved = raw["train"].pop("save_final_model", None)
        return raw, rule, path, out, saved

    scan, step = body("tiny-scan"), body("tiny-step")
    assert step[0] == scan[0]
    assert (scan[1], step[1]) == ("count", "step")
    assert step[2] == ("random" if algo == "sft" else "builtin:tiny-step")  # SFT trains it from scratch
    assert step[2] == scan[2].replace("tiny-scan", "tiny-step")
    assert step[3] == scan[3].replace("tiny-scan", "tiny-step") and step[3] != scan[3]
    assert step[4] == (scan[4] and scan[4].replace("tiny-scan", "tiny-step"))


@pytest.mark.slow
@pytest.mark.parametrize("algo", OBJECTIVES)
def test_every_tiny_scan_example_trains_two_steps(algo, tmp_path):
    """Each example's own objective, advantage, selector and inner updates on the long completions, 2 x 3 rows."""
    import json
    import math

    from remask.config import load_config
    from remask.engine import train

    cfg = load_config(ROOT / "examples" / f"tiny-scan-{algo}.yaml", {
        "train.max_steps": 2, "train.prompts_per_step": 2, "train.group_size": 3,
        "train.output_dir": str(tmp_path / "run"), "train.report_to": [], "train.progress": False,
        "train.save_steps": 0, "train.log_completions": 0, "sampler.steps": 16})
    result = train(cfg)
    assert result["global_step"] == 2
    assert (tmp_path / "run" / "checkpoint-2").is_dir()
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["train/loss"] for row in logged if "train/loss" in row]
    norms = [row["train/grad_norm"] for row in logged if "train/grad_norm" in row]
    assert losses and all(math.isfinite(x) for x in losses), losses
    # the update reached the model: an advantage filter that drops every group (tracerl's 0/1 accuracy band
    # on the 0..2 scan reward did) leaves the gradient at exactly 0
    assert max(norms) > 0, norms
