"""The mask sampler of TraFL's sequence-level surrogate: complementary pairs of masks.

Spec algorithms.md §3.5 ([3P] "4 masks arranged as two complementary pairs"): for a completion
with generated span ``U`` (``u = |U|`` positions) each pair is ``(S, U∖S)`` where
``|S| = l ~ U{1..u−1}`` and ``S`` is a uniformly random subset of ``U`` of that size. For ``u = 1``
both masks of a pair are the single position. Everything is drawn from one ``torch.Generator`` so
that the same masks serve the policy and the reference and a run is reproducible.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["completion_span", "complementary_masks"]


def completion_span(completion_mask: Tensor, mode: str) -> Tensor:
    """The generated span ``U`` of every row. # [B, L] bool

    ``mode = "eos"``: the positions of ``completion_mask`` (through the first EOS, inclusive);
    ``mode = "all"``: every one of the ``L`` completion positions (EOS padding included).
    """
    if mode == "eos":
        return completion_mask.bool()
    if mode == "all":
        return torch.ones_like(completion_mask, dtype=torch.bool)
    raise ValueError(f"unknown span mode {mode!r}; expected 'eos' or 'all'")


def complementary_masks(span: Tensor, num_pairs: int, generator: torch.Generator) -> Tensor:
    """Draw ``K = 2·num_pairs`` masks per row as complementary pairs over ``span``. # [K, B, L] bool

    Masks ``2p`` and ``2p+1`` are ``S`` and ``U∖S`` for the p-th pair, with ``|S| ~ U{1..u−1}`` and
    ``S`` uniform among subsets of that size (a random permutation's first ``|S|`` positions).
    ``u = 1``: both masks are ``U``. ``u = 0`` (an empty span): both masks are empty.
    """
    span = span.bool()  # [B, L]
    b, l = span.shape
    u = span.sum(-1)  # [B]
    device = span.device
    out = torch.zeros(2 * num_pairs, b, l, dtype=torch.bool, device=device)
    for p in range(num_pairs):
        # Uniform random order of the span's positions: positions outside U sort last.
        keys = torch.rand(b, l, generator=generator, device=generator.device).to(device)  # [B, L]
        keys = keys.masked_fill(~span, 2.0)
        rank = keys.argsort(-1).argsort(-1)  # [B, L] rank of each position in the random order
        # |S| = 1 + floor(v · (u − 1)), v ~ U[0, 1): uniform on 1..u−1 (u ≥ 2).
        v = torch.rand(b, generator=generator, device=generator.device).to(device)  # [B]
        size = 1 + torch.floor(v * (u - 1).clamp_min(0).to(v.dtype)).long()  # [B]
        size = torch.minimum(size, (u - 1).clamp_min(1))
        chosen = rank < size.unsqueeze(-1)  # [B, L]
        first = chosen & span
        second = span & ~chosen
        single = (u == 1).unsqueeze(-1)  # [B, 1]
        out[2 * p] = torch.where(single, span, first)
        out[2 * p + 1] = torch.where(single, span, second)
    return out
