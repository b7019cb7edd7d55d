"""`remask train` / `sft` / `rollouts` from the command line, SFT, evaluation, offline rollouts."""

from __future__ import annotations

import json

import engine_fakes
import pytest
import torch
import yaml

import remask
from remask.cli import main
from remask.engine import (
    accuracy_summary,
    build_eval_sampler,
    evaluate,
    load_sft_config,
    masked_diffusion_sft_loss,
    sft,
    train,
)
from remask.engine.evaluation import EvalResult, pass_at_k
from remask.rollout_store import RolloutStore, as_dataset
from remask.testing import FakeModel, FakeSampler, FakeTask


def _write(tmp_path, raw, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_cli_train_with_overrides_and_resume(fakes, tmp_path, capsys):
    cfg = _write(tmp_path, engine_fakes.base_config(str(tmp_path / "run")))
    assert main(["train", cfg, "--train.max_steps", "2", "--objective.beta", "0.0"]) == 0
    assert "done: 2 steps" in capsys.readouterr().out
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["objective"]["beta"] == 0.0 and resolved["train"]["max_steps"] == 2
    assert main(["train", cfg, "--resume", "--train.max_steps", "4"]) == 0
    state = json.loads((tmp_path / "run" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["resumed_from"].endswith("checkpoint-2")


def test_cli_resume_before_the_config(fakes, tmp_path):
    cfg = _write(tmp_path, engine_fakes.base_config(str(tmp_path / "run"), max_steps=2))
    assert main(["train", cfg]) == 0
    assert main(["train", "--resume", cfg]) == 0  # argparse gives the config to --resume; it is given back
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["resumed_from"].endswith("checkpoint-2")


def test_cli_bad_config_is_one_line_exit_2(fakes, tmp_path, capsys):
    raw = engine_fakes.base_config(str(tmp_path / "run"), micro_batch_size=3)
    assert main(["train", _write(tmp_path, raw)]) == 2
    err = capsys.readouterr().err
    assert "train.micro_batch_size: 3 does not divide the 4 rows" in err and "Traceback" not in err


def test_cli_default_config_missing(fakes, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train"]) == 2
    assert "examples/quickstart.yaml does not exist" in capsys.readouterr().err


def test_sft_loss_matches_hand_computation():
    # two rows, 3 positions; row 0: t=0.5, masked {0, 2}; row 1: t=0.25, masked {1}
    logps = torch.log(torch.tensor([[0.5, 0.9, 0.25], [0.8, 0.5, 0.1]]))
    masked = torch.tensor([[True, False, True], [False, True, False]])
    ratio = torch.tensor([0.5, 0.25])
    keep = torch.ones(2, 3, dtype=torch.bool)
    row0 = (-(torch.log(torch.tensor(0.5))) - torch.log(torch.tensor(0.25))) / 0.5 / 3
    row1 = -torch.log(torch.tensor(0.5)) / 0.25 / 3
    expected = (row0 + row1) / 2
    assert torch.allclose(masked_diffusion_sft_loss(logps, masked, ratio, keep), expected)
    # positions outside the target never count
    keep[0, 2] = False
    assert masked_diffusion_sft_loss(logps, masked, ratio, keep) < expected


def test_sft_learns_saves_and_stops_at_target(fakes, tmp_path):
    raw = {"model": {"name": "fake", "hidden": 32}, "task": {"name": "test-completion-task", "size": 10},
           "sampler": {"name": "fake-sampler", "gen_length": 4, "block_length": 4, "steps": 4},
           "train": {"output_dir": str(tmp_path / "sft"), "max_steps": 30, "prompts_per_step": 4, "group_size": 2,
                     "learning_rate": 0.05, "lr_scheduler": "constant", "report_to": [], "progress": False,
                     "save_total_limit": 1},
           "eval": {"split": "train", "limit": 4, "every_steps": 10}}
    cfg = load_sft_config(_write(tmp_path, raw))  # no rewards/objective sections needed
    assert cfg.sampler.name == "fake-sampler"
    result = sft(cfg)
    rows = [json.loads(x) for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5  # it learns
    assert result["global_step"] == 30 and "eval_step-10" in result
    # CLI: --save-to writes the final model; stop_at_accuracy 0 stops at the first evaluation
    path = _write(tmp_path, raw)
    assert main(["sft", path, "--save-to", str(tmp_path / "final"), "--train.stop_at_accuracy", "0",
                 "--train.output_dir", str(tmp_path / "sft2")]) == 0
    assert (tmp_path / "final" / "model.safetensors").is_file()
    state = json.loads((tmp_path / "sft2" / "checkpoint-10" / "trainer_state.json").read_text())
    assert state["global_step"] == 10 and state["remask"]["command"] == "sft"


def test_sft_needs_reference_completions(fakes, tmp_path):
    raw = {"model": {"name": "fake"}, "task": {"name": "fake-task"},
           "train": {"output_dir": str(tmp_path / "x"), "max_steps": 1, "report_to": [], "group_size": 1}}
    with pytest.raises(remask.RemaskError, match=r"no reference\['completion'\]"):
        sft(load_sft_config(_write(tmp_path, raw)))


def test_evaluate_batches_and_pass_at_k():
    model, task = FakeModel(), FakeTask(FakeTask.Config(size=6))
    sampler = FakeSampler(FakeSampler.Config(gen_length=4, block_length=4, steps=4))
    cfg = remask.config.EvalConfig(split="test", limit=5, batch_size=2, samples_per_prompt=2)
    result = evaluate(model, task, sampler, cfg)
    assert result.num_problems == 5 and result.num_samples == 10 and len(result.rows) == 10
    assert result.accuracy == sum(r["score"] for r in result.rows) / 10
    assert evaluate(model, task, sampler, cfg).rows == result.rows  # seeded: deterministic
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2) and pass_at_k(5, 1, 5) == 1.0
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)
    before = EvalResult(accuracy=0.12, num_problems=50, num_samples=50, seconds=1.0, split="test")
    after = EvalResult(accuracy=0.48, num_problems=50, num_samples=50, seconds=1.0, split="test")
    assert accuracy_summary(before, after, 83.2) == "greedy accuracy 12.0% → 48.0% on 50 held-out problems in 1m23s"


def test_eval_sampler_overrides(fakes, make_config):
    cfg = make_config(sections={"eval": {"sampler": {"steps": 2}}})
    sampler = build_eval_sampler(cfg.sampler, cfg.eval)
    assert sampler.config.steps == 2 and sampler.config.gen_length == 6
    assert build_eval_sampler(cfg.sampler, cfg.eval, gen_length=2).config.block_length == 2
    with pytest.raises(remask.ConfigError, match="eval.sampler"):
        build_eval_sampler(cfg.sampler, cfg.eval.model_copy(update={"sampler": {"nope": 1}}))


def test_eval_sampler_named_replaces_the_training_sampler(fakes, make_config):
    """`eval.sampler.name` holds evaluation fixed across pipelines that train with other samplers."""
    cfg = make_config(sections={"sampler": {"name": "fast-dllm", "gen_length": 6, "block_length": 3, "steps": 6,
                                            "threshold": 0.5, "temperature": 1.0},
                                "eval": {"sampler": {"name": "llada", "remasking": "random"}}})
    sampler = build_eval_sampler(cfg.sampler, cfg.eval)
    assert sampler.name == "llada"
    c = sampler.config
    assert (c.gen_length, c.block_length, c.steps, c.remasking, c.temperature) == (6, 3, 6, "random", 0.0)
    # pass@k samples at the training sampler's temperature, not at the named sampler's default (llada: 0,
    # which left pass@k empty for every fast-dllm pipeline of a comparison); eval.sampler may still set it
    sampled = cfg.eval.model_copy(update={"greedy": False})
    assert build_eval_sampler(cfg.sampler, sampled).config.temperature == 1.0
    hotter = sampled.model_copy(update={"sampler": {"name": "llada", "temperature": 0.7}})
    assert build_eval_sampler(cfg.sampler, hotter).config.temperature == 0.7
    # the same name as the training sampler keeps the overrides' meaning
    cfg = make_config(sections={"eval": {"sampler": {"name": "fake-sampler", "steps": 2}}})
    assert build_eval_sampler(cfg.sampler, cfg.eval).config.model_dump() == {**cfg.sampler.params.model_dump(), "steps": 2}


def test_eval_sampler_is_validated_with_the_config(make_config):
    """A typo under eval.sampler stops `remask validate`, not the evaluation after training."""
    for sampler, match in (({"nope": 1}, r"eval\.sampler\.nope"), ({"name": "llda"}, r"eval\.sampler\.name: .*llada"),
                           ({"name": "llada", "steps": 0}, r"eval\.sampler\.steps")):
        with pytest.raises(remask.ConfigError, match=match) as info:
            make_config(sections={"eval": {"sampler": sampler}})
        assert all("\n" not in line for line in info.value.problems)


def test_train_eval_before_and_after_prints_summary(make_config, capsys):
    cfg = make_config(max_steps=2, sections={"eval": {"limit": 3, "before_training": True, "after_training": True}})
    result = train(cfg)
    assert "eval_before" in result and "eval_after" in result
    assert "held-out problems in" in capsys.readouterr().out


def test_rollout_store_roundtrip_and_offline_training(fakes, tmp_path, make_config):
    cfg = _write(tmp_path, engine_fakes.base_config(str(tmp_path / "run"), max_steps=4))
    store_dir = tmp_path / "store"
    assert main(["rollouts", cfg, "--out", str(store_dir)]) == 0
    store = RolloutStore(store_dir)
    assert len(store) == 2  # max_steps 4 / inner_steps 2
    rollout, rewards = store.read(0)
    assert rollout.batch_size == 4 and rewards.components.keys() == {"test-digits", "fake-contains"}
    store.write(5, rollout, None)
    again, none = store.read(5)
    assert none is None and torch.equal(again.unmask_step, rollout.unmask_step) and again.texts == rollout.texts
    assert len(as_dataset(store_dir)) == 12
    with pytest.raises(remask.RemaskError, match="no rollout shard 3"):
        store.read(3)
    # offline training reads shard k at rollout k and uses the stored rewards
    result = train(make_config("offline", max_steps=4, offline_rollouts=str(store_dir)))
    assert result["global_step"] == 4
    table = [json.loads(x) for x in (tmp_path / "offline" / "metrics.jsonl").read_text().splitlines()]
    assert table[0]["train/reward"] == pytest.approx(float(rewards.total.mean()))
    assert table[0]["diffusion/nfe"] == 0.0


def test_bare_remask_trains_the_quickstart_config(fakes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").mkdir()
    _write(tmp_path / "examples", engine_fakes.base_config(str(tmp_path / "qs"), max_steps=2), name="quickstart.yaml")
    assert main([]) == 0
    assert (tmp_path / "qs" / "checkpoint-2" / "trainer_state.json").is_file()


def test_sft_resume_is_bit_exact(fakes, tmp_path):
    def cfg(out, steps):
        raw = {"model": {"name": "fake"}, "task": {"name": "test-completion-task", "size": 6},
               "train": {"output_dir": str(tmp_path / out), "max_steps": steps, "prompts_per_step": 2,
                         "group_size": 2, "micro_batch_size": 2, "learning_rate": 0.05, "lr_scheduler": "cosine",
                         "report_to": [], "progress": False, "seed": 3}}
        return load_sft_config(_write(tmp_path, raw, name=f"{out}.yaml"))

    import os
    import signal

    class StopAt3:
        @remask.hookimpl
        def after_step(self, step, metrics):
            if step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    sft(cfg("full", 6))
    with remask.testing.registered_plugin(StopAt3(), name="stop-at-3"):
        assert sft(cfg("part", 6))["interrupted"]
    assert sft(cfg("part", 6), resume="latest")["global_step"] == 6
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full" / "checkpoint-6" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoint-6" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_greedy_evaluation_logs_no_pass_at_k():
    """pass@k comes only from samples at the sampler's temperature: a temperature-0 evaluation with
    several "samples" per prompt would repeat one decode, so it logs its accuracy alone."""
    sampled = EvalResult(accuracy=0.5, num_problems=4, num_samples=8, seconds=1.0, split="test",
                         pass_at_k={1: 0.5, 2: 0.75})
    greedy = EvalResult(accuracy=0.5, num_problems=4, num_samples=8, seconds=1.0, split="test",
                        pass_at_k={1: 0.5, 2: 0.75}, greedy=True)
    assert sampled.metrics()["eval/pass@2"] == 0.75
    assert "eval/pass@2" not in greedy.metrics() and greedy.metrics()["eval/accuracy"] == 0.5

    model, task = FakeModel(), FakeTask(FakeTask.Config(size=6))
    sampler = FakeSampler(FakeSampler.Config(gen_length=4, block_length=4, steps=4))
    cfg = remask.config.EvalConfig(split="test", limit=4, batch_size=4, samples_per_prompt=2)
    result = evaluate(model, task, sampler, cfg)  # FakeSampler has no temperature: it samples
    assert not result.greedy and set(result.pass_at_k) == {1, 2}
