"""The shipped long-completion model `builtin:tiny-scan` and its example pipelines."""

from __future__ import annotations

from pathlib import Path

import pytest

from remask.cli import main

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVES = ("grpo", "d1", "dtrpo", "trafl", "egspo", "egspo-sa", "wd1", "spg", "espo", "coupled-grpo",
              "vrpo", "tracerl", "mdpo")


def test_shipped_checkpoint_is_small_and_beats_chance_on_held_out_rows():
    from remask.config import load_config
    from remask.engine.components import build_pipeline
    from remask.engine.evaluation import build_eval_sampler, evaluate
    from remask_math.digit_scan import scan_credit

    ckpt = ROOT / "plugins" / "remask_diffusion" / "checkpoints" / "tiny-scan"
    assert sum(f.stat().st_size for f in ckpt.iterdir()) <= 40 * 2**20
    cfg = load_config(ROOT / "examples" / "tiny-scan-grpo.yaml", {"eval.limit": 40, "eval.batch_size": 40})
    pipe = build_pipeline(cfg)
    try:
        result = evaluate(pipe.model, pipe.task, build_eval_sampler(cfg.sampler, cfg.eval), cfg.eval)
    finally:
        pipe.close()
    assert result.num_problems == 40 and result.split == "test"
    # chance: a random digit is right 1 time in 10, a whole 60-digit answer 1 time in 10^60
    digits = sum(scan_credit(r["completion"], ex.reference["answer"])[0]
                 for r, ex in zip(result.rows, pipe.task.examples("test"))) / 40
    assert digits >= 0.5, digits
    # and leaves room for RL: 48.4% exact match on the 1000 test rows (docs/benchmarks.md)
    assert 0.05 <= result.accuracy <= 0.8, result.accuracy


@pytest.mark.parametrize("algo", OBJECTIVES)
def test_every_objective_has_a_tiny_scan_example_that_validates(algo, capsys):
    path = ROOT / "examples" / f"tiny-scan-{algo}.yaml"
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert ": OK" in out and algo.split("-")[0] in out


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
