"""Training section of ``benchmarks/gpu.py``: one real training step of every built-in objective on
LLaDA-shaped models in bf16 with LoRA r=128 and gradient checkpointing, its time and peak memory,
and the memory planner's prediction for that objective beside each measured peak.

    python benchmarks/gpu.py                          # adds this section after the rollouts (one GPU)
    python benchmarks/gpu.py --only d1,vrpo,dtrpo     # some objectives only
    python benchmarks/gpu.py --tiny                   # the same code path on the CPU (tests/planner/test_gpu_train_tiny.py)

Models: a ~1.3B LLaDA layout (d_model 2048, 16 layers, vocabulary 126,464; random weights) and the
8B LLaDA shape that ``gpu.py`` built for its rollouts. Each gets LoRA r=128 on d1's targets
(q/k/v/o/gate/up/down) and gradient checkpointing; the reference is the disabled adapter, as the
engine keeps it (``remask.engine.components.make_reference``).

A row is one objective's step exactly as ``Trainer._one_round`` runs it for one micro-batch: the
objective, its advantage estimator and step selector are built through the registry from its
example pipeline (``examples/tiny-arith-<name>.yaml``; ``tiny-scan-grpo.yaml`` for grpo, and TraceRL
with the ``tiny-scan`` chunking ``shrink: 8``), with that example's ``train.inner_steps`` μ (which
decides the old-policy passes of ``prepare``); then ``select`` -> ``estimate`` -> ``prepare`` (no
grad) -> ``loss(inner_step=0)`` -> backward -> AdamW step. The rollout is
:func:`remask.planner.synthetic_rollout` of d1's shape, not sampled: micro-batch 6 = one group of
6, prompt 256 + completion 256 tokens, blocks of 32, 128 steps, random tokens, every completion full
length (rewards alternate 0/1 inside the group). A sampler would cost minutes on the 8B model
without changing the step's shapes; MDPO therefore recomputes its per-step predictions in
``prepare`` (``without_records: recompute``), as with any sampler other than ``mdpo``.

Columns: ``loss passes`` is what the objective declares (``PolicyObjective.loss_passes``: passes
with gradients per ``loss`` call, ``[rows, sequence]``); ``prepare s`` / ``loss+step s`` are
medians over the repeats after one warm-up step (synchronised wall time; process CPU time with
``--tiny``); ``measured peak GiB`` is the growth of ``torch.cuda.max_memory_allocated`` over the
warmed-up process during prepare + loss + step, plus the bytes of this model's weights and AdamW
states (the other model of the table stays on the GPU and is not counted; n/a on the CPU);
``predicted GiB`` the planner's larger of its ``prepare`` and ``loss``
phases (:func:`remask.planner.plan_memory` on the meta device with that objective's passes).
The plans run in a pool of CPU processes while the GPU measures (``--plan-workers``; inline with
``--tiny``), since an 8B meta-device plan takes 10-60 s of CPU.
A row is skipped, not run, once ``--budget-total-s`` seconds of the whole benchmark have passed.
Not yet run on a GPU.
"""

from __future__ import annotations

from concurrent import futures
import dataclasses
import multiprocessing
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
D1_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]
#: every built-in objective, cheapest first (rows past the time budget are skipped from the end)
OBJECTIVES = ("d1", "grpo", "wd1", "egspo", "spg", "dtrpo", "mdpo", "coupled-grpo", "espo", "trafl", "vrpo",
              "tracerl")
#: example pipeline and overrides each objective's row is built from
EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "grpo": ("tiny-scan-grpo.yaml", {}),
    "tracerl": ("tiny-arith-tracerl.yaml", {"step_selector.shrink": 8}),
}


@dataclass(frozen=True)
class Shape:
    """The micro-batch a row trains on."""

    rows: int  # M = G: one group per micro-batch
    prompt_length: int
    gen_length: int
    block_length: int
    steps: int


