"""Likelihood estimates of a masked diffusion LM: the building blocks every dLLM objective shares.

A dLLM has no exact sequence log-likelihood. Objectives use one of three families, all here as pure,
seeded tensor functions (no trainer state):

1. **Noisy views** (:class:`NoisyViews`). N masked copies ``x^{(n)}`` of ``[q ; o]`` and a weight per
   completion token and view; the per-token estimate is

       ℓ_θ(o_k) = (1/N) Σ_n w^{(n)}_k · log p_θ(o_k | x^{(n)}),       one forward pass per view

   (:func:`token_logprobs`; :func:`view_logprobs` gives the unweighted ``[N, B, L]`` terms).

   * :func:`one_step_views` — d1's one-step estimate (d1 arXiv 2504.12216 §3.2, spec
     algorithms.md §3.2): prompt tokens masked independently w.p. ``p_mask_prompt``, the completion
     fully masked, N = 1, w = 1.
   * :func:`elbo_views` — the Monte-Carlo masked-diffusion ELBO with random ``t`` (LLaDA
     arXiv 2502.09992 eq. 3): ``t ~ U(0, 1]``, each completion token masked w.p. ``t``,
     ``w = 1[masked]/t``. ``complementary=True`` adds, for every view, the view that masks exactly
     the other tokens with ``w = 1[masked]/(1 − t)`` (DiffuCoder's coupled sampling,
     arXiv 2506.20639, spec zoo-coupled-vrpo.md); ``antithetic=True`` pairs ``t`` with ``1 − t`` across views.
   * :func:`fixed_count_views` — the fixed-count ELBO (LLaDA's ``l ~ U{1..L}`` form; ESPO arXiv 2512.03759's
     ``forward_process``):
     exactly ``k`` of the ``u`` span tokens masked, uniformly at random, ``w = 1[masked]·c/k`` with
     ``k ~ U{1..u}, c = u`` or ``k ~ U{0..u}, c = u + 1``; optionally stratified across the rows of
     the batch (ESPO's ``linspace`` offsets) and with the complementary view
     ``w = 1[masked]·c/(u − k)`` (ESPO's ``reduce_var``).

   Summing ``ℓ_θ(o_k)`` over the span gives an unbiased estimate of the ELBO of ``log p_θ(o|q)``
   (for the ELBO views) or d1's mean-field score (for the one-step view).

2. **Exact trajectory** (EGSPO arXiv 2603.12554 §3): with a confidence sampler that never re-masks,
   the log-probability of the transition at step ``k`` factorises over the committed positions
   ``I_k``: ``ℓ_θ(k) = Σ_{i∈I_k} log p_θ(o_i | x_k)`` (:func:`step_logprob_sums` on
   :func:`completion_logits` of the rebuilt state); summed over every step it is the exact
   trajectory log-likelihood.

3. **Block-causal trajectory** (dTRPO arXiv 2603.18806, spec §3.4, reconstructed): one uniformly
   drawn step ``t_b`` per block (:func:`draw_block_steps`), the re-masked final state
   (:func:`remasked_completion`), and ``R̂ = Σ_b T_B Δ_{b,t_b}`` (:func:`trajectory_log_ratio`); the
   block conditionals come from one staircase-masked forward (:func:`newly_unmasked_logps_single_pass`),
   ``N_B`` block-causal forwards (:func:`newly_unmasked_logps_per_block`) or the exact sampler
   states (:func:`newly_unmasked_logps_full_state`); :func:`exact_trajectory_log_ratio` enumerates
   every step (tests, ``remask diagnose``).

**Seeded randomness per inner step.** Objectives never touch the global RNG. In ``prepare`` draw
one integer seed per distinct mask from the engine's likelihood-mask stream,
``seeds = draw_mask_seeds(context.generator, context.inner_steps)``, build the views of seed ``m``
once, score them with the old policy and the reference under ``torch.no_grad()``, and in
``loss(state, inner_step=m)`` score the *same* views with the policy. A view is a deterministic
function of its seed (drawn on the CPU with a local ``torch.Generator``), so θ, θ_old and the
reference always see identical masks (VRPO's "antithetic" sharing of noise between the policy and
the reference, LLaDA 1.5 arXiv 2505.19223 §3), a resumed run replays the same masks, and other RNG
streams (dropout, data order) are not perturbed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from pydantic import Field
from torch import Tensor

from .functional import full_sequence, gather_logprobs, masked_sum
from .interfaces import ComponentConfig, DiffusionModel
from .records import PromptBatch
from .trajectory import block_step_table, state_before_step

__all__ = [
    "inner_step_seeds",
    "MaskSeedConfig",
    # seeds and views
    "SEED_HIGH",
    "draw_mask_seeds",
    "NoisyViews",
    "prompt_mask",
    "one_step_views",
    "elbo_views",
    "draw_mask_counts",
    "fixed_count_mask",
    "fixed_count_weights",
    "fixed_count_views",
    "coupled_weights",
    "coupled_views",
    "stratified_count_views",
    "stratified_time_views",
    "views_log_ratio",
    "views_to",
    "view_logprobs",
    "token_logprobs",
    # exact trajectory
    "completion_logits",
    "step_logprob_sums",
    # block-causal trajectory
    "uniform",
    "block_index",
    "block_step_candidates",
    "draw_block_steps",
    "remasked_completion",
    "prompt_position_ids",
    "staircase_attention_mask",
    "shifts_logits",
    "newly_unmasked_logps_single_pass",
    "newly_unmasked_logps_per_block",
    "newly_unmasked_logps_full_state",
    "block_sums",
    "trajectory_log_ratio",
    "exact_trajectory_log_ratio",
]

#: mask seeds are drawn from [0, SEED_HIGH) unless an objective says otherwise (d1 uses 4096)
SEED_HIGH = 2**31 - 1


# ---------------------------------------------------------------------------------------------
# Seeds and noisy views
# ---------------------------------------------------------------------------------------------


def draw_mask_seeds(generator: torch.Generator, count: int, high: int = SEED_HIGH) -> list[int]:
    """``count`` seeds ``s_m ~ U{0, ..., high−1}`` from the likelihood-mask stream (``StepContext.generator``).

    The stream may live on the accelerator (the engine creates its generators on the training
    device); the draw happens there and only the integers come back.
    """
    drawn = torch.randint(0, high, (count,), generator=generator, device=generator.device)  # [count]
    return [int(s) for s in drawn.tolist()]


def inner_step_seeds(generator: torch.Generator, inner_steps: int, *, random_masking: bool = True,
                     fixed_seed: int = 42, high: int = SEED_HIGH) -> list[int]:
    """The mask seed of each inner update μ = 1..``inner_steps``, drawn once per rollout in ``prepare``.

    ``random_masking`` (d1's default): a fresh seed per inner step from the likelihood-mask stream
    (:func:`draw_mask_seeds` on ``StepContext.generator``), so every update sees new masks and a
    resumed run draws the same ones. Otherwise ``[fixed_seed]``, the one mask every update reuses
    (d1's ``random_masking: false``); inner step i uses the i-th seed, cycling over a single one.
    """
    if not random_masking:
        return [fixed_seed]
    return draw_mask_seeds(generator, max(1, inner_steps), high)


class MaskSeedConfig(ComponentConfig):
    """Config mixin of objectives that draw one mask seed per inner step (d1's ``random_masking``).

    The three fields mean the same in every objective that masks with seeds (wd1, SPG, ESPO,
    Coupled-GRPO; d1/diffu-GRPO, wd1, SPG, ESPO and DiffuCoder all use seed 42 and ``randint(0, 2**12)``).
    Subclass it instead of ``ComponentConfig`` and call :meth:`inner_step_seeds` in ``prepare``.
    """

    random_masking: bool = Field(
        True, description="A new mask seed per inner step (d1's random_masking); False always uses mask_seed."
    )
    mask_seed: int = Field(
        42, description="The fixed mask seed when random_masking is False (d1, wd1, SPG, ESPO, DiffuCoder: 42)."
    )
    mask_seed_high: int = Field(
        4096, ge=1, description="Seeds are drawn from [0, mask_seed_high) (the reference codes: 2**12)."
    )

    def inner_step_seeds(self, generator: torch.Generator, inner_steps: int) -> list[int]:
        """:func:`inner_step_seeds` with this config's three fields (one seed per inner step, or the fixed one)."""
        return inner_step_seeds(generator, inner_steps, random_masking=self.random_masking,
                                fixed_seed=self.mask_seed, high=self.mask_seed_high)


@dataclass(frozen=True)
class NoisyViews:
    """N noisy copies of a micro-batch and the weight of each completion token in each copy."""

    input_ids: Tensor  # [N, B, P+L] long, masked sequences x^{(n)}
    token_weights: Tensor  # [N, B, L] float32, w^{(n)}_k
    seed: int  # the seed the views were drawn with

    @property
    def num_views(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def masked(self) -> Tensor:
        """Which completion positions carry weight (are masked and scored) in each view. # [N, B, L] bool"""
        return self.token_weights != 0


def _views(prompt_ids: Tensor, completion_ids: Tensor, masked: Tensor, weights: Tensor, mask_token_id: int,
           seed: int) -> NoisyViews:
    """The N noisy sequences ``[prompt, x_t]`` with ``x_t`` = the completion masked where ``masked`` is set."""
    n = masked.shape[0]
    o = completion_ids.cpu().unsqueeze(0).expand(n, -1, -1)  # [N, B, L]
    x_t = torch.where(masked, torch.full_like(o, mask_token_id), o)  # [N, B, L]
    q = prompt_ids.cpu().unsqueeze(0).expand(n, -1, -1)  # [N, B, P]
    return NoisyViews(input_ids=torch.cat([q, x_t], dim=2), token_weights=weights, seed=int(seed))


def _local_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def prompt_mask(prompt_attention: Tensor, p_mask_prompt: float, seed: int) -> Tensor:
    """Which real prompt tokens d1's ``forward_process`` replaces by M: each w.p. ``p_mask_prompt``.

    ``prompt_attention [B, P]`` bool (True on real tokens) -> ``[B, P]`` bool. Left padding is never
    masked. Deterministic in ``seed`` (drawn on the CPU, so identical on every device).
    """
    u = torch.rand(tuple(prompt_attention.shape), generator=_local_generator(seed))  # [B, P]
    return (u < p_mask_prompt) & prompt_attention.cpu().bool()


def one_step_views(
    prompt_ids: Tensor,  # [B, P] long
    prompt_attention: Tensor,  # [B, P] bool
    completion_ids: Tensor,  # [B, L] long
    mask_token_id: int,
    *,
    p_mask_prompt: float,
    seed: int,
) -> NoisyViews:
    """d1's one-step view (d1 §3.2): ``x̃ = [q with tokens masked w.p. p_mask_prompt ; M × L]`` (N = 1, w = 1)."""
    b, l = completion_ids.shape
    masked_q = torch.where(
        prompt_mask(prompt_attention, p_mask_prompt, seed),
        torch.full_like(prompt_ids.cpu(), mask_token_id),
        prompt_ids.cpu(),
    )  # [B, P]
    x = torch.cat([masked_q, torch.full((b, l), mask_token_id, dtype=torch.long)], dim=1)  # [B, P+L]
    return NoisyViews(input_ids=x.unsqueeze(0), token_weights=torch.ones(1, b, l), seed=int(seed))


def elbo_views(
    prompt_ids: Tensor,  # [B, P] long
    completion_ids: Tensor,  # [B, L] long
    mask_token_id: int,
    *,
    n_mc: int,
    seed: int,
    antithetic: bool = False,
    complementary: bool = False,
) -> NoisyViews:
    """``n_mc`` random-t ELBO views (LLaDA eq. 3): per view and row ``t ~ U(0, 1]``, each completion
    token masked w.p. ``t``, weight ``1[masked] / t``. The prompt is kept clean.

    * ``antithetic``: view ``2i+1`` uses ``t' = 1 − t`` of view ``2i`` (clamped to ≥ 1e-6) — negatively
      correlated mask rates; needs an even ``n_mc``.
    * ``complementary``: after the ``n_mc`` views, ``n_mc`` more that mask exactly the tokens each
      view kept, weight ``1[masked] / (1 − t)`` (DiffuCoder's coupled sampling): every token is
      scored exactly once per pair. N = 2·n_mc.

    With both flags off the draws are exactly those of earlier remask versions (same seed, same views).
    """
    if n_mc < 1:
        raise ValueError(f"n_mc must be >= 1, got {n_mc}")
    if antithetic and n_mc % 2:
        raise ValueError(f"antithetic views come in pairs; n_mc must be even, got {n_mc}")
    g = _local_generator(seed)
    b, l = completion_ids.shape
    t = 1.0 - torch.rand((n_mc, b, 1), generator=g)  # [N, B, 1] in (0, 1]
    if antithetic:
        t[1::2] = (1.0 - t[0::2]).clamp_min(1e-6)
    masked = torch.rand((n_mc, b, l), generator=g) < t  # [N, B, L]
    weights = masked.float() / t  # [N, B, L]
    if complementary:
        rest = (1.0 - t).clamp_min(1e-6)  # [N, B, 1]
        kept = ~masked  # [N, B, L]
        weights = torch.cat([weights, kept.float() / rest], dim=0)  # [2N, B, L]
        masked = torch.cat([masked, kept], dim=0)  # [2N, B, L]
    return _views(prompt_ids, completion_ids, masked, weights, mask_token_id, seed)


def draw_mask_counts(
    span_length: Tensor,  # [B] long, u per row
    generator: torch.Generator,
    *,
    include_zero: bool,
    stratified: bool,
) -> Tensor:
    """How many span tokens each row masks. # [B] long

    ``include_zero=False``: ``k ~ U{1..u}`` (LLaDA's fixed-count ELBO). ``include_zero=True``:
    ``k ~ U{0..u}`` (ESPO). ``stratified``: one offset ``k_0`` is drawn and row ``j`` masks
    ``⌊k_0 + j·c/B + 1/2⌋ mod c`` (``c`` = the number of possible counts, ``k_0 ~ U{0..c−1}``), so
    that the rows of a batch spread evenly over the mask levels while each row's count stays uniform
    (ESPO's ``forward_process``); otherwise each row draws independently. Rows with ``u = 0`` get
    ``k = 0``.
    """
    u = span_length.cpu().long()  # [B]
    b = u.shape[0]
    lo = 0 if include_zero else 1
    choices = (u + 1 - lo).clamp_min(1)  # [B] number of possible counts
    if stratified:
        # one offset k_0 ~ U{0..c−1} for the batch, then evenly spaced levels round(k_0 + j·c/B) mod c
        v = torch.rand((), generator=generator, dtype=torch.float64, device=generator.device).cpu()
        c = choices.double()  # [B]
        k0 = torch.floor(v * c)  # [B]
        # round half up, so every row's count stays uniform (ESPO's torch.round rounds ties to even,
        # which skews a row whose offset j·c/B ends in .5; see docs/algorithms/espo.md)
        levels = torch.floor(k0 + torch.arange(b, dtype=torch.float64) * c / max(b, 1) + 0.5)  # [B]
        k = lo + torch.remainder(levels, c).long()  # [B]
    else:
        frac = torch.rand((b,), generator=generator, dtype=torch.float64, device=generator.device).cpu()  # [B]
        k = lo + torch.floor(frac * choices.double()).long()
    k = torch.minimum(k, u)
    return torch.where(u > 0, k, torch.zeros_like(k))


def fixed_count_mask(span: Tensor, counts: Tensor, generator: torch.Generator) -> Tensor:
    """A uniformly random subset of each row's ``span`` of size ``counts``. ``[B, L] bool, [B] -> [B, L] bool``."""
    span = span.cpu().bool()
    keys = torch.rand(tuple(span.shape), generator=generator, device=generator.device).cpu()  # [B, L]
    keys = keys.masked_fill(~span, 2.0)  # positions outside the span sort last
    rank = keys.argsort(-1).argsort(-1)  # [B, L] rank of each position in a random order
    return (rank < counts.cpu().unsqueeze(-1)) & span


def fixed_count_weights(masked: Tensor, span: Tensor, *, include_zero: bool) -> Tensor:
    """Fixed-count ELBO weights of given masks: ``c / |masked|`` on the masked tokens, 0 elsewhere.

    ``masked [N, B, L]`` bool (subsets of the span), ``span [B, L]`` bool -> ``[N, B, L]`` float32, with
    ``c = u + 1`` (``include_zero``: counts ``U{0..u}``, ESPO's ``1/(k/(L+1))``) or ``c = u``
    (counts ``U{1..u}``). The same rule gives a complementary view its weight ``c / (u − k)``.
    """
    u = span.bool().sum(-1).float()  # [B]
    c = (u + 1 if include_zero else u).unsqueeze(-1)  # [B, 1]
    k = masked.sum(-1, keepdim=True).float().clamp_min(1)  # [N, B, 1]
    return masked.float() * c / k


def fixed_count_views(
    prompt_ids: Tensor,  # [B, P] long
    completion_ids: Tensor,  # [B, L] long
    mask_token_id: int,
    *,
    n_mc: int,
    seed: int,
    span: Tensor | None = None,  # [B, L] bool; None = every completion position
    include_zero: bool = False,
    stratified: bool = False,
    complementary: bool = False,
) -> NoisyViews:
    """``n_mc`` fixed-count ELBO views: exactly ``k`` span tokens masked per row (LLaDA's fixed-count form; ESPO).

    Weight ``c / k`` on the masked tokens, with ``c = u`` for ``k ~ U{1..u}`` and ``c = u + 1`` for
    ``k ~ U{0..u}`` (``include_zero``: ESPO's ``1/(k/(L+1))``). ``complementary`` (needs
    ``include_zero``, so that the complement's count ``u − k`` has the same law) appends the views
    masking the other span tokens, weight ``c / (u − k)`` (ESPO's ``reduce_var``); N = 2·n_mc.
    Positions outside the span are never masked and weigh 0.
    """
    if n_mc < 1:
        raise ValueError(f"n_mc must be >= 1, got {n_mc}")
    if complementary and not include_zero:
        raise ValueError("complementary fixed-count views need include_zero=True (k ~ U{0..u}), "
                         "otherwise the complement's count is not uniform")
    g = _local_generator(seed)
    b, l = completion_ids.shape
    span = torch.ones(b, l, dtype=torch.bool) if span is None else span.cpu().bool()  # [B, L]
    u = span.sum(-1)  # [B]
    masks = []
    for _ in range(n_mc):
        k = draw_mask_counts(u, g, include_zero=include_zero, stratified=stratified)  # [B]
        masks.append(fixed_count_mask(span, k, g))  # [B, L]
    if complementary:
        masks += [span & ~m for m in masks]
    masked = torch.stack(masks)  # [N, B, L]
    weights = fixed_count_weights(masked, span, include_zero=include_zero)  # [N, B, L]
    return _views(prompt_ids, completion_ids, masked, weights, mask_token_id, seed)


def views_to(views: NoisyViews, device: torch.device) -> NoisyViews:
    """Move a view set to ``device``."""
    return NoisyViews(views.input_ids.to(device), views.token_weights.to(device), views.seed)


def view_logprobs(
    model: DiffusionModel,
    views: NoisyViews,
    attention_mask: Tensor,  # [B, P+L] bool padding mask
    completion_ids: Tensor,  # [B, L] long
) -> Tensor:
    """``log p(o_k | x^{(n)})`` for every view and completion position, unweighted. # [N, B, L] float32"""
    l = completion_ids.shape[1]
    out = []
    for n in range(views.num_views):
        logits = model.logits(views.input_ids[n], attention_mask, keep=slice(-l, None))  # [B, L, V]
        out.append(gather_logprobs(logits, completion_ids))  # [B, L]
    return torch.stack(out)


def token_logprobs(
    model: DiffusionModel,
    views: NoisyViews,
    attention_mask: Tensor,  # [B, P+L] bool padding mask
    completion_ids: Tensor,  # [B, L] long
) -> Tensor:
    """``ℓ(o_k) = (1/N) Σ_n w^{(n)}_k log p(o_k | x^{(n)})`` in float32, one forward per view. ``[B, L]``.

    Runs with gradients when the caller has them enabled (the policy in ``loss``) and without under
    ``torch.no_grad`` (old policy and reference in ``prepare``).
    """
    l = completion_ids.shape[1]
    total = None
    for n in range(views.num_views):
        logits = model.logits(views.input_ids[n], attention_mask, keep=slice(-l, None))  # [B, L, V]
        logp = gather_logprobs(logits, completion_ids)  # [B, L]
        term = logp * views.token_weights[n]  # [B, L]
        total = term if total is None else total + term
    assert total is not None
    return total / views.num_views if views.num_views > 1 else total


# ---------------------------------------------------------------------------------------------
# Exact trajectory (per-step transition log-probs)
# ---------------------------------------------------------------------------------------------


def completion_logits(model: DiffusionModel, prompts: PromptBatch, states: Tensor) -> Tensor:
    """Logits at the completion positions for the state ``states`` (one forward pass, the sampler's own
    input at that step). states ``[B, L]`` long (mask id where still masked) -> ``[B, L, V]``."""
    ids, attn = full_sequence(prompts, states)  # [B, P+L], [B, P+L]
    device = model.device
    return model.logits(ids.to(device), attn.to(device), keep=slice(-states.shape[1], None))  # [B, L, V]


def step_logprob_sums(logits: Tensor, tokens: Tensor, committed: Tensor) -> Tensor:
    """``ℓ(k) = Σ_{i ∈ I_k} log p(x^i | x_k)`` at temperature 1 (0 when ``I_k = ∅``) (EGSPO §3, spec §3.3).

    logits ``[B, L, V]`` (forward pass on ``x_k``), tokens ``[B, L]``, committed ``[B, L]`` bool -> ``[B]``.
    """
    logp = gather_logprobs(logits, tokens.to(logits.device))  # [B, L]
    return masked_sum(logp, committed.to(logp.device), dim=-1)


# ---------------------------------------------------------------------------------------------
# Block-causal trajectory (dTRPO's state reduction)
# ---------------------------------------------------------------------------------------------


def block_index(gen_length: int, block_length: int, device: torch.device | None = None) -> Tensor:
    """Block of every completion position, ``i // block_length``. # [L] long"""
    return torch.arange(gen_length, device=device) // block_length


def uniform(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    """``U(0, 1)`` draws from ``generator`` on its own device (the engine's streams live on the
    accelerator), returned on the CPU. # shape"""
    return torch.rand(shape, generator=generator, dtype=dtype, device=generator.device).cpu()


def block_step_candidates(unmask_step: Tensor, block_length: int) -> tuple[Tensor, Tensor]:
    """The steps each block actually took, padded: ``(candidates [B, N_B, T_max], T_B [B, N_B])``.

    Built from :func:`remask.trajectory.block_step_table`. Semi-autoregressive samplers give every
    block the same ``T_B``; threshold samplers (Fast-dLLM) give blocks different counts. Padding
    entries repeat the block's last step and are never drawn.
    """
    table = block_step_table(unmask_step.cpu(), block_length)  # [B][N_B][T_B]
    b = len(table)
    n_blocks = len(table[0]) if b else 0
    t_max = max((len(steps) for row in table for steps in row), default=1)
    candidates = torch.zeros((b, n_blocks, t_max), dtype=torch.long)
    counts = torch.zeros((b, n_blocks), dtype=torch.long)
    for r, row in enumerate(table):
        for j, steps in enumerate(row):
            counts[r, j] = len(steps)
            if steps:
                candidates[r, j, : len(steps)] = torch.tensor(steps)
                candidates[r, j, len(steps):] = steps[-1]
    return candidates.to(unmask_step.device), counts.to(unmask_step.device)


def draw_block_steps(unmask_step: Tensor, block_length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Draw ``t_b ~ U(S_b)`` for every row and block (dTRPO's state reduction, spec §3.4 (2)).

    Returns ``(steps [B, N_B] long, T_B [B, N_B] long)``; ``steps`` are sampler step indices. The
    uniform draws come from ``generator`` (float64, on the generator's own device).
    """
    candidates, counts = block_step_candidates(unmask_step, block_length)  # [B, N_B, T_max], [B, N_B]
    u = uniform(tuple(counts.shape), generator, torch.float64)  # [B, N_B]
    pick = (u * counts.cpu().double()).floor().long().clamp(min=0)
    pick = torch.minimum(pick, (counts.cpu() - 1).clamp(min=0)).to(candidates.device)  # [B, N_B]
    steps = candidates.gather(-1, pick.unsqueeze(-1)).squeeze(-1)  # [B, N_B]
    return steps, counts


def remasked_completion(
    completion_ids: Tensor,  # [B, L] long
    unmask_step: Tensor,  # [B, L] long
    block_steps: Tensor,  # [B, N_B] long, t_b per block
    block_length: int,
    mask_token_id: int,
) -> tuple[Tensor, Tensor]:
    """The re-masked final state: block ``b`` of ``y`` as it was before its step ``t_b``.

    Returns ``(z [B, L], newly [B, L] bool)``: ``z_i = M`` where ``unmask_step_i >= t_{b(i)}``, and
    ``newly`` marks ``I_{b,t_b}`` (positions of block ``b`` committed at ``t_b``).
    """
    blk = block_index(completion_ids.shape[1], block_length, completion_ids.device)  # [L]
    t_of_pos = block_steps.to(completion_ids.device)[:, blk]  # [B, L]
    masked = unmask_step >= t_of_pos  # [B, L]
    z = torch.where(masked, torch.full_like(completion_ids, mask_token_id), completion_ids)
    return z, unmask_step == t_of_pos


def prompt_position_ids(prompt_mask: Tensor, gen_length: int) -> Tensor:
    """Position ids of ``[prompt, completion]`` that skip left padding. # [B, P + L] long

    The first real prompt token is position 0 (the Hugging Face convention for left-padded batches);
    pads get 0. Without padding this is ``arange(P + L)``.
    """
    pm = prompt_mask.long()  # [B, P]
    prompt_pos = (pm.cumsum(-1) - 1).clamp(min=0)  # [B, P]
    start = pm.sum(-1, keepdim=True)  # [B, 1]
    comp_pos = start + torch.arange(gen_length, device=pm.device)  # [B, L]
    return torch.cat([prompt_pos, comp_pos], dim=1)


def staircase_attention_mask(
    prompt_mask: Tensor,  # [B, P] bool, True on real prompt tokens
    gen_length: int,
    block_length: int,
    *,
    remasked_blocks: Sequence[int] | None = None,
    clean_blocks: int | None = None,
) -> Tensor:
    """Block-causal 4-D mask for ``[prompt, clean blocks, re-masked blocks]``. # [B, 1, S, S] bool

    True = may attend. Queries see real prompt tokens; the prompt sees only the prompt; clean block
    ``j`` sees clean blocks ``<= j``; re-masked block ``j`` sees clean blocks ``< j`` and itself.
    Every position sees itself, so no row is empty (pads are never attended by anything else).

    With the defaults the layout is the single pass ``[prompt, y (L), z (L)]``. For the per-block
    forward of block ``b`` pass ``clean_blocks=b`` (only ``y_{<b}`` is present) and
    ``remasked_blocks=[b]``: the layout is then ``[prompt, y_{<b}, z_b]``.
    """
    bsz, p = prompt_mask.shape
    device = prompt_mask.device
    n_blocks = (gen_length + block_length - 1) // block_length
    blk = block_index(gen_length, block_length, device)  # [L]
    if clean_blocks is None:
        clean_blk = blk  # [L_clean]
    else:
        clean_blk = blk[: min(clean_blocks * block_length, gen_length)]
    if remasked_blocks is None:
        remasked_blocks = range(n_blocks)
    remasked_blk = torch.cat([blk[blk == j] for j in remasked_blocks]) if len(remasked_blocks) else blk[:0]
    # kind: 0 prompt, 1 clean, 2 re-masked; block -1 for the prompt
    kind = torch.cat([
        torch.zeros(p, dtype=torch.long, device=device),
        torch.ones(clean_blk.numel(), dtype=torch.long, device=device),
        torch.full((remasked_blk.numel(),), 2, dtype=torch.long, device=device),
    ])  # [S]
    blocks = torch.cat([torch.full((p,), -1, dtype=torch.long, device=device), clean_blk, remasked_blk])  # [S]
    s = kind.numel()
    qk, kk = kind.view(s, 1), kind.view(1, s)  # [S, 1], [1, S]
    qb, kb = blocks.view(s, 1), blocks.view(1, s)
    clean_sees = (qk == 1) & (kk == 1) & (kb <= qb)
    remasked_sees_clean = (qk == 2) & (kk == 1) & (kb < qb)
    remasked_sees_self = (qk == 2) & (kk == 2) & (kb == qb)
    body = (clean_sees | remasked_sees_clean | remasked_sees_self).unsqueeze(0).expand(bsz, s, s)  # [B, S, S]
    real_key = torch.cat([prompt_mask.bool(), torch.ones(bsz, s - p, dtype=torch.bool, device=device)], 1)  # [B, S]
    sees_prompt = (kk == 0).unsqueeze(0) & real_key.unsqueeze(1)  # [B, S, S]
    eye = torch.eye(s, dtype=torch.bool, device=device).unsqueeze(0)
    return (body | sees_prompt | eye).unsqueeze(1)  # [B, 1, S, S]


def shifts_logits(model: DiffusionModel) -> bool:
    """Whether ``model`` (or the adapter a reference wrapper holds as ``base``) undoes an AR shift."""
    while model is not None:
        if getattr(model, "shift_logits", False):
            return True
        model = getattr(model, "base", None)
    return False


def newly_unmasked_logps_single_pass(
    model: DiffusionModel,
    prompts: PromptBatch,
    completion_ids: Tensor,  # [B, L]
    remasked: Tensor,  # [B, L] z from remasked_completion
    block_length: int,
) -> Tensor:
    """``log μ(y_i | τ_{b(i), t_b})`` for every position from ONE forward. # [B, L] float32

    Input ``[prompt, y, z]`` (``S = P + 2L``), the staircase mask of
    :func:`staircase_attention_mask`, and the completion's position ids repeated for the copy
    ``z``. The logits of the copy are read; callers keep only the newly unmasked positions. For
    adapters with ``shift_logits`` (Dream) the first position of every re-masked block is read from
    the clean copy, so that the result still equals :func:`newly_unmasked_logps_per_block`.
    Needs ``model.supports_4d_mask``.
    """
    prompt_ids = prompts.prompt_ids.to(completion_ids.device)
    prompt_mask = prompts.attention_mask.to(completion_ids.device)
    p, l = prompt_ids.shape[1], completion_ids.shape[1]
    input_ids = torch.cat([prompt_ids, completion_ids, remasked], dim=1)  # [B, P + 2L]
    pos = prompt_position_ids(prompt_mask, l)  # [B, P + L]
    position_ids = torch.cat([pos, pos[:, p:]], dim=1)  # [B, P + 2L]
    attn = staircase_attention_mask(prompt_mask, l, block_length)  # [B, 1, S, S]
    logits = model.logits(input_ids, attn, keep=slice(p, None), position_ids=position_ids)  # [B, 2L, V]
    copy_logits = logits[:, l:]  # [B, L, V]
    if shifts_logits(model):
        # Dream-style adapters read token i's prediction from raw position i-1 and shift it inside.
        # The first token of re-masked block b must come from the position before it in ITS state,
        # the clean y_{b·B-1} (or the last prompt token): that is the clean copy's shifted logit.
        starts = torch.arange(0, l, block_length, device=logits.device)  # [N_B]
        copy_logits = copy_logits.clone()
        copy_logits[:, starts] = logits[:, starts]
    return gather_logprobs(copy_logits, completion_ids)  # [B, L]


def newly_unmasked_logps_per_block(
    model: DiffusionModel,
    prompts: PromptBatch,
    completion_ids: Tensor,  # [B, L]
    remasked: Tensor,  # [B, L]
    block_length: int,
) -> Tensor:
    """Same numbers as :func:`newly_unmasked_logps_single_pass` from ``N_B`` block-causal forwards.

    Block ``b``'s forward reads ``[prompt, y_{<b}, z_b]`` with the block-causal mask restricted to
    it and the same position ids. # [B, L] float32
    """
    prompt_ids = prompts.prompt_ids.to(completion_ids.device)
    prompt_mask = prompts.attention_mask.to(completion_ids.device)
    p, l = prompt_ids.shape[1], completion_ids.shape[1]
    pos = prompt_position_ids(prompt_mask, l)  # [B, P + L]
    out = torch.zeros(completion_ids.shape, dtype=torch.float32, device=completion_ids.device)
    n_blocks = (l + block_length - 1) // block_length
    for b in range(n_blocks):
        lo, hi = b * block_length, min((b + 1) * block_length, l)
        input_ids = torch.cat([prompt_ids, completion_ids[:, :lo], remasked[:, lo:hi]], dim=1)  # [B, P + hi]
        attn = staircase_attention_mask(prompt_mask, l, block_length, remasked_blocks=[b], clean_blocks=b)
        logits = model.logits(input_ids, attn, keep=slice(p + lo, p + hi), position_ids=pos[:, : p + hi])  # [B, hi − lo, V]
        out[:, lo:hi] = gather_logprobs(logits, completion_ids[:, lo:hi])
    return out


def newly_unmasked_logps_full_state(
    model: DiffusionModel,
    prompts: PromptBatch,
    completion_ids: Tensor,  # [B, L]
    unmask_step: Tensor,  # [B, L]
    block_steps: Tensor,  # [B, N_B]
    block_length: int,
) -> Tensor:
    """``log μ(y_i | x^{(t_b)})`` on the exact sampler states, one full-attention forward per block.

    Block ``b``'s forward reads ``[prompt, x^{(t_b)}]`` (``remask.state_before_step``) with the 2-D
    padding mask, as the sampler did; only block ``b``'s positions are kept. # [B, L] float32
    """
    prompt_ids = prompts.prompt_ids.to(completion_ids.device)
    prompt_mask = prompts.attention_mask.to(completion_ids.device)
    p, l = prompt_ids.shape[1], completion_ids.shape[1]
    out = torch.zeros(completion_ids.shape, dtype=torch.float32, device=completion_ids.device)
    attn = torch.cat([prompt_mask.bool(), torch.ones_like(completion_ids, dtype=torch.bool)], dim=1)  # [B, P + L]
    for b in range(block_steps.shape[1]):
        lo, hi = b * block_length, min((b + 1) * block_length, l)
        x_t, _ = state_before_step(completion_ids, unmask_step, block_steps[:, b], model.mask_token_id)
        logits = model.logits(torch.cat([prompt_ids, x_t], dim=1), attn, keep=slice(p + lo, p + hi))  # [B, hi − lo, V]
        out[:, lo:hi] = gather_logprobs(logits, completion_ids[:, lo:hi])
    return out


def block_sums(values: Tensor, keep: Tensor, block_length: int, n_blocks: int) -> Tensor:
    """``Σ_{i ∈ block b, keep_i} values_i`` per block. ``[B, L] -> [B, N_B]``."""
    blk = block_index(values.shape[1], block_length, values.device)  # [L]
    out = torch.zeros(values.shape[0], n_blocks, dtype=values.dtype, device=values.device)
    return out.index_add(1, blk, values * keep.to(values.dtype))


def trajectory_log_ratio(delta: Tensor, weights: Tensor) -> Tensor:
    """``R̂ = Σ_b w_b Δ_{b, t_b}`` (spec §3.4 (2)); ``w_b = T_B`` for a uniform draw. ``[B, N_B] -> [B]``.

    With ``w_b = 1 / P(t_b)`` any step distribution gives an unbiased estimate of Σ_b Σ_t Δ_{b,t}.
    """
    return (weights.to(delta.dtype) * delta).sum(-1)


@torch.no_grad()
def exact_trajectory_log_ratio(
    policy: DiffusionModel,
    reference: DiffusionModel,
    prompts: PromptBatch,
    completion_ids: Tensor,  # [B, L]
    unmask_step: Tensor,  # [B, L]
    block_length: int,
    attention: str = "block-causal",
) -> Tensor:
    """Brute force ``Σ_b Σ_{t ∈ S_b} Δ_{b,t}`` over every step of every block (tests, diagnostics).

    ``attention="block-causal"`` reads each state block-causally (:func:`newly_unmasked_logps_per_block`),
    ``"full"`` on the exact sampler state (:func:`newly_unmasked_logps_full_state`; then this is the
    exact trajectory log-ratio of a confidence sampler). Enumerates the j-th step of every block at
    once (blocks with fewer steps repeat their last one and are not counted again). Costs
    ``2 · max T_B`` (block-causal) or ``2 · N_B · max T_B`` passes. # [B]
    """
    candidates, counts = block_step_candidates(unmask_step, block_length)  # [B, N_B, T_max], [B, N_B]
    n_blocks = counts.shape[1]
    total = torch.zeros(completion_ids.shape[0], dtype=torch.float32, device=completion_ids.device)
    for j in range(candidates.shape[-1]):
        steps = candidates[..., j]  # [B, N_B]
        fresh = (j < counts).to(torch.float32)  # [B, N_B]
        z, newly = remasked_completion(completion_ids, unmask_step, steps, block_length, policy.mask_token_id)
        if attention == "block-causal":
            lp = newly_unmasked_logps_per_block(policy, prompts, completion_ids, z, block_length)
            lr = newly_unmasked_logps_per_block(reference, prompts, completion_ids, z, block_length)
        else:
            lp = newly_unmasked_logps_full_state(policy, prompts, completion_ids, unmask_step, steps, block_length)
            lr = newly_unmasked_logps_full_state(reference, prompts, completion_ids, unmask_step, steps, block_length)
        delta = block_sums(lp - lr, newly, block_length, n_blocks)  # [B, N_B]
        total = total + (delta * fresh).sum(-1)
    return total


# ---------------------------------------------------------------------------------------------
# Coupled views (DiffuCoder's Coupled-GRPO) and per-row stratified fixed-count views (VRPO)
# ---------------------------------------------------------------------------------------------


def coupled_weights(
    pair_mask: Tensor,  # [B, L] bool, the tokens masked in the first pair view (u < t)
    t: Tensor,  # [B] or [B, 1] float, the mask ratio of the first pair view
    *,
    full_view: bool = True,
    pair_reduction: str = "sum",
) -> Tensor:
    """Weights of DiffuCoder's coupled estimate (arXiv 2506.20639; apple/ml-diffucoder @ f735e01
    ``selective_log_softmax``), scaled for :func:`token_logprobs`'s ``1/N``. # [N, B, L] float32

    Views: ``[x^(0) (all completion tokens masked), x^(1) (pair_mask), x^(2) (the complement)]``
    (``N = 3``; ``N = 2`` without ``full_view``). The per-token estimate they give is

        ℓ̃(o_k) = ½ · [ ℓ^(0)_k + c · ( 1[k ∈ S]·ℓ^(1)_k / t + 1[k ∉ S]·ℓ^(2)_k / (1 − t) ) ]

    with ``c = 1`` (``pair_reduction="sum"``, the official code: ½·full + the pair's *sum*, about
    1.5× a log-probability for a context-free model) or ``c = ½`` (``"mean"``). Without the full view
    ``ℓ̃ = c · (pair term)``. Every weight carries the factor ``N`` that :func:`token_logprobs`'s
    mean over views divides out again.
    """
    if pair_reduction not in ("sum", "mean"):
        raise ValueError(f"pair_reduction must be 'sum' or 'mean', got {pair_reduction!r}")
    s = pair_mask.cpu().bool()  # [B, L]
    tt = t.cpu().float().reshape(-1, 1)  # [B, 1]
    c = 1.0 if pair_reduction == "sum" else 0.5
    half = 0.5 if full_view else 1.0  # the ½ of (full + pair)
    pair = [s.float() * (half * c / tt), (~s).float() * (half * c / (1.0 - tt))]  # 2 × [B, L]
    views = ([torch.full(s.shape, 0.5)] if full_view else []) + pair
    n = len(views)
    return torch.stack(views) * n  # [N, B, L]


def coupled_views(
    prompt_ids: Tensor,  # [B, P] long
    completion_ids: Tensor,  # [B, L] long
    mask_token_id: int,
    *,
    seed: int,
    t_low: float = 0.2,
    t_high: float = 0.8,
    t_per: str = "batch",
    full_view: bool = True,
    pair_reduction: str = "sum",
) -> NoisyViews:
    """DiffuCoder's coupled views of a micro-batch (Coupled-GRPO, arXiv 2506.20639; official code
    ``forward_process`` @ f735e01): ``t ~ U(t_low, t_high)`` (one per call with ``t_per="batch"``, as
    the code; one per row with ``"row"``), ``u ~ U(0, 1)^{B×L}``, and the views ``[M…M]`` (full),
    ``o`` masked where ``u < t`` and ``o`` masked where ``u ≥ t`` — every completion token (post-EOS
    padding included, as the code) is masked in exactly one pair view. The prompt is never masked.
    Weights from :func:`coupled_weights`. Deterministic in ``seed`` (a local CPU generator; the
    official code reseeds the global RNGs instead, so parity is statistical, not bitwise).
    """
    if not 0.0 < t_low <= t_high < 1.0:
        raise ValueError(f"need 0 < t_low <= t_high < 1, got t_low={t_low}, t_high={t_high}")
    if t_per not in ("batch", "row"):
        raise ValueError(f"t_per must be 'batch' or 'row', got {t_per!r}")
    g = _local_generator(seed)
    b, l = completion_ids.shape
    t = t_low + (t_high - t_low) * torch.rand((1 if t_per == "batch" else b, 1), generator=g)  # [1 or B, 1]
    t = t.expand(b, 1)  # [B, 1]
    pair_mask = torch.rand((b, l), generator=g) < t  # [B, L]
    masks = ([torch.ones(b, l, dtype=torch.bool)] if full_view else []) + [pair_mask, ~pair_mask]
    masked = torch.stack(masks)  # [N, B, L]
    weights = coupled_weights(pair_mask, t, full_view=full_view, pair_reduction=pair_reduction)  # [N, B, L]
    return _views(prompt_ids, completion_ids, masked, weights, mask_token_id, seed)


def stratified_count_views(
    prompt_ids: Tensor,  # [B, P] long
    completion_ids: Tensor,  # [B, L] long
    mask_token_id: int,
    *,
    n_t: int,
    seed: int,
    n_yt: int = 1,
    span: Tensor | None = None,  # [B, L] bool; None = every completion position
    stratified: bool = True,
) -> NoisyViews:
    """``N = n_t · n_yt`` fixed-count ELBO views per row whose mask counts are stratified across the
    views of that row (LLaDA's ``get_log_likelihood`` @ b7e6c35; VRPO, LLaDA 1.5 arXiv 2505.19223):

        l_j = 1 + (⌊k_0 + j·u/n_t + ½⌋ mod u),  k_0 ~ U{0..u−1},  j = 0..n_t−1   (u = span length)

    each count used by ``n_yt`` independent uniformly random subsets of the span (``n_yt = 1`` is
    VRPO's optimal allocation, one mask per timestep). Weight ``u / l_j`` on the masked tokens
    (:func:`fixed_count_weights`), so ``Σ_k ℓ(o_k)`` from :func:`token_logprobs` is

        B̂(o) = (1/N) Σ_j Σ_{i masked in view j} (u / l_j) · log p(o_i | x^{(j)}).

    Counts come from :func:`draw_mask_counts` (one stratified draw per row, rounding half up so each
    view's count stays uniform on ``{1..u}``; LLaDA's ``torch.round`` rounds ties to even).
    ``stratified=False`` draws every count independently. Views of a row with an empty span are
    unmasked and weigh 0.
    """
    if n_t < 1 or n_yt < 1:
        raise ValueError(f"n_t and n_yt must be >= 1, got n_t={n_t}, n_yt={n_yt}")
    g = _local_generator(seed)
    b, l = completion_ids.shape
    span = torch.ones(b, l, dtype=torch.bool) if span is None else span.cpu().bool()  # [B, L]
    n = n_t * n_yt
    rows = []
    for r in range(b):
        u = span[r].sum().reshape(1).expand(n_t)  # [n_t]
        counts = draw_mask_counts(u, g, include_zero=False, stratified=stratified).repeat_interleave(n_yt)  # [N]
        rows.append(fixed_count_mask(span[r].expand(n, l), counts, g))  # [N, L]
    masked = torch.stack(rows, dim=1)  # [N, B, L]
    weights = fixed_count_weights(masked, span, include_zero=False)  # [N, B, L]
    return _views(prompt_ids, completion_ids, masked, weights, mask_token_id, seed)


def stratified_time_views(
    prompt_ids: Tensor,  # [B, P] long
    completion_ids: Tensor,  # [B, L] long
    mask_token_id: int,
    *,
    n_t: int,
    seed: int,
    n_yt: int = 1,
    span: Tensor | None = None,  # [B, L] bool; None = every completion position
    stratified: bool = True,
    t_min: float = 1e-3,
) -> NoisyViews:
    """``N = n_t · n_yt`` random-t ELBO views per row over a span (VRPO's continuous form, LLaDA 1.5
    arXiv 2505.19223; LLaDA eq. 3): per row ``t_j = (j + v)/n_t`` with one ``v ~ U(0, 1)``
    (``stratified``) or ``t_j ~ U(0, 1)`` i.i.d., clamped to ``≥ t_min`` (LLaDA's ε); each span token
    masked independently w.p. ``t_j`` in each of the ``n_yt`` views of that timestep; weight
    ``1[masked]/t_j``. Positions outside the span are never masked and weigh 0, so ``Σ_k ℓ(o_k)``
    from :func:`token_logprobs` is ``(1/N) Σ_views (1/t) Σ_{i masked} log p(o_i | view)``.
    """
    if n_t < 1 or n_yt < 1:
        raise ValueError(f"n_t and n_yt must be >= 1, got n_t={n_t}, n_yt={n_yt}")
    g = _local_generator(seed)
    b, l = completion_ids.shape
    span = torch.ones(b, l, dtype=torch.bool) if span is None else span.cpu().bool()  # [B, L]
    if stratified:
        v = torch.rand((1, b), generator=g)  # [1, B]
        t = (torch.arange(n_t, dtype=torch.float32).unsqueeze(-1) + v) / n_t  # [n_t, B]
    else:
        t = torch.rand((n_t, b), generator=g)  # [n_t, B]
    t = t.clamp_min(t_min).repeat_interleave(n_yt, dim=0).unsqueeze(-1)  # [N, B, 1]
    masked = (torch.rand((n_t * n_yt, b, l), generator=g) < t) & span  # [N, B, L]
    weights = masked.float() / t  # [N, B, L]
    return _views(prompt_ids, completion_ids, masked, weights, mask_token_id, seed)


def views_log_ratio(
    policy: DiffusionModel,
    reference: DiffusionModel,
    prompts: PromptBatch,
    completion_ids: Tensor,  # [B, L] long
    views: NoisyViews,
    keep: Tensor,  # [B, L] bool, the positions summed (the completion through EOS, or a span)
) -> Tensor:
    """``Σ_k keep_k [ℓ_θ(o_k) − ℓ_ref(o_k)]`` with both models on the *same* views (:func:`token_logprobs`),
    on the policy's device; the estimate a registered likelihood estimator returns for one draw. # [B] (CPU)"""
    device = policy.device
    ids = completion_ids.to(device)
    _, attn = full_sequence(prompts, ids)  # [B, P+L]
    views = views_to(views, device)
    diff = token_logprobs(policy, views, attn, ids) - token_logprobs(reference, views, attn, ids)  # [B, L]
    return (diff * keep.to(device).float()).sum(-1).cpu()
