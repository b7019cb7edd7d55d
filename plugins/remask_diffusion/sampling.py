"""Pure tensor functions shared by the samplers (spec algorithms.md §2), and the step recorder.

Every function works on whole batches: no Python loop runs over rows.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "num_transfer_tokens",
    "draw_uniform",
    "gumbel_max",
    "gumbel_noise",
    "select_top_k",
    "completion_mask_through_eos",
    "top_p_filter",
    "top_k_filter",
    "inverse_cdf_sample",
    "max_excluding_",
    "row_max",
    "masked_rows",
    "RowWorkspace",
    "Proposals",
    "propose",
    "upstream_confidence",
    "upstream_top_k",
    "StepRecorder",
]


def num_transfer_tokens(mask_count: Tensor, steps: int) -> Tensor:
    """LLaDA's transfer schedule: ``k_s = ⌊n/S⌋ + 1[s < n mod S]`` (spec §2.1 step 2).

    ``mask_count`` ``[B]`` long (masked positions of the block per row) -> ``[B, S]`` long; the
    remainder goes to the earliest steps, and each row gets its own schedule.
    """
    n = mask_count.long().view(-1, 1)  # [B, 1]
    s = torch.arange(steps, device=n.device).view(1, -1)  # [1, S]
    return n // steps + (s < n % steps).long()  # [B, S]


def draw_uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device,
                 dtype: torch.dtype = torch.float64) -> Tensor:
    """``U[0, 1)`` noise drawn from ``generator`` on its own device, then moved to ``device``."""
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def gumbel_max(logits: Tensor, temperature: float, uniform: Tensor | None) -> Tensor:
    """Sample ``x̂0 ~ softmax(ℓ/τ)`` by the Gumbel-max trick in float64 (spec §2.1 step 2b).

    LLaDA writes the proposal as ``argmax_v exp(ℓ_v) / (−log u_v)^τ``; taking logs gives the same
    argmax as ``ℓ_v − τ·log(−log u_v) = ℓ_v + τ·g_v`` with ``g`` standard Gumbel, computed here
    in float64 (arXiv 2409.02908: low-precision Gumbel noise hurts generation). ``τ = 0`` is the
    argmax. ``logits`` ``[..., V]``, ``uniform`` ``[..., V]`` float64 -> ids ``[...]``.
    """
    if temperature == 0 or uniform is None:
        return logits.argmax(-1)
    g = -torch.log(-torch.log(uniform))  # [..., V] standard Gumbel
    return (logits.double() + temperature * g).argmax(-1)


def gumbel_noise(uniform: Tensor) -> Tensor:
    """Standard Gumbel noise ``−log(−log u)`` (same shape as ``uniform``)."""
    return -torch.log(-torch.log(uniform))


def select_top_k(confidence: Tensor, k: Tensor) -> Tensor:
    """Per row, mark the ``k[b]`` positions of highest confidence (ties: lower index first).

    ``confidence`` ``[B, N]`` (−inf where a position may not be chosen), ``k`` ``[B]`` long ->
    ``[B, N]`` bool. Positions with −inf confidence are never marked, even if ``k`` exceeds their
    number.
    """
    order = torch.argsort(confidence, dim=-1, descending=True, stable=True)  # [B, N]
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return (rank < k.view(-1, 1)) & torch.isfinite(confidence)


def completion_mask_through_eos(completion_ids: Tensor, eos_token_id: int) -> Tensor:
    """True up to and including the first EOS of each row (spec §2.1, trap §8.3). # [B, L] bool"""
    is_eos = completion_ids == eos_token_id  # [B, L]
    before = is_eos.long().cumsum(-1) - is_eos.long()  # EOS seen strictly before each position
    return before == 0


