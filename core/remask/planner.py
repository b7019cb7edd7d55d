"""Memory planner: peak memory per process of each phase of a training step, before any weight loads.

The model is built from its ``transformers`` config on the **meta device** (tensors with shapes and
dtypes but no storage; nothing is downloaded but ``config.json``), and each phase is *run* there
under :class:`LiveBytes`, a dispatch mode that adds up the bytes of every tensor storage an operator
creates and subtracts them when the last tensor on that storage dies. Its high-water mark is the
activation peak of that phase: the kernels, the saved-for-backward tensors, gradient checkpointing's
recomputation and PEFT's LoRA layers are the real ones, so nothing about the architecture is
modelled by hand. Attention runs as the fused kernel (:func:`fused_attention`), as on CPU and CUDA. Only the optimizer and sharding are arithmetic:

* parameters ``W`` (4-bit NF4 with double quantisation: 0.5 byte per weight of a quantised linear
  layer plus 8-bit absmax per 64 weights and fp32 second-level scales per 256 blocks, as
  bitsandbytes stores them);
* gradients ``G`` = trainable parameters in their dtype; AdamW states ``O`` = 2 x trainable;
* FSDP full shard / ZeRO-3 divide ``W``, ``G`` and ``O`` by the number of processes (plus one
  decoder layer gathered at a time), ZeRO-2 / FSDP ``SHARD_GRAD_OP`` divide ``G`` and ``O``,
  ZeRO-1 ``O``.

Phases (rows per process ``R = prompts_per_step / processes x group_size``, micro-batch ``M``,
sequence ``S = prompt_length + gen_length``):

``rollout``  ``W`` + one no-grad pass over ``[R, S]`` with fp32 probabilities of one block
             (``block_length`` positions), plus the sampler's KV cache (``prefix`` or ``dual``: keys
             and values of all ``S`` positions, kept while a block is decoded);
``prepare``  ``W`` + ``O`` + one no-grad pass of the objective's largest pass shape with fp32
             probabilities of the ``L`` completion positions (old / reference log-probs; prepare's
             passes run one after another);
``loss``     ``W`` + ``O`` + the objective's passes of one ``loss`` call
             (:meth:`~remask.interfaces.PolicyObjective.loss_passes`: each ``[rows·M, P + c·L]``,
             every graph alive until one backward, fp32 log-probabilities of the last ``L`` positions
             as :func:`remask.functional.gather_logprobs` takes them), gradients counted where they
             are accumulated; with sharded gradients each is dropped once accumulated and ``G / n``
             added.

Without LoRA an objective that keeps a reference (``uses_reference``) holds a frozen copy of the
weights (``reference`` part, sharded like ``W``); with LoRA the reference is the disabled adapter.

Measured against RSS peaks of the same steps on CPU in ``tests/planner/test_planner.py`` and
``benchmarks/memory.py``; see ``docs/training.md`` (Memory) for what it does not model.
"""

from __future__ import annotations

import contextlib
import math
import re
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import RemaskError
from .interfaces import ForwardPass
from .records import PromptBatch, Rollout

__all__ = [
    "LiveBytes",
    "fused_attention",
    "Sharding",
    "PhasePeak",
    "MemoryPlan",
    "PlanInputs",
    "plan_memory",
    "parse_bytes",
    "format_bytes",
    "sharding_from_accelerate",
    "runtime_problems",
    "synthetic_rollout",
    "objective_passes",
    "describe_passes",
]

