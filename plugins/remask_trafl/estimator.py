"""TraFL's sequence-level surrogate D̂ as a registered likelihood-ratio estimator (for
``remask diagnose``): the mean over K complementary masks of the per-token average log-ratio."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.functional import full_sequence
from remask.likelihood import NoisyViews, view_logprobs

from .losses import mask_log_ratio, sequence_surrogate
from .masks import complementary_masks, completion_span

__all__ = ["TraflSurrogate"]


class TraflSurrogate(remask.LikelihoodEstimator):
    """TraFL's D̂(y): per-token average log-ratio on complementary masks (estimates the per-token ratio)."""

    name = "trafl-surrogate"
    scale = "per_token"

    class Config(remask.ComponentConfig):
        num_mask_pairs: int = Field(2, ge=1, description="Complementary pairs (K = 2 x pairs masks).")

    def log_ratio(self, *, policy, reference, rollout, generator) -> Tensor:
        device = policy.device
        span = completion_span(rollout.completion_mask, "eos").to(device)  # [B, L]
        masks = complementary_masks(span, self.config.num_mask_pairs, generator).to(device)  # [K, B, L]
        ids = rollout.completion_ids.to(device)
        seq, attn = full_sequence(rollout.prompts, ids)  # [B, P+L]
        seq, attn = seq.to(device), attn.to(device)
        p = rollout.prompts.prompt_length
        masked_inputs = seq.unsqueeze(0).repeat(masks.shape[0], 1, 1)  # [K, B, P+L]
        masked_inputs[:, :, p:] = torch.where(masks, torch.full_like(ids, policy.mask_token_id), ids)
        views = NoisyViews(input_ids=masked_inputs, token_weights=masks.float(), seed=-1)
        ratios = mask_log_ratio(view_logprobs(policy, views, attn, ids), view_logprobs(reference, views, attn, ids),
                                masks)  # [K, B]
        return sequence_surrogate(ratios).cpu()  # [B]
