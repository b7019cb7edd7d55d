"""Frozen records exchanged between pipeline stages.

Dimension names used in every shape comment of remask:

    B  rows = prompts x group size G (the G rows of one prompt are adjacent)
    P  prompt length (left-padded)
    L  completion length (generation length)
    T  sampler steps (the largest step count of any row)
    K  selected steps per row
    V  vocabulary size

A record holds tensors and plain Python values only; stages never mutate one, they build a new one
(``dataclasses.replace``). ``take(rows)`` selects rows of any record, which is how the engine cuts a
batch into micro-batches without knowing what an algorithm stores.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "PromptBatch",
    "Rollout",
    "Rewards",
    "StepSelection",
    "LossOutput",
    "Example",
    "take",
    "rows_of_groups",
]


def _take_value(value: Any, rows: Tensor, batch_size: int) -> Any:
    """Select ``rows`` from one field value if it is per-row; leave it alone otherwise."""
    if isinstance(value, Tensor):
        if value.dim() >= 1 and value.shape[0] == batch_size:
            return value.index_select(0, rows.to(value.device))
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return take(value, rows)
    if isinstance(value, tuple) and len(value) == batch_size:
        idx = rows.tolist()
        return tuple(value[i] for i in idx)
    if isinstance(value, Mapping):
        return {k: _take_value(v, rows, batch_size) for k, v in value.items()}
    return value


def take(record: Any, rows: Tensor | Sequence[int]) -> Any:
    """Return a copy of ``record`` restricted to ``rows`` (every per-row field, recursively).

    A field is per-row when it is a tensor whose first dimension is the record's batch size, a tuple
    of that length, a nested record, or a mapping of such values.
    """
    rows_t = torch.as_tensor(rows, dtype=torch.long)
    batch_size = record.batch_size
    changes = {
        f.name: _take_value(getattr(record, f.name), rows_t, batch_size)
        for f in dataclasses.fields(record)
    }
    return dataclasses.replace(record, **changes)


def rows_of_groups(group_ids: Tensor, groups: Sequence[int]) -> Tensor:
    """Indices of the rows whose group id is in ``groups``, in row order. # [n]"""
    wanted = torch.as_tensor(list(groups), dtype=group_ids.dtype)
    return torch.nonzero(torch.isin(group_ids, wanted), as_tuple=False).flatten()


@dataclass(frozen=True)
class Example:
    """One row of a :class:`~remask.interfaces.Task`: a prompt and what it is judged against.

    ``prompt`` is either plain text or a list of chat messages (``{"role", "content"}``); the model
    adapter renders it (chat template where the tokenizer has one). ``prefill`` is appended after
    the rendered prompt (d1 pre-fills ``"<reasoning>"``). ``reference`` carries the per-row ground
    truth a reward or eval parser needs: a gold answer, unit tests, a puzzle and its solution.
    """

    prompt: str | tuple[Mapping[str, str], ...]
    reference: Mapping[str, Any]
    prefill: str = ""
    id: str = ""


@dataclass(frozen=True)
class PromptBatch:
    """B prompt rows, already repeated G times per prompt (rows of one group adjacent)."""

    prompt_ids: Tensor  # [B, P] long, left-padded with the pad id
    attention_mask: Tensor  # [B, P] bool, True on real prompt tokens
    group_ids: Tensor  # [B] long, equal for the G rows of one prompt
    texts: tuple[str, ...]  # [B] rendered prompt text (what was tokenised)
    references: tuple[Mapping[str, Any], ...]  # [B] per-row references (gold answer, tests, ...)
    example_ids: tuple[str, ...] = ()  # [B] stable ids of the task rows, when the task has them

    @property
    def batch_size(self) -> int:
        return int(self.prompt_ids.shape[0])

    @property
    def prompt_length(self) -> int:
        return int(self.prompt_ids.shape[1])

    @property
    def group_size(self) -> int:
        """G, checked to be the same for every group."""
        _, counts = torch.unique_consecutive(self.group_ids, return_counts=True)
        if counts.numel() == 0:
            return 0
        if not bool((counts == counts[0]).all()):
            raise ValueError(f"groups of unequal size in a PromptBatch: {counts.tolist()}")
        return int(counts[0])

    def __post_init__(self) -> None:
        b = self.prompt_ids.shape[0]
        if self.attention_mask.shape != self.prompt_ids.shape:
            raise ValueError("PromptBatch.attention_mask must have the shape of prompt_ids [B, P]")
        if self.group_ids.shape != (b,):
            raise ValueError(f"PromptBatch.group_ids must be [B]={b}, got {tuple(self.group_ids.shape)}")
        if len(self.texts) != b or len(self.references) != b:
            raise ValueError("PromptBatch.texts and references need one entry per row")


