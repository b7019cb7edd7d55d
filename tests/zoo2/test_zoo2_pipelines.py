"""Coupled-GRPO and VRPO end to end: every example validates and trains 2 steps on the shipped tiny
model, and `remask compare` runs them side by side (at test size)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from remask.config import load_config
from remask.errors import RemaskError
from remask.registry import get_registry

ROOT = Path(__file__).resolve().parents[2]
# objective name -> (example, plugin package)
ZOO2 = {
    "coupled-grpo": ("tiny-arith-coupled-grpo.yaml", "remask_coupled_grpo"),
}

SHORT = {
    "train.max_steps": 4,  # 2 rollouts x 2 inner steps
    "train.inner_steps": 2,
    "train.logging_steps": 1,
    "train.save_steps": 0,
    "train.log_completions": 0,
    "train.progress": False,
    "train.report_to": [],
    "train.prompts_per_step": 2,
    "eval.before_training": False,
    "eval.after_training": False,
}


@pytest.mark.parametrize("name", ZOO2)
def test_registered_by_its_own_plugin(name):
    comp = next(c for c in get_registry().components() if c.kind == "objective" and c.name == name)
    assert comp.distribution == "remask"
    assert get_registry().get("objective", name).__module__.startswith(ZOO2[name][1] + ".")


@pytest.mark.parametrize("name", ZOO2)
def test_example_validates(name):
    cfg = load_config(ROOT / "examples" / ZOO2[name][0])
    assert cfg.objective.name == name and cfg.model.params.path == "builtin:tiny-arith"


def _shipped_model_or_skip(cfg):
    cls = get_registry().get("model", "tiny")
    try:
        cls(cls.Config(**cfg.model.params.model_dump()))
    except RemaskError as exc:
        pytest.skip(f"the shipped tiny model is not available: {exc}")


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ZOO2)
def test_example_trains_two_rollouts(name, tmp_path):
    from remask.engine import train

    cfg = load_config(ROOT / "examples" / ZOO2[name][0], {**SHORT, "train.output_dir": str(tmp_path)})
    _shipped_model_or_skip(cfg)
    train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if x.strip()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 2 and all(abs(v) < 1e6 for v in losses)
    assert any(k.startswith(f"train/{name}/") for k in rows[-1])