def top_p_filter(logits: Tensor, top_p: float | None) -> Tensor:
    """Nucleus filter (Dream ``top_p_logits``): keep the smallest prefix of the sorted
    distribution whose mass reaches ``top_p`` (the token crossing it is kept). ``[N, V]``."""
    if top_p is None or top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cum = torch.softmax(sorted_logits.float(), dim=-1).cumsum(-1)  # [N, V]
    drop_sorted = cum > top_p
    drop_sorted[..., 1:] = drop_sorted[..., :-1].clone()
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def top_k_filter(logits: Tensor, top_k: int | None) -> Tensor:
    """Keep the ``top_k`` largest logits per row (Dream ``top_k_logits``). ``[N, V]``."""
    if top_k is None or top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # [N, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def inverse_cdf_sample(probs: Tensor, uniform: Tensor, chunk: int | None = None) -> Tensor:
    """One categorical draw per row by inverting the CDF: ``probs`` ``[N, V]``, ``uniform`` ``[N]``.

    Exact (zero-probability tokens are never drawn) and needs one uniform per row instead of V. The
    CDF is inverted in two float64 levels — first over the sums of ``chunk``-wide slices of the
    vocabulary (``[N, V/chunk]``), then inside the chosen slice (``[N, chunk]``; default
    ``chunk = ⌈√V⌉``) — so no float64 ``[N, V]`` tensor is built. The draw equals inverting the full
    float64 cumsum except where the two summation orders round a CDF value across the target
    (probability ~1e-16 per draw).
    """
    n, v = probs.shape
    chunk = chunk or max(1, math.isqrt(v - 1) + 1)
    c = -(-v // chunk)
    padded = torch.nn.functional.pad(probs, (0, c * chunk - v)).view(n, c, chunk)  # [N, C, chunk]
    cdf_c = padded.sum(-1, dtype=torch.float64).cumsum(-1)  # [N, C]
    target = (uniform.to(cdf_c.device).double() * cdf_c[:, -1]).unsqueeze(-1)  # [N, 1]
    ci = torch.searchsorted(cdf_c, target, right=True).clamp_max(c - 1)  # [N, 1] chosen slice
    before = torch.where(ci > 0, cdf_c.gather(-1, (ci - 1).clamp_min(0)), torch.zeros_like(target))  # [N, 1]
    inside = padded.gather(1, ci.unsqueeze(-1).expand(n, 1, chunk)).squeeze(1)  # [N, chunk]
    cdf_in = before + inside.double().cumsum(-1)  # [N, chunk]
    j = torch.searchsorted(cdf_in, target, right=True)  # [N, 1]
    last = torch.where(inside > 0, torch.arange(chunk, device=probs.device), -1).amax(-1, keepdim=True)
    j = torch.minimum(j, last.clamp_min(0))  # rounding can overshoot the slice: stay on its last real token
    return (ci * chunk + j).squeeze(-1).clamp_max(v - 1)


@dataclass(frozen=True)
class Proposals:
    """One step's proposals for a region of ``N`` positions, computed on its masked positions only.

    ``ids`` ``[B, N]`` long (the proposal ``x̂0``; at unmasked positions the current token),
    ``logp`` ``[B, N]`` float32 = ``ℓ[x̂0] − logsumexp(ℓ)`` at temperature 1 (0 at unmasked
    positions), ``confidence`` ``[B, N]`` float32 = ``exp(logp)``, −inf at unmasked positions.
    ``shifted`` ``[M, V]`` float32 holds ``exp(ℓ − m)`` of the ``M`` masked positions (row-major
    order of ``masked``, ``m`` the row max) and ``total`` ``[M]`` its row sums, kept so that the
    entropy of the committed positions needs no second pass over the region. With a
    :class:`RowWorkspace`, ``shifted`` lives in it: valid until the next step's :func:`propose`.
    """

    ids: Tensor
    logp: Tensor
    confidence: Tensor
    masked: Tensor
    shifted: Tensor
    total: Tensor

    def entropy(self, commit: Tensor) -> Tensor:
        """T=1 entropy at the committed positions, 0 elsewhere. # [B, N]

        With ``t = exp(ℓ − m)`` and ``s = Σ t``: ``H = −Σ p log p = log s − Σ t·log t / s``.
        Computed only on the ``K`` committed rows (``[K, V]`` work), not on the whole region.
        """
        chosen = commit[self.masked].nonzero().squeeze(-1)  # [K] which masked rows were committed
        t, s = self.shifted.index_select(0, chosen), self.total[chosen]  # [K, V] (whole-row copy), [K]
        ent = torch.log(s) - torch.special.xlogy(t, t).sum(-1) / s  # [K]
        out = torch.zeros(commit.shape, dtype=torch.float32, device=commit.device)
        out[commit & self.masked] = ent
        return out


class RowWorkspace:
    """A float32 ``[rows, V]`` scratch buffer that every step of one rollout reuses for its masked
    logit rows (:func:`masked_rows`), allocated at the first step.

    On CPU a fresh ``[M, V]`` copy per step comes from new pages (glibc returns large blocks to the
    OS), and faulting them in costs as much as a pass over them; reusing one buffer avoids that. On
    other devices :meth:`get` returns ``None``: CUDA's caching allocator already reuses freed blocks,
    and a buffer held across the forward pass would only raise peak memory.
    """

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.buffer: Tensor | None = None

    def get(self, logits: Tensor) -> Tensor | None:
        """The buffer for ``logits`` ``[..., V]`` (``None`` off CPU). # [rows, V] float32"""
        if logits.device.type != "cpu":
            return None
        v = logits.shape[-1]
        if self.buffer is None or self.buffer.shape[1] != v:
            self.buffer = torch.empty(self.rows, v, dtype=torch.float32, device=logits.device)
        return self.buffer


@functools.lru_cache(maxsize=16)
def _chunk_width(v: int) -> int:
    """The divisor of ``v`` closest to ``√v`` (0 when every divisor is too small to help)."""
    root = math.isqrt(v)
    best = max((d for d in range(1, root + 1) if v % d == 0), key=lambda d: min(d, v // d))
    best = best if best * best >= v else v // best  # the two factors around √v: take the wider one
    return best if min(best, v // best) >= 32 else 0


def row_max(scores: Tensor) -> tuple[Tensor, Tensor]:
    """``scores.max(-1)`` — the values and the index of the **first** maximal entry of each row,
    bit-identical to it (NaN rows included) — in two vectorised levels.

    ``torch.max`` with indices is a scalar loop on CPU (≈ 10× slower than ``amax``). Here the
    vocabulary is split into ``C`` chunks of width ``W`` (a divisor of ``V`` near ``√V``): one
    ``amax`` pass gives the chunk maxima ``[..., C]``, ``max`` with index over those picks the first
    chunk holding the row maximum, and ``max`` with index inside that one chunk (``[..., W]``) gives
    the first maximal entry in it — hence of the row, since no earlier chunk holds the maximum.
    ``[..., V]`` -> ``(values [...], ids [...] long)``.
    """
    v = scores.shape[-1]
    width = _chunk_width(v)
    if width == 0 or scores.stride(-1) != 1 or scores.numel() == 0:
        return scores.max(-1)
    chunks = scores.unflatten(-1, (v // width, width))  # [..., C, W], a view (unit last stride)
    chunk = chunks.amax(-1).max(-1)[1]  # [...] the first chunk holding the row maximum
    pick = chunk[..., None, None].expand(*chunk.shape, 1, width)  # [..., 1, W]
    values, offset = chunks.gather(-2, pick).squeeze(-2).max(-1)  # [...] x2, inside that chunk
    return values, chunk * width + offset


def max_excluding_(scores: Tensor, index: int) -> tuple[Tensor, Tensor]:
    """``max`` over the last dim with column ``index`` excluded, by setting it to −inf in place and
    restoring it (no copy of ``scores``). ``[..., V]`` -> ``(values [...], ids [...] long)``; ties and
    NaN as ``torch.max`` (first maximal entry), computed by :func:`row_max`."""
    saved = scores[..., index].clone()  # [...]
    scores[..., index] = float("-inf")
    values, ids = row_max(scores)
    scores[..., index] = saved
    return values, ids


def masked_rows(logits: Tensor, masked: Tensor, workspace: Tensor | None = None) -> Tensor:
    """``logits[masked].float()`` — the ``M`` masked rows ``[M, V]`` float32 in row-major order of
    ``masked`` — gathered as whole rows by one ``index_select`` (advanced indexing copies element by
    element) and, given a float32 ``workspace`` ``[≥ M, V]`` reused across steps, written into it so
    that no fresh pages are touched per step. Equal values, bit for bit.

    ``logits`` ``[B, N, V]`` may be a block slice of a ``[B, S, V]`` output (rows ``V`` apart within a
    batch row, batch rows any multiple of ``V`` apart); any other layout takes the indexing path.
    """
    b, n, v = logits.shape
    s0, s1, s2 = logits.stride()
    per_row = n if b == 1 else s0 // v
    if s2 != 1 or (n > 1 and s1 != v) or (b > 1 and s0 % v) or logits.numel() == 0:
        return logits[masked].float()
    table = logits.as_strided(((b - 1) * per_row + n, v), (v, 1))  # [R, V] the rows around the block
    bi, pi = masked.nonzero(as_tuple=True)  # [M] x2, row-major like boolean indexing
    index = bi * per_row + pi  # [M]
    m = index.shape[0]
    if workspace is None or workspace.shape[0] < m or workspace.shape[1] != v or workspace.device != logits.device:
        return table.index_select(0, index).float()
    out = workspace[:m]  # [M, V]
    if logits.dtype == out.dtype:
        torch.index_select(table, 0, index, out=out)
    else:
        out.copy_(table.index_select(0, index))  # e.g. bfloat16 -> float32, as .float()
    return out


def propose(
    logits: Tensor,  # [B, N, V] untempered logits of the region (any float dtype)
    current: Tensor,  # [B, N] long, the region's current tokens
    masked: Tensor,  # [B, N] bool, positions still masked
    *,
    temperature: float,
    noise: str,
    generator: torch.Generator | None,
    mask_token_id: int,
    uniform: Tensor | None = None,  # [B, N, V] float64, only for noise "llada"
    workspace: Tensor | None = None,  # [≥ M, V] float32 scratch reused across steps (see masked_rows)
) -> Proposals:
    """Proposals ``x̂0 ~ softmax(ℓ/τ)`` and their T=1 log-probs/confidences (spec §2.1 step 2b–c).

    Vocabulary-lean: only the ``M`` masked positions are touched, in float32, and the confidence of
    the chosen token is ``exp(ℓ[x̂0] − logsumexp(ℓ))`` (no softmax tensor); ``logsumexp`` is
    formed in place on the one ``[M, V]`` copy (``m + log Σ exp(ℓ − m)``). The mask token is
    excluded by index. Noise:

    * ``gumbel`` (default): Gumbel-max ``argmax(ℓ + τ·g)`` with ``g = −log(−log u)`` from float32
      uniforms ``[M, V]`` drawn from ``generator``; an exact sampler of ``softmax(ℓ/τ)`` up to the
      float32 grid of ``u`` (2⁻²⁴, so the Gumbel tail is cut at ≈ 16.6 nats);
    * ``llada``: LLaDA ``generate``'s float64 form ``argmax exp(ℓ) / (−log u)^τ`` on the given
      ``uniform`` (the caller draws it with the upstream shape), bit-compatible with upstream.
    """
    rows = masked_rows(logits, masked, workspace)  # [M, V] float32, our own copy (or the workspace)
    if temperature > 0 and noise == "llada":
        if uniform is None:
            raise ValueError("noise 'llada' needs the upstream-shaped uniform draw")
        # float64, bit-compatible with LLaDA's add_gumbel_noise; [M, V] for the masked rows only
        scores = logits[masked].double().exp() / (-torch.log(uniform[masked])) ** temperature
        chosen = max_excluding_(scores, mask_token_id)[1]  # [M]
        del scores
    elif temperature > 0:
        u = torch.rand(rows.shape, generator=generator, device=generator.device if generator is not None else None,
                       dtype=torch.float32).to(rows.device)  # [M, V]
        scores = u.log_().neg_().log_().neg_().mul_(temperature).add_(rows)  # ℓ + τ·g, in place
        chosen = max_excluding_(scores, mask_token_id)[1]
        del scores, u
    else:
        chosen = None
    best, best_ids = max_excluding_(rows, mask_token_id)  # [M] x2
    if chosen is None:  # greedy: the proposal is the best non-mask token
        chosen, chosen_logit = best_ids, best
    else:
        chosen_logit = rows.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)  # [M]
    m = torch.maximum(best, rows[:, mask_token_id])  # [M] the row max, mask column included
    shifted = rows.sub_(m.unsqueeze(-1)).exp_()  # [M, V] exp(ℓ − m), in place
    total = shifted.sum(-1)  # [M]
    logp_m = chosen_logit - m - torch.log(total)  # [M] ℓ[x̂0] − logsumexp ℓ
    ids = current.clone()
    ids[masked] = chosen
    logp = torch.zeros(current.shape, dtype=torch.float32, device=current.device)
    logp[masked] = logp_m
    confidence = torch.full(current.shape, float("-inf"), dtype=torch.float32, device=current.device)
    confidence[masked] = logp_m.exp()
    return Proposals(ids, logp, confidence, masked, shifted, total)


def upstream_confidence(logits: Tensor, ids: Tensor, masked: Tensor) -> Tensor:
    """LLaDA ``generate``'s confidence: ``softmax(ℓ)[x̂0]`` in the logits' own dtype (bfloat16 for
    the 8B checkpoints), −inf at unmasked positions. ``[B, N, V]`` -> ``[B, N]`` (model dtype)."""
    p = torch.softmax(logits, dim=-1)  # [B, N, V] model dtype, as upstream
    conf = p.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return torch.where(masked, conf, torch.full_like(conf, float("-inf")))


def upstream_top_k(confidence: Tensor, k: Tensor, offset: int, width: int) -> Tensor:
    """LLaDA ``generate``'s pick: ``torch.topk`` over the whole sequence row (−inf outside the
    region), so equal confidences are ordered as upstream orders them on the same device.

    ``confidence`` ``[B, N]`` of the region that starts at sequence position ``offset`` of a
    ``width``-long row; ``k`` ``[B]`` -> ``[B, N]`` bool. Rows with the same ``k`` share one call.
    """
    b, n = confidence.shape
    row = torch.full((b, width), float("-inf"), dtype=confidence.dtype, device=confidence.device)
    row[:, offset:offset + n] = confidence
    picked = torch.zeros(b, width, dtype=torch.bool, device=confidence.device)
    for kk in torch.unique(k).tolist():
        rows = (k == kk).nonzero(as_tuple=True)[0]
        if kk > 0:
            idx = torch.topk(row[rows], k=int(kk), dim=-1).indices  # [R, kk]
            picked[rows.unsqueeze(-1), idx] = True
    return picked[:, offset:offset + n] & torch.isfinite(confidence)


@dataclass
class StepRecorder:
    """Accumulates what a sampler records per step (spec §2.4) without per-row Python loops.

    Each :meth:`add` gets the positions committed in one iteration and, per row, the step index the
    iteration counts as (``row_step [B]``: the global iteration for semi-AR samplers; a per-row
    counter for threshold samplers, whose idle rows then skip no step). :meth:`finish` scatters the
    per-iteration values into ``[B, T]`` tables.
    """

    batch_size: int
    gen_length: int
    device: torch.device
    eos_token_id: int
    record_stats: bool = True
    unmask_step: Tensor = field(init=False)
    _steps: list[Tensor] = field(default_factory=list, init=False)
    _logps: list[Tensor] = field(default_factory=list, init=False)
    _entropy: list[Tensor] = field(default_factory=list, init=False)
    _all_eos: list[Tensor] = field(default_factory=list, init=False)
    _greedy: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.unmask_step = torch.full((self.batch_size, self.gen_length), -1, dtype=torch.long, device=self.device)

    def add(
        self,
        row_step: Tensor,  # [B] long, the step index of this iteration per row
        offset: int,  # first completion position of the region below
        commit: Tensor,  # [B, N] bool, positions committed now (region [offset, offset+N))
        tokens: Tensor,  # [B, N] long, the committed tokens (where commit)
        logits: Tensor | None = None,  # [B, N, V] untempered logits of the region (for the T=1 stats)
        greedy: Tensor | None = None,  # [B, L] one-step greedy completion of the state before this step
        *,
        token_logp: Tensor | None = None,  # [B, N] T=1 log-prob of each proposal (instead of logits)
        token_entropy: Tensor | None = None,  # [B, N] T=1 entropy at committed positions (with token_logp)
    ) -> None:
        n = commit.shape[-1]
        region = self.unmask_step[:, offset:offset + n]
        region.copy_(torch.where(commit, row_step.view(-1, 1), region))
        self._steps.append(row_step.clone())
        count = commit.sum(-1)  # [B]
        if greedy is not None:
            self._greedy.append((row_step.clone(), count > 0, greedy))
        eos_or_idle = (tokens == self.eos_token_id) | ~commit
        self._all_eos.append((count > 0) & eos_or_idle.all(-1))
        if self.record_stats and token_logp is not None and token_entropy is not None:
            zero = torch.zeros((), dtype=torch.float32, device=self.device)
            self._logps.append(torch.where(commit, token_logp.float(), zero).sum(-1))
            ent = torch.where(commit, token_entropy.float(), zero).sum(-1)
            self._entropy.append(ent / count.clamp_min(1).float())
        elif self.record_stats and logits is not None:
            # only the committed positions: [K, V] with K = commits this step, not [B, N, V]
            rows = commit.nonzero(as_tuple=True)[0]  # [K]
            logp_all = torch.log_softmax(logits[commit].float(), dim=-1)  # [K, V]
            logp = logp_all.gather(-1, tokens[commit].unsqueeze(-1)).squeeze(-1)  # [K]
            ent = -(logp_all.exp() * logp_all).sum(-1)  # [K]
            zeros = torch.zeros(self.batch_size, dtype=torch.float32, device=self.device)
            self._logps.append(zeros.index_add(0, rows, logp))
            self._entropy.append(zeros.index_add(0, rows, ent) / count.clamp_min(1).float())

    def finish(self) -> tuple[int, Tensor, Tensor | None, Tensor | None, Tensor, Tensor | None]:
        """``(T, unmask_step [B, L], step_logps [B, T], step_entropy [B, T], step_all_eos [B, T],
        greedy_ids [B, T, L] or None)``."""
        if bool((self.unmask_step < 0).any()):
            raise RuntimeError("sampler left completion positions uncommitted")  # a sampler bug
        steps = torch.stack(self._steps, dim=1)  # [B, I]
        t = int(self.unmask_step.max()) + 1
        width = max(t, int(steps.max()) + 1)
        b = self.batch_size

        def table(values: list[Tensor], dtype: torch.dtype) -> Tensor:
            out = torch.zeros(b, width, dtype=dtype, device=self.device)
            out.scatter_add_(1, steps, torch.stack(values, dim=1).to(dtype))
            return out[:, :t]

        logps = table(self._logps, torch.float32) if self._logps else None
        entropy = table(self._entropy, torch.float32) if self._entropy else None
        all_eos = table(self._all_eos, torch.long).bool()
        greedy = None
        if self._greedy:
            greedy = torch.zeros(b, width, self.gen_length, dtype=torch.long, device=self.device)
            for row_step, active, fill in self._greedy:  # one entry per iteration, not per row
                rows = active.nonzero(as_tuple=True)[0]
                greedy[rows, row_step[rows]] = fill[rows]
            greedy = greedy[:, :t]
        return t, self.unmask_step, logps, entropy, all_eos, greedy