@dataclass
class ObjectiveCase:
    """One objective with the advantage estimator, selector and μ of its example pipeline."""

    name: str
    config: Any  # remask.config.PipelineConfig
    objective: Any
    advantage: Any
    selector: Any
    inner_steps: int


def objective_case(name: str, overrides: dict[str, Any] | None = None) -> ObjectiveCase:
    """Build ``name``'s components through the registry from its example pipeline, as the engine does."""
    from remask.config import load_config
    from remask.engine.components import build_component

    example, fixed = EXAMPLES.get(name, (f"tiny-arith-{name}.yaml", {}))
    config = load_config(ROOT / "examples" / example, {**fixed, **(overrides or {})})
    return ObjectiveCase(
        name=name, config=config, objective=build_component("objective", config.objective),
        advantage=build_component("advantage", config.advantage),
        selector=build_component("step_selector", config.step_selector) if config.step_selector else None,
        inner_steps=config.train.inner_steps,
    )


def selected_steps(case: ObjectiveCase, shape: Shape) -> int:
    """K, the selector's steps per row on a rollout of ``shape`` (0 without a selector)."""
    from remask.planner import synthetic_rollout

    if case.selector is None:
        return 0
    rollout = synthetic_rollout(rows=1, group_size=1, prompt_length=1, gen_length=shape.gen_length,
                                block_length=shape.block_length, steps=shape.steps, vocab=16)
    return int(case.selector.select(rollout, torch.Generator().manual_seed(0)).steps.shape[1])


def loss_passes(case: ObjectiveCase, shape: Shape) -> tuple[Any, ...]:
    return tuple(case.objective.loss_passes(gen_length=shape.gen_length, block_length=shape.block_length,
                                            steps=shape.steps, selected_steps=selected_steps(case, shape)))


def _to(rollout: Any, device: torch.device) -> Any:
    """The rollout's tensors on ``device`` (a sampler on the GPU leaves them there)."""
    moved = {f.name: getattr(rollout, f.name).to(device) for f in dataclasses.fields(rollout)
             if torch.is_tensor(getattr(rollout, f.name))}
    prompts = rollout.prompts
    moved["prompts"] = dataclasses.replace(prompts, prompt_ids=prompts.prompt_ids.to(device),
                                           attention_mask=prompts.attention_mask.to(device),
                                           group_ids=prompts.group_ids.to(device))
    return dataclasses.replace(rollout, **moved)


class ObjectiveStep:
    """``case``'s training step on ``model`` (LoRA applied) and a synthetic rollout of ``shape``."""

    def __init__(self, case: ObjectiveCase, model: Any, reference: Any, shape: Shape, seed: int = 0) -> None:
        from remask.interfaces import StepContext
        from remask.planner import synthetic_rollout
        from remask.records import Rewards

        self.case, self.model = case, model
        device = model.device
        case.objective.setup(policy=model, reference=reference)
        extra = [p for m in case.objective.extra_modules().values() for p in m.to(device).parameters()]
        self.optimizer = torch.optim.AdamW(list(model.trainable_parameters()) + extra, lr=1e-5)
        avoid = tuple({model.mask_token_id, model.eos_token_id, model.pad_token_id})
        rollout = synthetic_rollout(rows=shape.rows, group_size=shape.rows, prompt_length=shape.prompt_length,
                                    gen_length=shape.gen_length, block_length=shape.block_length,
                                    steps=shape.steps, vocab=min(4096, model.module.config.vocab_size),
                                    avoid=avoid, seed=seed)
        self.rollout = _to(rollout, device)
        self.rewards = Rewards.from_scores("synthetic", [float(i % 2) for i in range(shape.rows)])

        def score(prompts: Any, texts: Any) -> Any:  # EGSPO-SA's intermediate rewards: none here
            return Rewards.from_scores("synthetic", [0.0] * len(texts))

        self.context = StepContext(policy=model, reference=reference if case.objective.uses_reference else None,
                                   generator=torch.Generator().manual_seed(seed), score=score,
                                   inner_steps=case.inner_steps, group_size=shape.rows)

    def prepare(self) -> Any:
        """select -> estimate -> prepare (no grad, eval mode), as ``Trainer._one_round``."""
        c, rollout = self.case, self.rollout
        self.model.module.eval()
        selection = c.selector.select(rollout, torch.Generator().manual_seed(1)) if c.selector else None
        advantages = c.advantage.estimate(rollout=rollout, rewards=self.rewards, selection=selection,
                                          context=self.context)
        with torch.no_grad():
            return c.objective.prepare(rollout=rollout, advantages=advantages, selection=selection,
                                       context=self.context)

    def loss_and_step(self, state: Any) -> float:
        """``loss(inner_step=0)`` with gradients, backward and the AdamW step; the loss value."""
        self.model.module.train()
        with torch.enable_grad():
            out = self.case.objective.loss(state, inner_step=0, context=self.context)
            out.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(out.loss.detach())


