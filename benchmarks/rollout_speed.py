"""Rollout speed: wall time, NFE and sampler overhead of `llada` and `fast-dllm` under each KV-cache policy.

    OMP_NUM_THREADS=1 python benchmarks/rollout_speed.py                    # random LLaDA-shaped, vocab 126,464
    OMP_NUM_THREADS=1 python benchmarks/rollout_speed.py --model-path builtin:tiny-scan --task digit-scan \\
        --gen-length 64 --block-length 16                                    # long-completion model + accuracy

The random model has LLaDA-8B's layout (bidirectional Llama, untied head, LLaDA's vocabulary of
126,464 and mask id 126,336) at a width that runs on a CPU; it is built on the meta device and
materialised with random weights, nothing is downloaded. With ``--model-path`` a `tiny` checkpoint
(``builtin:NAME`` or a directory) is decoded on the test split of ``--task`` and greedy accuracy
(the task's own ``is_correct``) is reported beside the speed.

Overhead = rollout time / time of exactly the same passes replayed alone: every pass of the rollout
is recorded (input, block, cache policy, where the cache was rebuilt) and run again without the
sampler through the samplers' own ``BlockForward``, so 1.00 means the sampler costs nothing beyond
its forward passes. Each timed rollout is paired with its replay, run right after it in even pairs
and right before it in odd ones, and the table gives the median ratio and every pair's ratio: a
machine whose speed drifts between a case and a separate bare-pass timing (±10-20 % on a shared VM)
no longer decides the ratio. Each sampler is also timed with the forward pass replaced by replayed
logits (its own per-step work alone, as in ``sampler_overhead.py``), and ``1 + own work / mean
pass`` is reported beside it. The real run also clocks every pass inside the decoding loop, so the
end-to-end ratio splits into "passes in the loop / replayed" (is the model slower inside the loop
than alone?) and the sampler's own work per step measured in the loop. Every rollout of a case uses
the same seed (so the same passes); times are medians of ``--repeats`` runs after one warm-up.
Times are process CPU seconds (``time.process_time``: other jobs on a shared machine do not inflate
them) on CPU and synchronised wall time on CUDA. Prints the thread count, the bare passes of each
policy and the load average, and a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass
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
    loop spent inside the model, so that the rest of a rollout's time is the sampler's own work.
    With ``record`` every call is also kept (its ``BlockForward``, block, whether it started the block,
    and a copy of its input) so that :func:`replay_passes` can run exactly the same passes alone."""

    def __init__(self, device: torch.device, record: bool = False) -> None:
        self.device, self.seconds, self.record, self._call = device, 0.0, record, BlockForward.__call__
        self.recorded: list[tuple[BlockForward, int, int, bool, torch.Tensor]] = []

    def __enter__(self) -> "PassClock":
        call, timer = self._call, self

        def timed(passes: BlockForward, x: torch.Tensor) -> torch.Tensor:
            if timer.record:
                starts = passes.policy == "none" or passes.cache is None
                timer.recorded.append((passes, passes.lo, passes.hi, starts, x.clone()))
            t = clock(timer.device)
            out = call(passes, x)
            timer.seconds += clock(timer.device) - t
            return out

        BlockForward.__call__ = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        BlockForward.__call__ = self._call  # type: ignore[method-assign]


def replay_passes(model: DiffusionModel, recorded: list[tuple[BlockForward, int, int, bool, torch.Tensor]]) -> float:
    """Seconds of exactly the passes a rollout ran (same inputs, blocks and cache policy, each cache
    rebuilt where the rollout rebuilt it), timed alone: the denominator of the paired overhead."""
    device, fresh, total = model.device, {}, 0.0
    with torch.no_grad():
        for passes, lo, hi, starts, x in recorded:
            again = fresh.get(id(passes))
            if again is None:
                again = fresh[id(passes)] = BlockForward(model, passes.attn, passes.policy,
                                                         keep_suffix=passes.keep_suffix)
            if starts:
                again.start_block(lo, hi)
            t = clock(device)
            again(x)
            total += clock(device) - t
    return total


@dataclass
class Timing:
    """A case's timed rollouts, each paired with a replay of its own passes run next to it."""

    seconds: float  # median rollout seconds
    inside: float  # median seconds inside the model's passes, clocked in the loop
    replayed: float  # median seconds of the same passes replayed alone
    ratios: list[float]  # rollout / replay, one per pair
    rollout: Any

    @property
    def overhead(self) -> float:
        return statistics.median(self.ratios)


def time_rollout(sampler: Any, model: DiffusionModel, prompts: PromptBatch, repeats: int, *,
                 pair: bool = True) -> Timing:
    """``repeats`` timed rollouts after one warm-up, every one with the same seed (so the same passes);
    with ``pair``, each is paired with a replay of its passes, run after it in even pairs and before
    it in odd ones so that a drifting machine tilts neither side."""
    device = model.device

    def once() -> tuple[float, PassClock, Any]:
        with PassClock(device, record=pair) as passes:
            t = clock(device)
            out = sampler.sample(model, prompts, torch.Generator(device=device).manual_seed(0))
            return clock(device) - t, passes, out

    _, warm, rollout = once()
    if pair:
        replay_passes(model, warm.recorded)
    times, inside, replays, ratios = [], [], [], []
    for r in range(repeats):
        before = replay_passes(model, warm.recorded) if pair and r % 2 else None
        seconds, passes, rollout = once()
        after = replay_passes(model, passes.recorded) if pair and not r % 2 else None
        replay = before if before is not None else after
        times.append(seconds)
        inside.append(passes.seconds)
        if replay is not None:
            replays.append(replay)
            ratios.append(seconds / replay)
    return Timing(statistics.median(times), statistics.median(inside),
                  statistics.median(replays) if replays else float("nan"), ratios, rollout)


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
    head = ("| sampler | NFE | time (s) | speed-up vs llada no cache | overhead = time / same passes replayed | "
            "overhead, each pair | passes in loop / replayed | own work per step in loop (ms) | "
            "own work per step, replayed logits (ms) | 1 + own work (replayed logits) / mean pass |")
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
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
        timing = time_rollout(sampler, model, prompts, args.repeats)
        rollout, nfe = timing.rollout, timing.rollout.nfe
        base = timing.seconds if label == "llada, no cache" else base
        model.forward = LogitsReplay(model, replay_logits)  # instance attribute shadows the method
        try:
            own = time_rollout(sampler, model, prompts, args.repeats, pair=False)
        finally:
            del model.forward
        per_step = own.seconds / own.rollout.nfe
        speedup = f"{base / timing.seconds:.2f}×" if base else "–"
        pairs = " ".join(f"{r:.3f}" for r in timing.ratios)
        row = (f"| {label} | {nfe} | {timing.seconds:.2f} | {speedup} | {timing.overhead:.3f} | {pairs} | "
               f"{timing.inside / timing.replayed:.3f} | {(timing.seconds - timing.inside) / nfe * 1e3:.1f} | "
               f"{per_step * 1e3:.1f} | {1 + per_step / (timing.replayed / nfe):.3f} |")
        if task is not None:
            acc = statistics.mean(float(task.is_correct(t, r)) for t, r in zip(rollout.texts, prompts.references))
            row += f" {100 * acc:.1f}% |"
            if digits is not None:
                got = statistics.mean(digits(t, r["answer"])[0] for t, r in zip(rollout.texts, prompts.references))
                row += f" {100 * got:.1f}% |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
