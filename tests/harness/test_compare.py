"""`remask compare` end to end at test size: every artefact, reproducible, third-party objectives."""

from __future__ import annotations

import importlib.metadata as md
import json

import pytest
import yaml

from remask.errors import ConfigError
from remask.harness.compare import load_compare_spec, run_compare

BASE = {
    "model": {"name": "tiny", "path": "random", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
              "intermediate_size": 64, "max_length": 16},
    "task": {"name": "arithmetic", "digits": 1, "train_size": 20, "test_size": 8},
    "sampler": {"name": "llada", "gen_length": 3, "block_length": 3, "steps": 3, "temperature": 1.0},
    "rewards": [{"name": "arithmetic-correct"}],
    "advantage": {"name": "group-mean"},
    "objective": {"name": "d1", "beta": 0.0},
    "train": {"prompts_per_step": 2, "group_size": 2, "learning_rate": 1.0e-3, "log_completions": 0},
}


def _template_installed() -> bool:
    try:
        md.distribution("remask-template")
        return True
    except md.PackageNotFoundError:
        return False


def write_spec(tmp_path, pipelines, **extra):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    spec = {"base": "base.yaml", "output_dir": str(tmp_path / "out"), "seeds": [0],
            "budget": {"optimizer_steps": 2}, "eval": {"limit": 4, "samples_per_prompt": 2, "batch_size": 4},
            "pipelines": pipelines, **extra}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_compare_writes_every_artefact_and_reproduces(tmp_path):
    pipelines = [{"name": "d1"},
                 {"name": "grpo", "set": {"objective": {"name": "grpo", "beta": 0.0},
                                          "advantage": {"name": "group-mean-std"}}}]
    if _template_installed():  # a third-party objective, compared without code changes
        pipelines.append({"name": "template", "set": {"objective": {"name": "template-awl"}}})
    spec = write_spec(tmp_path, pipelines, evaluate_base=False)
    report = run_compare(spec)
    out = tmp_path / "out"
    text = report.read_text()
    for name in [p["name"] for p in pipelines]:
        assert f"| {name} |" in text
    for png in ("reward_vs_step.png", "reward_vs_forward_passes.png", "pass_at_k.png", "diversity.png"):
        assert (out / png).stat().st_size > 1000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec_resolved"]["budget"]["optimizer_steps"] == 2 and "torch" in manifest["env"]
    first = json.loads((out / "results.json").read_text())
    assert {r["pipeline"] for r in first} == {p["name"] for p in pipelines}
    assert all(r["train"]["steps"] == 2 and len(r["train"]["history"]) >= 1 for r in first)
    assert (out / "runs" / "d1" / "seed-0" / "eval" / "eval.json").is_file()

    # the same spec again gives the same numbers (wall times aside)
    run_compare(spec, output_dir=str(tmp_path / "again"))
    second = json.loads((tmp_path / "again" / "results.json").read_text())

    def numbers(runs):
        return [(r["pipeline"], r["eval"]["greedy_accuracy"], r["eval"]["pass_at_k"], r["eval"]["mean_reward"],
                 [h.get("train/reward") for h in r["train"]["history"]],
                 [h.get("train/loss") for h in r["train"]["history"]]) for r in runs]

    assert numbers(first) == numbers(second)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "x", "set": {"model": {"name": "tiny"}}}, "may not replace 'model'"),
        ({"name": "x", "override": {"train.seed": 3}}, "may not override 'train.seed'"),
        ({"name": "x", "override": {"task.digits": 3}}, "may not override 'task.digits'"),
    ],
)
def test_fairness_rules_are_enforced(tmp_path, entry, message):
    spec = write_spec(tmp_path, [entry])
    with pytest.raises(ConfigError) as exc:
        load_compare_spec(spec)
    assert message in str(exc.value)


def test_budget_needs_exactly_one_kind(tmp_path):
    spec = write_spec(tmp_path, [{"name": "d1"}], budget={"optimizer_steps": 2, "wall_seconds": 3})
    with pytest.raises(ConfigError, match="exactly one"):
        load_compare_spec(spec)


@pytest.mark.parametrize("n", [3, 10, 13, 20, 27])
def test_every_pipeline_gets_its_own_colour(n):
    from remask.harness.report import pipeline_colours

    runs = [{"pipeline": f"p{i}", "seed": s} for i in range(n) for s in (0, 1)]
    colours = pipeline_colours(runs)
    assert list(colours) == [f"p{i}" for i in range(n)]  # order of appearance
    from matplotlib.colors import to_hex

    assert len({to_hex(c) for c in colours.values()}) == n


def test_reference_must_name_a_pipeline_or_the_base(tmp_path):
    spec, _ = load_compare_spec(write_spec(tmp_path, [{"name": "d1"}], reference="base"))
    assert spec.reference_label == "base (untrained)"
    assert load_compare_spec(write_spec(tmp_path, [{"name": "d1"}], reference="d1"))[0].reference_label == "d1"
    with pytest.raises(ConfigError) as exc:
        load_compare_spec(write_spec(tmp_path, [{"name": "d1"}], reference="d2"))
    (line,) = exc.value.problems
    assert line == (f"{tmp_path / 'spec.yaml'}: reference: 'd2' is not a pipeline of this comparison; "
                    "name one of: d1, base")
    with pytest.raises(ConfigError, match="name one of: d1$"):  # no base row to pair with
        load_compare_spec(write_spec(tmp_path, [{"name": "d1"}], reference="base", evaluate_base=False))


def test_paired_rows_difference_seed_by_seed_with_a_student_t_interval():
    from remask.harness.report import paired_rows

    def run(name, seed, acc, p1, seconds):
        return {"pipeline": name, "seed": seed, "train": {"seconds": seconds},
                "eval": {"greedy_accuracy": acc, "pass_at_k": {"1": p1}}}

    ref = [run("llada", s, a, 0.4, 100.0) for s, a in enumerate([0.50, 0.60, 0.70])]
    # a constant +2 points per seed: the seeds' spread cancels, the interval is exactly [+2, +2]
    fast = [run("fast", s, a + 0.02, 0.4, 40.0) for s, a in enumerate([0.50, 0.60, 0.70])]
    # unpaired, a seed order mismatch: seed 2 is missing, so only two pairs count
    noisy = [run("noisy", 0, 0.40, 0.3, 50.0), run("noisy", 1, 0.70, 0.5, 50.0)]
    rows = {r["pipeline"]: r for r in paired_rows(ref + fast + noisy, "llada")}
    assert set(rows) == {"fast", "noisy"}
    assert rows["fast"]["paired seeds"] == "3"
    assert rows["fast"]["Δ greedy accuracy (points)"] == "+2.0 ± 0.0, CI [+2.0, +2.0]"
    assert rows["fast"]["train s ratio"] == "0.40 ± 0.00 [0.00]"
    # differences -10 and +10 points: mean 0, sd 14.1, t(1) = 12.706 -> half-width 127.1
    assert rows["noisy"]["paired seeds"] == "2"
    assert rows["noisy"]["Δ greedy accuracy (points)"] == "+0.0 ± 14.1, CI [-127.1, +127.1]"
    assert rows["noisy"]["Δ pass@1 (points)"] == "+0.0 ± 14.1, CI [-127.1, +127.1]"
