"""MDPO end to end: the example validates and trains 2 rollouts on the shipped tiny model, and
`remask compare` runs it next to GRPO (at test size)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from remask.config import load_config
from remask.errors import RemaskError
from remask.registry import get_registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny-arith-mdpo.yaml"
EXAMPLE_OD = ROOT / "examples" / "tiny-arith-mdpo-od.yaml"

SHORT = {
    "train.max_steps": 2,  # 2 rollouts x 1 inner step
    "train.logging_steps": 1,
    "train.save_steps": 0,
    "train.log_completions": 0,
    "train.progress": False,
    "train.report_to": [],
    "train.prompts_per_step": 2,
    "train.group_size": 2,
    "eval.before_training": False,
    "eval.after_training": False,
}


@pytest.mark.parametrize(("kind", "name"), [("objective", "mdpo"), ("sampler", "mdpo"), ("advantage", "mdpo-stepwise"),
                                           ("data_filter", "over-denoising")])
def test_registered_by_its_own_plugin(kind, name):
    comp = next(c for c in get_registry().components() if c.kind == kind and c.name == name)
    assert comp.distribution == "remask"
    assert get_registry().get(kind, name).__module__.startswith("remask_mdpo.")


def test_example_validates():
    cfg = load_config(EXAMPLE)
    assert cfg.objective.name == "mdpo" and cfg.sampler.name == "mdpo" and cfg.model.params.path == "builtin:tiny-arith"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("rcr", [False, True])
def test_example_trains_two_rollouts(tmp_path, rcr):
    from remask.engine import train

    cfg = load_config(EXAMPLE, {**SHORT, "train.output_dir": str(tmp_path / "run"), "sampler.rcr": rcr})
    cls = get_registry().get("model", "tiny")
    try:
        cls(cls.Config(**cfg.model.params.model_dump()))
    except RemaskError as exc:
        pytest.skip(f"the shipped tiny model is not available: {exc}")
    train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 2 and all(abs(v) < 1e6 for v in losses)
    assert "train/mdpo/over_denoising_rate" in rows[-1] and "train/mdpo/kl" in rows[-1]


def test_over_denoising_example_validates():
    cfg = load_config(EXAMPLE_OD)
    assert cfg.data_filter.name == "over-denoising" and cfg.data_filter.params.mixture == [(4, 1), (4, 4)]
    assert cfg.sampler.params.mixture == [(4, 2), (4, 4)]  # training pairs differ from selection pairs (M8)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_over_denoising_example_trains_two_rollouts_on_the_kept_prompts(tmp_path):
    from remask import hookimpl
    from remask.engine import train

    cfg = load_config(EXAMPLE_OD, {**SHORT, "train.output_dir": str(tmp_path / "run")})
    cls = get_registry().get("model", "tiny")
    try:
        cls(cls.Config(**cfg.model.params.model_dump()))
    except RemaskError as exc:
        pytest.skip(f"the shipped tiny model is not available: {exc}")

    class Recorder:
        ids: list[str] = []

        @hookimpl
        def after_rollout(self, rollout, rewards, step):
            Recorder.ids.extend(rollout.prompts.example_ids)

    get_registry().register_plugin(Recorder(), name="od-recorder")
    try:
        train(cfg)
    finally:
        get_registry().unregister_plugin("od-recorder")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    kept, candidates = rows[-1]["data/kept"], rows[-1]["data/candidates"]
    assert candidates == 2000 and 16 <= kept < candidates  # a real selection, not the fallback
    assert rows[0]["data/filter_forward_passes"] > 0 and "data/filter_forward_passes" not in rows[-1]
    assert len(Recorder.ids) == 2 * 2 * 2 and len([r for r in rows if "train/loss" in r]) == 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_remask_compare_runs_mdpo(tmp_path):
    from remask.harness.compare import run_compare

    base = {
        "model": {"name": "tiny", "path": "random", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                  "intermediate_size": 64, "max_length": 16},
        "task": {"name": "arithmetic", "digits": 1, "train_size": 20, "test_size": 8},
        "sampler": {"name": "llada", "gen_length": 4, "block_length": 2, "steps": 4, "temperature": 1.0},
        "rewards": [{"name": "arithmetic-correct"}],
        "advantage": {"name": "rloo"},
        "objective": {"name": "grpo"},
        "train": {"prompts_per_step": 2, "group_size": 2, "learning_rate": 1.0e-3, "log_completions": 0},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    pipelines = [{"name": "grpo"},
                 {"name": "mdpo", "set": {"sampler": {"name": "mdpo", "gen_length": 4, "block_length": 2, "steps": 4,
                                                      "temperature": 1.0},
                                          "advantage": {"name": "mdpo-stepwise"},
                                          "objective": {"name": "mdpo", "num_train_steps": 2}}}]
    spec = {"base": "base.yaml", "output_dir": str(tmp_path / "out"), "seeds": [0], "evaluate_base": False,
            "budget": {"optimizer_steps": 2}, "eval": {"limit": 4, "samples_per_prompt": 2, "batch_size": 4},
            "pipelines": pipelines}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    report = run_compare(tmp_path / "spec.yaml")
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["pipeline"] for r in results} == {"grpo", "mdpo"}
    assert all(r["train"]["steps"] == 2 for r in results)
    assert "| mdpo |" in report.read_text()
