"""MDPO's over-denoising data selection ``over-denoising`` (``incremental_training``; autonomousvision/mdpo
@ e6ae439, ``mdpo_trainer.py:1555-1603`` and ``1169-1205``, README l.51-56; spec zoo-mdpo-tracerl.md §1.7).

At every refresh (the engine calls it before the first rollout and at the start of every pass over the
kept prompts) each candidate prompt is decoded once with the ``mdpo`` sampler, greedily by default,
recording the one-step prediction ``x̂0_t`` of every step. With ``R_t`` the pipeline's weighted reward of
``x̂0_t`` (``R_{T−1}`` the final answer's) and ``c`` = ``correct_threshold``, a prompt is kept iff::

    ∃ t < T−1 : R_t ≥ c      and      R_{T−1} < c          (the model had it, then "over-denoised" it)

Prompts where nothing is correct, or whose final answer is correct, are dropped. Training then draws
prompts from the kept set only. ``mixture`` is the reference's ``mixture_data`` at selection time: each
prompt draws its (steps, block_length) from these pairs, which differ from the training sampler's in the
reference (trap M8; both are config fields here).
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

import remask
from remask.errors import RemaskError

from .advantage import score_step_predictions
from .sampler import MDPOSampler, check_decode_setting

__all__ = ["OverDenoisingFilter", "over_denoised"]

log = logging.getLogger("remask.mdpo")


def over_denoised(step_rewards: Tensor, threshold: float = 1.0) -> Tensor:
    """Rows with a correct intermediate ``x̂0_t`` (t < T−1) and a wrong final answer. ``[N, T] -> [N]`` bool"""
    correct = step_rewards >= threshold  # [N, T]
    return correct[:, :-1].any(-1) & ~correct[:, -1]


class OverDenoisingFilter(remask.DataFilter):
    """MDPO's data selection: train only on prompts whose greedy decode was right mid-way and wrong at the end."""

    name = "over-denoising"

    class Config(remask.ComponentConfig):
        gen_length: int = Field(256, ge=1, description="L of the selection decode (set it to the training sampler's).")
        steps: int = Field(128, ge=1, description="T of the selection decode (reference: the training steps).")
        block_length: int = Field(256, ge=1, description="Block length of the selection decode (unused with mixture).")
        mixture: list[tuple[int, int]] | None = Field(
            None, min_length=1, description="mixture_data at selection: each prompt draws its (steps, block_length) "
            "from these pairs (reference: [[steps, 32], [steps, 512]], unlike its training pairs, trap M8). None: "
            "steps and block_length for every prompt."
        )
        temperature: float = Field(
            0.0, ge=0, description="τ of the selection decode: 0 = greedy (reference; 0.1 for Dream)."
        )
        schedule: Literal["maskgit-linear", "maskgit-cosine", "llada"] = Field(
            "maskgit-linear", description="Tokens per step inside a block, as in the mdpo sampler."
        )
        correct_threshold: float = Field(
            1.0, description="A one-step prediction counts as correct when its weighted reward is at least this."
        )
        batch_size: int = Field(16, ge=1, description="Prompts decoded together.")
        max_candidates: int = Field(
            0, ge=0, description="Prompts decoded per refresh: 0 = the whole train split (reference), else a random "
            "subset of this size (the rest is not trained on until a later refresh picks it)."
        )
        min_kept: int = Field(
            1, ge=1, description="Fewer kept prompts than this triggers the fallback (the count is logged either way)."
        )
        fallback: Literal["all", "error"] = Field(
            "all", description="When fewer than min_kept prompts are kept: train on the whole train split until "
            "the next refresh ('all', logged as a warning), or stop with an error."
        )
        refresh_every_rollouts: int = Field(
            0, ge=0, description="Also select again every this many rollouts; 0 = only at the start of each pass over "
            "the kept prompts (the reference selects once per epoch)."
        )

        @model_validator(mode="after")
        def _settings_decode(self):
            for steps, block in self.mixture or [(self.steps, self.block_length)]:
                if steps < 1 or block < 1:
                    raise ValueError(f"(steps, block_length) = ({steps}, {block}) must both be positive")
                problem = check_decode_setting(self.gen_length, steps, block)
                if problem:
                    raise ValueError(problem if not self.mixture else f"mixture pair ({steps}, {block}): {problem}")
            return self

    def __init__(self, config: remask.ComponentConfig | None = None) -> None:
        super().__init__(config)
        self.last_counts: dict[str, int] = {}  # of the most recent select(), for logs and tests

    def _sampler(self, steps: int, block: int) -> MDPOSampler:
        c = self.config
        return MDPOSampler(MDPOSampler.Config(gen_length=c.gen_length, steps=steps, block_length=block,
                                              temperature=c.temperature, schedule=c.schedule))

    def step_rewards(self, examples, context: remask.DataFilterContext, steps: int, block: int) -> Tensor:
        """``R [N, T]`` of ``examples`` decoded with (steps, block): one-step predictions then the final answer."""
        sampler = self._sampler(steps, block)
        out = []
        for lo in range(0, len(examples), self.config.batch_size):
            prompts = context.prompt_batch(examples[lo:lo + self.config.batch_size])
            rollout = sampler.sample(context.policy, prompts, context.generator)
            final = context.score(prompts, rollout.texts).total.float().nan_to_num(0.0)  # [b]
            out.append(score_step_predictions(context.policy, prompts, rollout.step_pred_ids, final,
                                              context.score).cpu())  # [b, T]
        return torch.cat(out) if out else torch.zeros(0, steps)

    def select(self, *, examples, context: remask.DataFilterContext) -> Tensor:
        c = self.config
        n = len(examples)
        candidates = torch.arange(n)  # [N]
        if c.max_candidates and c.max_candidates < n:
            candidates = torch.randperm(n, generator=context.generator)[: c.max_candidates].sort().values
        pairs = c.mixture or [(c.steps, c.block_length)]
        choice = torch.randint(len(pairs), (candidates.numel(),), generator=context.generator) if c.mixture \
            else torch.zeros(candidates.numel(), dtype=torch.long)  # [N_c] pair of each candidate
        keep = torch.zeros(n, dtype=torch.bool)  # [N]
        some_correct = final_correct = 0
        for k, (steps, block) in enumerate(pairs):
            rows = candidates[choice == k]
            if rows.numel() == 0:
                continue
            r = self.step_rewards([examples[i] for i in rows.tolist()], context, steps, block)  # [n_k, T]
            keep[rows] = over_denoised(r, c.correct_threshold)
            some_correct += int((r >= c.correct_threshold).any(-1).sum())
            final_correct += int((r[:, -1] >= c.correct_threshold).sum())
        kept = int(keep.sum())
        self.last_counts = {"candidates": int(candidates.numel()), "kept": kept, "final_correct": final_correct,
                            "never_correct": int(candidates.numel()) - some_correct}
        log.info("over-denoising: %d of %d decoded prompts kept (final answer correct: %d, never correct: %d)",
                 kept, candidates.numel(), final_correct, self.last_counts["never_correct"])
        if kept < c.min_kept:
            if c.fallback == "error":
                raise RemaskError(f"data_filter over-denoising: kept {kept} of {candidates.numel()} prompts, fewer "
                                  f"than min_kept = {c.min_kept} (set fallback: all to train on every prompt)")
            log.warning("over-denoising: kept %d < min_kept = %d; training on all %d prompts until the next refresh",
                        kept, c.min_kept, n)
            self.last_counts["fallback"] = 1
            return torch.ones(n, dtype=torch.bool)
        return keep
