"""Hard kills: SIGKILL mid-run then --resume equals an uninterrupted run bit for bit; a kill while a
checkpoint is being written leaves the previous checkpoint as the latest loadable one.

The killed runs are subprocesses (``engine_driver.py``); the resumes and the uninterrupted reference run
in this process with the same config (one torch thread everywhere, so the arithmetic is identical).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import engine_fakes
import torch
from safetensors.torch import load_file

from remask.config import parse_config
from remask.engine import checkpoint as ckpt
from remask.engine import train

DRIVER = str(Path(__file__).parent / "engine_driver.py")


def _env(sleep: str = "0") -> dict[str, str]:
    # REMASK_PLUGINS names no installed plugin: the driver registers only the test fakes (fast start)
    return {**os.environ, "REMASK_TEST_SAMPLE_SLEEP": sleep, "OMP_NUM_THREADS": "1", "REMASK_LOG_LEVEL": "WARNING",
            "REMASK_PLUGINS": "engine-test-none"}


def _train_here(run: Path, steps: int, resume: str | None = None) -> dict:
    return train(parse_config(engine_fakes.driver_config(str(run), steps)), resume=resume)


def test_sigkill_mid_run_then_resume_is_bit_exact(fakes, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    proc = subprocess.Popen([sys.executable, DRIVER, str(part), "8"], env=_env("0.4"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while ckpt.latest_checkpoint(part) is None:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
    finally:
        proc.kill()  # SIGKILL: no handler runs, no final checkpoint
        proc.wait()
    killed_at = ckpt.latest_checkpoint(part)
    assert int(killed_at.name.split("-")[1]) < 8
    assert _train_here(part, 8, resume="latest")["global_step"] == 8
    _train_here(full, 8)
    a = load_file(str(full / "checkpoint-8" / "model.safetensors"))
    b = load_file(str(part / "checkpoint-8" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    oa = torch.load(full / "checkpoint-8" / "optimizer.pt", weights_only=False)
    ob = torch.load(part / "checkpoint-8" / "optimizer.pt", weights_only=False)
    assert all(torch.equal(oa["state"][i]["exp_avg_sq"], ob["state"][i]["exp_avg_sq"]) for i in oa["state"])
    # the log of the resumed run is the uninterrupted run's log (lines written after the last
    # checkpoint by the killed process are dropped on resume)
    import json

    def log(run):
        return [(r["step"], r["train/loss"], r["train/reward"])
                for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]

    assert log(part) == log(full) and [s for s, _, _ in log(full)] == [2, 4, 6, 8]


def test_kill_during_checkpoint_write_leaves_previous_loadable(fakes, tmp_path):
    run = tmp_path / "run"
    died = subprocess.run([sys.executable, DRIVER, str(run), "6", "--die-in-checkpoint", "2"], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert died.returncode == -9, died.stderr[-2000:]
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["checkpoint-2"]
    assert (run / ".tmp-checkpoint-4" / "model.safetensors").is_file()  # half written, never published
    assert not (run / ".tmp-checkpoint-4" / ckpt.TRAINER_STATE).exists()
    assert _train_here(run, 6, resume="latest")["global_step"] == 6
    assert [p.name for p in ckpt.list_checkpoints(run)][-2:] == ["checkpoint-4", "checkpoint-6"]
    assert not (run / ".tmp-checkpoint-4").exists()
