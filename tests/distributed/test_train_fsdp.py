"""``remask train`` itself trains sharded: ``accelerate launch --config_file examples/accelerate/fsdp.yaml``
with 2 gloo CPU processes (accelerate falls back to data parallel on CPU; the engine shards the policy
with FSDP2 ``fully_shard`` itself, see docs/training.md).

For full-weight training (frozen, sharded reference copy) and for LoRA (reference = the adapter
disabled on the sharded module), on the shipped tiny checkpoint:

* the sharded run's weights after 3 d1 updates equal the same run as 2-process data parallel
  (``--multi_gpu``, same processes, same rows per process, same RNG streams) to float32 rounding;
* the sharded run resumed from its step-2 checkpoint (``sharded/``: torch.distributed.checkpoint of
  model + optimizer) ends bit-exactly where the uninterrupted sharded run ends.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "tiny-arith-d1.yaml"
# dense rewards (digits right) as advantages (no group baseline), no weight decay: every update
# comes from a non-zero gradient; max_grad_norm 0.5 so that clipping acts on the sharded gradients.
# Gradients are averaged in another order (FSDP2 reduce-scatter vs an all-reduce), so they agree to
# float32 rounding only; Adam's eps is raised to 1e-3 so that entries whose true gradient is ~0 are
# not normalised up to a whole step of rounding noise (with eps 1e-8: |Δ| up to 2.4e-6 after 3 steps).
RUN = ["--train.max_steps", "3", "--train.prompts_per_step", "4", "--train.group_size", "2",
       "--train.inner_steps", "1", "--train.save_steps", "1", "--train.save_total_limit", "3",
       "--train.learning_rate", "1e-3", "--train.adam_eps", "1e-3", "--train.max_grad_norm", "0.5",
       "--train.weight_decay", "0", "--rewards.0.name", "arithmetic-digits", "--train.progress", "false",
       "--train.torch_threads", "1", "--advantage.name", "raw-reward",
       "--eval.before_training", "false", "--eval.after_training", "false"]
LORA = ["--train.lora.r", "4", "--train.lora.alpha", "8"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(kind: str, out: Path, extra: list[str]) -> subprocess.Popen:
    head = (["--config_file", str(ROOT / "examples" / "accelerate" / "fsdp.yaml")] if kind == "fsdp"
            else ["--multi_gpu"])
    cmd = ["accelerate", "launch", *head, "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(_port()),
           "--mixed_precision", "no", "-m", "remask.cli", "train", str(CONFIG), *RUN, *extra,
           "--train.output_dir", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    env.pop("REMASK_PLUGINS", None)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(*procs: subprocess.Popen) -> list[str]:
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    return logs


def _weights(ckpt: Path, lora: bool) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / ("adapter_model.safetensors" if lora else "model.safetensors")))


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_remask_train_fsdp_matches_data_parallel_and_resumes_exactly(lora, tmp_path):
    extra = LORA if lora else []
    sharded, ddp = tmp_path / "fsdp", tmp_path / "ddp"
    final = tmp_path / "final"
    logs = _wait(_launch("fsdp", sharded, [*extra, "--train.save_final_model", str(final)]),
                 _launch("ddp", ddp, extra))
    assert "FSDP2: tiny sharded over 2 processes" in logs[0] and "FSDP2" not in logs[1]
    manifest = json.loads((sharded / "manifest.json").read_text())
    assert manifest["reference"] == ("adapter disabled" if lora else "frozen copy")
    # the sharded run wrote torch.distributed.checkpoint shards plus the Hugging Face layout
    assert (sharded / "checkpoint-3" / "sharded" / ".metadata").is_file()
    assert not (ddp / "checkpoint-3" / "sharded").exists()
    a, b = _weights(sharded / "checkpoint-3", lora), _weights(ddp / "checkpoint-3", lora)
    assert set(a) == set(b) and (all("lora_" in k for k in a) if lora else len(a) > 10)
    norms = [json.loads(x)["train/grad_norm"] for x in (sharded / "metrics.jsonl").read_text().splitlines()]
    ddp_norms = [json.loads(x)["train/grad_norm"] for x in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert len(norms) == 3 and min(norms) > 0 and max(norms) > 0.5, norms  # real gradients, clipped at least once
    assert norms == pytest.approx(ddp_norms, rel=1e-4)  # the norm over the shards is the whole norm
    start = _weights(sharded / "checkpoint-1", lora)
    assert any(not torch.equal(a[k], start[k]) for k in a)  # steps 2-3 moved the weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    # the final model: gathered on the main process, Hugging Face layout, loads back as it was trained
    assert all(torch.equal(w, a[k]) for k, w in _weights(final, lora).items())
    from remask_diffusion.tiny import TinyDiffusionModel

    loaded = TinyDiffusionModel(TinyDiffusionModel.Config(path=str(final), device="cpu"))
    assert loaded.has_adapter == lora
    params = {n.replace(".default", ""): p for n, p in loaded.module.named_parameters()}
    for k in a:
        assert torch.equal(params[k].detach(), a[k]), k
    # sharded and stopped after step 2, resumed: the same step-3 weights, bit for bit
    resumed = tmp_path / "resumed"
    _wait(_launch("fsdp", resumed, [*extra, "--resume", str(sharded / "checkpoint-2")]))
    c = _weights(resumed / "checkpoint-3", lora)
    for k in a:
        assert torch.equal(c[k], a[k]), k
    rows = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (sharded / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train/loss"] == ref[-1]["train/loss"] and rows[-1]["train/grad_norm"] == ref[-1]["train/grad_norm"]
