"""Coupled-GRPO, VRPO and TraceRL end to end: every example validates and trains 2 steps on the shipped tiny
model, and `remask compare` runs them side by side (at test size)."""

from __future__ import annotations

import importlib.util
import json
import math
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
    "vrpo": ("tiny-arith-vrpo.yaml", "remask_vrpo"),
    "tracerl": ("tiny-arith-tracerl.yaml", "remask_tracerl"),
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


def _preference_store(out: Path) -> str:
    path = ROOT / "examples" / "offline-dtrpo" / "make_preference_store.py"
    spec = importlib.util.spec_from_file_location("make_preference_store", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = [str(ROOT / "examples" / "tiny-arith-vrpo.yaml"), "--data",
            str(ROOT / "examples" / "offline-dtrpo" / "arith-preferences.jsonl"), "--out", str(out),
            "--train.prompts_per_step", "2"]
    assert module.main(argv) == 0
    return str(out)


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

    overrides = {**SHORT, "train.output_dir": str(tmp_path / "run")}
    if name == "vrpo":  # offline: the example trains from a preference store made by dTRPO's converter
        overrides.update({"train.inner_steps": 1, "train.max_steps": 2,
                          "train.offline_rollouts": _preference_store(tmp_path / "store")})
    cfg = load_config(ROOT / "examples" / ZOO2[name][0], overrides)
    _shipped_model_or_skip(cfg)
    train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 2 and all(abs(v) < 1e6 for v in losses)
    assert any(k.startswith(f"train/{name}/") for k in rows[-1])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_vrpo_example_starts_at_ln2(tmp_path):
    """θ = ref before the first update and the noise is shared, so the first VRPO loss is exactly ln 2."""
    from remask.engine import train

    overrides = {**SHORT, "train.output_dir": str(tmp_path / "run"), "train.inner_steps": 1, "train.max_steps": 1,
                 "train.offline_rollouts": _preference_store(tmp_path / "store"), "objective.n_t": 2}
    cfg = load_config(ROOT / "examples" / "tiny-arith-vrpo.yaml", overrides)
    _shipped_model_or_skip(cfg)
    train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    first = next(r for r in rows if "train/loss" in r)
    assert first["train/loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["train/vrpo/pairs"] == 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_remask_compare_runs_coupled_grpo_vrpo_and_tracerl(tmp_path):
    from remask.harness.compare import run_compare

    base = {
        "model": {"name": "tiny", "path": "random", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                  "intermediate_size": 64, "max_length": 16},
        "task": {"name": "arithmetic", "digits": 1, "train_size": 20, "test_size": 8},
        "sampler": {"name": "llada", "gen_length": 4, "block_length": 2, "steps": 4, "temperature": 1.0},
        "rewards": [{"name": "arithmetic-correct"}],
        "advantage": {"name": "rloo"},
        "objective": {"name": "coupled-grpo"},
        "train": {"prompts_per_step": 2, "group_size": 2, "learning_rate": 1.0e-3, "log_completions": 0},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    pipelines = [{"name": "coupled-grpo"},
                 {"name": "vrpo", "set": {"objective": {"name": "vrpo", "n_t": 2}, "advantage": {"name": "raw-reward"}}},
                 {"name": "tracerl", "set": {"objective": {"name": "tracerl", "value": {"enabled": True}},
                                             "advantage": {"name": "tracerl-zscore", "filter_groups": False},
                                             "step_selector": {"name": "trace-shrink", "shrink": 2}}}]
    spec = {"base": "base.yaml", "output_dir": str(tmp_path / "out"), "seeds": [0], "evaluate_base": False,
            "budget": {"optimizer_steps": 2}, "eval": {"limit": 4, "samples_per_prompt": 2, "batch_size": 4},
            "pipelines": pipelines}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    report = run_compare(tmp_path / "spec.yaml")
    text = report.read_text()
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["pipeline"] for r in results} == set(ZOO2)
    assert all(r["train"]["steps"] == 2 for r in results)
    for name in ZOO2:
        assert f"| {name} |" in text