GiB = 1024**3
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def parse_bytes(text: str) -> int:
    """``80GB`` / ``80GiB`` / ``141G`` / ``512MB`` -> bytes (GB and G are read as GiB, as GPU specs mean)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B)?\s*", text.upper())
    if not m:
        raise ValueError(f"{text!r} is not a size such as 80GB or 24GiB")
    scale = {"": 1, "K": 1024, "M": 1024**2, "G": GiB, "T": 1024**4}[m.group(2)]
    return int(float(m.group(1)) * scale)


def format_bytes(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / 1024**2:.1f} MiB"


# ---------------------------------------------------------------------------------------------
# Counting live bytes of a phase run on the meta device
# ---------------------------------------------------------------------------------------------


class LiveBytes(TorchDispatchMode):
    """Bytes held by tensor storages created inside the mode: ``live`` now and the ``peak``.

    A storage counts from the operator that creates it until the last tensor viewing it is freed
    (PyTorch keeps a tensor's Python object alive while autograd still holds it, so the finaliser
    fires when the storage is really released). Storages that existed before (parameters) never count.
    """

    def __init__(self, existing: Iterator[torch.Tensor] = iter(())) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, list[int]] = {}  # storage id -> [tensors alive, bytes]
        self._skip = {t.untyped_storage()._cdata for t in existing}

    def reset_peak(self) -> None:
        self.peak = self.live

    def _release(self, key: int) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._refs[key]

    def _track(self, t: torch.Tensor) -> None:
        key = t.untyped_storage()._cdata
        if key in self._skip:
            return
        entry = self._refs.get(key)
        if entry is None:
            nbytes = t.untyped_storage().nbytes()
            entry = self._refs[key] = [0, nbytes]
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        entry[0] += 1
        weakref.finalize(t, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch protocol
        out = func(*args, **(kwargs or {}))
        for t in _tensors(out):
            self._track(t)
        return out


def _fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,  # noqa: ANN001
                enable_gqa=False) -> torch.Tensor:
    """``scaled_dot_product_attention`` as the fused kernel (``_scaled_dot_product_flash_attention_for
    _cpu``, which has a meta implementation) instead of the math fallback the meta device would pick:
    like the CPU and CUDA kernels of a real run it keeps no ``[B, heads, S, S]`` probabilities for
    backward, only the output and the log-sum-exp."""
    q, k, v = query, key, value  # [B, H, S, D], [B, H_kv, S_kv, D]
    if enable_gqa and k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    mask = attn_mask
    if mask is not None and mask.dtype == torch.bool:  # [B, 1, S, S_kv] -> additive 0 / -inf
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, float(dropout_p or 0.0), bool(is_causal), attn_mask=mask, scale=scale)[0]


@contextlib.contextmanager
def fused_attention() -> Iterator[None]:
    """Meta-device planning runs attention as :func:`_fused_sdpa` (a module attribute swap, so that
    gradient checkpointing's recomputation in the autograd thread sees it too)."""
    functional = torch.nn.functional
    original = functional.scaled_dot_product_attention
    functional.scaled_dot_product_attention = _fused_sdpa
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = original


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)


# ---------------------------------------------------------------------------------------------
# Inputs and results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sharding:
    """How parameters, gradients and optimizer states are split over ``processes``."""

    processes: int = 1
    kind: str = "none"  # none | ddp | fsdp-full | fsdp-grad-op | zero1 | zero2 | zero3

    def divisors(self) -> tuple[int, int, int]:
        """(parameters, gradients, optimizer states) are each divided by these."""
        n = max(1, self.processes)
        return {
            "fsdp-full": (n, n, n), "zero3": (n, n, n),
            "fsdp-grad-op": (1, n, n), "zero2": (1, n, n),
            "zero1": (1, 1, n),
        }.get(self.kind, (1, 1, 1))

    def gathers_layers(self) -> bool:
        return self.kind in ("fsdp-full", "zero3") and self.processes > 1


@dataclass(frozen=True)
class PlanInputs:
    """Everything the planner needs, read from a pipeline config (see :func:`plan_from_config`)."""

    architecture: Any  # transformers.PretrainedConfig
    dtype: str = "float32"
    rollout_rows: int = 1
    micro_batch: int = 1
    prompt_length: int = 256
    gen_length: int = 256
    block_length: int = 256  # positions whose probabilities a sampler step computes
    kv_cache: str = "none"  # none | prefix | dual
    gradient_checkpointing: bool = False
    lora_r: int | None = None
    lora_targets: Any = "all-linear"
    load_in_4bit: bool = False
    sharding: Sharding = field(default_factory=Sharding)
    loss_passes: tuple[ForwardPass, ...] = (ForwardPass(),)  # the objective's passes of one loss call
    reference_copy: bool = False  # a frozen copy of the weights as reference (no LoRA, uses_reference)
    objective: str = ""  # the objective's name, for reports

    def pass_shape(self, p: ForwardPass, rows: int | None = None) -> tuple[int, int]:
        """``(rows, sequence)`` of pass ``p`` on ``rows`` micro-batch rows (default ``micro_batch``)."""
        m = self.micro_batch if rows is None else rows
        return max(1, math.ceil(p.rows * m)), self.prompt_length + max(1, math.ceil(p.completion_length * self.gen_length))

    @property
    def sequence(self) -> int:
        return self.prompt_length + self.gen_length


