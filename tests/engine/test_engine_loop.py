"""The RL loop over fakes: components, optimizer, logging, checkpoints, references, robustness."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

import remask
from remask.engine import Trainer, train
from remask.engine import checkpoint as ckpt


def _weights(run_dir, step):
    return load_file(str(run_dir / f"checkpoint-{step}" / "model.safetensors"))


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_trl_metrics_manifest_table_and_checkpoints(make_config, tmp_path):
    cfg = make_config(max_steps=6, save_steps=2, save_total_limit=2, log_completions=2,
                      report_to=["tensorboard"])
    result = train(cfg)
    run = tmp_path / "run"
    assert result["global_step"] == 6
    rows = _metrics(run)
    assert [r["step"] for r in rows] == [2, 4, 6]  # one log per rollout of mu=2 updates
    for key in ("train/reward", "train/reward_std", "train/rewards/test-digits/mean", "train/kl",
                "train/clip_ratio/region_mean", "train/completions/mean_length", "train/loss", "train/grad_norm",
                "train/learning_rate", "train/frac_reward_zero_std", "diffusion/nfe", "diffusion/forward_passes",
                "timing/sample", "timing/loss"):
        assert key in rows[-1], key
    # policy forward: prepare once per rollout + one per inner update; reference: once per rollout
    assert rows[-1]["diffusion/forward_passes"] == 1 + 2 + 1
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["versions"]["torch"] == torch.__version__
    assert "commit" in manifest["git"] and manifest["config"]["objective"]["name"] == "test-ratio"
    assert (run / "config.yaml").is_file()
    tables = sorted((run / "completions").iterdir())
    assert [p.name for p in tables] == ["completions_00002.parquet", "completions_00004.parquet",
                                        "completions_00006.parquet"]
    import pyarrow.parquet as pq

    table = pq.read_table(str(tables[-1])).to_pylist()
    assert len(table) == 4 and {"prompt", "completion", "reward", "advantage", "reward/test-digits"} <= set(table[0])
    # save_total_limit=2 keeps the two newest; temp dirs never remain
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["checkpoint-4", "checkpoint-6"]
    assert not [p for p in run.iterdir() if p.name.startswith(".tmp")]
    state = json.loads((run / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and state["remask"]["rollouts_done"] == 3 and state["remask"]["data"]["offset"] == 6
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"train/reward", "train/kl", "train/loss", "diffusion/nfe"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/reward")] == [2, 4, 6]


def test_weights_change_and_lr_schedule(make_config, tmp_path):
    cfg = make_config(max_steps=4, lr_scheduler="cosine", warmup_steps=1, learning_rate=0.1)
    initial = remask.testing.FakeModel().module.state_dict()
    train(cfg)
    final = _weights(tmp_path / "run", 4)
    assert any(not torch.equal(final[k], initial[k]) for k in initial)
    lrs = [r["train/learning_rate"] for r in _metrics(tmp_path / "run")]
    # the lr of the last update of each rollout: step index 1 (end of warm-up) and 3 of a 4-step cosine
    assert lrs[0] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0 / 3)))
    assert lrs[1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 2 / 3)))


def _stop_at(step_to_stop):
    class Stopper:
        @remask.hookimpl
        def after_step(self, step, metrics):
            if step == step_to_stop:
                os.kill(os.getpid(), signal.SIGTERM)

    return Stopper()


@pytest.mark.parametrize("lora", [False, True])
def test_sigterm_checkpoints_and_resume_is_bit_exact(make_config, fakes, tmp_path, lora):
    extra = {"lora": {"r": 2, "alpha": 4, "target_modules": ["mix", "head"]}} if lora else {}
    full = train(make_config("full", max_steps=6, lr_scheduler="cosine", **extra))
    assert not full["interrupted"]
    with remask.testing.registered_plugin(_stop_at(2), name="stopper"):
        part = train(make_config("part", max_steps=6, lr_scheduler="cosine", **extra))
    assert part["interrupted"] and part["global_step"] == 2
    assert (tmp_path / "part" / "checkpoint-2").is_dir()
    resumed = train(make_config("part", max_steps=6, lr_scheduler="cosine", **extra), resume="latest")
    assert resumed["global_step"] == 6
    name = "adapter_model.safetensors" if lora else "model.safetensors"
    a = load_file(str(tmp_path / "full" / "checkpoint-6" / name))
    b = load_file(str(tmp_path / "part" / "checkpoint-6" / name))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the logged metrics of the resumed steps equal the uninterrupted run's
    assert _metrics(tmp_path / "full")[-1]["train/loss"] == _metrics(tmp_path / "part")[-1]["train/loss"]


def test_objective_extra_modules_are_optimised_and_checkpointed(make_config, tmp_path):
    cfg = make_config(max_steps=4, sections={"objective": {"name": "test-head"}})
    trainer = Trainer(cfg)
    trainer.run()
    head = trainer.objective.head
    assert trainer.reference is None  # uses_reference = False: no copy is kept
    groups = trainer.optimizer.param_groups
    assert len(groups) == 2 and groups[1]["lr"] == 0.1 and groups[1]["params"][0] is head.weight
    saved = torch.load(tmp_path / "run" / "checkpoint-4" / "objective.pt", weights_only=False)
    assert saved["state"] == {"calls": 4}
    assert torch.equal(saved["extra_modules"]["log_z"]["weight"], head.weight.detach())
    # resume restores the objective's state and module
    cfg2 = make_config(max_steps=6, sections={"objective": {"name": "test-head"}})
    t2 = Trainer(cfg2, resume="latest")
    t2.run()
    assert t2.objective.calls == 6


def test_nan_loss_skips_the_update_and_continues(make_config, tmp_path):
    cfg = make_config(max_steps=4, sections={"objective": {"name": "test-ratio", "nan_at_step": 1}})
    result = train(cfg)
    assert result["global_step"] == 4 and result["skipped_steps"] == 1
    rows = _metrics(tmp_path / "run")
    assert rows[0]["train/skipped_steps"] == 1.0
    assert all(torch.isfinite(v).all() for v in _weights(tmp_path / "run", 4).values())


def test_raising_reward_counts_zero_with_reason(make_config, tmp_path):
    cfg = make_config(max_steps=2, log_completions=1,
                      sections={"rewards": [{"name": "test-digits"}, {"name": "test-raising", "weight": 2.0}]})
    result = train(cfg)
    assert result["global_step"] == 2
    rows = _metrics(tmp_path / "run")
    assert rows[0]["train/reward_errors"] == 1.0 and rows[0]["train/rewards/test-raising/mean"] == 0.0
    import pyarrow.parquet as pq

    table = pq.read_table(str(tmp_path / "run" / "completions" / "completions_00002.parquet")).to_pylist()
    assert table[0]["reason/test-raising"] == "error: RuntimeError: verifier crashed"


def test_first_ratio_is_exactly_one_with_lora_dropout_off(make_config):
    lora = {"r": 2, "alpha": 4, "dropout": 0.5, "target_modules": ["mix", "head"]}
    seen = {}

    class Spy:
        @remask.hookimpl
        def after_step(self, step, metrics):
            seen[step] = metrics["train/ratio_first"]

    with remask.testing.registered_plugin(Spy(), name="spy"):
        # LoRA's B starts at zero, so look at the second rollout (the adapter is non-zero by then)
        train(make_config("off", max_steps=2, inner_steps=1, lora=lora))
        assert seen[2] == 1.0
        train(make_config("on", max_steps=2, inner_steps=1, lora=lora, dropout=True))
        assert seen[2] != 1.0


def test_reference_is_disabled_adapter_or_frozen_copy(make_config):
    lora = {"r": 2, "alpha": 4, "target_modules": ["mix", "head"]}
    t = Trainer(make_config("lora", max_steps=2, lora=lora))
    t.run()
    assert t.reference.uses_disabled_adapter and t.reference.module is t.model.module
    ids = torch.randint(3, 20, (2, 5))
    base = remask.testing.FakeModel()
    assert torch.allclose(t.reference.logits(ids), base.logits(ids))
    assert not torch.allclose(t.model.logits(ids), base.logits(ids))

    t2 = Trainer(make_config("full", max_steps=2))
    t2.run()
    assert not t2.reference.uses_disabled_adapter
    assert torch.equal(t2.reference.logits(ids), base.logits(ids))
    t3 = Trainer(make_config("sync", max_steps=2, ref_update_every=2))
    t3.run()
    assert torch.equal(t3.reference.logits(ids), t3.model.logits(ids).detach())


def test_checkpoint_layout_is_validated_with_real_process_count(make_config):
    class FakeAccelerator:
        num_processes = 3

    t = Trainer(make_config(max_steps=1))
    t.accelerator = FakeAccelerator()
    with pytest.raises(remask.ConfigError, match="multiple of 3"):
        t._check_layout(False)


def test_resume_path_errors_are_one_line(tmp_path):
    with pytest.raises(remask.RemaskError, match="not a checkpoint directory"):
        ckpt.resolve_resume(str(tmp_path), tmp_path)
    assert ckpt.resolve_resume("latest", tmp_path) is None


def test_bf16_autocast_after_an_fp32_run_in_the_same_process(make_config, tmp_path):
    train(make_config("fp32", max_steps=2))
    result = train(make_config("bf16", max_steps=2, mixed_precision="bf16"))
    assert result["global_step"] == 2
    weights = _weights(tmp_path / "bf16", 2)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())  # fp32 masters
    manifest = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    assert manifest["mixed_precision"] == "bf16"


def test_lifecycle_hooks_see_rollouts_steps_and_the_end(make_config, tmp_path):
    calls = {"after_rollout": [], "after_step": [], "on_train_end": []}

    class Observer:
        @remask.hookimpl
        def after_rollout(self, rollout, rewards, step):
            calls["after_rollout"].append((step, rollout.batch_size, rewards.batch_size))

        @remask.hookimpl
        def after_step(self, step, metrics):
            calls["after_step"].append((step, "train/reward" in metrics))

        @remask.hookimpl
        def on_train_end(self, output_dir, metrics):
            calls["on_train_end"].append((output_dir, metrics.get("train/loss")))

    with remask.testing.registered_plugin(Observer(), name="observer"):
        train(make_config(max_steps=4))
    assert calls["after_rollout"] == [(0, 4, 4), (2, 4, 4)]
    assert calls["after_step"] == [(2, True), (4, True)]
    assert len(calls["on_train_end"]) == 1 and calls["on_train_end"][0][0] == str(tmp_path / "run")
    assert math.isfinite(calls["on_train_end"][0][1])


def test_gradient_checkpointing_needs_support(make_config):
    with pytest.raises(remask.RemaskError, match="gradient_checkpointing: model 'fake' does not support it"):
        train(make_config(max_steps=1, gradient_checkpointing=True))


def test_resume_with_changed_settings_warns(make_config, caplog):
    train(make_config(max_steps=2))
    with caplog.at_level("WARNING", logger="remask.engine"):
        train(make_config(max_steps=4, learning_rate=0.01), resume="latest")
    assert "train.learning_rate: 0.05 -> 0.01" in caplog.text and "max_steps" not in caplog.text


def test_logs_average_the_rounds_of_a_log_interval(make_config, tmp_path):
    seen = []

    class Spy:
        @remask.hookimpl
        def after_step(self, step, metrics):
            seen.append(metrics)

    with remask.testing.registered_plugin(Spy(), name="spy"):
        train(make_config(max_steps=4, inner_steps=1, logging_steps=2, lr_scheduler="linear"))
    rows = _metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [2, 4]
    assert rows[1]["train/loss"] == pytest.approx((seen[2]["train/loss"] + seen[3]["train/loss"]) / 2)
    assert rows[1]["train/learning_rate"] == seen[3]["train/learning_rate"]  # latest, not averaged
