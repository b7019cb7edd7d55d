"""What RL training (:mod:`.trainer`) and masked-diffusion SFT (:mod:`.sft`) share: accelerate,
model placement, LoRA, optimizer and schedule, RNG streams, data order, checkpoints, logging,
signals, budgets and evaluation. The loops themselves live in the subclasses."""

from __future__ import annotations

import logging
import math
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..config import TrainConfig, check_batch_arithmetic
from ..environment import busy_machine, set_torch_threads
from ..errors import ConfigError, PluginError, RemaskError
from ..interfaces import DiffusionModel
from ..lockstep import Lockstep
from ..registry import Registry, get_registry
from . import checkpoint as ckpt
from .components import Pipeline, apply_lora
from .data import DataOrder
from .evaluation import EvalResult, accuracy_summary, build_eval_sampler, evaluate
from .optim import build_optimizer, build_scheduler
from .reporting import RunReporter, combine_rounds, write_manifest
from .rundir import RunDirLock, changed_settings, check_output_dir, clear_previous_run, truncate_metrics
from .rng import RngStreams, stream_seed
from .signals import StopRequest
from .timing import PhaseTimer

__all__ = ["Engine", "TrainResult", "crossed"]

log = logging.getLogger("remask.engine")


def crossed(before: int, after: int, every: int) -> bool:
    """True when a multiple of ``every`` lies in (before, after]."""
    return every > 0 and after // every > before // every


class TrainResult(dict):
    """Final metrics of a run plus ``output_dir``, ``global_step``, ``interrupted``, ``stop_signal``,
    ``is_main`` and ``eval_before``/``eval_after``."""


def _read_checkpoint_file(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)``, with any failure reported as one line naming the corrupt file."""
    try:
        return read(path)
    except RemaskError:
        raise
    except FileNotFoundError:
        raise RemaskError(f"--resume: {path} is missing; the checkpoint is incomplete — resume from another "
                          f"checkpoint-<step>/ with --resume PATH") from None
    except Exception as exc:  # noqa: BLE001 - torch/safetensors/json raise many types for a damaged file
        raise RemaskError(f"--resume: {path} is corrupt ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
                          f"resume from another checkpoint-<step>/ with --resume PATH") from None


@contextmanager
def _disk_full_is_one_line(where: Path) -> Iterator[None]:
    """Turn a write that failed because the disk is full into one line (exit 2): torch and
    safetensors raise ``RuntimeError`` for ENOSPC, so the free space is checked as well."""
    import errno
    import shutil

    try:
        yield
    except RemaskError:
        raise
    except Exception as exc:
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc)
        if not full:
            try:
                full = shutil.disk_usage(where if where.exists() else where.parent).free < 1 << 20
            except OSError:
                full = False
        if not full:
            raise
        raise RemaskError(f"no space left on the device while writing {getattr(exc, 'filename', None) or where}; "
                          "free some and continue with "
                          "--resume (the last complete checkpoint is intact)") from exc


def _trainer_state(path: Path) -> dict[str, Any]:
    """``trainer_state.json`` as one dict in the old layout: the new one keeps remask's own fields
    under ``"remask"`` beside Hugging Face's (``global_step``, ``log_history``, ...)."""
    import json

    state = _read_checkpoint_file(path, lambda p: json.loads(p.read_text()))
    if not isinstance(state, dict) or "global_step" not in state:
        raise RemaskError(f"--resume: {path} is corrupt (no global_step); resume from another checkpoint-<step>/")
    return {**state, **state.get("remask", {})}


