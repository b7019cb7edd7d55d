"""dTRPO's trajectory log-ratio estimator (spec algorithms.md §3.4, reconstructed [DERIVED]).

For a completion ``y`` decoded block by block (``N_B`` blocks, block ``b`` taking the steps
``S_b``, ``T_B = |S_b|``) with selection probabilities that cancel between θ and ref (§3.4 (1)):

    log π_θ(τ)/π_ref(τ) = Σ_b Σ_{t ∈ S_b} Δ_{b,t},
    Δ_{b,t} = Σ_{i ∈ I_{b,t}} [ log μ_θ(y_i | τ_{b,t}) − log μ_ref(y_i | τ_{b,t}) ]

and one uniformly drawn step per block gives the unbiased estimate (§3.4 (2))

    R̂(τ) = Σ_b T_B · Δ_{b, t_b},    t_b ~ U(S_b) independently per block.

Steps are the sampler's own indices ``k`` (0..T−1, ``remask.trajectory``): the paper's
``τ_{b,t}`` is the state before step ``k`` and ``I_{b,t}`` the positions committed at ``k``.

How the model reads the state ``τ_{b,t_b}`` is an open choice, ``attention``:

* ``block-causal``: the block-diffusion view. Every query attends to the prompt and to the blocks up
  to and including its own; block ``b`` is conditioned on the prompt, the **clean** blocks ``< b``
  and itself re-masked, and sees nothing of later blocks (neither tokens nor masks). All ``N_B``
  conditionals come out of **one** forward of ``[prompt, clean y, re-masked y]`` with a staircase
  mask (:func:`staircase_attention_mask`); :func:`newly_unmasked_logps_per_block` computes the same
  numbers with ``N_B`` forwards of the truncated states ``[prompt, clean y_{<b}, re-masked y_b]``.
  Both need an adapter that accepts a 4-D mask.
* ``full``: the exact state the semi-autoregressive sampler conditioned on, ``x^{(t_b)}`` (prompt,
  clean earlier blocks, the partly masked block, the fully masked future), with the model's usual
  bidirectional attention and 2-D padding mask. One forward per block; no single-pass form exists,
  because every block would need its own copy of the masked future.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

import remask
from remask.functional import gather_logprobs

__all__ = [
    "uniform",
    "block_index",
    "block_step_candidates",
    "draw_block_steps",
    "remasked_completion",
    "staircase_attention_mask",
    "prompt_position_ids",
    "shifts_logits",
    "newly_unmasked_logps_single_pass",
    "newly_unmasked_logps_per_block",
    "newly_unmasked_logps_full_state",
    "block_sums",
    "trajectory_log_ratio",
    "transfer_schedule",
    "schedule_matched_unmask_step",
    "exact_trajectory_log_ratio",
]


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
    table = remask.block_step_table(unmask_step.cpu(), block_length)  # [B][N_B][T_B]
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
    """Draw ``t_b ~ U(S_b)`` for every row and block (dTRPO's state reduction, §3.4 (2)).

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


def shifts_logits(model: remask.DiffusionModel) -> bool:
    """Whether ``model`` (or the adapter a reference wrapper holds as ``base``) undoes an AR shift."""
    while model is not None:
        if getattr(model, "shift_logits", False):
            return True
        model = getattr(model, "base", None)
    return False


def newly_unmasked_logps_single_pass(
    model: remask.DiffusionModel,
    prompts: remask.PromptBatch,
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
    """
    prompt_ids = prompts.prompt_ids.to(completion_ids.device)
    prompt_mask = prompts.attention_mask.to(completion_ids.device)
    p, l = prompt_ids.shape[1], completion_ids.shape[1]
    input_ids = torch.cat([prompt_ids, completion_ids, remasked], dim=1)  # [B, P + 2L]
    pos = prompt_position_ids(prompt_mask, l)  # [B, P + L]
    position_ids = torch.cat([pos, pos[:, p:]], dim=1)  # [B, P + 2L]
    attn = staircase_attention_mask(prompt_mask, l, block_length)  # [B, 1, S, S]
    logits = model.forward(input_ids, attn, position_ids=position_ids).logits  # [B, S, V]
    copy_logits = logits[:, p + l :]  # [B, L, V]
    if shifts_logits(model):
        # Dream-style adapters read token i's prediction from raw position i-1 and shift it inside.
        # The first token of re-masked block b must come from the position before it in ITS state,
        # the clean y_{b·B-1} (or the last prompt token): that is the clean copy's shifted logit.
        starts = torch.arange(0, l, block_length, device=logits.device)  # [N_B]
        copy_logits = copy_logits.clone()
        copy_logits[:, starts] = logits[:, p + starts]
    return gather_logprobs(copy_logits, completion_ids)  # [B, L]


def newly_unmasked_logps_per_block(
    model: remask.DiffusionModel,
    prompts: remask.PromptBatch,
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
        logits = model.forward(input_ids, attn, position_ids=pos[:, : p + hi]).logits  # [B, P + hi, V]
        out[:, lo:hi] = gather_logprobs(logits[:, p + lo : p + hi], completion_ids[:, lo:hi])
    return out


def newly_unmasked_logps_full_state(
    model: remask.DiffusionModel,
    prompts: remask.PromptBatch,
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
        x_t, _ = remask.state_before_step(completion_ids, unmask_step, block_steps[:, b], model.mask_token_id)
        logits = model.forward(torch.cat([prompt_ids, x_t], dim=1), attn).logits  # [B, P + L, V]
        out[:, lo:hi] = gather_logprobs(logits[:, p + lo : p + hi], completion_ids[:, lo:hi])
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


def transfer_schedule(n: int, steps: int) -> list[int]:
    """Tokens committed at each of ``steps`` steps for ``n`` masked positions (LLaDA, spec §2.1).

    ``k_s = ⌊n / S⌋ + 1[s < n mod S]``: the remainder goes to the earliest steps, e.g.
    ``n = 32, S = 5 -> [7, 7, 6, 6, 6]``.
    """
    base, extra = divmod(n, steps)
    return [base + (1 if s < extra else 0) for s in range(steps)]


def schedule_matched_unmask_step(
    shape: tuple[int, int], block_length: int, steps_per_block: int, generator: torch.Generator
) -> Tensor:
    """A random-order trajectory with the sampler's schedule, for data without recorded steps.

    Spec §3.4 (3): in every block, a uniformly random order of its positions is cut by
    :func:`transfer_schedule` into ``steps_per_block`` steps, numbered ``b · steps_per_block + s``.
    The state before a uniformly drawn step is then a uniformly random subset of the block masked
    with the schedule's size, and ``I`` a random subset of it of size ``k_s``: the MDM forward
    process. This matches the recorded trajectory's law only for random-order samplers. # [B, L] long
    """
    bsz, l = shape
    out = torch.empty((bsz, l), dtype=torch.long)
    n_blocks = (l + block_length - 1) // block_length
    for b in range(n_blocks):
        lo, hi = b * block_length, min((b + 1) * block_length, l)
        n = hi - lo
        sched = transfer_schedule(n, steps_per_block)
        step_of_rank = torch.repeat_interleave(torch.arange(steps_per_block), torch.tensor(sched))  # [n]
        order = uniform((bsz, n), generator).argsort(dim=-1)  # [B, n] rank -> position
        block = torch.empty((bsz, n), dtype=torch.long)
        block.scatter_(1, order, step_of_rank.unsqueeze(0).expand(bsz, -1))
        out[:, lo:hi] = b * steps_per_block + block
    return out


@torch.no_grad()
def exact_trajectory_log_ratio(
    policy: remask.DiffusionModel,
    reference: remask.DiffusionModel,
    prompts: remask.PromptBatch,
    completion_ids: Tensor,  # [B, L]
    unmask_step: Tensor,  # [B, L]
    block_length: int,
    attention: str = "block-causal",
) -> Tensor:
    """Brute force ``Σ_b Σ_{t ∈ S_b} Δ_{b,t}`` over every step of every block (tests, diagnostics).

    Enumerates the j-th step of every block at once (blocks with fewer steps repeat their last one
    and are not counted again). Costs ``2 · max T_B`` (block-causal) or ``2 · N_B · max T_B`` passes. # [B]
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

