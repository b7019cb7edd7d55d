"""The embedded default: the shipped tiny checkpoint and the quickstart pipeline, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_checkpoint_loads_and_beats_chance():
    from remask.config import load_config
    from remask.engine.components import build_pipeline
    from remask.engine.evaluation import build_eval_sampler, evaluate

    cfg = load_config(ROOT / "examples" / "quickstart.yaml", {"eval.limit": 200})
    pipe = build_pipeline(cfg)
    try:
        assert sum(p.numel() for p in pipe.model.module.parameters()) < 10_000_000
        result = evaluate(pipe.model, pipe.task, build_eval_sampler(cfg.sampler, cfg.eval), cfg.eval)
    finally:
        pipe.close()
    # chance on 2-digit sums is ~0 (the answer has 2-3 digits); SFT stopped at >= 40% on 500 problems
    assert result.num_problems == 200
    assert 0.30 <= result.accuracy <= 0.60, result.accuracy


@pytest.mark.slow
def test_quickstart_runs_end_to_end_on_a_short_budget(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "remask", "train", str(ROOT / "examples" / "quickstart.yaml"),
         "--train.max_steps", "8", "--train.prompts_per_step", "8", "--eval.limit", "50",
         "--train.output_dir", str(out), "--train.progress", "false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = [l for l in proc.stdout.splitlines() if l.startswith("greedy accuracy")]
    assert summary and "on 50 held-out problems" in summary[0], proc.stdout[-2000:]
    assert (out / "checkpoint-8" / "model.safetensors").is_file()
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["objective"]["name"] == "egspo"
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("train/reward" in r for r in rows) and any("eval/accuracy" in r for r in rows)
