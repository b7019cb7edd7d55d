"""Peak memory of a training step on CPU, measured, beside the memory planner's prediction.

    python benchmarks/memory.py                 # mid-size LLaDA-shaped model (about 2 minutes, 2 cores)
    python benchmarks/memory.py --small         # the scale tests/planner/test_planner.py checks

Each configuration runs in a fresh subprocess (one torch thread, ``MALLOC_MMAP_THRESHOLD_=65536``
so that freed tensors go back to the system at once and RSS follows live memory). The subprocess
loads a random-weight LLaDA-shaped checkpoint through the ``llada`` adapter, builds AdamW over the
trainable parameters and runs

* ``forward``: one no-grad pass over ``[rows, S]`` and the fp32 softmax a sampler draws from;
* ``train``: forward, fp32 log-softmax of every position, backward and AdamW.

Each runs once on a ``[1, 8]`` batch first (lazy imports; AdamW's states exist, as at every later
step); then ``VmHWM`` is reset and the measured step runs. The reported peak is the RSS growth of that
step (``VmHWM`` minus the RSS before it: gradients, activations) plus the bytes of the loaded
weights and of AdamW's states, which is what the planner's phase totals count. Predictions come from :func:`remask.planner.plan_memory` on the meta device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

MID = dict(hidden=1024, layers=8, heads=16, intermediate=2816, vocab=8192)
SMALL = dict(hidden=384, layers=4, heads=6, intermediate=1024, vocab=2048)


@dataclass(frozen=True)
class Case:
    name: str
    phase: str  # forward | train
    rows: int
    seq: int
    checkpointing: bool = False
    lora_r: int | None = None


def write_checkpoint(path: Path, hidden: int, layers: int, heads: int, intermediate: int, vocab: int) -> Path:
    """A random LLaDA-shaped (Llama, untied head) checkpoint the ``llada`` adapter loads."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from remask_diffusion.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=4096, tie_word_embeddings=False, pad_token_id=tok.eos_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=None)
    cfg.mask_token_id = tok.mask_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = LlamaForCausalLM(cfg)
    path.mkdir(parents=True, exist_ok=True)
    module.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _worker(checkpoint: str, case: Case) -> dict:
    """Runs in the fresh subprocess: the measured peak of ``case`` in bytes."""
    import torch

    torch.set_num_threads(1)
    from remask.config import LoraSettings
    from remask_diffusion.llada import LLaDAModel

    model = LLaDAModel(LLaDAModel.Config(path=checkpoint, dtype="float32", device="cpu"))
    if case.lora_r is not None:
        model.apply_lora(LoraSettings(r=case.lora_r, alpha=2 * case.lora_r))
    if case.checkpointing:
        model.enable_gradient_checkpointing()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-4, foreach=False)
    g = torch.Generator().manual_seed(0)

    def step(rows: int, seq: int) -> None:
        ids = torch.randint(4, 100, (rows, seq), generator=g)  # [R, S]
        if case.phase == "forward":
            model.eval()
            with torch.no_grad():
                probs = model.logits(ids).float().softmax(-1)  # [R, S, V]
            del probs
            return
        model.train()
        logp = model.logits(ids).float().log_softmax(-1)  # [M, S, V]
        loss = logp.gather(-1, ids.unsqueeze(-1)).mean()
        del logp
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(1, 8)  # warm-up: lazy imports, and the optimizer states every later step has
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    step(case.rows, case.seq)
    states = sum(t.numel() * t.element_size() for st in optimizer.state.values() for t in st.values()
                 if torch.is_tensor(t))
    # peak growth over the warmed-up process, plus the weights and AdamW states it already holds
    return {"peak": _status("VmHWM") - before + weights + states}


def measure(checkpoint: Path, case: Case) -> int:
    """Peak bytes of ``case`` in a fresh subprocess."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536",
               MALLOC_ARENA_MAX="1", TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, __file__, "--worker", str(checkpoint), json.dumps(asdict(case))],
                         capture_output=True, text=True, env=env, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"memory worker failed for {case.name}: {out.stderr[-2000:]}")
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak"])


def predict(checkpoint: Path, case: Case) -> int:
    from transformers import AutoConfig

    from remask.planner import PlanInputs, plan_memory

    arch = AutoConfig.from_pretrained(str(checkpoint))
    plan = plan_memory(PlanInputs(architecture=arch, dtype="float32", rollout_rows=case.rows,
                                  micro_batch=case.rows, prompt_length=0, gen_length=case.seq, block_length=case.seq,
                                  gradient_checkpointing=case.checkpointing, lora_r=case.lora_r,
                                  lora_targets="all-linear"))
    if case.phase == "forward":
        return plan.phases["rollout"].total
    return plan.phases["loss"].total


def cases(rows: int, seq: int) -> list[Case]:
    return [
        Case("forward (no grad)", "forward", rows, seq),
        Case("train, full", "train", rows, seq),
        Case("train, full + checkpointing", "train", rows, seq, checkpointing=True),
        Case("train, LoRA r=16", "train", rows, seq, lora_r=16),
        Case("train, LoRA r=16 + checkpointing", "train", rows, seq, checkpointing=True, lora_r=16),
    ]


def run(shape: dict, rows: int, seq: int, selected: list[Case] | None = None) -> list[dict]:
    """Measured and predicted peak bytes for every case."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_checkpoint(Path(tmp) / "llada-shaped", **shape)
        for case in selected or cases(rows, seq):
            measured = measure(ckpt, case)
            predicted = predict(ckpt, case)
            results.append({"case": case.name, "measured": measured, "predicted": predicted,
                            "error": predicted / measured - 1})
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="the small shape of the test suite")
    p.add_argument("--rows", type=int, default=None, help="micro-batch rows (default 4; --small: 2)")
    p.add_argument("--seq", type=int, default=None, help="sequence length (default 512; --small: 128)")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker[0], Case(**json.loads(args.worker[1])))))
        return
    import torch

    shape = SMALL if args.small else MID
    rows = args.rows or (2 if args.small else 4)
    seq = args.seq or (128 if args.small else 512)
    results = run(shape, rows, seq)
    print(f"LLaDA-shaped {shape}, float32, {rows} rows x {seq} positions, 1 torch thread, torch {torch.__version__}")
    print("peak = RSS growth of the step over the warmed-up process + bytes of the weights and AdamW states")
    print(f"{'case':<36} {'measured':>12} {'predicted':>12} {'pred/meas':>10}")
    for r in results:
        print(f"{r['case']:<36} {r['measured'] / 2**20:>9.1f} MiB {r['predicted'] / 2**20:>9.1f} MiB "
              f"{r['predicted'] / r['measured']:>10.2f}")
    full = {r["case"]: r["measured"] for r in results}
    print(f"checkpointing factor (full):  {full['train, full'] / full['train, full + checkpointing']:.2f}x less")
    print(f"checkpointing factor (LoRA):  {full['train, LoRA r=16'] / full['train, LoRA r=16 + checkpointing']:.2f}x less")


if __name__ == "__main__":
    main()
