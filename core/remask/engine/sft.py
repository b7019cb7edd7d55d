"""Masked-diffusion supervised fine-tuning (``remask sft``): the "SFT" stage of d1 / LLaDA.

    remask sft examples/quickstart.yaml --save-to models/tiny-arith

For a prompt p and target completion r (``Example.reference["completion"]``, followed by EOS and
padded with EOS to the sampler's generation length), draw t ~ U(0, 1] per row, mask every
completion token independently with probability t (prompt tokens are never masked), and minimise
(LLaDA, Nie et al. 2025, eq. 5 — the SFT form of the ELBO)

    L(θ) = E_t [ 1/|r| · Σ_{i : r_t^i = M} (1/t) · −log p_θ(r_0^i | p, r_t) ]

averaged over the rows. As in LLaDA's reference code the masking ratio is ``(1 − ε)·t + ε`` with
ε = 1e-3 so that 1/t stays bounded. It runs on the same engine as RL training: LoRA, accelerate,
checkpoints and ``--resume``, TensorBoard, the progress bar, held-out evaluation, and an optional
accuracy target (``train.stop_at_accuracy``).

The config is the pipeline YAML of ``remask train``: ``model``, ``task``, ``train`` and ``eval``
are used; ``sampler`` is used for evaluation and for the padded completion length; other sections
may be present (so one file serves both stages) and are validated when they are.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from ..config import (
    ComponentSpec,
    EvalConfig,
    TrainConfig,
    _parse_component,
    _validation_lines,
    apply_overrides,
    parse_config,
    read_yaml,
    unknown_sections,
)
from ..errors import ConfigError, RemaskError
from ..functional import gather_logprobs
from ..records import Example
from ..registry import Registry, get_registry
from .data import build_prompt_batch, encode_text
from .trainer import Engine, TrainResult

__all__ = ["SftConfig", "load_sft_config", "parse_sft_config", "masked_diffusion_sft_loss", "SftTrainer", "sft",
           "MASK_EPS"]

#: lower bound of the masking ratio (LLaDA's ``eps``)
MASK_EPS = 1e-3


class SftConfig(BaseModel):
    """The sections of a pipeline config that masked-diffusion SFT uses."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    model: ComponentSpec
    task: ComponentSpec
    sampler: ComponentSpec | None = None
    train: TrainConfig
    eval: EvalConfig
    source: str = ""

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model.dump(), "task": self.task.dump()}
        if self.sampler is not None:
            out["sampler"] = self.sampler.dump()
        out["train"] = self.train.model_dump(mode="json")
        out["eval"] = self.eval.model_dump(mode="json")
        return out


def parse_sft_config(raw: Any, *, source: str = "<config>", registry: Registry | None = None) -> SftConfig:
    """Validate the SFT sections; a full pipeline config is validated as a whole."""
    reg = registry or get_registry()
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{source}: the config must be a mapping of sections"])
    if unknown_sections(raw):  # a misspelled section (`trian:`) must not train with defaults
        raise ConfigError([f"{source}: {p}" for p in unknown_sections(raw)])
    full = all(raw.get(k) is not None for k in ("sampler", "rewards", "advantage", "objective"))
    if full:
        cfg = parse_config(raw, source=source, registry=reg)
        problems = _stop_split_problems(cfg.task, cfg.train, cfg.eval, reg)
        if problems:
            raise ConfigError([f"{source}: {p}" for p in problems])
        return SftConfig(model=cfg.model, task=cfg.task, sampler=cfg.sampler, train=cfg.train, eval=cfg.eval,
                         source=source)
    problems: list[str] = []
    built: dict[str, Any] = {}
    for section in ("model", "task", "sampler"):
        if raw.get(section) is None:
            if section != "sampler":
                problems.append(f"{section}: required section is missing")
            continue
        built[section] = _parse_component(section, raw[section], reg, problems, [section])
    for section, model in (("train", TrainConfig), ("eval", EvalConfig)):
        try:
            built[section] = model.model_validate(raw.get(section) or {})
        except ValidationError as exc:
            problems.extend(_validation_lines(exc, [section], model))
    if not problems:
        problems = _stop_split_problems(built["task"], built["train"], built["eval"], reg)
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return SftConfig(source=source, **built)


def _stop_split_problems(task: ComponentSpec, train: TrainConfig, evaluation: EvalConfig, reg: Registry) -> list[str]:
    """SFT that stops on accuracy must not select its stopping point on the reported test split
    when the task has a validation split."""
    splits = getattr(reg.get("task", task.name), "splits", ())
    if train.stop_at_accuracy is not None and evaluation.split == "test" and "validation" in splits:
        return [f"eval.split: 'test' is the reported split, so train.stop_at_accuracy must not stop on it; "
                f"task {task.name!r} has a 'validation' split: set eval.split: validation"]
    return []


def load_sft_config(path: str | Path, overrides: Mapping[str, Any] | None = None, *,
                    registry: Registry | None = None) -> SftConfig:
    raw = read_yaml(path)
    if raw is None:
        raise ConfigError([f"{path}: the file is empty"])
    raw = copy.deepcopy(raw)
    if overrides:
        apply_overrides(raw, dict(overrides))
    return parse_sft_config(raw, source=str(path), registry=registry)


