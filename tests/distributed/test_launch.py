"""The documented launch command lines: one form everywhere (``-m remask.cli train CONFIG``), and each
one that can run on a CPU host is run here for one step of the tiny example: two gloo processes
with ``accelerate launch``, and two "machines" x one process on 127.0.0.1 with torchrun's c10d
rendezvous and with the SLURM node script (``examples/slurm/node.sh``)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "tiny-arith-d1.yaml"
ONE_STEP = ["--train.max_steps", "1", "--train.prompts_per_step", "2", "--train.group_size", "2",
            "--train.inner_steps", "1", "--train.save_steps", "1", "--train.progress", "false"]


def _launch_lines() -> list[tuple[str, str]]:
    files = [ROOT / "README.md", ROOT / "docs" / "training.md", *sorted((ROOT / "examples").rglob("*.yaml")),
             *sorted((ROOT / "examples" / "slurm").iterdir())]
    found = []
    for path in files:
        for line in path.read_text().splitlines():
            if re.search(r"\b(accelerate launch|torchrun)\b", line) and " -m " in line:
                found.append((str(path.relative_to(ROOT)), line.strip()))
    return found


def test_every_documented_launch_line_runs_the_cli_module():
    lines = _launch_lines()
    assert len(lines) >= 8  # the accelerate configs, training.md, the SLURM script
    for where, line in lines:
        assert "-m remask.cli train" in line and "remask.engine" not in line, f"{where}: {line}"


def _documented(prefix: str) -> str:
    """The line of docs/training.md that starts with ``prefix`` (the test runs what the docs say)."""
    for line in (ROOT / "docs" / "training.md").read_text().splitlines():
        if line.startswith(prefix):
            return line.split("#")[0].strip()
    raise AssertionError(f"docs/training.md has no command line starting with {prefix!r}")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    env.pop("REMASK_PLUGINS", None)
    return env


def _check_run(out: Path, procs: list[subprocess.Popen]) -> None:
    logs = []
    for p in procs:
        stdout, _ = p.communicate(timeout=600)
        logs.append(stdout)
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    ckpt = out / "checkpoint-1"
    assert (ckpt / "trainer_state.json").is_file()
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()  # two ranks ran


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_gloo_processes_with_accelerate_launch(tmp_path):
    line = _documented("accelerate launch --multi_gpu --num_processes 2")
    cmd = line.replace("CONFIG", str(CONFIG)).split() + ONE_STEP + ["--train.output_dir", str(tmp_path / "run")]
    _check_run(tmp_path / "run", [_start(cmd, _env())])


@pytest.mark.slow
def test_two_machines_with_torchrun_rendezvous(tmp_path):
    line = _documented("torchrun --nnodes")
    port = _port()
    procs = []
    for rank in (0, 1):
        cmd = (line.replace("CONFIG", str(CONFIG)).replace("HOST0", "127.0.0.1").replace("29500", str(port))
               .replace("--nproc_per_node 8", "--nproc_per_node 1").replace("--node_rank 0", f"--node_rank {rank}"))
        procs.append(_start(cmd.split() + ONE_STEP + ["--train.output_dir", str(tmp_path / "run")], _env()))
    _check_run(tmp_path / "run", procs)


@pytest.mark.slow
def test_two_machines_with_the_slurm_node_script(tmp_path):
    port = _port()
    procs = []
    for rank in (0, 1):
        env = dict(_env(), SLURM_NNODES="2", SLURM_NODEID=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), GPUS_PER_NODE="1")
        cmd = ["bash", "examples/slurm/node.sh", str(CONFIG), *ONE_STEP, "--train.output_dir", str(tmp_path / "run")]
        procs.append(_start(cmd, env))
    _check_run(tmp_path / "run", procs)


def test_slurm_node_script_names_what_is_missing():
    env = {k: v for k, v in _env().items() if not k.startswith(("SLURM_", "MASTER_"))}
    out = subprocess.run(["bash", "examples/slurm/node.sh", str(CONFIG)], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "SLURM_NNODES" in out.stderr


def test_fsdp_config_builds_an_fsdp2_plugin_as_accelerate_launch_does(monkeypatch):
    """examples/accelerate/fsdp.yaml -> the environment `accelerate launch` sets -> accelerate's plugin:
    FSDP2, full shard, one unit per decoder layer (the GPU run itself has not been executed)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(
        ["--config_file", str(ROOT / "examples" / "accelerate" / "fsdp.yaml"), "-m", "remask.cli"])
    args, _, _ = _validate_launch_command(args)
    for key, value in prepare_multi_gpu_env(args).items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert "transformer_auto_wrap_policy" in getattr(plugin.auto_wrap_policy, "__name__", "")