def _fsdp_requested(acc: Any) -> bool:
    """FSDP asked for by the accelerate config: accelerate's own ``DistributedType.FSDP`` (GPUs), or
    ``ACCELERATE_USE_FSDP`` set by ``accelerate launch`` on a CPU host, where accelerate falls back
    to its ``MULTI_CPU`` data parallel mode and leaves the sharding to the engine."""
    import os

    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.FSDP:
        return True
    return (acc.num_processes > 1 and acc.distributed_type == DistributedType.MULTI_CPU
            and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true")


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _clip_sharded(params: list[torch.nn.Parameter], max_norm: float | None) -> float:
    """The global gradient norm of sharded (DTensor) and plain parameters, and clipping to
    ``max_norm`` (as ``torch.nn.utils.clip_grad_norm_``; a DTensor norm is reduced over the shards
    with ``full_tensor``). Plain parameters are the same on every process, so they count once."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    sharded = [g for g in grads if _is_dtensor(g)]
    plain = [g for g in grads if not _is_dtensor(g)]
    total_sq = torch.zeros((), dtype=torch.float32)
    if sharded:
        norm = torch.nn.utils.get_total_norm(sharded, 2.0)
        total_sq = total_sq + norm.full_tensor().float().cpu() ** 2
    if plain:
        total_sq = total_sq + torch.nn.utils.get_total_norm(plain, 2.0).float().cpu() ** 2
    total = total_sq.sqrt()
    if max_norm is not None and math.isfinite(float(total)):
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef.to(g.device, g.dtype) if not _is_dtensor(g) else float(coef))
    return float(total)


class _Unwrapped:
    """The adapter seen through an unwrapped module (FSDP / DeepSpeed), for weight loading."""

    def __init__(self, model: DiffusionModel, module: torch.nn.Module) -> None:
        self.model = model
        self.module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)



class Engine:
    """What RL training and masked-diffusion SFT share: accelerate, model placement, LoRA,
    optimizer and schedule, RNG streams, data order, checkpoints, logging, signals, evaluation."""

    command = "train"

    def __init__(self, config: Any, *, resume: str | None = None, registry: Registry | None = None,
                 pipeline: Pipeline | None = None, accelerator: Any = None) -> None:
        self.config = config
        self.train_cfg: TrainConfig = config.train
        self.registry = registry or get_registry()
        self.resume_arg = resume
        self._pipeline = pipeline
        self._accelerator = accelerator
        self.output_dir = Path(self.train_cfg.output_dir)
        self.global_step = 0
        self.rollouts_done = 0
        self.skipped_steps = 0
        self.forward_passes_done = 0  # sampler + objective forwards so far (train.max_forward_passes)
        self.num_tokens_seen = 0  # prompt + completion tokens of every rollout, all processes (TRL's num_tokens)
        self._run_started = time.perf_counter()
        self.timer = PhaseTimer()
        self.stop = StopRequest()
        self.eval_results: dict[str, EvalResult] = {}
        self.log_history: list[dict[str, Any]] = []  # trainer_state.json's log_history: what was logged, by step
        self._lock: RunDirLock | None = None
        self.torch_threads = 0  # set by run()
        self.last_metrics: dict[str, float] = {}
        self._pending: list[dict[str, float]] = []  # per-round metrics since the last log

    # -- setup ---------------------------------------------------------------------------------

    def _make_accelerator(self) -> Any:
        if self._accelerator is not None:
            return self._accelerator
        from accelerate import Accelerator

        from accelerate.state import AcceleratorState, PartialState

        partial = PartialState._shared_state
        if partial.get("_cpu") is not None and partial.get("num_processes", 1) == 1:
            # a previous run in this (single) process fixed accelerate's singletons, e.g. its
            # mixed precision; a new run starts from its own config
            AcceleratorState._reset_state(True)
        trackers = list(self.train_cfg.report_to)
        # Without CUDA, say so: accelerate then runs `accelerate launch --multi_gpu` ranks as gloo
        # processes (MULTI_CPU) instead of silently running each rank alone.
        return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=self.train_cfg.mixed_precision,
                           log_with=trackers or None, project_dir=str(self.output_dir))

    def _check_layout(self, whole_groups: bool) -> None:
        problems = check_batch_arithmetic(self.train_cfg, num_processes=self.accelerator.num_processes,
                                          whole_groups=whole_groups)
        if problems:
            raise ConfigError([f"{getattr(self.config, 'source', '') or '<config>'}: {p}" for p in problems])

    def _setup_common(self, model: DiffusionModel, task: Any, extra_groups: Callable[[], list[dict[str, Any]]]) -> None:
        acc = self.accelerator
        t = self.train_cfg
        self.rank = acc.process_index
        self.world = acc.num_processes
        self.is_main = acc.is_main_process
        self.device = acc.device
        torch.manual_seed(stream_seed(t.seed, "global", self.rank))  # dropout and anything global
        self.model = model
        self.task = task
        self.lora = t.lora is not None
        if self.lora:
            # the adapter's random init (LoRA A) must be the same on every process: the global stream
            # above differs per rank, so LoRA is drawn from a stream of its own, shared by all ranks
            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(stream_seed(t.seed, "lora", 0))
                apply_lora(model, t.lora)
        if t.gradient_checkpointing:
            enable = getattr(model, "enable_gradient_checkpointing", None)
            if not callable(enable):
                enable = getattr(model.module, "gradient_checkpointing_enable", None)
            if not callable(enable):
                raise RemaskError(f"train.gradient_checkpointing: model {model.name!r} does not support it")
            enable()
            if not t.dropout:
                # HF recomputes activations only in train mode; keep train mode but silence dropout
                for m in model.module.modules():
                    if isinstance(m, torch.nn.Dropout):
                        m.p = 0.0
        mover = getattr(model, "to", None)  # HF adapters track their device
        if callable(mover):
            mover(self.device)
        else:
            model.module.to(self.device)
        self.fsdp = _fsdp_requested(acc)
        self.lockstep = Lockstep(self.device)  # attached to each model whose parameters get sharded
        self._before_sharding()
        if self.fsdp:
            self._fully_shard(model)
        self.policy_params = [p for p in model.module.parameters() if p.requires_grad]
        self.examples = list(task.examples("train"))
        self.data = DataOrder(len(self.examples), t.seed)
        self.rng = RngStreams(t.seed, rank=self.rank, device=self.device)
        self.optimizer = build_optimizer(t, self.policy_params, extra_groups())
        self.scheduler = build_scheduler(t, self.optimizer, t.max_steps)
        from accelerate.utils import DistributedType

        # FSDP: the engine sharded the policy itself (above); accelerate wraps only under DeepSpeed
        self.wrapped = acc.distributed_type == DistributedType.DEEPSPEED
        self.deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
        if (not self.deepspeed and self.is_main and acc.distributed_type == DistributedType.MULTI_CPU
                and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"):
            log.warning("DeepSpeed config on a host without GPUs: accelerate runs it as plain data parallel "
                        "(nothing is sharded); use examples/accelerate/fsdp.yaml to shard on CPU")
        if self.deepspeed:
            rows = t.prompts_per_step // self.world * t.group_size
            if t.micro_batch_size not in (0, rows):
                raise ConfigError([f"train.micro_batch_size: under DeepSpeed each backward is an optimizer step, so "
                                   f"a process's {rows} rows must form one micro-batch; use 0 or {rows}"])
            if t.max_grad_norm is not None:
                log.warning("DeepSpeed: gradient clipping follows the DeepSpeed config, not train.max_grad_norm")
        if self.wrapped:
            # DeepSpeed shards parameters and optimizer state: let accelerate own them.
            model.module, self.optimizer = acc.prepare(model.module, self.optimizer)
            self.policy_params = [p for p in model.module.parameters() if p.requires_grad]
            ds = getattr(acc.state, "deepspeed_plugin", None)
            if int(getattr(ds, "zero_stage", 0) or 0) == 3:  # ZeRO-3 gathers parameters in every pass
                model.lockstep = self.lockstep
        else:
            self.optimizer = acc.prepare_optimizer(self.optimizer)
        self.manual_allreduce = self.world > 1 and not self.wrapped  # FSDP: unsharded extras only

    def _before_sharding(self) -> None:
        """What must see the whole, unsharded policy (the trainer's frozen reference copy)."""

    def _fully_shard(self, model: DiffusionModel) -> None:
        """Shard ``model`` with torch's FSDP2 over the process group accelerate set up (gloo on
        CPU, NCCL on GPUs): accelerate itself shards only CUDA modules and would run an FSDP config
        as plain data parallel on a CPU host, so the engine calls ``fully_shard`` on every device."""
        shard = getattr(model, "fully_shard", None)
        if not callable(shard):
            raise ConfigError([f"{getattr(self.config, 'source', '') or '<config>'}: FSDP: model {model.name!r} "
                               "has no fully_shard(); train it with data parallel or DeepSpeed"])
        plugin = getattr(self.accelerator.state, "fsdp_plugin", None)
        shard(reshard_after_forward=bool(getattr(plugin, "reshard_after_forward", True)))
        model.lockstep = self.lockstep  # every pass is now a collective (remask.lockstep)
        if self.is_main:
            log.info("FSDP2: %s sharded over %d processes (fully_shard)", model.name, self.world)

    def _train_mode(self) -> None:
        """Explicit dropout mode for likelihoods and losses (spec §8 trap 5)."""
        t = self.train_cfg
        self.model.module.train(bool(t.dropout or t.gradient_checkpointing))

    # -- gradients -------------------------------------------------------------------------------

    def _mean_over_processes(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1:
            return values
        keys = sorted(values)
        vec = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        vec = self.accelerator.reduce(vec, reduction="mean")
        return dict(zip(keys, vec.tolist()))

    def _per_rank_seconds(self, seconds: dict[str, float]) -> dict[str, float]:
        """Each process's seconds per phase, gathered: ``perf/<phase>_seconds_max_rank``,
        ``..._min_rank`` and ``perf/<phase>_slowest_rank`` (the process index), so that a slow
        rank (a slow reward sandbox, a slow node) is visible."""
        names = sorted(seconds)
        local = torch.tensor([[seconds[k] for k in names]], dtype=torch.float64, device=self.device)  # [1, K]
        table = self.accelerator.gather(local) if self.world > 1 else local  # [world, K]
        out: dict[str, float] = {}
        for j, name in enumerate(names):
            column = table[:, j]
            out[f"perf/{name}_seconds_max_rank"] = float(column.max())
            out[f"perf/{name}_seconds_min_rank"] = float(column.min())
            out[f"perf/{name}_slowest_rank"] = float(int(column.argmax()))
        return out

    def _all_params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _sync_gradients(self) -> None:
        """Average gradients over processes (DDP semantics, without wrapping the adapter's module)."""
        if not self.manual_allreduce:
            return
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = defaultdict(list)
        for p in self._all_params():
            if _is_dtensor(p):  # FSDP2 reduce-scattered its shards' gradients in backward
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            buckets[(p.grad.device, p.grad.dtype)].append(p.grad)
        for grads in buckets.values():  # one all-reduce per device/dtype
            if not grads:
                continue
            flat = _flatten_dense_tensors(grads)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.div_(self.world)
            for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
                g.copy_(synced)

    def _any_process(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.accelerator.reduce(t, reduction="sum").item() > 0)

    def _optimizer_step(self, skip: bool) -> tuple[float, bool]:
        """Sync, clip and step; returns (grad norm, skipped). Non-finite losses or norms skip."""
        with self.timer("optimizer"):
            skip = self._any_process(skip)
            grad_norm = float("nan")
            if not skip and self.deepspeed:
                # DeepSpeed clipped and stepped inside accelerator.backward (one micro-batch)
                engine = self.model.module
                norm = engine.get_global_grad_norm() if hasattr(engine, "get_global_grad_norm") else None
                grad_norm = float(norm) if norm is not None else float("nan")
            elif not skip:
                self._sync_gradients()
                params = self._all_params()
                max_norm = self.train_cfg.max_grad_norm
                if self.fsdp:
                    grad_norm = _clip_sharded(params, max_norm)
                elif max_norm is not None:
                    grad_norm = float(self.accelerator.clip_grad_norm_(params, max_norm))
                else:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, float("inf")))
                if not math.isfinite(grad_norm):
                    skip = True
            if skip:
                self.skipped_steps += 1
                log.warning("step %d: non-finite loss or gradient; update skipped", self.global_step + 1)
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
        return grad_norm, skip

    # -- checkpoints -------------------------------------------------------------------------------

    def _objective_state(self) -> dict[str, Any]:
        return {}

    def _load_objective_state(self, state: dict[str, Any]) -> None:
        pass

    def _extra_checkpoint(self, tmp: Path) -> None:
        pass

    def _load_extra_checkpoint(self, path: Path) -> None:
        pass

    def _policy_module(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model.module) if self.wrapped else self.model.module

    def _torch_optimizer(self) -> torch.optim.Optimizer:
        return getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate's wrapper -> torch's

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint-<global_step>/`` atomically; every process writes its RNG streams."""
        acc = self.accelerator
        tmp = ckpt.tmp_dir_for(self.output_dir, self.global_step)
        if self.is_main:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        with _disk_full_is_one_line(tmp):  # torch.save and safetensors report ENOSPC as RuntimeError
            torch.save(self.rng.state_dict(), tmp / f"rng_state_{self.rank}.pth")
            full_state = acc.get_state_dict(self.model.module) if self.wrapped else None  # collective under ZeRO-3
            if self.fsdp:  # every process writes its shards (model and optimizer) for --resume
                ckpt.save_sharded(self.model.module, self._torch_optimizer(), tmp / ckpt.SHARDED_DIR)
                ckpt.save_full_weights(self.model, tmp, is_main=self.is_main)  # collective gather
            if self.is_main:
                if full_state is not None:
                    from safetensors.torch import save_file

                    save_file({k: v.detach().cpu().contiguous().clone() for k, v in full_state.items()},
                              str(tmp / "model.safetensors"))
                elif not self.fsdp:
                    ckpt.save_model_weights(self.model, tmp)
                if not self.fsdp:
                    torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
                torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
                torch.save(self._objective_state(), tmp / "objective.pt")
                self._extra_checkpoint(tmp)
                ckpt.write_json(tmp / ckpt.TRAINER_STATE, self._trainer_state_dict())
        acc.wait_for_everyone()
        final = None
        if self.is_main:
            final = ckpt.finalize(tmp, self.output_dir, self.global_step)
            ckpt.rotate(self.output_dir, self.train_cfg.save_total_limit)
            log.info("saved %s", final)
        acc.wait_for_everyone()
        return final

    def _trainer_state_dict(self) -> dict[str, Any]:
        """Hugging Face's ``TrainerState`` layout (``global_step``, ``max_steps``, ``log_history``...);
        what only remask needs sits under ``"remask"``; RNG streams are in ``rng_state_<rank>.pth``."""
        t = self.train_cfg
        return {
            "global_step": self.global_step,
            "max_steps": t.max_steps,
            "epoch": self.data.position,
            "logging_steps": t.logging_steps,
            "save_steps": t.save_steps,
            "eval_steps": self.config.eval.every_steps,
            "train_batch_size": t.prompts_per_step * t.group_size,
            "num_input_tokens_seen": self.num_tokens_seen,
            "num_train_epochs": None,
            "log_history": self.log_history,
            "best_metric": None,
            "best_model_checkpoint": None,
            "is_world_process_zero": True,
            "remask": {
                "command": self.command,
                "rollouts_done": self.rollouts_done,
                "skipped_steps": self.skipped_steps,
                "forward_passes_done": self.forward_passes_done,
                "data": self.data.state_dict(),
                "num_processes": self.world,
                "torch_threads": self.torch_threads,
                "config": self.config.dump(),
            },
        }

    def load_checkpoint(self, path: Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote (exactly); a damaged file is named."""
        state = _trainer_state(path / ckpt.TRAINER_STATE)
        if state.get("num_processes", 1) != self.world:
            log.warning("%s was written by %s processes, resuming with %s: the data order is kept, "
                        "the per-process sampling streams restart", path, state.get("num_processes"), self.world)
        saved_threads = state.get("torch_threads")
        if saved_threads not in (None, self.torch_threads) and self.is_main:
            log.warning("%s was written with %s torch threads, resuming with %s: CPU results may differ in the "
                        "last bits from an uninterrupted run (set train.torch_threads to keep them equal)",
                        path, saved_threads, self.torch_threads)
        changed = changed_settings(state.get("config"), self.config.dump())
        if changed and self.is_main:
            log.warning("resuming %s with changed settings: %s", path, "; ".join(changed[:8]))
        def load(name: str, **kw: Any) -> Any:
            return _read_checkpoint_file(path / name, lambda p: torch.load(p, weights_only=False, **kw))

        if self.fsdp:
            if not (path / ckpt.SHARDED_DIR).is_dir():
                raise RemaskError(f"--resume: {path} has no {ckpt.SHARDED_DIR}/ (it was not written by a sharded "
                                  "run); resume it with the launch settings that wrote it")
            _read_checkpoint_file(path / ckpt.SHARDED_DIR, lambda p: ckpt.load_sharded(
                self.model.module, self._torch_optimizer(), p))
        else:
            model = self.model if not self.wrapped else _Unwrapped(self.model, self._policy_module())
            _read_checkpoint_file(path, lambda p: ckpt.load_model_weights(model, p))
            self.optimizer.load_state_dict(load("optimizer.pt", map_location=self.device))
        self.scheduler.load_state_dict(load("scheduler.pt"))
        self._load_objective_state(load("objective.pt", map_location=self.device))
        _read_checkpoint_file(path, self._load_extra_checkpoint)
        if (path / f"rng_state_{self.rank}.pth").is_file():
            self.rng.load_state_dict(load(f"rng_state_{self.rank}.pth"))
        self.data.load_state_dict(state["data"])
        self.global_step = int(state["global_step"])
        self.rollouts_done = int(state.get("rollouts_done", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.forward_passes_done = int(state.get("forward_passes_done", 0))
        self.num_tokens_seen = int(state.get("num_input_tokens_seen", 0))
        self.log_history = [row for row in state.get("log_history", []) if row.get("step", 0) <= self.global_step]
        if self.is_main:
            log.info("resumed from %s at step %d", path, self.global_step)

    # -- evaluation ---------------------------------------------------------------------------------

    def run_eval(self, label: str) -> EvalResult | None:
        sampler_spec = getattr(self.config, "sampler", None)
        if sampler_spec is None:
            raise ConfigError([f"{self.config.source or '<config>'}: eval: needs a sampler section to decode"])
        sampler = build_eval_sampler(sampler_spec, self.config.eval, registry=self.registry)
        with self.timer("eval"):
            result = evaluate(self.model, self.task, sampler, self.config.eval, accelerator=self.accelerator,
                              device=self.device)
        self.eval_results[label] = result
        self.reporter.log(result.metrics(), step=self.global_step)
        self._remember(result.metrics())
        if self.is_main:
            log.info("eval (%s) at step %d: accuracy %.1f%% on %d problems", label, self.global_step,
                     100 * result.accuracy, result.num_problems)
        return result

    # -- the run --------------------------------------------------------------------------------------

    def _start(self) -> None:
        """Build, place, resume and start logging (both commands)."""
        raise NotImplementedError

    def _one_round(self, progress: Any) -> dict[str, float]:
        raise NotImplementedError

    def _remember(self, logged: dict[str, Any]) -> None:
        """Add a logged dict to ``log_history`` (JSON: NaN becomes null)."""
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in logged.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.log_history.append({**row, "step": self.global_step})

    def _after_round(self, before: int, metrics: dict[str, float]) -> bool:
        """Log / eval / checkpoint at a rollout boundary; True to stop early."""
        t = self.train_cfg
        self._pending.append(metrics)
        try:
            self.registry.after_step(step=self.global_step, metrics=dict(metrics))
        except PluginError as exc:  # keep the work done so far, then stop with the plugin named
            saved = self.save_checkpoint()
            raise PluginError(f"{exc}; {saved.name if saved else 'a checkpoint'} was saved, continue with --resume",
                              plugin=exc.plugin, distribution=exc.distribution) from exc
        stop = self._budget_spent(metrics)
        if crossed(before, self.global_step, self.config.eval.every_steps) and self.global_step < t.max_steps:
            result = self.run_eval(f"step-{self.global_step}")
            stop = self._reached_target(result) or stop
        if (crossed(before, self.global_step, t.logging_steps) or self.global_step >= t.max_steps or stop
                or self.stop.requested):
            logged = combine_rounds(self._pending)
            logged.update(self.timer.pop())
            self.reporter.log(logged, step=self.global_step)
            self._remember(logged)
            self.last_metrics = logged
            self._pending = []
        if crossed(before, self.global_step, t.save_steps) and self.global_step < t.max_steps and not stop:
            with self.timer("checkpoint"):
                self.save_checkpoint()
        return stop

    def _budget_spent(self, metrics: dict[str, float]) -> bool:
        """True once ``train.max_forward_passes`` or ``train.max_seconds`` is used up (checked at
        rollout boundaries, so a run may overshoot by one round)."""
        t = self.train_cfg
        self.forward_passes_done += int(metrics.get("diffusion/nfe", 0) + metrics.get("diffusion/forward_passes", 0))
        cap = getattr(t, "max_forward_passes", None)
        if cap is not None and self.forward_passes_done >= cap:
            log.info("forward-pass budget %d reached at step %d", cap, self.global_step)
            return True
        limit = getattr(t, "max_seconds", None)
        if limit is not None and self._any_process(time.perf_counter() - self._run_started >= limit):
            log.info("time budget %.0fs reached at step %d", limit, self.global_step)
            return True
        return False

    def _reached_target(self, result: EvalResult | None) -> bool:
        target = getattr(self.train_cfg, "stop_at_accuracy", None)
        if target is not None and result is not None and result.accuracy >= target:
            if self.is_main:
                log.warning("accuracy %.1f%% reached the target %.1f%%: stopping", 100 * result.accuracy, 100 * target)
            return True
        return False

    def run(self) -> TrainResult:
        """Claim the run directory, train, and release it (the lock is held by the main process)."""
        t0 = time.perf_counter()
        self._run_started = t0
        threads, why = set_torch_threads(self.train_cfg.torch_threads)
        self.torch_threads = threads
        self.accelerator = self._make_accelerator()
        if self.accelerator.is_main_process:
            log.info("torch threads per process: %d (%s)", threads, why)
            busy = busy_machine(threads)
            if busy:
                log.warning("%s", busy)
        self._claim_output_dir()
        try:
            return self._run(t0)
        finally:
            if self._lock is not None:
                self._lock.release()

    def _claim_output_dir(self) -> None:
        """Lock ``train.output_dir`` and refuse it if a new run may not start there (see :mod:`.rundir`)."""
        acc = self.accelerator
        resume, overwrite = self.resume_arg is not None, self.train_cfg.overwrite_output_dir
        if acc.is_main_process:
            self._lock = RunDirLock(self.output_dir).acquire()
            try:
                check_output_dir(self.output_dir, resume=resume, overwrite=overwrite)
                if overwrite and not resume:
                    clear_previous_run(self.output_dir)
            except BaseException:
                self._lock.release()
                self._lock = None
                raise
        acc.wait_for_everyone()

    def _run(self, t0: float) -> TrainResult:
        self._start()
        t = self.train_cfg
        from tqdm.auto import tqdm

        progress = tqdm(total=t.max_steps, initial=self.global_step, desc=self.command, unit="step",
                        disable=not (self.is_main and t.progress), dynamic_ncols=True)
        self.stop.install()
        interrupted = False
        stopped_early = False
        try:
            if self.config.eval.before_training and self.global_step == 0:
                self.run_eval("before")
            while self.global_step < t.max_steps:
                before = self.global_step
                metrics = self._one_round(progress)
                stopped_early = self._after_round(before, metrics)
                if self._any_process(self.stop.requested):
                    interrupted = True
                    break
                if stopped_early:
                    break
            with self.timer("checkpoint"):
                self.save_checkpoint()
            if not interrupted and self.config.eval.after_training:
                self.run_eval("after")
            if not interrupted:  # an interrupted run must not overwrite the "final" model
                self._finish()
        finally:
            progress.close()
            self.stop.restore()
        result = TrainResult(self.last_metrics)
        result.update(output_dir=str(self.output_dir), global_step=self.global_step, interrupted=interrupted,
                      stop_signal=self.stop.reason if interrupted else None, is_main=self.is_main,
                      skipped_steps=self.skipped_steps, seconds=time.perf_counter() - t0)
        for label, ev in self.eval_results.items():
            result[f"eval_{label}"] = ev.accuracy
        before, after = self.eval_results.get("before"), self.eval_results.get("after")
        if before is not None and after is not None:
            summary = accuracy_summary(before, after, time.perf_counter() - t0, greedy=self.config.eval.greedy)
            result["summary"] = summary
            if self.is_main:
                print(summary, flush=True)
        self.registry.on_train_end(output_dir=str(self.output_dir),
                                   metrics={k: v for k, v in result.items() if isinstance(v, float)})
        self.reporter.close()
        return result

    def _finish(self) -> None:
        save_to = getattr(self.train_cfg, "save_final_model", None)
        if save_to and self.fsdp:  # gathered to full tensors on the main process, Hugging Face layout
            ckpt.save_full_weights(self.model, Path(save_to), is_main=self.is_main)
            if self.is_main:
                log.info("final model written to %s", save_to)
        elif save_to and self.is_main:
            ckpt.save_model_weights(self.model, Path(save_to), module=self._policy_module())
            log.info("final model written to %s", save_to)
        self.accelerator.wait_for_everyone()

    def _start_reporting(self, command_extra: dict[str, Any]) -> None:
        cfg_dump = self.config.dump()
        if self.is_main:
            write_manifest(self.output_dir, config=cfg_dump, command=self.command, extra={
                "device": str(self.device),
                "num_processes": self.world,
                "distributed_type": str(self.accelerator.distributed_type),
                "mixed_precision": self.train_cfg.mixed_precision,
                "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                **command_extra,
            })
        self.reporter = RunReporter(self.output_dir, accelerator=self.accelerator, is_main=self.is_main,
                                    trackers=bool(self.train_cfg.report_to), config=cfg_dump,
                                    print_completions=self.train_cfg.log_completions,
                                    resumed_step=self.global_step if self.resumed_from is not None else 0)

    def _resume_if_asked(self) -> None:
        self.resumed_from = ckpt.resolve_resume(self.resume_arg, self.output_dir)
        if self.resume_arg is not None and self.resumed_from is None and self.is_main:
            log.warning("--resume: no checkpoint in %s; starting from scratch", self.output_dir)
        if self.resumed_from is not None:
            self.load_checkpoint(self.resumed_from)
        if self.is_main:
            dropped = truncate_metrics(self.output_dir / "metrics.jsonl", self.global_step)
            if dropped and self.resumed_from is not None:
                log.info("metrics.jsonl: dropped %d line(s) logged after step %d or torn", dropped, self.global_step)