@dataclass(frozen=True)
class PhasePeak:
    """Peak bytes of one phase and what it is made of."""

    name: str
    total: int
    parts: dict[str, int]


@dataclass(frozen=True)
class MemoryPlan:
    inputs: PlanInputs
    params: int  # parameter count
    trainable: int  # trainable parameter count
    phases: dict[str, PhasePeak]
    loss_per_row: int  # bytes the loss phase grows by per micro-batch row
    loss_fixed: int  # bytes of the loss phase at zero rows (extrapolated)

    @property
    def peak(self) -> PhasePeak:
        return max(self.phases.values(), key=lambda p: p.total)

    def largest_micro_batch(self, budget: int) -> int:
        """Most micro-batch rows (at most a process's rollout rows) whose ``loss`` phase fits ``budget``
        bytes; 0: not even one."""
        if self.loss_per_row <= 0:
            return 0
        return max(0, min(self.inputs.rollout_rows, int((budget - self.loss_fixed) // self.loss_per_row)))


# ---------------------------------------------------------------------------------------------
# The model on the meta device
# ---------------------------------------------------------------------------------------------


def _meta_module(inputs: PlanInputs) -> nn.Module:
    from transformers import AutoModelForCausalLM

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[inputs.dtype]
    with torch.device("meta"):
        module = AutoModelForCausalLM.from_config(inputs.architecture, dtype=dtype)
    if inputs.lora_r is not None:
        from peft import LoraConfig, get_peft_model

        targets = inputs.lora_targets
        lora = LoraConfig(r=inputs.lora_r, lora_alpha=2 * inputs.lora_r, bias="none",
                          target_modules=targets if isinstance(targets, str) else list(targets))
        with torch.device("meta"):  # adapter weights on meta too: nothing is allocated or initialised
            module = get_peft_model(module, lora)
    return module


def _layers(module: nn.Module) -> list[nn.Module]:
    found = [m for m in module.modules() if isinstance(m, nn.ModuleList)]
    return list(max(found, key=len)) if found else []


def _param_bytes(module: nn.Module, inputs: PlanInputs) -> tuple[int, int, int, int]:
    """(parameter count, parameter bytes, trainable count, trainable bytes) with 4-bit where asked."""
    count = size = trainable = trainable_size = 0
    head = getattr(module, "get_output_embeddings", lambda: None)()
    quantised = set()
    if inputs.load_in_4bit:  # bitsandbytes quantises every nn.Linear of the decoder, not the output head
        for m in module.modules():
            if isinstance(m, nn.Linear) and m is not head and "lora_" not in type(m).__name__:
                quantised.add(id(m.weight))
    for p in module.parameters():
        n = p.numel()
        count += n
        if id(p) in quantised:
            blocks = math.ceil(n / 64)
            size += n // 2 + blocks + 4 * math.ceil(blocks / 256)  # NF4 + 8-bit absmax + fp32 scales
        else:
            size += n * p.element_size()
        if p.requires_grad:
            trainable += n
            trainable_size += n * p.element_size()
    return count, size, trainable, trainable_size


def _bidirectional(rows: int, seq: int) -> torch.Tensor:
    return torch.ones(rows, 1, seq, seq, dtype=torch.bool, device="meta")  # [R, 1, S, S]


def _run_meta(module: nn.Module, fn: Callable[[], Any]) -> int:
    """Peak bytes of storages created while ``fn`` runs on the meta module."""
    existing = [p for p in module.parameters()] + [b for b in module.buffers()]
    with fused_attention(), LiveBytes(iter(existing)) as live:
        result = fn()
        del result
    return live.peak


def _forward_peak(module: nn.Module, rows: int, seq: int, *, drawn: int) -> int:
    """One no-grad pass over ``[rows, seq]`` whose output layer runs on the last ``drawn`` positions
    only (``DiffusionModel.logits(keep=)``: the block a sampler decides, the completion a likelihood
    scores), and their fp32 probabilities."""
    ids = torch.zeros(rows, seq, dtype=torch.long, device="meta")  # [R, S]

    def run() -> Any:
        with torch.no_grad():
            logits = module(input_ids=ids, attention_mask=_bidirectional(rows, seq), use_cache=False,
                            logits_to_keep=drawn).logits  # [R, drawn, V]
            probs = logits.float().softmax(-1)  # [R, drawn, V] what is drawn from / scored
            return logits, probs

    return _run_meta(module, run)


def _loss_peak(module: nn.Module, shapes: list[tuple[int, int]], prompt_length: int, *, keep_grads: bool) -> int:
    """Forward passes of ``shapes`` (rows, sequence) with gradients, graphs alive together, the
    output layer and fp32 log-probabilities on every position after the prompt (the completion, or
    dTRPO's two copies of it), then one backward."""

    def run() -> None:
        with torch.enable_grad():  # also when the caller plans inside no_grad
            loss = None
            for rows, seq in shapes:
                scored = max(1, seq - prompt_length)
                ids = torch.zeros(rows, seq, dtype=torch.long, device="meta")  # [M', S']
                out = module(input_ids=ids, attention_mask=_bidirectional(rows, seq), use_cache=False,
                             logits_to_keep=scored)  # the completion's logits only, as the likelihoods keep them
                logits = out.logits  # [M', L, V]
                del out
                # as remask.functional.gather_logprobs: fp32 cross-entropy keeps one [M'·L, V] log-softmax
                term = -torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                          ids[:, seq - scored:].reshape(-1), reduction="none")
                del logits
                loss = term.mean() if loss is None else loss + term.mean()
            assert loss is not None
            loss.backward()

    # keep_grads: gradients accumulate in .grad as in a real step and count where they occur;
    # otherwise each is dropped once accumulated (a sharded run keeps only its shard: the plan adds it)
    hooks = [] if keep_grads else [p.register_post_accumulate_grad_hook(_drop_grad)
                                   for p in module.parameters() if p.requires_grad]
    try:
        return _run_meta(module, run)
    finally:
        for h in hooks:
            h.remove()
        for p in module.parameters():
            p.grad = None


def _drop_grad(p: torch.Tensor) -> None:
    p.grad = None


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------


def plan_memory(inputs: PlanInputs, *, largest_micro_batch: bool = True) -> MemoryPlan:
    """Peak memory per process of ``rollout``, ``prepare`` and ``loss`` (see the module docstring).

    ``largest_micro_batch=False`` skips the second loss run (at one row) that
    :meth:`MemoryPlan.largest_micro_batch` extrapolates from; the plan then reports 0 there.
    """
    module = _meta_module(inputs)
    count, w_bytes, trainable, t_bytes = _param_bytes(module, inputs)
    div_w, div_g, div_o = inputs.sharding.divisors()
    weights = w_bytes // div_w
    if inputs.sharding.gathers_layers():
        layers = _layers(module)
        if layers:  # one unit gathered in full while it runs (plus the one being prefetched)
            weights += 2 * sum(p.numel() * p.element_size() for p in layers[0].parameters())
    grads = t_bytes // div_g
    optim = 2 * t_bytes // div_o
    base = getattr(module, "get_base_model", lambda: module)()
    if inputs.gradient_checkpointing:  # the same call as HFDiffusionModel.enable_gradient_checkpointing
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    module.train()

    module.eval()
    rollout_act = _forward_peak(module, inputs.rollout_rows, inputs.sequence, drawn=inputs.block_length)
    cache = 0
    if inputs.kv_cache != "none":
        cfg = inputs.architecture
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        cache = (2 * cfg.num_hidden_layers * inputs.rollout_rows * inputs.sequence * heads * head_dim
                 * _DTYPE_BYTES[inputs.dtype])
    passes = inputs.loss_passes or (ForwardPass(),)
    widest = max((inputs.pass_shape(p) for p in passes), key=lambda rs: rs[0] * rs[1])
    prepare_act = _forward_peak(module, widest[0], widest[1], drawn=inputs.gen_length)
    module.train()
    sharded_grads = div_g > 1

    def loss_peak(rows: int) -> int:  # activations (+ full gradients where they are not sharded)
        return _loss_peak(module, [inputs.pass_shape(p, rows) for p in passes], inputs.prompt_length,
                          keep_grads=not sharded_grads)

    loss_act = loss_peak(inputs.micro_batch)
    if not largest_micro_batch:
        one, per_row = loss_act, 0
    else:
        one = loss_act if inputs.micro_batch == 1 else loss_peak(1)
        per_row = (loss_act - one) // (inputs.micro_batch - 1) if inputs.micro_batch > 1 else loss_peak(2) - one
    # (activations are linear in the rows: the largest micro-batch is extrapolated from these two runs)
    added_grads = grads if sharded_grads else 0
    reference = w_bytes // div_w if inputs.reference_copy else 0  # frozen, sharded like the policy
    weights_parts = {"weights": weights, **({"reference": reference} if reference else {})}
    loss_parts = {**weights_parts, "optimizer": optim}
    if sharded_grads:
        loss_parts.update({"gradients": grads, "activations": loss_act})
    else:
        loss_parts["activations+gradients"] = loss_act
    phases = {
        "rollout": PhasePeak("rollout", weights + reference + cache + rollout_act,
                             {**weights_parts, "kv_cache": cache, "activations": rollout_act}),
        "prepare": PhasePeak("prepare", weights + reference + optim + prepare_act,
                             {**weights_parts, "optimizer": optim, "activations": prepare_act}),
        "loss": PhasePeak("loss", weights + reference + optim + added_grads + loss_act, loss_parts),
    }
    fixed = weights + reference + optim + added_grads + one - per_row
    return MemoryPlan(inputs, count, trainable, phases, per_row, fixed)


# ---------------------------------------------------------------------------------------------
# Reading a pipeline config and an accelerate config
# ---------------------------------------------------------------------------------------------


def sharding_from_accelerate(path: str | None, default_processes: int = 1) -> Sharding:
    """The sharding an ``accelerate launch --config_file`` YAML asks for (over all its processes)."""
    if path is None:
        return Sharding(default_processes, "none")
    import yaml

    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    except OSError as exc:
        raise RemaskError(f"--accelerate-config: cannot read {path}: {exc.strerror}") from None
    if not isinstance(raw, dict):
        raise RemaskError(f"--accelerate-config: {path} is not a mapping of accelerate settings")
    per_node = int(raw.get("num_processes", 1) or 1)  # accelerate's num_processes counts all machines
    kind = str(raw.get("distributed_type", "NO")).upper()
    if kind == "FSDP":
        fsdp = raw.get("fsdp_config", {}) or {}
        strategy = str(fsdp.get("fsdp_sharding_strategy", fsdp.get("fsdp_reshard_after_forward", "FULL_SHARD")))
        grad_op = strategy.upper() in ("SHARD_GRAD_OP", "2", "FALSE")
        return Sharding(per_node, "fsdp-grad-op" if grad_op else "fsdp-full")
    if kind == "DEEPSPEED":
        ds = raw.get("deepspeed_config", {}) or {}
        stage = int(ds.get("zero_stage", 0) or 0)
        return Sharding(per_node, {1: "zero1", 2: "zero2", 3: "zero3"}.get(stage, "ddp"))
    if kind in ("MULTI_GPU", "MULTI_CPU", "MULTI_XPU", "MULTI_NPU"):
        return Sharding(per_node, "ddp")
    return Sharding(1, "none")


def architecture_of(config: Any) -> Any:
    """The ``transformers`` config of a pipeline's model, from the adapter's ``architecture_config``."""
    from .registry import get_registry

    cls = get_registry().get("model", config.model.name)
    reader = getattr(cls, "architecture_config", None)
    if not callable(reader):
        raise RemaskError(f"remask estimate: model {config.model.name!r} does not describe its architecture "
                          f"(no architecture_config classmethod); the planner supports Hugging Face adapters")
    return reader(config.model.params)


def objective_passes(config: Any, *, gen_length: int, block_length: int, steps: int) -> tuple[Any, tuple[ForwardPass, ...]]:
    """The configured objective (built through the registry, as the engine builds it) and its
    :meth:`~remask.interfaces.PolicyObjective.loss_passes` for rollouts of this shape. K, the
    selector's steps per row, comes from running the configured step selector on a
    :func:`synthetic_rollout` of one row."""
    from .registry import get_registry

    registry = get_registry()
    objective = config.objective.build(registry, "objective")
    selected = 0
    if config.step_selector is not None and gen_length > 0:
        selector = config.step_selector.build(registry, "step_selector")
        rollout = synthetic_rollout(rows=1, group_size=1, prompt_length=1, gen_length=gen_length,
                                    block_length=block_length or gen_length, steps=steps, vocab=16)
        selected = int(selector.select(rollout, torch.Generator().manual_seed(0)).steps.shape[1])
    passes = tuple(objective.loss_passes(gen_length=gen_length, block_length=block_length or gen_length,
                                         steps=steps, selected_steps=selected))
    return objective, passes or (ForwardPass(),)


def plan_from_config(config: Any, *, sharding: Sharding, prompt_length: int) -> MemoryPlan:
    """Plan a :class:`~remask.config.PipelineConfig` (model, sampler, objective, train sections)."""
    t = config.train
    sampler = config.sampler.params
    rows = t.prompts_per_step // max(1, sharding.processes) * t.group_size
    lora = t.lora
    gen_length = int(getattr(sampler, "gen_length", 0))
    block_length = int(getattr(sampler, "block_length", 0) or gen_length)
    steps = int(getattr(sampler, "steps", 0) or gen_length)
    objective, passes = objective_passes(config, gen_length=gen_length, block_length=block_length, steps=steps)
    inputs = PlanInputs(
        architecture=architecture_of(config),
        dtype=getattr(config.model.params, "dtype", "float32"),
        rollout_rows=max(1, rows),
        micro_batch=t.micro_batch_size or max(1, rows),
        prompt_length=prompt_length,
        gen_length=gen_length,
        block_length=block_length,
        kv_cache=str(getattr(sampler, "cache", "none")),
        gradient_checkpointing=t.gradient_checkpointing,
        lora_r=lora.r if lora else None,
        lora_targets=lora.target_modules if lora else "all-linear",
        load_in_4bit=bool(lora and lora.load_in_4bit),
        sharding=sharding,
        loss_passes=passes,
        reference_copy=bool(objective.uses_reference) and lora is None,
        objective=objective.name,
    )
    return plan_memory(inputs)


def describe_passes(inputs: PlanInputs) -> str:
    """``3 passes of [6, 512]``-style summary of ``inputs.loss_passes`` at the planned micro-batch."""
    shapes = [inputs.pass_shape(p) for p in inputs.loss_passes]
    if len(set(shapes)) == 1:
        n = len(shapes)
        return f"{n} pass{'es' if n > 1 else ''} of [{shapes[0][0]}, {shapes[0][1]}]"
    return f"{len(shapes)} passes: " + ", ".join(f"[{r}, {q}]" for r, q in shapes)


def synthetic_rollout(*, rows: int, group_size: int, prompt_length: int, gen_length: int, block_length: int,
                      steps: int, vocab: int, avoid: tuple[int, ...] = (), seed: int = 0) -> Rollout:
    """A :class:`~remask.records.Rollout` of the given shape with random tokens, what the planner plans
    for and ``benchmarks/gpu_train.py`` trains on (no sampler run, no model needed).

    Tokens are drawn from ``4..vocab-1`` minus ``avoid`` (pass the mask, EOS and pad ids), so every
    completion is full length (``completion_mask`` all true). Block ``b`` is decoded in steps
    ``b·T/N_B .. (b+1)·T/N_B − 1``, its positions committed in a random order, evenly over those
    steps (``unmask_step``); ``step_logps`` / ``step_entropy`` are random negative / positive numbers.
    Groups are ``group_size`` adjacent rows. MDPO's per-step records are left ``None``.
    """
    g = torch.Generator().manual_seed(seed)
    low = min(4, vocab - 1)

    def draw(*shape: int) -> torch.Tensor:
        x = torch.randint(low, max(low + 1, vocab), shape, generator=g)
        for bad in avoid:
            x = torch.where(x == bad, torch.full_like(x, low), x)
        return x

    prompts = PromptBatch(draw(rows, prompt_length), torch.ones(rows, prompt_length, dtype=torch.bool),
                          torch.arange(rows) // max(1, group_size), ("",) * rows, ({},) * rows)
    n_blocks = -(-gen_length // block_length)
    per_block = max(1, steps // n_blocks)
    unmask = torch.empty(rows, gen_length, dtype=torch.long)  # [B, L]
    for b in range(n_blocks):
        lo, hi = b * block_length, min((b + 1) * block_length, gen_length)
        for r in range(rows):
            order = torch.randperm(hi - lo, generator=g)  # [hi - lo] commit order within the block
            unmask[r, lo:hi] = b * per_block + (order * per_block) // (hi - lo)
    t = int(unmask.max()) + 1
    return Rollout(prompts=prompts, completion_ids=draw(rows, gen_length),
                   completion_mask=torch.ones(rows, gen_length, dtype=torch.bool), unmask_step=unmask,
                   block_length=block_length, num_steps=t, texts=("",) * rows, nfe=t,
                   step_logps=-5 * torch.rand(rows, t, generator=g),  # [B, T]
                   step_entropy=3 * torch.rand(rows, t, generator=g),  # [B, T]
                   step_all_eos=torch.zeros(rows, t, dtype=torch.bool), sampler={"name": "synthetic"})


# ---------------------------------------------------------------------------------------------
# What this machine cannot run (remask validate)
# ---------------------------------------------------------------------------------------------


def runtime_problems(config: Any) -> list[str]:
    """Settings the model adapter or this machine cannot run, found before any weight loads.

    * ``train.lora.load_in_4bit`` with an adapter that does not implement it, or without a
      bitsandbytes backend for the device (CUDA, or bitsandbytes' CPU backend);
    * ``model.dtype`` / ``train.mixed_precision`` bf16 or fp16 on a device that cannot compute in it.
    """
    from .modeling import resolve_device
    from .registry import get_registry

    problems: list[str] = []
    params = config.model.params
    cls = get_registry().get("model", config.model.name)
    device_name = getattr(params, "device", "cpu")
    try:
        device = resolve_device(device_name)
    except RemaskError as exc:
        return [str(exc)]
    lora = config.train.lora
    if lora is not None and lora.load_in_4bit:
        if not getattr(cls, "supports_4bit", False):
            problems.append(f"train.lora.load_in_4bit: model {config.model.name!r} cannot load a 4-bit base")
        else:
            why = bnb_unavailable(device)
            if why:
                problems.append(f"train.lora.load_in_4bit: {why}")
    for where, dtype in (("model.dtype", getattr(params, "dtype", "float32")),
                         ("train.mixed_precision", {"bf16": "bfloat16", "fp16": "float16"}.get(
                             config.train.mixed_precision, "float32"))):
        why = dtype_unavailable(dtype, device)
        if why:
            problems.append(f"{where}: {why}")
    return problems


def bnb_unavailable(device: torch.device) -> str | None:
    """Why bitsandbytes cannot quantise to NF4 on ``device`` here, or None when it can."""
    try:
        import bitsandbytes.functional as bnbf
    except Exception as exc:  # noqa: BLE001 - any import failure means no backend
        return f"bitsandbytes is not importable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); pip install bitsandbytes"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "the model's device is CUDA but no CUDA device is visible"
    try:
        with _quiet():
            w = torch.ones(64, 64, device=device)
            packed, state = bnbf.quantize_4bit(w, quant_type="nf4", compress_statistics=True)
            back = bnbf.dequantize_4bit(packed, state)
        if not torch.allclose(back.float(), w, atol=0.1):
            return f"bitsandbytes' {device.type} backend returned wrong values for an NF4 round trip"
    except Exception as exc:  # noqa: BLE001 - report why the backend cannot run
        return f"bitsandbytes has no usable {device.type} backend here ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return None


def dtype_unavailable(dtype: str, device: torch.device) -> str | None:
    """Why ``dtype`` matmuls cannot run on ``device``, or None when they can."""
    if dtype == "float32":
        return None
    torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None  # reported by the device check itself when the model loads
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            return f"{dtype} is not supported by {torch.cuda.get_device_name(device)}; use float16 or float32"
        return None
    try:
        a = torch.ones(4, 4, dtype=torch_dtype, device=device)
        (a @ a).sum().item()
    except Exception as exc:  # noqa: BLE001
        return f"{dtype} does not compute on {device} ({type(exc).__name__}); use float32"
    return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import logging
    import warnings

    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    logger.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logger.setLevel(level)
