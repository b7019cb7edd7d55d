"""The engine under reused directories, faults and careless input (issue 14): one line, exit 2,
nothing lost."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys

import engine_fakes
import pytest
import torch
import yaml

import remask
from remask.cli import main
from remask.engine import checkpoint as ckpt
from remask.engine import train
from remask.engine.rundir import LOCK_NAME, RunDirLock, truncate_metrics


def _write(tmp_path, raw, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _cfg(tmp_path, **train):
    return _write(tmp_path, engine_fakes.base_config(str(tmp_path / "run"), **train))


def _one_error_line(err):
    lines = [ln for ln in err.splitlines() if ln.startswith("remask: error:")]
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    return lines[0]


# -- the run directory -----------------------------------------------------------------------------


def test_a_new_run_refuses_a_used_directory_and_overwrite_starts_clean(fakes, tmp_path, capsys):
    cfg = _cfg(tmp_path, save_steps=2, save_total_limit=2)
    assert main(["train", cfg, "--train.max_steps", "6"]) == 0
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["checkpoint-4", "checkpoint-6"]
    capsys.readouterr()
    assert main(["train", cfg, "--train.max_steps", "4"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"train.output_dir {tmp_path / 'run'} is not empty" in line and "--resume" in line and "--overwrite" in line
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["checkpoint-4", "checkpoint-6"]  # untouched
    # --overwrite: the old run's higher-numbered checkpoints go first, so rotation keeps the new run's
    assert main(["train", cfg, "--overwrite", "--train.max_steps", "4"]) == 0
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["checkpoint-2", "checkpoint-4"]
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]  # nothing of the old run's log is left
    state = json.loads((tmp_path / "run" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["remask"]["config"]["train"]["max_steps"] == 4


def test_a_second_run_in_a_locked_directory_is_refused_naming_the_holder(fakes, tmp_path, capsys):
    cfg = _cfg(tmp_path, max_steps=2)
    lock = RunDirLock(tmp_path / "run").acquire()  # another run holds the directory
    try:
        assert main(["train", cfg]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"{tmp_path / 'run'} is in use by another remask run (pid {os.getpid()})" in line
    finally:
        lock.release()
    assert main(["train", cfg]) == 0  # the lock file alone does not make the directory "used"
    assert (tmp_path / "run" / LOCK_NAME).is_file()


def test_the_lock_excludes_another_process(tmp_path):
    lock = RunDirLock(tmp_path / "run").acquire()
    try:
        code = ("import sys; from pathlib import Path; from remask.engine.rundir import RunDirLock\n"
                "try:\n    RunDirLock(Path(sys.argv[1])).acquire()\nexcept Exception as e:\n    print(e)")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                             timeout=120).stdout
        assert f"pid {os.getpid()}" in out and "in use" in out
    finally:
        lock.release()


def test_an_output_dir_that_is_a_file_is_one_line(fakes, tmp_path, capsys):
    (tmp_path / "run").write_text("not a directory")
    assert main(["train", _cfg(tmp_path, max_steps=1)]) == 2
    assert "exists and is not a directory" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on the device"),
                                         (errno.EROFS, "cannot write")])
def test_disk_full_or_read_only_while_saving_is_one_line(fakes, tmp_path, capsys, monkeypatch, code, words):
    def failing_write_json(path, data):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(ckpt, "write_json", failing_write_json)
    assert main(["train", _cfg(tmp_path, max_steps=2)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert words in line and "trainer_state.json" in line


def test_torch_save_on_a_full_disk_is_one_line(fakes, tmp_path, capsys, monkeypatch):
    # torch.save reports ENOSPC as RuntimeError("... file write failed"); the free space decides
    import shutil
    from collections import namedtuple

    import remask.engine.base as base

    def failing_save(obj, path, *args, **kwargs):
        raise RuntimeError(f"[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           f"data/0 of {path}: file write failed")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(base.torch, "save", failing_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 30, 10 << 30, 0))
    assert main(["train", _cfg(tmp_path, max_steps=2)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no space left on the device while writing" in line and ".tmp-checkpoint-2" in line


# -- resume ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, garbage", [("optimizer.pt", b"\x00not a torch file"),
                                           ("trainer_state.json", b'{"global_step": 2, "log_hi'),
                                           ("model.safetensors", b"\x01\x02")])
def test_a_corrupt_checkpoint_file_is_named(fakes, tmp_path, capsys, name, garbage):
    cfg = _cfg(tmp_path, max_steps=2)
    assert main(["train", cfg]) == 0
    (tmp_path / "run" / "checkpoint-2" / name).write_bytes(garbage)
    capsys.readouterr()
    assert main(["train", cfg, "--resume", "--train.max_steps", "4"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(tmp_path / "run" / "checkpoint-2") in line and "corrupt" in line
    if name != "model.safetensors":
        assert name in line


def test_a_torn_metrics_line_does_not_block_resume(fakes, tmp_path):
    cfg = _cfg(tmp_path, max_steps=2)
    assert main(["train", cfg]) == 0
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "train/lo')  # killed in the middle of a write
    assert main(["train", cfg, "--resume", "--train.max_steps", "4"]) == 0
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]


def test_truncate_metrics_counts_what_it_drops(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"st')
    assert truncate_metrics(path, 2) == 2
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_resume_with_the_same_config_warns_about_nothing(fakes, tmp_path, caplog):
    cfg = _cfg(tmp_path, max_steps=2)
    assert main(["train", cfg]) == 0
    with caplog.at_level("WARNING", logger="remask"):
        assert main(["train", cfg, "--resume", "--train.max_steps", "4"]) == 0
    assert "changed settings" not in caplog.text


def test_trainer_state_has_hugging_face_layout_and_old_layout_resumes(fakes, tmp_path):
    cfg = _cfg(tmp_path, max_steps=2, logging_steps=1)
    assert main(["train", cfg]) == 0
    path = tmp_path / "run" / "checkpoint-2" / "trainer_state.json"
    state = json.loads(path.read_text())
    assert state["global_step"] == 2 and state["max_steps"] == 2 and state["logging_steps"] == 1
    assert [row["step"] for row in state["log_history"]] == [2] and "train/loss" in state["log_history"][0]
    assert state["num_input_tokens_seen"] > 0 and state["remask"]["rollouts_done"] == 1
    assert "rng" not in json.dumps(state) and (path.parent / "rng_state_0.pth").is_file()
    # a checkpoint written before the layout changed (remask's fields at the top level) still resumes
    old = {k: v for k, v in state.items() if k not in ("remask", "log_history")}
    old.update(state["remask"])
    path.write_text(json.dumps(old))
    assert main(["train", cfg, "--resume", "--train.max_steps", "4"]) == 0
    assert json.loads((tmp_path / "run" / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4


# -- stopping ------------------------------------------------------------------------------------------


def test_sigterm_exits_143_and_says_interrupted(fakes, tmp_path, capsys):
    class Stopper:
        @remask.hookimpl
        def after_step(self, step, metrics):
            if step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    with remask.testing.registered_plugin(Stopper(), name="stopper"):
        assert main(["train", _cfg(tmp_path, max_steps=6)]) == 143
    out = capsys.readouterr().out
    assert "interrupted by SIGTERM at step 2" in out and "--resume" in out and "done:" not in out


def test_a_raising_after_step_names_the_plugin_and_keeps_the_work(fakes, tmp_path, capsys):
    class Broken:
        @remask.hookimpl
        def after_step(self, step, metrics):
            if step == 2:
                raise ValueError("dashboard unreachable")

    with remask.testing.registered_plugin(Broken(), name="my-dashboard"):
        assert main(["train", _cfg(tmp_path, max_steps=6)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "plugin 'my-dashboard'" in line and "after_step" in line and "dashboard unreachable" in line
    assert "checkpoint-2 was saved" in line
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "checkpoint-2"


def test_done_is_printed_by_the_main_process_only(capsys):
    from remask.commands.train import _finished

    assert _finished({"global_step": 3, "output_dir": "r", "is_main": False}, "steps") == 0
    assert capsys.readouterr().out == ""
    assert _finished({"global_step": 3, "output_dir": "r", "is_main": True}, "steps") == 0
    assert capsys.readouterr().out.startswith("done: 3 steps in r: checkpoint-3/")


def test_train_refuses_to_start_with_a_broken_plugin(fakes, tmp_path, capsys, monkeypatch):
    from remask.registry import PluginProblem, get_registry

    reg = get_registry()
    monkeypatch.setattr(reg, "problems", [*reg.problems, PluginProblem("half-done", "half-done", "0.1", "boom")])
    assert main(["train", _cfg(tmp_path, max_steps=1)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "plugin 'half-done'" in line and "REMASK_DISABLE_PLUGINS=half-done" in line
    assert not (tmp_path / "run").exists()


# -- config ----------------------------------------------------------------------------------------------


def test_sft_refuses_a_misspelled_section(fakes, tmp_path, capsys):
    raw = engine_fakes.base_config(str(tmp_path / "run"))
    raw = {"model": raw["model"], "task": {"name": "test-completion-task"}, "trian": {"max_steps": 1}}
    assert main(["sft", _write(tmp_path, raw)]) == 2
    assert "trian: unknown section (did you mean 'train'?)" in _one_error_line(capsys.readouterr().err)


def test_ref_update_every_needs_a_frozen_copy(fakes, tmp_path, capsys):
    lora = {"r": 2, "alpha": 4, "target_modules": ["mix", "head"]}
    raw = engine_fakes.base_config(str(tmp_path / "run"), max_steps=2, ref_update_every=1, lora=lora)
    assert main(["train", _write(tmp_path, raw)]) == 2
    assert "train.ref_update_every: with LoRA" in _one_error_line(capsys.readouterr().err)


def test_soft_reference_update_mixes_policy_into_reference(make_config):
    from remask.engine import Trainer

    soft = Trainer(make_config("soft", max_steps=2, inner_steps=1, ref_update_every=2, ref_mix_alpha=0.25))
    soft.run()
    # the same run without updates: the reference stays θ0, and the policy reaches the same θ2 (the
    # first update happens after step 2's optimizer step, so training is identical up to there)
    plain = Trainer(make_config("plain", max_steps=2, inner_steps=1))
    plain.run()
    theta0 = dict(plain.reference.base.module.named_parameters())
    theta2 = dict(plain.model.module.named_parameters())
    ref = dict(soft.reference.base.module.named_parameters())
    assert any(not torch.equal(theta0[k], theta2[k]) for k in theta0)
    for name, value in ref.items():
        torch.testing.assert_close(value, 0.25 * theta2[name] + 0.75 * theta0[name], rtol=0, atol=1e-6)


def test_cosine_with_min_lr_matches_transformers():
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    from remask.config import TrainConfig
    from remask.engine.optim import build_scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    ours_opt = torch.optim.SGD([param], lr=0.1)
    theirs_opt = torch.optim.SGD([param], lr=0.1)
    t = TrainConfig(lr_scheduler="cosine_with_min_lr", min_lr_rate=0.1, warmup_steps=3, learning_rate=0.1)
    ours = build_scheduler(t, ours_opt, 20)
    theirs = get_cosine_with_min_lr_schedule_with_warmup(theirs_opt, 3, 20, min_lr_rate=0.1)
    lrs = []
    for _ in range(21):
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), abs=1e-12)
        lrs.append(ours.get_last_lr()[0])
        ours_opt.step(), theirs_opt.step(), ours.step(), theirs.step()
    assert lrs[3] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.01)  # peak after warm-up; floor at the end
    assert min(lrs[3:]) == pytest.approx(0.01)


def test_group_mean_std_gives_exactly_zero_to_equal_rewards():
    from remask_grpo.advantages import group_mean_std_advantages

    # 0.9 x 3 has a float32 mean one ulp off 0.9; before the fix every row got ~-6e-4
    r = torch.tensor([0.9, 0.9, 0.9, 1.0, 0.0, 1.0], dtype=torch.float32)
    assert float(r[:3].mean() - r[0]) != 0.0
    adv = group_mean_std_advantages(r, 3)
    assert torch.equal(adv[:3], torch.zeros(3))
    assert adv[3] > 0 > adv[4]


def test_per_rank_rollout_and_reward_seconds_are_logged(make_config, tmp_path):
    train(make_config(max_steps=2))
    row = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert row["perf/rollout_seconds_max_rank"] >= row["perf/rollout_seconds_min_rank"] > 0
    assert row["perf/reward_slowest_rank"] == 0.0 and row["train/num_tokens"] > 0


def test_a_read_only_output_dir_is_one_line(tmp_path, monkeypatch):
    # (as root, chmod cannot make a directory read-only, so the refusal of the OS is simulated)
    import remask.engine.rundir as rundir

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(rundir.os, "open", read_only)
    with pytest.raises(remask.RemaskError, match=r"run: cannot write there \(Read-only file system\)"):
        RunDirLock(tmp_path / "run").acquire()
