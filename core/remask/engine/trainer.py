"""The training loop of ``remask train`` (RL) — one linear recipe, no subclassing per algorithm.

    remask train examples/tiny-arith-d1.yaml
    remask train examples/tiny-arith-d1.yaml --resume            # newest checkpoint of the run
    accelerate launch --config_file examples/accelerate/multi_gpu.yaml -m remask train CONFIG

One rollout (``train.prompts_per_step`` prompts x ``train.group_size`` completions, split over the
processes by whole groups) feeds ``train.inner_steps`` (μ) optimizer updates::

    prompts ─sampler─▶ rollout ─rewards─▶ rewards ─selector─▶ selection ─advantage─▶ advantages
    for each micro-batch:  state = objective.prepare(...)           # no grad: old/ref log-probs, masks
    repeat μ times:        for each micro-batch: objective.loss(state).backward() / n_micro
                           all-reduce grads, clip, AdamW step, scheduler step   (global_step += 1)

``train.max_steps`` counts optimizer updates (as TRL's ``max_steps`` with ``num_iterations``);
checkpoints, logs and evaluations happen at rollout boundaries, so that a checkpoint never holds
half of a rollout's updates and ``--resume`` continues bit for bit.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ..config import PipelineConfig
from ..errors import ConfigError, RemaskError
from .. import lockstep
from ..interfaces import DataFilterContext, StepContext
from ..records import take
from ..registry import Registry
from . import checkpoint as ckpt
from .base import Engine, TrainResult, crossed
from .components import (
    Pipeline,
    ReferenceModel,
    RewardScorer,
    adapter_active,
    build_pipeline,
    make_reference,
    sync_reference,
)
from .data import build_prompt_batch
from .rng import stream_seed
from .optim import build_optimizer, build_scheduler, lr_factor
from .reporting import completion_metrics, reward_metrics

__all__ = ["Trainer", "train", "Engine", "TrainResult", "build_optimizer", "build_scheduler", "lr_factor"]

log = logging.getLogger("remask.engine")


class Trainer(Engine):
    """RL post-training: the loop of DESIGN.md for any registered algorithm."""

    command = "train"

    def _start(self) -> None:
        cfg: PipelineConfig = self.config
        t = self.train_cfg
        self.pipeline = self._pipeline or build_pipeline(cfg, self.registry)
        p = self.pipeline
        self.objective = p.objective
        self._check_layout(bool(getattr(p.objective, "requires_whole_groups", False)))
        p.objective.setup(policy=p.model, reference=None)  # before the optimizer collects its modules
        self.extra_modules = dict(p.objective.extra_modules())
        self._setup_common(p.model, p.task, lambda: list(p.objective.extra_param_groups())
                           if self.extra_modules else [])
        for m in self.extra_modules.values():
            m.to(self.device)
        if self.reference is not None:  # made by _before_sharding
            if t.ref_update_every and self.reference.uses_disabled_adapter:
                raise ConfigError([f"{cfg.source or '<config>'}: train.ref_update_every: with LoRA the reference "
                                   "is the base model with the adapter disabled and cannot move; drop the setting "
                                   "or train without LoRA"])
        self.scorer = RewardScorer(p.rewards)
        self.store = None
        if t.offline_rollouts:
            from ..rollout_store import RolloutStore

            self.store = RolloutStore(t.offline_rollouts)
            if len(self.store) == 0:
                raise RemaskError(f"train.offline_rollouts: no rollout shards in {t.offline_rollouts} "
                                  "(write some with `remask rollouts CONFIG --out DIR`)")
        self.ctx = StepContext(policy=self.model, reference=self.reference, generator=self.rng.likelihood,
                               score=self.scorer, global_step=0, inner_steps=t.inner_steps, group_size=t.group_size)
        self._resume_if_asked()
        self.data_filter_metrics: dict[str, float] = {}
        if p.data_filter is not None:
            if self.store is not None:
                raise ConfigError([f"{cfg.source or '<config>'}: data_filter: offline rollouts fix the prompts; "
                                   "drop data_filter or train.offline_rollouts"])
            self.data.before_epoch = lambda epoch: self._refresh_data()
            if self.data.subset is None:  # not restored from a checkpoint
                self._refresh_data()
        elif self.data.subset is not None:  # resumed from a filtered run without its data_filter
            log.warning("the checkpoint's data position holds %d rows kept by a data filter that this config no "
                        "longer has; training on all %d rows", self.data.size, len(self.examples))
            self.data.restrict(range(len(self.examples)))
        self._start_reporting({"objective": cfg.objective.name, "lora": self.lora,
                               "reference": None if self.reference is None else
                               ("adapter disabled" if self.reference.uses_disabled_adapter else "frozen copy")})

    def _before_sharding(self) -> None:
        """The reference policy: with LoRA the policy's own (later sharded) module with the adapter
        disabled; without, a frozen copy of the unsharded policy, sharded like it under FSDP."""
        self.reference: ReferenceModel | None = None
        if self.fsdp and self.extra_modules:
            raise ConfigError([f"{self.config.source or '<config>'}: FSDP: objective {self.objective.name!r} trains "
                               f"extra modules ({', '.join(sorted(self.extra_modules))}), which sharded "
                               "checkpoints do not hold yet; train it with data parallel or DeepSpeed"])
        if getattr(self.objective, "uses_reference", True):
            self.reference = make_reference(self.model, lora=adapter_active(self.model))
            if self.fsdp and not self.reference.uses_disabled_adapter:
                self._fully_shard(self.reference.base)

    # checkpoint hooks
    def _objective_state(self) -> dict[str, Any]:
        return {"state": self.objective.state_dict(),
                "extra_modules": {k: m.state_dict() for k, m in self.extra_modules.items()}}

    def _load_objective_state(self, state: dict[str, Any]) -> None:
        self.objective.load_state_dict(state.get("state", {}))
        for k, sd in state.get("extra_modules", {}).items():
            if k not in self.extra_modules:
                raise RemaskError(f"checkpoint holds objective module {k!r} that {self.objective.name!r} does not have")
            self.extra_modules[k].load_state_dict(sd)

    def _extra_checkpoint(self, tmp: Path) -> None:
        if self.reference is not None and not self.reference.uses_disabled_adapter and self.train_cfg.ref_update_every:
            ckpt.save_module_state(self.reference.base.module, tmp / "reference.safetensors")

    def _load_extra_checkpoint(self, path: Path) -> None:
        ref_file = path / "reference.safetensors"
        if ref_file.is_file() and self.reference is not None and not self.reference.uses_disabled_adapter:
            ckpt.load_module_state(self.reference.base.module, ref_file)

    def _refresh_data(self) -> None:
        """Ask the pipeline's data filter which training examples to draw prompts from (every
        process decodes all of them; the kept rows are checkpointed with the data position)."""
        f = self.pipeline.data_filter
        t = self.train_cfg
        self.model.module.eval()
        nfe0 = self.model.nfe
        context = DataFilterContext(
            policy=self.model, score=self.scorer, global_step=self.global_step, epoch=self.data.epoch,
            prompt_batch=lambda examples: build_prompt_batch(self.model, examples, group_size=1, device=self.device),
            generator=torch.Generator().manual_seed(stream_seed(t.seed, "data_filter", self.global_step)))
        with self.timer("data_filter"), torch.no_grad(), self.accelerator.autocast(), \
                lockstep.region(self.model, f"data_filter {f.name!r}", drain=True):
            keep = torch.as_tensor(f.select(examples=self.examples, context=context)).reshape(-1).bool().cpu()
        if keep.numel() != len(self.examples):
            raise RemaskError(f"data_filter {f.name!r} returned {keep.numel()} flags for {len(self.examples)} "
                              "training examples")
        rows = keep.nonzero().flatten().tolist()
        if not rows:
            raise RemaskError(f"data_filter {f.name!r} kept none of the {len(self.examples)} training examples; "
                              "relax it or give it a fallback")
        self.data.restrict(rows)
        nfe = self.model.nfe - nfe0
        self.forward_passes_done += nfe  # counts toward train.max_forward_passes
        self.data_filter_metrics = {"data/kept": float(len(rows)), "data/candidates": float(len(self.examples)),
                                    "data/filter_forward_passes": float(nfe)}
        if self.is_main:
            log.info("data_filter %s at step %d: training on %d of %d examples (%d forward passes)",
                     f.name, self.global_step, len(rows), len(self.examples), nfe)

    # one rollout and its μ updates
    def _next_prompts(self):
        t = self.train_cfg
        per = t.prompts_per_step // self.world
        every = int(getattr(getattr(self.pipeline.data_filter, "config", None), "refresh_every_rollouts", 0) or 0)
        if every and self.rollouts_done and self.rollouts_done % every == 0 and self.store is None:
            self._refresh_data()
        if self.store is not None:
            shards = self.store.shards()
            rollout, stored = self.store.read(shards[self.rollouts_done % len(shards)], device=self.device)
            g = rollout.prompts.group_size
            rows = rollout.batch_size // self.world
            if rows % g:
                raise RemaskError(f"offline rollouts: {rollout.batch_size} rows of groups of {g} cannot be split "
                                  f"over {self.world} processes")
            mine = torch.arange(self.rank * rows, (self.rank + 1) * rows)
            return take(rollout, mine), (take(stored, mine) if stored is not None else None)
        idx = self.data.take(t.prompts_per_step)[self.rank * per:(self.rank + 1) * per]
        first = self.rollouts_done * t.prompts_per_step + self.rank * per
        return build_prompt_batch(self.model, [self.examples[i] for i in idx], group_size=t.group_size,
                                  first_group_id=first, device=self.device), None

    def _gather_cat(self, x: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return x
        return self.accelerator.gather(x.contiguous())

    def _one_round(self, progress: Any) -> dict[str, float]:
        t = self.train_cfg
        p = self.pipeline
        acc = self.accelerator
        with self.timer("sample"):
            batch, stored_rewards = self._next_prompts()
            if self.store is None:
                self.model.module.eval()
                nfe0 = self.model.nfe
                with torch.no_grad(), acc.autocast(), lockstep.region(self.model, "sampling", drain=True):
                    rollout = p.sampler.sample(self.model, batch, self.rng.sampling)
                sample_nfe = self.model.nfe - nfe0
            else:
                rollout, sample_nfe = batch, 0
        with self.timer("reward"):
            rewards = stored_rewards if stored_rewards is not None else self.scorer(rollout.prompts, rollout.texts)
        reward_errors = self.scorer.pop_errors()
        self.registry.after_rollout(rollout=rollout, rewards=rewards, step=self.global_step)
        self.ctx.global_step = self.global_step
        with self.timer("advantage"):
            selection = p.step_selector.select(rollout, self.rng.selector) if p.step_selector else None
            advantages = p.advantage.estimate(rollout=rollout, rewards=rewards, selection=selection, context=self.ctx)
        if advantages.shape[0] != rollout.batch_size:
            raise RemaskError(f"advantage {p.advantage.name!r} returned {advantages.shape[0]} rows for "
                              f"{rollout.batch_size}")

        # micro-batches of contiguous rows
        b = rollout.batch_size
        mb = t.micro_batch_size or b
        chunks = [torch.arange(lo, min(lo + mb, b)) for lo in range(0, b, mb)]
        self._train_mode()
        nfe_before = self.model.nfe + (self.reference.nfe if self.reference is not None else 0)
        with self.timer("prepare"), lockstep.region(self.model, f"objective {p.objective.name!r} prepare", drain=False):
            states = []
            for rows in chunks:
                with torch.no_grad(), acc.autocast():
                    states.append(p.objective.prepare(
                        rollout=take(rollout, rows), advantages=advantages[rows.to(advantages.device)],
                        selection=take(selection, rows) if selection is not None else None, context=self.ctx))

        loss_values: list[float] = []
        grad_norms: list[float] = []
        obj_metrics: dict[str, list[float]] = defaultdict(list)
        loss_forwards = 0
        updates = min(t.inner_steps, t.max_steps - self.global_step)
        lr_used = float("nan")
        for inner in range(updates):
            self.ctx.global_step = self.global_step
            skip = False
            step_loss = 0.0
            with self.timer("loss"), lockstep.region(self.model, f"objective {p.objective.name!r} loss", drain=False):
                for state in states:
                    with acc.autocast():
                        out = p.objective.loss(state, inner_step=inner, context=self.ctx)
                    loss_forwards += int(out.forward_passes)
                    for k, v in out.metrics.items():
                        obj_metrics[k].append(float(v))
                    if lockstep.any_process(self.model, not bool(torch.isfinite(out.loss.detach()).all())):
                        skip = True
                        break
                    acc.backward(out.loss / len(states))
                    step_loss += float(out.loss.detach()) / len(states)
            lr_used = float(self.optimizer.param_groups[0]["lr"])
            grad_norm, skipped = self._optimizer_step(skip)
            if not skipped:
                loss_values.append(step_loss)
                grad_norms.append(grad_norm)
            self.global_step += 1
            progress.update(1)
            if t.ref_update_every and self.reference is not None and self.global_step % t.ref_update_every == 0:
                sync_reference(self.reference, self.model, alpha=t.ref_mix_alpha)
        self.rollouts_done += 1
        objective_nfe = self.model.nfe + (self.reference.nfe if self.reference is not None else 0) - nfe_before

        # metrics over all processes
        total = self._gather_cat(rewards.total.to(self.device).float())
        groups = self._gather_cat(rollout.prompts.group_ids.to(self.device))
        comps = {k: self._gather_cat(v.to(self.device).float()) for k, v in rewards.components.items()}
        lengths = self._gather_cat(rollout.lengths.to(self.device))
        last = rollout.completion_ids.gather(1, (rollout.lengths.clamp_min(1) - 1).unsqueeze(1)).squeeze(1)
        terminated = self._gather_cat((last == self.model.eos_token_id) & (rollout.lengths > 0))
        tokens = rollout.prompts.attention_mask.sum() + rollout.lengths.sum()
        self.num_tokens_seen += int(self._gather_cat(tokens.reshape(1).to(self.device)).sum())
        metrics: dict[str, float] = {}
        metrics.update({f"train/{k}": v for k, v in reward_metrics(total, comps, groups).items()})
        metrics.update({f"train/{k}": v for k, v in completion_metrics(lengths, terminated.bool()).items()})
        local = {
            "train/loss": sum(loss_values) / len(loss_values) if loss_values else float("nan"),
            "train/grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else float("nan"),
            "diffusion/nfe": float(sample_nfe),
            "diffusion/forward_passes": float(objective_nfe),
            "diffusion/loss_forward_passes": float(loss_forwards),
            "diffusion/steps": float(rollout.num_steps),
            "diffusion/block_length": float(rollout.block_length),
            "train/advantage_mean": float(advantages.float().mean()),
            **{f"train/{k}": sum(v) / len(v) for k, v in sorted(obj_metrics.items())},
        }
        if rollout.step_entropy is not None:  # the sampler's per-step entropy of the policy (TRL: `entropy`)
            ent = rollout.step_entropy.float()
            ent = ent[torch.isfinite(ent)]
            local["train/entropy"] = float(ent.mean()) if ent.numel() else float("nan")
        metrics.update(self._mean_over_processes(local))
        metrics["train/num_tokens"] = float(self.num_tokens_seen)
        metrics.update(self._per_rank_seconds({"rollout": self.timer.last.get("sample", 0.0),
                                               "reward": self.timer.last.get("reward", 0.0)}))
        metrics["train/learning_rate"] = lr_used
        metrics["train/epoch"] = self.data.position
        metrics.update(self.data_filter_metrics)
        self.data_filter_metrics.pop("data/filter_forward_passes", None)  # reported in the round it happened
        metrics["train/skipped_steps"] = float(self.skipped_steps)
        metrics["train/reward_errors"] = float(len(reward_errors))
        progress.set_postfix(reward=f"{metrics['train/reward']:.3f}", loss=f"{metrics['train/loss']:.4f}")
        if crossed(self.global_step - updates, self.global_step, t.logging_steps) or self.global_step >= t.max_steps:
            self._log_completions(rollout, rewards, advantages)
        return metrics

    def _log_completions(self, rollout: Any, rewards: Any, advantages: torch.Tensor) -> None:
        adv = advantages.float()
        adv = adv.mean(-1) if adv.dim() > 1 else adv
        rows = []
        for i in range(rollout.batch_size):
            row = {"step": self.global_step, "group": int(rollout.prompts.group_ids[i]),
                   "prompt": rollout.prompts.texts[i], "completion": rollout.texts[i],
                   "reward": float(rewards.total[i]), "advantage": float(adv[i]),
                   "length": int(rollout.lengths[i])}
            for name, vals in rewards.components.items():
                row[f"reward/{name}"] = float(vals[i])
                row[f"reason/{name}"] = rewards.reasons.get(name, ("",) * rollout.batch_size)[i]
            rows.append(row)
        if self.world > 1:
            from accelerate.utils import gather_object

            rows = list(gather_object(rows))
        self.reporter.completions(self.global_step, rows)


def train(config: PipelineConfig, *, resume: str | None = None, registry: Registry | None = None,
          pipeline: Pipeline | None = None, accelerator: Any = None) -> TrainResult:
    """Run RL training for ``config``; returns the final metrics (see :class:`Trainer`)."""
    return Trainer(config, resume=resume, registry=registry, pipeline=pipeline, accelerator=accelerator).run()