def masked_diffusion_sft_loss(
    token_logps: torch.Tensor,  # [B, L] log p_θ(r_0^i | p, r_t) at every completion position
    masked: torch.Tensor,  # [B, L] bool, position i was masked in r_t
    mask_ratio: torch.Tensor,  # [B] t (the masking probability of the row)
    completion_mask: torch.Tensor,  # [B, L] bool, positions that belong to the target (answer + EOS padding)
) -> torch.Tensor:
    """LLaDA SFT loss (eq. 5): ``mean_b  Σ_i [masked]·(−ℓ_i)/t_b  /  |r_b|``. Returns a scalar."""
    weight = (masked & completion_mask).float() / mask_ratio.unsqueeze(1)  # [B, L]
    per_row = -(token_logps * weight).sum(-1) / completion_mask.float().sum(-1).clamp_min(1.0)  # [B]
    return per_row.mean()


class SftTrainer(Engine):
    """``remask sft``: masked-diffusion SFT on ``reference["completion"]`` of the task's train rows."""

    command = "sft"

    def _start(self) -> None:
        cfg: SftConfig = self.config
        reg = self.registry
        if self._pipeline is not None:
            model, task = self._pipeline.model, self._pipeline.task
        else:
            model = cfg.model.build(reg, "model")
            task = cfg.task.build(reg, "task")
        self._check_layout(False)
        self._setup_common(model, task, lambda: [])
        missing = [ex.id or str(i) for i, ex in enumerate(self.examples) if "completion" not in ex.reference]
        if missing:
            raise RemaskError(f"task {cfg.task.name!r}: {len(missing)} train rows have no reference['completion'] "
                              f"(e.g. row {missing[0]!r}); `remask sft` needs a target completion per row")
        self.completion_length = getattr(cfg.sampler.params, "gen_length", None) if cfg.sampler else None
        self._resume_if_asked()
        self._start_reporting({"completion_length": self.completion_length, "lora": self.lora})

    def _targets(self, examples: list[Example], group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Target ids ``[B, L]`` (answer, EOS, EOS padding) and the target mask ``[B, L]``."""
        tok = self.model.tokenizer
        eos = self.model.eos_token_id
        ids = [encode_text(tok, str(ex.reference["completion"])) + [eos] for ex in examples]
        width = max(len(x) for x in ids)
        if self.completion_length:
            width = max(width, int(self.completion_length))
        out = torch.full((len(ids) * group_size, width), eos, dtype=torch.long)
        for j, x in enumerate(ids):
            out[j * group_size:(j + 1) * group_size, :len(x)] = torch.tensor(x, dtype=torch.long)
        return out.to(self.device), torch.ones_like(out, dtype=torch.bool, device=self.device)

    def _one_round(self, progress: Any) -> dict[str, float]:
        t = self.train_cfg
        acc = self.accelerator
        per = t.prompts_per_step // self.world
        idx = self.data.take(t.prompts_per_step)[self.rank * per:(self.rank + 1) * per]
        examples = [self.examples[i] for i in idx]
        with self.timer("batch"):
            prompts = build_prompt_batch(self.model, examples, group_size=t.group_size, device=self.device)
            targets, target_mask = self._targets(examples, t.group_size)  # [B, L]
            b, length = targets.shape
            g = self.rng.likelihood
            ratio = (1.0 - torch.rand(b, generator=g, device=g.device)).to(self.device)  # t ~ U(0, 1]
            ratio = (1.0 - MASK_EPS) * ratio + MASK_EPS
            masked = torch.rand(b, length, generator=g, device=g.device).to(self.device) < ratio.unsqueeze(1)  # [B, L]
            noisy = torch.where(masked, torch.full_like(targets, self.model.mask_token_id), targets)
        self._train_mode()
        mb = t.micro_batch_size or b
        chunks = [torch.arange(lo, min(lo + mb, b), device=self.device) for lo in range(0, b, mb)]
        skip = False
        total = 0.0
        with self.timer("loss"):
            for rows in chunks:
                ids = torch.cat([prompts.prompt_ids[rows], noisy[rows]], 1)  # [b, P+L]
                attn = torch.cat([prompts.attention_mask[rows], torch.ones_like(noisy[rows], dtype=torch.bool)], 1)
                with acc.autocast():
                    logits = self.model.logits(ids, attn, keep=slice(prompts.prompt_length, None))  # [b, L, V]
                    logps = gather_logprobs(logits, targets[rows])  # [b, L]
                    loss = masked_diffusion_sft_loss(logps, masked[rows], ratio[rows], target_mask[rows])
                if not torch.isfinite(loss.detach()):
                    skip = True
                    break
                acc.backward(loss / len(chunks))
                total += float(loss.detach()) / len(chunks)
        lr = float(self.optimizer.param_groups[0]["lr"])
        grad_norm, skipped = self._optimizer_step(skip)
        self.global_step += 1
        self.rollouts_done += 1
        progress.update(1)
        local = {"train/loss": total if not skipped else float("nan"), "train/grad_norm": grad_norm,
                 "train/mask_ratio": float(ratio.mean()), "train/masked_tokens": float(masked.sum())}
        metrics = self._mean_over_processes(local)
        metrics.update({"train/learning_rate": lr, "train/epoch": self.data.epoch + self.data.offset / self.data.n,
                        "train/skipped_steps": float(self.skipped_steps)})
        progress.set_postfix(loss=f"{metrics['train/loss']:.4f}")
        return metrics


def sft(config: SftConfig, *, resume: str | None = None, registry: Registry | None = None,
        pipeline: Any = None, accelerator: Any = None) -> TrainResult:
    """Run masked-diffusion SFT for ``config`` (see the module docstring)."""
    return SftTrainer(config, resume=resume, registry=registry, pipeline=pipeline, accelerator=accelerator).run()