def _plan(architecture: Any, dtype: str, shape: Shape, r: int, passes: tuple[Any, ...], name: str) -> float:
    """The planner's peak of a training step (larger of ``prepare`` and ``loss``), GiB."""
    from remask.planner import PlanInputs, plan_memory

    plan = plan_memory(PlanInputs(architecture=architecture, dtype=dtype, rollout_rows=shape.rows,
                                  micro_batch=shape.rows, prompt_length=shape.prompt_length,
                                  gen_length=shape.gen_length, block_length=shape.block_length,
                                  gradient_checkpointing=True, lora_r=r, lora_targets=D1_TARGETS,
                                  loss_passes=passes, objective=name), largest_micro_batch=False)
    return max(plan.phases["prepare"].total, plan.phases["loss"].total) / 2**30


def measure(step: ObjectiveStep, repeats: int) -> dict[str, Any]:
    """Median prepare and loss+step times over ``repeats`` after one warm-up, and the peak."""
    from rollout_speed import clock

    device = step.model.device
    cuda = device.type == "cuda"
    step.loss_and_step(step.prepare())  # warm-up: kernels, AdamW states
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()  # both models' weights, this step's AdamW states, ...
    prep, loss = [], []
    for _ in range(repeats):
        t0 = clock(device)
        state = step.prepare()
        t1 = clock(device)
        value = step.loss_and_step(state)
        t2 = clock(device)
        del state
        prep.append(t1 - t0)
        loss.append(t2 - t1)
    if not torch.isfinite(torch.tensor(value)):
        raise RuntimeError(f"objective {step.case.name}: non-finite loss {value}")
    peak = None
    if cuda:  # growth over the warmed-up state + this model's weights and AdamW states (as the CPU check):
        # the other model of the table stays resident and must not count
        weights = sum(p.numel() * p.element_size() for p in step.model.module.parameters())
        states = sum(t.numel() * t.element_size() for st in step.optimizer.state.values() for t in st.values()
                     if torch.is_tensor(t))
        peak = round((torch.cuda.max_memory_allocated() - base + weights + states) / 2**30, 2)
    return {"prepare s": round(statistics.median(prep), 3), "loss+step s": round(statistics.median(loss), 3),
            "measured peak GiB": peak}


def _describe(passes: tuple[Any, ...], shape: Shape) -> str:
    from remask.planner import PlanInputs, describe_passes

    return describe_passes(PlanInputs(architecture=None, micro_batch=shape.rows, prompt_length=shape.prompt_length,
                                      gen_length=shape.gen_length, loss_passes=passes))


