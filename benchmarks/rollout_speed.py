"""Rollout speed: wall time, NFE and sampler overhead of `llada` and `fast-dllm` under each KV-cache policy.

    OMP_NUM_THREADS=1 python benchmarks/rollout_speed.py                    # random LLaDA-shaped, vocab 126,464
    OMP_NUM_THREADS=1 python benchmarks/rollout_speed.py --model-path builtin:tiny-scan --task digit-scan \\
        --gen-length 64 --block-length 16                                    # long-completion model + accuracy

The random model has LLaDA-8B's layout (bidirectional Llama, untied head, LLaDA's vocabulary of
126,464 and mask id 126,336) at a width that runs on a CPU; it is built on the meta device and
materialised with random weights, nothing is downloaded. With ``--model-path`` a `tiny` checkpoint
(``builtin:NAME`` or a directory) is decoded on the test split of ``--task`` and greedy accuracy
(the task's own ``is_correct``) is reported beside the speed.

Overhead = sampler time / Σ (bare forward time of each pass it ran): a block's first pass is timed as
one bare full pass, each later pass as one bare pass of the same batch, block and cache policy
(both through the samplers' own ``BlockForward``), so 1.00 means the sampler costs nothing beyond its
forward passes. On a shared machine that end-to-end ratio swings by ±10 %, so each sampler is also
timed with the forward pass replaced by replayed logits (its own per-step work alone, as in
``sampler_overhead.py``), and ``1 + own work / mean bare pass`` is reported beside it. The real run
also clocks every pass inside the decoding loop, so the end-to-end ratio splits into "passes in the
loop / Σ bare passes" (is the model slower inside the loop than alone?) and the sampler's own work
per step measured in the loop. Every time is the median of ``--repeats`` runs (one warm-up rollout
first). Times are process CPU seconds (``time.process_time``: other jobs on a shared machine do not
inflate them) on CPU and synchronised wall time on CUDA. Prints the thread count and the load
average, and a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampler_overhead import LogitsReplay  # noqa: E402

from remask import DiffusionModel, PromptBatch
from remask_diffusion.block_cache import BlockForward
from remask_diffusion.llada import LLADA_MASK_TOKEN_ID, LLaDAModel, llama_config_from_llada
from remask_diffusion.samplers import FastDLLMSampler, LLaDASampler
from remask_diffusion.tiny import build_char_tokenizer

#: LLaDA-8B-Instruct's config.json fields that decide the shape (the rest are the adapter's defaults)
LLADA_8B = dict(d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288,
                vocab_size=126464, embedding_size=126464, rope_theta=500000.0, rms_norm_eps=1e-5,
                max_sequence_length=4096, mask_token_id=LLADA_MASK_TOKEN_ID, eos_token_id=126081)


class RandomLLaDA(LLaDAModel):
    """A LLaDA-shaped model with random weights: built on the meta device, materialised on the
    target device (no checkpoint on disk, no download). The character tokenizer only decodes texts."""

    def __init__(self, raw: dict[str, Any], *, device: str = "cpu", dtype: str = "float32", seed: int = 0) -> None:
        self.raw, self.seed = raw, seed
        super().__init__(LLaDAModel.Config(path="random-llada-shaped", device=device, dtype=dtype))

    def load(self, source: str) -> tuple[Any, torch.nn.Module]:
        from transformers import LlamaForCausalLM

        llama = llama_config_from_llada(self.raw, self.config.attn_implementation)
        llama.mask_token_id = int(self.raw["mask_token_id"])
        with torch.device("meta"):
            module = LlamaForCausalLM(llama)
        module.to(self.torch_dtype)  # still on meta: no memory yet
        module.to_empty(device=self.target_device)
        gen = torch.Generator(device=self.target_device).manual_seed(self.seed)
        with torch.no_grad():
            for name, param in module.named_parameters():
                if name.endswith("norm.weight"):
                    param.fill_(1.0)
                else:
                    param.normal_(0.0, 0.02, generator=gen)
        rotary = module.model.rotary_emb  # its inv_freq buffer was left empty by the meta build
        module.model.rotary_emb = type(rotary)(llama).to(self.target_device)
        return build_char_tokenizer(), module

    def special_token_ids(self) -> tuple[int, int, int]:
        eos = int(self.raw.get("eos_token_id", 1))
        return int(self.raw["mask_token_id"]), eos, eos


def random_llada(*, d_model: int, layers: int, heads: int, mlp: int, vocab: int = 126464, device: str = "cpu",
                 dtype: str = "float32", seed: int = 0) -> RandomLLaDA:
    """LLaDA-8B's layout at the given width (``vocab`` ≥ 126,337 keeps LLaDA's mask id)."""
    raw = dict(LLADA_8B, d_model=d_model, n_heads=heads, n_kv_heads=heads, n_layers=layers, mlp_hidden_size=mlp,
               vocab_size=vocab, embedding_size=vocab)
    if vocab <= LLADA_MASK_TOKEN_ID:
        raw.update(mask_token_id=vocab - 1, eos_token_id=vocab - 2)
    return RandomLLaDA(raw, device=device, dtype=dtype, seed=seed)


def random_prompts(model: DiffusionModel, batch: int, prompt_length: int, seed: int = 0) -> PromptBatch:
    """Left-padded random prompts of ``prompt_length // 2 .. prompt_length`` tokens (no mask token)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 100, (batch, prompt_length), generator=g)
    lengths = torch.randint(prompt_length // 2, prompt_length + 1, (batch,), generator=g)
    attn = torch.arange(prompt_length).unsqueeze(0) >= (prompt_length - lengths).unsqueeze(1)
    ids = torch.where(attn, ids, torch.full_like(ids, model.pad_token_id))
    return PromptBatch(ids, attn, torch.arange(batch), tuple("" for _ in range(batch)), tuple({} for _ in range(batch)))


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def bare_pass_seconds(model: DiffusionModel, prompts: PromptBatch, gen_length: int, block_length: int,
                      policy: str, repeats: int) -> tuple[float, float]:
    """(one full pass, one later pass of the middle block under ``policy``), medians (``gpu.py``'s
    form; a prefix-cached pass depends on the block, see :func:`bare_passes_by_block`)."""
    full, later = bare_passes_by_block(model, prompts, gen_length, block_length, policy, repeats)
    starts = sorted(later)
    return full, later[starts[len(starts) // 2]]


def bare_passes_by_block(model: DiffusionModel, prompts: PromptBatch, gen_length: int, block_length: int,
                         policy: str, repeats: int) -> tuple[float, dict[int, float]]:
    """(one full pass, {block start: one later pass of that block under ``policy``}), medians.

    Every block is timed: a prefix-cached pass feeds the block *and* the suffix, so its cost falls
    from the first block to the last (a single middle block would misstate the sum)."""
    device = model.device
    b, p = prompts.prompt_ids.shape
    x = torch.cat([prompts.prompt_ids, torch.full((b, gen_length), model.mask_token_id)], 1).to(device)
    attn = torch.cat([prompts.attention_mask.bool(), torch.ones(b, gen_length, dtype=torch.bool)], 1).to(device)
    passes = BlockForward(model, attn, policy)
    full: list[float] = []
    later: dict[int, list[float]] = {}
    with torch.no_grad():
        for r in range(repeats + 1):
            for lo in range(p, p + gen_length, block_length):
                passes.start_block(lo, lo + block_length)
                t = clock(device)
                passes(x)
                full.append(clock(device) - t)
                t = clock(device)
                passes(x)
                later.setdefault(lo, []).append(clock(device) - t)
    skip = gen_length // block_length  # the first round is a warm-up
    return statistics.median(full[skip:]), {lo: statistics.median(v[1:]) for lo, v in later.items()}


class PassClock:
    """Times every ``BlockForward`` call (one model pass) while installed: the seconds the decoding
    loop spent inside the model, so that the rest of a rollout's time is the sampler's own work."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self._call = device, 0.0, BlockForward.__call__
        self.calls: list[tuple[int, bool]] = []  # (block start, full pass?) of every pass

    def __enter__(self) -> "PassClock":
        call, timer = self._call, self

        def timed(passes: BlockForward, x: torch.Tensor) -> torch.Tensor:
            timer.calls.append((passes.lo, passes.policy == "none" or passes.cache is None))
            t = clock(timer.device)
            out = call(passes, x)
            timer.seconds += clock(timer.device) - t
            return out

        BlockForward.__call__ = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        BlockForward.__call__ = self._call  # type: ignore[method-assign]


def time_rollout(sampler: Any, model: DiffusionModel, prompts: PromptBatch,
                 repeats: int) -> tuple[float, float, Any, list[tuple[int, bool]]]:
    """(median rollout seconds, median seconds inside model passes, last rollout, its passes as
    (block start, full pass?)) over ``repeats`` runs after one warm-up run."""
    device = model.device
    sampler.sample(model, prompts, torch.Generator(device=device).manual_seed(0))  # warm-up
    times, inside, rollout, calls = [], [], None, []
    for r in range(repeats):
        with PassClock(device) as passes:
            t = clock(device)
            rollout = sampler.sample(model, prompts, torch.Generator(device=device).manual_seed(r))
            times.append(clock(device) - t)
        inside.append(passes.seconds)
        calls = passes.calls
    return statistics.median(times), statistics.median(inside), rollout, calls


def cases(gen_length: int, block_length: int, steps: int, temperature: float,
          thresholds: tuple[float, ...] = (0.9,)) -> list[tuple[str, Any, dict]]:
    """The sampler/cache policies compared: (label, sampler class, config). The first threshold gets
    every cache policy and a ≤ 2 tokens/step row; further thresholds get no cache and the dual cache."""
    common = dict(gen_length=gen_length, block_length=block_length, steps=steps, temperature=temperature)
    rows: list[tuple[str, Any, dict]] = [
        ("llada, no cache", LLaDASampler, dict(common, cache="none")),
        ("llada, prefix cache", LLaDASampler, dict(common, cache="prefix")),
        ("llada, dual cache", LLaDASampler, dict(common, cache="dual")),
    ]
    for i, t in enumerate(thresholds):
        fast = dict(common, threshold=t)
        rows.append((f"fast-dllm {t:g}, no cache", FastDLLMSampler, dict(fast, cache="none")))
        if i == 0:
            rows.append((f"fast-dllm {t:g}, prefix cache", FastDLLMSampler, dict(fast, cache="prefix")))
        rows.append((f"fast-dllm {t:g}, dual cache", FastDLLMSampler, dict(fast, cache="dual")))
        if i == 0:
            rows.append((f"fast-dllm {t:g}, dual, ≤ 2 tokens/step", FastDLLMSampler,
                         dict(fast, cache="dual", max_tokens_per_step=2)))
    return rows


def task_batch(model: DiffusionModel, task_name: str, task_args: list[str], n: int) -> tuple[PromptBatch, Any]:
    from remask.engine import build_prompt_batch
    from remask.registry import get_registry

    cls = get_registry().get("task", task_name)
    kwargs = dict(a.split("=", 1) for a in task_args)
    task = cls(cls.Config(**kwargs))
    examples = list(task.examples("test"))[:n]
    return build_prompt_batch(model, examples, group_size=1), task


def add_shape_args(ap: argparse.ArgumentParser) -> None:
    """The random LLaDA-shaped model's width and the rollout's shape (shared with ``kept_logits.py``)."""
    ap.add_argument("--vocab", type=int, default=126464)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mlp", type=int, default=768)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--prompt-length", type=int, default=16)
    ap.add_argument("--gen-length", type=int, default=64)
    ap.add_argument("--block-length", type=int, default=16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", default=None,
                    help="a tiny-adapter checkpoint (builtin:NAME or a directory) instead of the random model")
    ap.add_argument("--task", default=None, help="with --model-path: the task whose test split is decoded and scored")
    ap.add_argument("--task-arg", action="append", default=[], help="task config field=value (repeatable)")
    add_shape_args(ap)
    ap.add_argument("--steps", type=int, default=None, help="default: gen-length (one token per step)")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per case (median) after one warm-up")
    ap.add_argument("--only", default=None, help="comma-separated parts of case labels: run only those cases")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--thresholds", default="0.9",
                    help="comma-separated fast-dllm confidence thresholds (default 0.9)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps or args.gen_length
    task = None
    if args.model_path:
        from remask_diffusion.tiny import TinyDiffusionModel

        model: DiffusionModel = TinyDiffusionModel(TinyDiffusionModel.Config(path=args.model_path, device=args.device))
        if args.task:
            prompts, task = task_batch(model, args.task, args.task_arg, args.batch)
        else:
            prompts = random_prompts(model, args.batch, args.prompt_length)
        what = f"tiny model {args.model_path}" + (f", task {args.task} (test split)" if task is not None else "")
    else:
        model = random_llada(d_model=args.d_model, layers=args.layers, heads=args.heads, mlp=args.mlp,
                             vocab=args.vocab, device=args.device)
        prompts = random_prompts(model, args.batch, args.prompt_length)
        what = (f"random LLaDA-shaped model (d_model {args.d_model}, {args.layers} layers, {args.heads} heads, "
                f"MLP {args.mlp}, vocabulary {args.vocab})")
    n_params = sum(p.numel() for p in model.module.parameters())
    print(f"{what}, {n_params / 1e6:.1f} M parameters, device {args.device}, {torch.get_num_threads()} thread(s), "
          f"{platform.processor() or platform.machine()}; batch {prompts.batch_size}, prompt {prompts.prompt_length}, "
          f"L {args.gen_length}, block {args.block_length}, steps {steps}, temperature {args.temperature}; "
          f"median of {args.repeats} run(s); load average {os.getloadavg()[0]:.1f} at the start")
    bare = {pol: bare_passes_by_block(model, prompts, args.gen_length, args.block_length, pol, 3)
            for pol in ("none", "prefix", "dual")}
    print("bare passes (ms): full " + f"{bare['none'][0] * 1e3:.1f}" + "".join(
        f"; {pol}-cached, block by block: " + " / ".join(f"{v * 1e3:.1f}" for v in bare[pol][1].values())
        for pol in ("prefix", "dual")))
    print()
    head = ("| sampler | NFE | time (s) | speed-up vs llada no cache | overhead = time / Σ bare passes | "
            "passes in loop / Σ bare passes | own work per step in loop (ms) | "
            "own work per step, replayed (ms) | 1 + own work (replayed) / mean bare pass |")
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    digits = None
    if task is not None:
        head, rule = head + " greedy accuracy |", rule + "---:|"
        if args.task == "digit-scan":  # per-digit partial credit beside exact match
            from remask_math.digit_scan import scan_credit as digits

            head, rule = head + " digits right |", rule + "---:|"
    print(head)
    print(rule)
    base = None
    with torch.no_grad():
        x0 = torch.cat([prompts.prompt_ids, torch.full((prompts.batch_size, args.gen_length), model.mask_token_id)], 1)
        ones = torch.ones(prompts.batch_size, args.gen_length, dtype=torch.bool)
        a0 = torch.cat([prompts.attention_mask.bool(), ones], 1)
        replay_logits = model.logits(x0.to(model.device), a0.to(model.device))  # [B, P+L, V]
    thresholds = tuple(float(t) for t in args.thresholds.split(","))
    for label, cls, cfg in cases(args.gen_length, args.block_length, steps, args.temperature, thresholds):
        if args.only and not any(part in label for part in args.only.split(",")):
            continue
        sampler = cls(cls.Config(**cfg))
        seconds, inside, rollout, calls = time_rollout(sampler, model, prompts, args.repeats)
        full, later = bare[cfg["cache"]]
        expected = sum(full if first else later[lo] for lo, first in calls)  # Σ bare passes of this run
        base = seconds if label == "llada, no cache" else base
        model.forward = LogitsReplay(model, replay_logits)  # instance attribute shadows the method
        try:
            own, _, own_rollout, _ = time_rollout(sampler, model, prompts, args.repeats)
        finally:
            del model.forward
        per_step = own / own_rollout.nfe
        speedup = f"{base / seconds:.2f}×" if base else "–"
        row = (f"| {label} | {rollout.nfe} | {seconds:.2f} | {speedup} | {seconds / expected:.3f} | "
               f"{inside / expected:.3f} | {(seconds - inside) / rollout.nfe * 1e3:.1f} | "
               f"{per_step * 1e3:.1f} | {1 + per_step / (expected / rollout.nfe):.3f} |")
        if task is not None:
            acc = statistics.mean(float(task.is_correct(t, r)) for t, r in zip(rollout.texts, prompts.references))
            row += f" {100 * acc:.1f}% |"
            if digits is not None:
                got = statistics.mean(digits(t, r["answer"])[0] for t, r in zip(rollout.texts, prompts.references))
                row += f" {100 * got:.1f}% |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
