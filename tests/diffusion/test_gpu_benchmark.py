"""`benchmarks/gpu.py --tiny` runs the GPU benchmark's code path on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_benchmark_tiny_runs_every_case_and_prints_table_and_json(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    own_train = (ROOT / "benchmarks" / "gpu_train.py").is_file()
    if not own_train:  # the extension point: a gpu_train module on the path adds its section
        (tmp_path / "gpu_train.py").write_text(
            "def section(model, args):\n"
            "    assert args.tiny and args.budget.ok()\n"
            "    return {'title': 'extra', 'columns': ['n'], 'rows': [{'n': sum(p.numel() for p in model.module.parameters())}]}\n"
        )
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    # two training rows per model (every objective: tests/planner/test_gpu_train_tiny.py), planned in a
    # worker process as on a GPU machine
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny", "--only", "d1,vrpo", "--plan-workers", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["card"] == "cpu (--tiny)"
    rows = report["sections"][0]["rows"]
    assert {r["batch"] for r in rows} == {2, 4} and len(rows) == 10
    for r in rows:
        assert r["tokens/s"] > 0 and r["NFE"] >= 2 and r["overhead"] > 0
    assert "| batch | sampler | NFE |" in proc.stdout
    assert len(report["sections"]) == 2
    if not own_train:
        assert report["sections"][1] == {"title": "extra", "rows": [{"n": report["parameters"]}]}
    else:
        train = report["sections"][1]["rows"]
        assert [r["objective"] for r in train] == ["d1", "vrpo", "d1", "vrpo"]
        for r in train:
            assert r["loss+step s"] > 0 and r["predicted GiB"] > 0 and r["measured peak GiB"] is None
        assert train[1]["predicted GiB"] > train[0]["predicted GiB"]  # 8 passes against one
        assert "| model | objective | μ | loss passes |" in proc.stdout
