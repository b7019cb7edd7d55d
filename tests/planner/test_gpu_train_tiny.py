"""`benchmarks/gpu_train.py` (the training section of benchmarks/gpu.py) on the CPU with --tiny."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow
def test_training_section_tiny_has_a_row_per_objective_and_model(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_train
    from rollout_speed import random_llada

    model = random_llada(d_model=32, layers=2, heads=2, mlp=64, vocab=4096, device="cpu", dtype="float32")
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    sec = gpu_train.section(model, SimpleNamespace(tiny=True))
    assert len(sec.rows) == 2 * len(gpu_train.OBJECTIVES)
    assert [r["objective"] for r in sec.rows] == list(gpu_train.OBJECTIVES) * 2
    for row in sec.rows:
        assert row["prepare s"] >= 0 and row["loss+step s"] > 0, row
        assert row["predicted GiB"] > 0 and row["measured peak GiB"] is None and row["pred/meas"] is None
        assert "pass" in row["loss passes"]
    by_name = {r["objective"]: r for r in sec.rows[:len(gpu_train.OBJECTIVES)]}
    # the prediction follows each objective's passes: VRPO's 8 views cost more than d1's one pass
    assert by_name["vrpo"]["loss passes"] == "8 passes of [6, 24]"
    assert by_name["vrpo"]["predicted GiB"] > by_name["d1"]["predicted GiB"]
    assert by_name["dtrpo"]["loss passes"] == "1 pass of [6, 40]"  # [prompt, y, z]
    assert not model.has_adapter  # the adapter is unloaded: gpu.py's model is the rollout model again
    after = model.module.state_dict()
    assert before.keys() == after.keys() and all(bool((before[k] == after[k]).all()) for k in before)
    assert "| model | objective | μ | loss passes |" in sec.markdown()
    sys.modules.pop("gpu_train", None)


def test_only_filter_and_unknown_names(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_train
    from rollout_speed import random_llada

    model = random_llada(d_model=32, layers=2, heads=2, mlp=64, vocab=4096, device="cpu", dtype="float32")
    sec = gpu_train.section(model, SimpleNamespace(tiny=True, only="wd1"))
    assert [r["objective"] for r in sec.rows] == ["wd1", "wd1"]
    with pytest.raises(ValueError, match="unknown objective.*nope"):
        gpu_train.section(model, SimpleNamespace(tiny=True, only="wd1,nope"))
    sys.modules.pop("gpu_train", None)
