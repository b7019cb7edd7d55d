"""remask.lockstep: sharded processes run the same forward passes, or all stop with one error.

The unit tests stand in for FSDP with a model whose forward is itself a collective (an
all-reduce, as FSDP's all-gathers are): without lockstep, a process that runs more passes than
another waits forever. The end-to-end test runs `remask train` under the FSDP accelerate config with
threshold decoding (data-dependent steps) and an evaluation whose processes hold unequal batches;
before remask.lockstep existed that command hung.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from remask.errors import RemaskError
from remask.lockstep import Lockstep, any_process, region

ROOT = Path(__file__).resolve().parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CollectiveModel:
    """A forward pass that, like a sharded one, needs every process to join it."""

    mask_token_id = 0
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.lockstep = Lockstep("cpu")
        self.nfe = 0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.lockstep.before_forward()
        self.nfe += 1
        t = torch.ones(1)
        dist.all_reduce(t)  # blocks until every process runs its own pass
        return t


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model = CollectiveModel()
    ids = torch.zeros(1, 1, dtype=torch.long)
    result: dict[str, object] = {}
    # draining: rank 0 runs 3 passes, rank 1 runs 5 (threshold decoding, unequal batches)
    with region(model, "sampling", drain=True):
        for _ in range(3 + 2 * rank):
            model.forward(ids)
    result["drain"] = (model.nfe, model.lockstep.drained)
    # strict: the same mismatch raises on both processes instead of hanging
    try:
        with region(model, "objective 'x' loss", drain=False):
            for _ in range(1 + rank):
                model.forward(ids)
        result["strict"] = "no error"
    except RemaskError as e:
        result["strict"] = str(e)
    # strict with equal passes: no error, no extra pass
    nfe = model.nfe
    with region(model, "objective 'x' loss", drain=False):
        for _ in range(2):
            model.forward(ids)
    result["equal"] = model.nfe - nfe
    result["any"] = (any_process(model, rank == 1), any_process(model, False))
    dist.destroy_process_group()
    torch.save(result, f"{out}/{rank}.pt")


def test_drain_matches_passes_and_strict_mismatch_raises_everywhere(tmp_path):
    mp.start_processes(_worker, args=(_port(), str(tmp_path)), nprocs=2, start_method="spawn", join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert r0["drain"] == (5, 2)  # 3 own passes + 2 throw-away ones while rank 1 finished
    assert r1["drain"] == (5, 0)
    for r in (r0, r1):
        assert "objective 'x' loss: processes ran different numbers of forward passes" in r["strict"]
        assert r["equal"] == 2
        assert r["any"] == (True, False)


def test_region_is_a_no_op_without_sharding():
    class Plain:
        lockstep = None

    with region(Plain(), "sampling", drain=True):
        pass
    assert any_process(Plain(), True) is True and any_process(Plain(), False) is False


@pytest.mark.slow
def test_fsdp_train_with_threshold_decoding_and_uneven_eval_batches(tmp_path):
    """Threshold decoding takes data-dependent steps per process, and 3 evaluation rows in
    batches of 1 give one process two batches and the other one: both hung under FSDP before."""
    cmd = ["accelerate", "launch", "--config_file", str(ROOT / "examples" / "accelerate" / "fsdp.yaml"),
           "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(_port()),
           "--mixed_precision", "no", "-m", "remask.cli", "train", str(ROOT / "examples" / "tiny-arith-d1.yaml"),
           "--sampler.name", "fast-dllm", "--sampler.threshold", "0.5", "--train.max_steps", "2",
           "--train.prompts_per_step", "4", "--train.group_size", "2", "--train.progress", "false",
           "--train.torch_threads", "1", "--eval.limit", "3", "--eval.batch_size", "1",
           "--eval.before_training", "true", "--eval.after_training", "false",
           "--train.output_dir", str(tmp_path / "run")]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    env.pop("REMASK_PLUGINS", None)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as e:  # the failure this guards against is a hang
        pytest.fail(f"sharded training hung: {(e.stdout or '')[-2000:]}")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "FSDP2: tiny sharded over 2 processes" in proc.stdout + proc.stderr
    assert (tmp_path / "run" / "checkpoint-2").is_dir()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
