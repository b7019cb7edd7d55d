"""`benchmarks/gpu_train.py` (the training section of benchmarks/gpu.py) on the CPU with --tiny."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_training_section_tiny(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_train
    from rollout_speed import random_llada

    model = random_llada(d_model=32, layers=2, heads=2, mlp=64, vocab=4096, device="cpu", dtype="float32")
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    sec = gpu_train.section(model, SimpleNamespace(tiny=True))
    assert len(sec.rows) == 2
    for row in sec.rows:
        assert row["step s"] > 0 and row["predicted GiB"] > 0 and row["measured peak GiB"] is None
    assert not model.has_adapter  # the adapter is unloaded: gpu.py's model is the rollout model again
    after = model.module.state_dict()
    assert before.keys() == after.keys() and all(bool((before[k] == after[k]).all()) for k in before)
    assert "| model | parameters | objective |" in sec.markdown()
    sys.modules.pop("gpu_train", None)
