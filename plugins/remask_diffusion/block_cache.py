"""Logits of the current block under a KV-cache policy: ``none``, ``prefix`` or ``dual``.

Fast-dLLM (arXiv 2505.22618, §3.2) caches keys/values across the steps of a block:

* ``prefix`` (PrefixCache): at each block start one full pass keeps the keys/values of every
  position before the block; later steps of the block feed ``x[block_start:]`` (block and masked
  suffix) against that cache.
* ``dual`` (DualCache): the block-start pass keeps the keys/values of the prompt, the finished blocks
  **and** the still-masked suffix; later steps feed only the block's ``block_length`` tokens. Here
  the whole block-start cache is kept in place and the block's own stale entries are hidden by the
  attention mask; each step's fresh block keys/values are appended and cropped off again, so the
  cache never grows.

Both caches are approximate by design: the cached keys/values are not refreshed while the block
changes. The first step of every block is an ordinary full pass, so it is exact. Everything goes
through :meth:`remask.DiffusionModel.forward` (explicit position ids and a 4-D boolean mask), so any
adapter whose ``supports_kv_cache`` is true gets both policies.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from remask import DiffusionModel
from remask.modeling import crop_cache, padding_position_ids

__all__ = ["CachePolicy", "BlockForward"]

CachePolicy = Literal["none", "prefix", "dual"]


class BlockForward:
    """One forward pass per sampler step, returning the logits of the current block.

    ``x`` ``[B, S]`` is the whole sequence, ``attn`` ``[B, S]`` its padding mask. Call
    :meth:`start_block` when a block begins; :meth:`__call__` then returns the block's ``[B, hi − lo, V]``
    logits, on every pass and under every policy: the output layer runs on the block only
    (``DiffusionModel.logits(keep=)``; at a 126k vocabulary it is most of a narrow model's pass). With
    ``keep_suffix`` (a sampler recording greedy completions of the whole remaining sequence) full and
    prefix-cached passes return ``[B, S − lo, V]`` (block and suffix); a dual-cached pass after the
    block's first step has only the block. Adds one to ``model.nfe`` per call.
    """

    def __init__(self, model: DiffusionModel, attn: Tensor, policy: CachePolicy, *, keep_suffix: bool = False) -> None:
        if policy != "none" and not model.supports_kv_cache:
            policy = "none"  # e.g. Dream: its logit shift needs the prefix's last position
        self.model, self.attn, self.policy, self.keep_suffix = model, attn, policy, keep_suffix
        b, s = attn.shape
        self.positions = padding_position_ids(attn, b, s, s, attn.device)  # [B, S]
        self.cache: Any = None
        self.lo = self.hi = 0

    def start_block(self, lo: int, hi: int) -> None:
        """The next call is the block's first step: a full pass that (re)builds the cache."""
        self.cache, self.lo, self.hi = None, lo, hi

    def __call__(self, x: Tensor) -> Tensor:
        lo, hi, s = self.lo, self.hi, x.shape[1]
        end = None if self.keep_suffix else hi
        if self.policy == "none":
            return self.model.logits(x, self.attn, keep=slice(lo, end))  # [B, hi − lo, V] ([B, S − lo, V])
        if self.cache is None:  # block start: full pass, keep what the policy caches
            out = self.model.forward_kept(x, self.attn, keep=slice(lo, end), use_cache=True)
            self.cache = out.past_key_values
            if self.policy == "prefix":
                crop_cache(self.cache, lo)
            return out.logits
        if self.policy == "prefix":
            out = self.model.forward_kept(x[:, lo:], self.attn, keep=slice(0, None if self.keep_suffix else hi - lo),
                                          past_key_values=self.cache, use_cache=True)
            crop_cache(self.cache, lo)
            return out.logits  # [B, hi − lo, V] ([B, S − lo, V])
        # dual: the block's queries attend to the cached prompt/finished blocks/suffix (without the
        # block's stale entries) and to the block's fresh keys, appended after the S cached ones
        keys = torch.cat([self.attn, self.attn[:, lo:hi]], dim=1).clone()  # [B, S + Bl]
        keys[:, lo:hi] = False
        mask4 = keys[:, None, None, :].expand(-1, 1, hi - lo, -1)  # [B, 1, Bl, S + Bl]
        out = self.model.forward(x[:, lo:hi], mask4, position_ids=self.positions[:, lo:hi],
                                 past_key_values=self.cache, use_cache=True)
        crop_cache(self.cache, s)
        return out.logits  # [B, Bl, V]
