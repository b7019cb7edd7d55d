"""Preference pairs from per-row scores within each group, and the DPO-form loss on them.

dTRPO is a DPO objective (spec §3.4 (4)); with verifiable rewards the pairs come from the G
completions of one prompt: chosen = the higher score, rejected = the lower one. That construction is
a framework choice, not confirmed from the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Pairs", "build_pairs", "dpo_loss", "PAIRINGS"]

PAIRINGS = ("best-vs-worst", "all-pairs", "random-pairs")


@dataclass(frozen=True)
class Pairs:
    """Row indices of the chosen and rejected completion of every pair, and the ties skipped."""

    chosen: Tensor  # [n_pairs] long
    rejected: Tensor  # [n_pairs] long
    ties: int  # candidate pairs skipped because their scores were equal (within the tolerance)

    @property
    def count(self) -> int:
        return int(self.chosen.numel())


def build_pairs(
    scores: Tensor,  # [B] float, rewards or advantages (only their order within a group matters)
    group_ids: Tensor,  # [B] long
    strategy: str,
    tie_tolerance: float = 0.0,
    generator: torch.Generator | None = None,
) -> Pairs:
    """Pair completions of the same group (rows with equal ``group_ids``).

    * ``best-vs-worst``: one pair per group, the highest against the lowest score (first in row
      order on equal scores); a group whose scores are all tied counts one tie.
    * ``all-pairs``: every unordered pair of the group with different scores.
    * ``random-pairs``: a random perfect matching of the group (``⌊G/2⌋`` disjoint pairs, drawn
      from ``generator``), tied pairs skipped.

    Pairs with ``|s_i − s_j| <= tie_tolerance`` are skipped and counted in ``ties``; rows with a
    non-finite score take part in no pair.
    """
    if strategy not in PAIRINGS:
        raise ValueError(f"unknown pairing {strategy!r}; known: {', '.join(PAIRINGS)}")
    s = scores.detach().double().cpu()  # [B]
    gids = group_ids.cpu()
    chosen: list[int] = []
    rejected: list[int] = []
    ties = 0

    def add(i: int, j: int) -> None:
        nonlocal ties
        if abs(float(s[i] - s[j])) <= tie_tolerance:
            ties += 1
        elif s[i] > s[j]:
            chosen.append(i), rejected.append(j)
        else:
            chosen.append(j), rejected.append(i)

    seen: list[int] = []
    for g in gids.tolist():
        if g not in seen:
            seen.append(g)
    for g in seen:
        rows = [r for r in torch.nonzero(gids == g).flatten().tolist() if bool(torch.isfinite(s[r]))]
        if len(rows) < 2:
            continue
        if strategy == "best-vs-worst":
            vals = s[rows]
            add(rows[int(vals.argmax())], rows[int(vals.argmin())])
        elif strategy == "all-pairs":
            for a in range(len(rows)):
                for b in range(a + 1, len(rows)):
                    add(rows[a], rows[b])
        else:
            device = generator.device if generator is not None else "cpu"
            perm = torch.randperm(len(rows), generator=generator, device=device).tolist()
            for a in range(0, len(perm) - 1, 2):
                add(rows[perm[a]], rows[perm[a + 1]])
    return Pairs(torch.tensor(chosen, dtype=torch.long), torch.tensor(rejected, dtype=torch.long), ties)


def dpo_loss(log_ratio_chosen: Tensor, log_ratio_rejected: Tensor, beta: float) -> Tensor:
    """``−log σ(β [R̂(τ_w) − R̂(τ_l)])`` per pair (DPO, Rafailov et al. 2023 eq. 7; dTRPO §3.4 (4)).

    ``R̂`` are trajectory log-ratios ``log π_θ/π_ref`` (their reference terms already inside).
    ``[n] , [n] -> [n]``. Uses ``softplus(−x)`` = ``−log σ(x)`` for stability.
    """
    return F.softplus(-beta * (log_ratio_chosen - log_ratio_rejected))