@dataclass(frozen=True)
class Rollout:
    """What a :class:`~remask.interfaces.Sampler` produced for a :class:`PromptBatch`.

    ``unmask_step[b, i]`` is the sampler step (0..T-1, counted as the loop runs) at which completion
    position ``i`` of row ``b`` was committed; a negative value means "not recorded" (offline data
    holding only final completions: algorithms that need trajectories then reconstruct or refuse). The state *before* step ``k`` is rebuilt with
    :func:`remask.trajectory.state_before_step`; no sampler stores whole trajectories.
    """

    prompts: PromptBatch
    completion_ids: Tensor  # [B, L] long
    completion_mask: Tensor  # [B, L] bool, through the first EOS inclusive
    unmask_step: Tensor  # [B, L] long, step at which each position was committed
    block_length: int  # positions per semi-autoregressive block (L for global decoding)
    num_steps: int  # T, the largest number of steps any row took
    texts: tuple[str, ...]  # [B] decoded completions (special tokens skipped, cut at EOS)
    nfe: int  # model forward passes the sampler spent on this batch
    step_logps: Tensor | None = None  # [B, T] Σ log p(token) at T=1 over tokens committed at the step
    step_entropy: Tensor | None = None  # [B, T] mean entropy (T=1) over positions committed at the step
    step_all_eos: Tensor | None = None  # [B, T] bool, every token committed at the step was EOS
    greedy_ids: Tensor | None = None  # [B, T, L] long, one-step greedy fill of x_k (optional)
    step_pred_ids: Tensor | None = None  # [B, T, L] int32, one-step SAMPLED fill x̂0_k of x_k (MDPO; optional)
    step_confidence: Tensor | None = None  # [B, T, L] float32, per-position weight recorded at step k (MDPO; optional)
    step_state_ids: Tensor | None = None  # [B, T, L] int32, the state x_k itself, when it cannot be rebuilt from unmask_step (RCR; optional)
    sampler: Mapping[str, Any] = field(default_factory=dict)  # sampler name and settings, for manifests

    @property
    def batch_size(self) -> int:
        return int(self.completion_ids.shape[0])

    @property
    def gen_length(self) -> int:
        return int(self.completion_ids.shape[1])

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.gen_length / self.block_length)

    @property
    def lengths(self) -> Tensor:
        """Completion lengths through the first EOS. # [B] long"""
        return self.completion_mask.long().sum(-1)

    def __post_init__(self) -> None:
        b, l = self.completion_ids.shape
        if b != self.prompts.batch_size:
            raise ValueError(f"Rollout has {b} rows but its PromptBatch has {self.prompts.batch_size}")
        for name in ("completion_mask", "unmask_step"):
            if tuple(getattr(self, name).shape) != (b, l):
                raise ValueError(f"Rollout.{name} must be [B, L]=[{b}, {l}]")
        if self.block_length <= 0:
            raise ValueError("Rollout.block_length must be positive")
        if len(self.texts) != b:
            raise ValueError("Rollout.texts needs one entry per row")


@dataclass(frozen=True)
class Rewards:
    """Per-row rewards: the weighted total and every named component with its reasons.

    NaN means "cannot judge" (for example a verifier that timed out on infrastructure, not on the
    model's output); totals treat NaN components as 0, the way d1's weighted ``nansum`` does.
    """

    total: Tensor  # [B] float32
    components: Mapping[str, Tensor]  # name -> [B] float32 (unweighted)
    reasons: Mapping[str, tuple[str, ...]]  # name -> [B] short machine-readable reason per row
    weights: Mapping[str, float] = field(default_factory=dict)  # name -> weight used in total

    @property
    def batch_size(self) -> int:
        return int(self.total.shape[0])

    @classmethod
    def from_scores(
        cls, name: str, values: Sequence[float | None], reasons: Sequence[str] | None = None
    ) -> Rewards:
        """Build the record of one reward model: ``None`` becomes NaN ("cannot judge")."""
        vals = torch.tensor(
            [float("nan") if v is None else float(v) for v in values], dtype=torch.float32
        )
        why = tuple(reasons) if reasons is not None else ("",) * len(values)
        if len(why) != len(values):
            raise ValueError(f"reward {name!r}: {len(values)} values but {len(why)} reasons")
        return cls(total=torch.nan_to_num(vals, nan=0.0), components={name: vals}, reasons={name: why},
                   weights={name: 1.0})

    @classmethod
    def combine(cls, parts: Sequence[tuple[Rewards, float]]) -> Rewards:
        """Weighted sum of several reward records (NaN components count as 0 in the total)."""
        if not parts:
            raise ValueError("Rewards.combine needs at least one reward")
        total = torch.zeros_like(parts[0][0].total)
        components: dict[str, Tensor] = {}
        reasons: dict[str, tuple[str, ...]] = {}
        weights: dict[str, float] = {}
        for rewards, weight in parts:
            for name, values in rewards.components.items():
                if name in components:
                    raise ValueError(f"reward name {name!r} appears twice; give each a distinct alias")
                components[name] = values
                reasons[name] = rewards.reasons.get(name, ("",) * len(values))
                w = weight * rewards.weights.get(name, 1.0)
                weights[name] = w
                total = total + w * torch.nan_to_num(values, nan=0.0)
        return cls(total=total, components=components, reasons=reasons, weights=weights)


@dataclass(frozen=True)
class StepSelection:
    """Which sampler steps of each row an objective trains on."""

    steps: Tensor  # [B, K] long, step indices k into 0..T-1
    valid: Tensor  # [B, K] bool, False where a row had fewer than K usable steps
    weights: Tensor | None = None  # [B, K] float, importance weights (None = 1)

    @property
    def batch_size(self) -> int:
        return int(self.steps.shape[0])

    @property
    def num_selected(self) -> int:
        return int(self.steps.shape[1])

    def __post_init__(self) -> None:
        if self.valid.shape != self.steps.shape:
            raise ValueError("StepSelection.valid must have the shape of steps [B, K]")
        if self.weights is not None and self.weights.shape != self.steps.shape:
            raise ValueError("StepSelection.weights must have the shape of steps [B, K]")


@dataclass(frozen=True)
class LossOutput:
    """What an objective returns for one inner update of one micro-batch."""

    loss: Tensor  # [] scalar to minimise, with grad
    metrics: Mapping[str, float] = field(default_factory=dict)  # logged as train/<name>
    forward_passes: int = 0  # model forward passes spent computing this loss (policy + reference)