def section(model: Any, args: Any) -> Any:
    """The training table of ``gpu.py`` (called after the rollout section with its 8B model)."""
    from gpu import Section
    from rollout_speed import random_llada

    from remask.config import LoraSettings
    from remask.engine.components import make_reference

    tiny = bool(getattr(args, "tiny", False))
    only = [n.strip() for n in (getattr(args, "only", None) or ",".join(OBJECTIVES)).split(",") if n.strip()]
    unknown = sorted(set(only) - set(OBJECTIVES))
    if unknown:
        raise ValueError(f"gpu.py --only: unknown objective(s) {', '.join(unknown)}; built-ins: {', '.join(OBJECTIVES)}")
    budget = getattr(args, "budget", None)
    total_s = float(getattr(args, "budget_total_s", 460.0))
    if tiny:
        shape, r = Shape(rows=6, prompt_length=8, gen_length=16, block_length=8, steps=8), 4
        small = dict(d_model=32, layers=2, heads=2, mlp=64, vocab=4096, device="cpu", dtype="float32")
        repeats = {"small": 1, "large": 1}
    else:
        shape, r = Shape(rows=6, prompt_length=256, gen_length=256, block_length=32, steps=128), 128
        small = dict(d_model=2048, layers=16, heads=16, mlp=5632, vocab=126464, device="cuda", dtype="bfloat16")
        repeats = {"small": 2, "large": 1}
    workers = int(getattr(args, "plan_workers", 0 if tiny else 8) or 0)
    sec = Section(f"Training step per objective: LoRA r={r} (d1's targets) + gradient checkpointing, micro-batch "
                  f"{shape.rows} (one group), S = {shape.prompt_length} + {shape.gen_length}, blocks of "
                  f"{shape.block_length}, {shape.steps} steps",
                  ["model", "objective", "μ", "loss passes", "prepare s", "loss+step s", "measured peak GiB",
                   "predicted GiB", "pred/meas"])
    one_b = random_llada(**small)
    models = (("small", "LLaDA-shaped 1.3B" if not tiny else "LLaDA-shaped small", one_b),
              ("large", "LLaDA-shaped 8B" if not tiny else "LLaDA-shaped (gpu.py's model)", model))
    pool = futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=torch.set_num_threads, initargs=(1,)) if workers else None
    plans: dict[tuple[str, str], Any] = {}
    jobs: dict[tuple[Any, ...], Any] = {}  # one plan per distinct architecture and pass structure
    try:
        prepared = []
        for size, label, m in models:  # plans first: they run on the CPU while the GPU measures
            base_config, dtype = m.module.config, str(m.torch_dtype).split(".")[-1]
            n = sum(p.numel() for p in m.module.parameters())
            cases = {name: objective_case(name) for name in only}  # own instances per model (setup)
            passes = {name: loss_passes(case, shape) for name, case in cases.items()}
            for name in sorted(only, key=lambda k: -len(passes[k])):  # longest plans start first
                key = (base_config.to_json_string(), dtype, passes[name])
                if key not in jobs:
                    call = (_plan, base_config, dtype, shape, r, passes[name], name)
                    jobs[key] = pool.submit(*call) if pool else call
                plans[size, name] = jobs[key]
            prepared.append((size, label, m, n, cases, passes))
        for size, label, m, n, cases, passes in prepared:
            m.apply_lora(LoraSettings(r=r, alpha=r / 2, target_modules=D1_TARGETS))
            m.enable_gradient_checkpointing()
            reference = make_reference(m, lora=True)
            try:
                for name in only:
                    size_text = f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"
                    row: dict[str, Any] = {"model": f"{label} ({size_text})", "objective": name,
                                           "μ": cases[name].inner_steps, "loss passes": _describe(passes[name], shape)}
                    sec.rows.append(row)
                    if budget is not None and budget.elapsed() > total_s:
                        row["prepare s"] = f"skipped (total budget {total_s:.0f} s)"
                        continue
                    try:
                        row.update(measure(ObjectiveStep(cases[name], m, reference, shape), repeats[size]))
                    except torch.cuda.OutOfMemoryError:
                        m.module.zero_grad(set_to_none=True)
                        row["prepare s"] = "out of memory"
                        row["measured peak GiB"] = f"> {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f}"
                    except Exception as exc:  # noqa: BLE001 - on the GPU one broken row must not lose the others
                        if tiny:
                            raise
                        m.module.zero_grad(set_to_none=True)
                        row["prepare s"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    print(f"  train {label} {name}: prepare {row.get('prepare s')} s, loss+step "
                          f"{row.get('loss+step s')} s, peak {row.get('measured peak GiB')} GiB",
                          file=sys.stderr, flush=True)
            finally:
                m.module = m.module.unload()  # the rollout model again, without the adapter
                m.eval()
        done: dict[int, float | str] = {}
        for row, key in zip(sec.rows, [(s, n) for s, _, _ in models for n in only]):
            job = plans[key]
            if id(job) not in done:
                try:
                    done[id(job)] = job.result() if pool else job[0](*job[1:])
                except Exception as exc:  # noqa: BLE001 - keep the measured rows
                    if tiny:
                        raise
                    done[id(job)] = f"plan failed: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
            predicted = done[id(job)]
            if isinstance(predicted, str):
                row["predicted GiB"] = predicted
                continue
            row["predicted GiB"] = round(predicted, 3)
            measured = row.get("measured peak GiB")
            row["pred/meas"] = round(predicted / measured, 2) if isinstance(measured, float) and measured else None
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    del one_b
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return sec


# ---------------------------------------------------------------------------------------------
# The planner against measured CPU peaks (tests/planner/test_objective_passes.py)
# ---------------------------------------------------------------------------------------------

#: the CPU check's model: activations dominate its weights, as they do at 8B with long sequences
CPU_MODEL = dict(d_model=256, layers=2, heads=4, mlp=512, vocab=2048, device="cpu", dtype="float32")
CPU_SHAPE = Shape(rows=6, prompt_length=16, gen_length=48, block_length=16, steps=24)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _cpu_peak_worker(name: str, overrides: dict[str, Any], r: int) -> dict[str, int]:
    """In a fresh process: one warmed-up training step of ``name`` on :data:`CPU_MODEL` (LoRA ``r``, no
    checkpointing); the RSS growth of the step plus the weights and AdamW states it already holds."""
    from rollout_speed import random_llada

    from remask.config import LoraSettings
    from remask.engine.components import make_reference

    torch.set_num_threads(1)
    model = random_llada(**CPU_MODEL)
    model.apply_lora(LoraSettings(r=r, alpha=r / 2, target_modules=D1_TARGETS))
    step = ObjectiveStep(objective_case(name, overrides), model, make_reference(model, lora=True), CPU_SHAPE)
    step.loss_and_step(step.prepare())  # warm-up: lazy imports, AdamW states
    weights = sum(p.numel() * p.element_size() for p in model.module.parameters())
    states = sum(t.numel() * t.element_size() for st in step.optimizer.state.values() for t in st.values()
                 if torch.is_tensor(t))
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    step.loss_and_step(step.prepare())
    return {"peak": _status("VmHWM") - before + weights + states}


def cpu_peak(name: str, overrides: dict[str, Any] | None = None, r: int = 16) -> int:
    """Measured peak bytes of ``name``'s training step on the CPU, in a fresh subprocess (one torch
    thread, ``MALLOC_MMAP_THRESHOLD_=65536`` so that RSS follows live memory, as benchmarks/memory.py)."""
    import json
    import os
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536",
               MALLOC_ARENA_MAX="1", TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, __file__, "--cpu-peak-worker", name, json.dumps(overrides or {}), str(r)],
                         capture_output=True, text=True, env=env, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"cpu peak worker failed for {name}: {out.stderr[-2000:]}")
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak"])


