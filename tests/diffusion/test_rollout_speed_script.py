"""`benchmarks/rollout_speed.py` runs end to end on a minute random LLaDA-shaped model and prints its
table with one row per sampler/cache case (the numbers themselves live in docs/benchmarks.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "rollout_speed.py"


@pytest.mark.slow  # ~10 s of CPU: a subprocess that imports transformers and runs 28 rollouts
def test_rollout_speed_prints_a_row_per_case():
    args = ["--vocab", "512", "--d-model", "16", "--layers", "1", "--heads", "2", "--mlp", "32",
            "--gen-length", "8", "--block-length", "4", "--repeats", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "NFE" not in line]
    labels = [row.split("|")[1].strip() for row in rows]
    assert labels == ["llada, no cache", "llada, prefix cache", "llada, dual cache", "fast-dllm 0.9, no cache",
                      "fast-dllm 0.9, prefix cache", "fast-dllm 0.9, dual cache",
                      "fast-dllm 0.9, dual, ≤ 2 tokens/step"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 10 and int(cells[1]) == 8  # one token per step: NFE = L
        assert [float(r) > 0 for r in cells[5].split()] == [True]  # one rollout/replay pair per repeat
        assert all(float(c.rstrip("×")) >= 0 for c in cells[2:5] + cells[6:])  # times, ratios
    assert "load average" in out.stdout and "median of 1 run(s)" in out.stdout
