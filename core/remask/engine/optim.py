"""The optimizer and the learning-rate schedule of a run (``train.learning_rate``, ``train.lr_scheduler``)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..config import TrainConfig
from ..errors import ConfigError, RemaskError

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(train: TrainConfig, policy_params: list[torch.nn.Parameter],
                    extra_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """AdamW over the policy's trainable parameters plus the objective's own parameter groups."""
    groups: list[dict[str, Any]] = [{"params": policy_params, "name": "policy"}]
    for i, g in enumerate(extra_groups):
        params = [p for p in g.get("params", []) if p.requires_grad]
        if params:
            groups.append({**g, "params": params, "name": g.get("name", f"objective_{i}")})
    if not any(g["params"] for g in groups):
        raise RemaskError("nothing to train: the policy has no trainable parameters")
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=train.learning_rate, betas=tuple(train.adam_betas), eps=train.adam_eps,
                             weight_decay=train.weight_decay)


def lr_factor(name: str, step: int, warmup_steps: int, total_steps: int, min_lr_rate: float = 0.0) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based), as transformers'
    ``get_scheduler`` defines the schedules: linear warm-up over ``warmup_steps`` (except
    ``constant``), then constant, linear decay to 0, half a cosine to 0 at ``total_steps``, or
    (``cosine_with_min_lr``, transformers' ``get_cosine_with_min_lr_schedule_with_warmup``) half a
    cosine from 1 down to ``min_lr_rate``: ``r + (1 − r)·½(1 + cos(π·progress))``."""
    if name == "constant":
        return 1.0
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if name == "constant_with_warmup":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if name == "linear":
        return max(0.0, 1.0 - progress)
    if name == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if name == "cosine_with_min_lr":
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, min_lr_rate + (1.0 - min_lr_rate) * cosine)
    raise ConfigError([f"train.lr_scheduler: unknown schedule {name!r}"])


def build_scheduler(train: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """``train.lr_scheduler`` as a ``LambdaLR`` over ``total_steps`` optimizer steps."""
    name, warmup, total, floor = train.lr_scheduler, train.warmup_steps, max(total_steps, 1), train.min_lr_rate
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(name, step, warmup, total, floor))