def cpu_prediction(name: str, overrides: dict[str, Any] | None = None, r: int = 16,
                   passes: tuple[Any, ...] | None = None) -> int:
    """The planner's peak bytes for the step :func:`cpu_peak` measures (``passes``: override the
    objective's own, e.g. to see what a one-pass plan would have said)."""
    from rollout_speed import LLADA_8B, LLADA_MASK_TOKEN_ID, llama_config_from_llada

    from remask.planner import PlanInputs, plan_memory

    m = CPU_MODEL
    raw = dict(LLADA_8B, d_model=m["d_model"], n_heads=m["heads"], n_kv_heads=m["heads"], n_layers=m["layers"],
               mlp_hidden_size=m["mlp"], vocab_size=m["vocab"], embedding_size=m["vocab"])
    if m["vocab"] <= LLADA_MASK_TOKEN_ID:  # as random_llada: special ids inside a small vocabulary
        raw.update(mask_token_id=m["vocab"] - 1, eos_token_id=m["vocab"] - 2)
    case = objective_case(name, overrides)
    shape = CPU_SHAPE
    plan = plan_memory(PlanInputs(architecture=llama_config_from_llada(raw, "sdpa"), dtype="float32",
                                  rollout_rows=shape.rows, micro_batch=shape.rows, prompt_length=shape.prompt_length,
                                  gen_length=shape.gen_length, block_length=shape.block_length, lora_r=r,
                                  lora_targets=D1_TARGETS, loss_passes=passes or loss_passes(case, shape),
                                  objective=name), largest_micro_batch=False)
    return max(plan.phases["prepare"].total, plan.phases["loss"].total)


#: the CPU check's objectives: one pass, n_t passes, one staircase pass of P + 2L, one pass of K·M rows
CPU_CASES: tuple[tuple[str, dict[str, Any]], ...] = (("d1", {}), ("vrpo", {"objective.n_t": 4}), ("dtrpo", {}),
                                                      ("mdpo", {}))


def cpu_peaks_table() -> None:
    """``python benchmarks/gpu_train.py --cpu-peaks``: measured and predicted peaks of :data:`CPU_CASES`."""
    from remask.interfaces import ForwardPass

    m, s = CPU_MODEL, CPU_SHAPE
    print(f"LLaDA-shaped d_model {m['d_model']}, {m['layers']} layers, MLP {m['mlp']}, vocabulary {m['vocab']}, "
          f"float32, LoRA r=16 (d1's targets), no checkpointing; micro-batch {s.rows}, S = {s.prompt_length} + "
          f"{s.gen_length}; 1 torch thread, torch {torch.__version__}")
    print("| objective | loss passes | measured MiB | predicted MiB | pred/meas | one-pass plan / meas |")
    print("|---|---|---|---|---|---|")
    for name, overrides in CPU_CASES:
        measured = cpu_peak(name, overrides)
        predicted = cpu_prediction(name, overrides)
        uniform = cpu_prediction(name, overrides, passes=(ForwardPass(),))
        passes = _describe(loss_passes(objective_case(name, overrides), s), s)
        label = name + "".join(f", {k.split('.')[-1]} {v}" for k, v in overrides.items())
        print(f"| {label} | {passes} | {measured / 2**20:.1f} | {predicted / 2**20:.1f} | "
              f"{predicted / measured:.2f} | {uniform / measured:.2f} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--cpu-peak-worker":  # one measurement, in a fresh process
        import json

        print(json.dumps(_cpu_peak_worker(sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]))))
        raise SystemExit(0)
    import argparse

    parser = argparse.ArgumentParser(
        description="The training section of benchmarks/gpu.py (run `python benchmarks/gpu.py [--tiny]` for it). "
                    "On its own: --cpu-peaks checks the memory planner per objective against measured CPU peaks.")
    parser.add_argument("--cpu-peaks", action="store_true", help="print the planner-vs-measured CPU peak table")
    args = parser.parse_args()
    if not args.cpu_peaks:
        parser.error("nothing to do: pass --cpu-peaks, or run benchmarks/gpu.py for the GPU section")
    cpu_peaks_table()
