"""The samplers: LLaDA semi-autoregressive remasking, Dream's global confidence decoding, Fast-dLLM.

Each returns a :class:`remask.Rollout` with ``unmask_step`` and, unless ``record_step_stats`` is
off, the per-step T=1 log-probs and mean entropies of the committed tokens (spec algorithms.md §2.4).
Randomness comes only from the ``generator`` argument, so the same generator state gives the same
rollout. Rows are decoded together; prompts are left-padded and the padding mask is passed to the
model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from remask import ComponentConfig, DiffusionModel, PromptBatch, Rollout, Sampler
from remask.errors import RemaskError

from .block_cache import BlockForward, CachePolicy
from .sampling import (
    Proposals,
    RowWorkspace,
    StepRecorder,
    completion_mask_through_eos,
    draw_uniform,
    gumbel_noise,
    inverse_cdf_sample,
    max_excluding_,
    num_transfer_tokens,
    propose,
    select_top_k,
    top_k_filter,
    top_p_filter,
    upstream_confidence,
    upstream_top_k,
)

__all__ = ["LLaDASampler", "DreamSampler", "FastDLLMSampler"]


class _BlockConfig(ComponentConfig):
    gen_length: int = Field(32, ge=1, description="Completion length L (tokens generated per row).")
    block_length: int = Field(8, ge=1, description="Semi-autoregressive block length; must divide gen_length.")
    steps: int = Field(16, ge=1, description="Total denoising steps over all blocks (steps // blocks per block).")
    temperature: float = Field(0.0, ge=0, description="Gumbel-max sampling temperature τ of the proposals; 0 = greedy.")
    noise: Literal["gumbel", "llada"] = Field(
        "gumbel",
        description="Proposal noise at τ > 0: 'gumbel' = float32 Gumbel-max on the masked positions only (fast); "
                    "'llada' = LLaDA generate's float64 exp(ℓ)/(−log u)^τ with u drawn like upstream "
                    "([B, P+L, V] per step), bit-compatible with upstream's stream (slow at large V).",
    )
    ties: Literal["stable", "upstream"] = Field(
        "stable",
        description="Confidence ranking: 'stable' = float32 exp(ℓ − logsumexp ℓ), equal confidences go to the "
                    "lower position; 'upstream' = LLaDA generate's softmax in the model dtype and torch.topk order.",
    )
    record_step_stats: bool = Field(
        True, description="Record per-step T=1 log-probs and mean entropies of committed tokens (off saves memory)."
    )
    record_greedy_ids: bool = Field(
        False, description="Record greedy_ids [B, T, L]: each step's state with every masked position filled by argmax "
                           "(EGSPO-SA's one-step completions); off by default, objectives can recompute them.",
    )

    @model_validator(mode="after")
    def _blocks_divide(self) -> Any:
        if self.gen_length % self.block_length:
            raise ValueError(
                f"block_length {self.block_length} must divide gen_length {self.gen_length}"
            )
        if getattr(self, "cache", "none") == "dual" and self.record_greedy_ids:
            raise ValueError(
                "record_greedy_ids needs cache 'none' or 'prefix' (a dual-cached step sees only its block)"
            )
        return self


def _inference(sample: Callable[..., Rollout]) -> Callable[..., Rollout]:
    """Run ``sample`` inside :meth:`DiffusionModel.decoding` (no gradients, eval mode, mode restored)."""

    @functools.wraps(sample)
    def wrapper(self: Sampler, model: DiffusionModel, prompts: PromptBatch, generator: torch.Generator) -> Rollout:
        with model.decoding():
            return sample(self, model, prompts, generator)

    return wrapper


def _start(model: DiffusionModel, prompts: PromptBatch, gen_length: int) -> tuple[Tensor, Tensor, int]:
    """``x = [q, M×L]`` and its padding mask on the model's device. # [B, P+L] x2"""
    device = model.device
    b, p = prompts.prompt_ids.shape
    masks = torch.full((b, gen_length), model.mask_token_id, dtype=torch.long, device=device)
    x = torch.cat([prompts.prompt_ids.to(device), masks], dim=1)
    attn = torch.cat([prompts.attention_mask.to(device).bool(), torch.ones_like(masks, dtype=torch.bool)], dim=1)
    return x, attn, p


def _finish(sampler: Sampler, model: DiffusionModel, prompts: PromptBatch, x: Tensor, p: int,
            rec: StepRecorder, block_length: int, nfe: int) -> Rollout:
    t, unmask, logps, entropy, all_eos, greedy = rec.finish()
    completion = x[:, p:]
    mask = completion_mask_through_eos(completion, model.eos_token_id)
    return Rollout(
        prompts=prompts,
        completion_ids=completion,
        completion_mask=mask,
        unmask_step=unmask,
        block_length=block_length,
        num_steps=t,
        texts=tuple(model.decode(completion, mask)),
        nfe=nfe,
        step_logps=logps,
        step_entropy=entropy,
        step_all_eos=all_eos,
        greedy_ids=greedy,
        sampler={"name": sampler.name, **sampler.config.model_dump(mode="json")},
    )


def _greedy_fill(completion: Tensor, tail_logits: Tensor, offset: int, mask_token_id: int) -> Tensor:
    """One-step greedy completion ``x̂0(x_k)`` (spec §2.4, case 18): every masked position of the
    completion state filled with ``argmax ℓ`` (mask token excluded), committed tokens unchanged.

    ``completion`` ``[B, L]``; ``tail_logits`` ``[B, L − offset, V]`` cover positions ``offset..L-1``
    (all positions before ``offset`` must already be committed). -> ``[B, L]``.
    """
    fill = max_excluding_(tail_logits, mask_token_id)[1]  # [B, L − offset]
    out = completion.clone()
    tail = out[:, offset:]
    tail.copy_(torch.where(tail == mask_token_id, fill, tail))
    return out


def _check_prompts(prompts: PromptBatch, model: DiffusionModel) -> None:
    if prompts.batch_size == 0:
        raise RemaskError("sampler: the prompt batch is empty")
    if bool((prompts.prompt_ids == model.mask_token_id).any()):
        raise RemaskError(f"sampler: a prompt contains the mask token id {model.mask_token_id}")


def _propose_block(c: Any, model: DiffusionModel, logits: Tensor, x: Tensor, lo: int, hi: int,
                   generator: torch.Generator, workspace: RowWorkspace) -> tuple[Proposals, Tensor]:
    """Proposals for the block ``x[:, lo:hi]`` and the confidence that ranks them. ``([B, Bl]..., [B, Bl])``

    ``noise: llada`` draws its float64 uniforms with upstream's shape ``[B, P+L, V]`` (LLaDA
    ``generate`` draws noise for the whole sequence every step) so that the stream matches.
    ``ties: upstream`` ranks by upstream's model-dtype softmax instead of the float32 form. The
    masked rows are copied into ``workspace`` (reused by every step of the rollout).
    """
    block, masked = x[:, lo:hi], x[:, lo:hi] == model.mask_token_id  # [B, Bl] x2
    uniform = None
    if c.temperature > 0 and c.noise == "llada":
        full = (x.shape[0], x.shape[1], logits.shape[-1])
        uniform = draw_uniform(full, generator, logits.device)[:, lo:hi]  # [B, Bl, V] float64
    prop = propose(logits, block, masked, temperature=c.temperature, noise=c.noise, generator=generator,
                   mask_token_id=model.mask_token_id, uniform=uniform, workspace=workspace.get(logits))
    if c.ties == "upstream":
        return prop, upstream_confidence(logits, prop.ids, masked)
    return prop, prop.confidence


def _pick(c: Any, confidence: Tensor, k: Tensor, lo: int, width: int) -> Tensor:
    """The ``k[b]`` most confident block positions per row (ties by ``c.ties``). ``[B, Bl]`` bool"""
    if c.ties == "upstream":
        return upstream_top_k(confidence, k, lo, width)
    return select_top_k(confidence, k)


class LLaDASampler(Sampler):
    """LLaDA semi-autoregressive low-confidence remasking (d1 / LLaDA / Fast-dLLM `generate`)."""

    name = "llada"

    class Config(_BlockConfig):
        remasking: Literal["low_confidence", "random"] = Field(
            "low_confidence",
            description="Which masked positions to commit: highest untempered confidence, or uniformly random.",
        )
        cfg_scale: float = Field(
            0.0, ge=0, description="Classifier-free guidance weight w (0 = off; the unconditional pass masks the prompt)."
        )
        cache: CachePolicy = Field(
            "none",
            description="KV cache across the steps of a block (Fast-dLLM): none = exact full passes; prefix = "
                        "prompt and finished blocks cached; dual = also the masked suffix, later steps feed only "
                        "the block. Cached steps are approximate; the first step of each block is exact.",
        )

        @model_validator(mode="after")
        def _cfg_without_cache(self) -> Any:
            if self.cfg_scale > 0 and self.cache != "none":
                raise ValueError("cfg_scale > 0 needs cache 'none' (the unconditional pass has its own prompt)")
            return self

    def _logits(self, model: DiffusionModel, x: Tensor, attn: Tensor, prompt: Tensor, keep: slice) -> Tensor:
        """Logits of the ``keep`` positions, with classifier-free guidance ``ℓu + (w+1)(ℓc − ℓu)`` when
        ``w > 0``. # [B, |keep|, V]"""
        w = self.config.cfg_scale
        if w <= 0:
            return model.logits(x, attn, keep=keep)
        uncond = x.clone()
        p = prompt.shape[1]
        uncond[:, :p] = torch.where(prompt, torch.full_like(x[:, :p], model.mask_token_id), x[:, :p])
        both = model.logits(torch.cat([x, uncond]), torch.cat([attn, attn]), keep=keep)
        cond, unc = both.chunk(2)
        return unc + (w + 1.0) * (cond - unc)

    @_inference
    def sample(self, model: DiffusionModel, prompts: PromptBatch, generator: torch.Generator) -> Rollout:
        c = self.config
        _check_prompts(prompts, model)
        x, attn, p = _start(model, prompts, c.gen_length)
        b, mask_id = x.shape[0], model.mask_token_id
        n_blocks = c.gen_length // c.block_length
        steps_per_block = max(1, c.steps // n_blocks)
        rec = StepRecorder(b, c.gen_length, x.device, model.eos_token_id, c.record_step_stats)
        prompt_real = attn[:, :p]
        passes = BlockForward(model, attn, c.cache, keep_suffix=c.record_greedy_ids) if c.cfg_scale <= 0 else None
        workspace = RowWorkspace(b * c.block_length)
        nfe0 = model.nfe
        for block in range(n_blocks):
            lo, hi = p + block * c.block_length, p + (block + 1) * c.block_length
            schedule = num_transfer_tokens((x[:, lo:hi] == mask_id).sum(-1), steps_per_block)  # [B, S]
            if passes is not None:
                passes.start_block(lo, hi)
            for s in range(steps_per_block):
                step = block * steps_per_block + s
                if passes is None:
                    keep = slice(lo, None if c.record_greedy_ids else hi)
                    tail = self._logits(model, x, attn, prompt_real, keep)  # [B, Bl, V] ([B, P+L−lo, V])
                else:
                    tail = passes(x)  # [B, Bl, V]; [B, P+L−lo, V] when recording greedy completions
                logits = tail[:, : hi - lo]  # [B, Bl, V]; only the block competes
                greedy = _greedy_fill(x[:, p:], tail, lo - p, mask_id) if c.record_greedy_ids else None
                masked = x[:, lo:hi] == mask_id  # [B, Bl]
                prop, confidence = _propose_block(c, model, logits, x, lo, hi, generator, workspace)
                if c.remasking == "random":
                    if c.ties == "upstream":  # upstream draws float32 U(0,1) for the whole sequence
                        u = draw_uniform((b, x.shape[1]), generator, x.device, torch.float32)[:, lo:hi]
                    else:
                        u = draw_uniform(tuple(masked.shape), generator, x.device)
                    confidence = torch.where(masked, u, torch.full_like(u, float("-inf")))
                commit = _pick(c, confidence, schedule[:, s], lo, x.shape[1])  # [B, Bl]
                x[:, lo:hi] = torch.where(commit, prop.ids, x[:, lo:hi])
                stats = c.record_step_stats
                rec.add(torch.full((b,), step, device=x.device), lo - p, commit, prop.ids, None, greedy,
                        token_logp=prop.logp if stats else None,
                        token_entropy=prop.entropy(commit) if stats else None)
        return _finish(self, model, prompts, x, p, rec, c.block_length, model.nfe - nfe0)


class DreamSampler(Sampler):
    """Dream `diffusion_generate`: global confidence decoding on a linear timestep schedule."""

    name = "dream"

    class Config(ComponentConfig):
        gen_length: int = Field(32, ge=1, description="Completion length L (Dream's max_new_tokens).")
        steps: int = Field(32, ge=1, description="Denoising steps T over the whole completion.")
        temperature: float = Field(0.2, ge=0, description="Sampling temperature τ (0 = argmax).")
        top_p: float | None = Field(0.95, gt=0, le=1, description="Nucleus filter applied after the temperature.")
        top_k: int | None = Field(None, ge=1, description="Top-k filter applied after top-p.")
        alg: Literal["origin", "maskgit_plus", "topk_margin", "entropy"] = Field(
            "entropy",
            description=(
                "origin: reveal each masked position with probability 1 − s/t; else reveal the most confident: "
                "p(x̂0) (maskgit_plus), top1 − top2 (topk_margin) or negative entropy (entropy)."
            ),
        )
        alg_temp: float = Field(
            0.0, ge=0, description="With > 0, choose positions by sampling softmax(confidence / alg_temp) instead of top-k."
        )
        eps: float = Field(1e-3, gt=0, lt=1, description="Final time of the linear schedule linspace(1, eps, steps + 1).")
        record_step_stats: bool = Field(
            True, description="Record per-step T=1 log-probs and mean entropies of committed tokens (off saves memory)."
        )
        record_greedy_ids: bool = Field(
            False, description="Record greedy_ids [B, T, L]: each step's state with every masked position filled by "
                               "argmax (EGSPO-SA's one-step completions); off by default.",
        )

    def _sample_tokens(self, logits: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Dream ``sample_tokens``: (x̂0, confidence) under the tempered, filtered distribution. ``[N, V]``."""
        c = self.config
        lg = logits.float()
        if c.temperature > 0:
            lg = lg / c.temperature
        lg = top_k_filter(top_p_filter(lg, c.top_p), c.top_k)
        probs = torch.softmax(lg, dim=-1)  # [N, V]
        if c.temperature > 0:
            x0 = inverse_cdf_sample(probs, draw_uniform((probs.shape[0],), generator, probs.device))
            conf = probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
        else:
            conf, x0 = probs.max(-1)
        if c.alg == "topk_margin":
            top2 = torch.topk(probs, 2, dim=-1).values
            conf = top2[:, 0] - top2[:, 1]
        elif c.alg == "entropy":
            conf = (probs * torch.log(probs + 1e-10)).sum(-1)  # negative entropy, Dream's epsilon
        return x0, conf

    @_inference
    def sample(self, model: DiffusionModel, prompts: PromptBatch, generator: torch.Generator) -> Rollout:
        c = self.config
        _check_prompts(prompts, model)
        x, attn, p = _start(model, prompts, c.gen_length)
        b, mask_id, length = x.shape[0], model.mask_token_id, c.gen_length
        timesteps = torch.linspace(1.0, c.eps, c.steps + 1, dtype=torch.float64)
        rec = StepRecorder(b, length, x.device, model.eos_token_id, c.record_step_stats)
        nfe0 = model.nfe
        for i in range(c.steps):
            masked = x[:, p:] == mask_id  # [B, L]
            if not bool(masked.any()):
                break
            logits = model.logits(x, attn, keep=slice(p, None))  # [B, L, V]; the adapter undid any AR shift
            t, s = float(timesteps[i]), float(timesteps[i + 1])
            last = i == c.steps - 1
            greedy = _greedy_fill(x[:, p:], logits, 0, mask_id) if c.record_greedy_ids else None
            flat = logits[masked]  # [N, V] masked positions only (a copy)
            flat[:, mask_id] = float("-inf")  # never propose the mask token
            x0_flat, conf_flat = self._sample_tokens(flat, generator)
            proposal = torch.zeros_like(x[:, p:])
            proposal[masked] = x0_flat
            if c.alg == "origin":
                reveal = draw_uniform((b, length), generator, x.device) < (1.0 - s / t)
                commit = masked & (reveal | last)
            else:
                confidence = torch.full((b, length), float("-inf"), device=x.device)
                confidence[masked] = conf_flat.float()
                n_mask = masked.sum(-1)  # [B]
                k = n_mask if last else torch.floor(n_mask.double() * (1.0 - s / t)).long()
                if c.alg_temp > 0:  # sampling without replacement = Gumbel-top-k on confidence / alg_temp
                    u = draw_uniform((b, length), generator, x.device)
                    confidence = torch.where(masked, confidence.double() / c.alg_temp + gumbel_noise(u),
                                             torch.full_like(u, float("-inf")))
                commit = select_top_k(confidence, k)
            x[:, p:] = torch.where(commit, proposal, x[:, p:])
            rec.add(torch.full((b,), i, device=x.device), 0, commit, proposal,
                    logits if c.record_step_stats else None, greedy)
        return _finish(self, model, prompts, x, p, rec, length, model.nfe - nfe0)


class FastDLLMSampler(Sampler):
    """Fast-dLLM: confidence-threshold parallel decoding within blocks, with a prefix or dual KV cache."""

    name = "fast-dllm"

    class Config(_BlockConfig):
        threshold: float | None = Field(
            0.9, gt=0, le=1,
            description="Commit every masked block position with untempered confidence ≥ threshold (at least one "
                        "per step); None = the fixed LLaDA schedule of `steps` (fixed NFE per block).",
        )
        cache: CachePolicy = Field(
            "dual",
            description="KV cache across the steps of a block (Fast-dLLM): none = exact full passes; prefix = "
                        "PrefixCache; dual = DualCache (suffix cached too, later steps feed only the block). "
                        "Approximate; ignored by adapters without supports_kv_cache.",
        )
        max_tokens_per_step: int | None = Field(
            None, ge=1,
            description="With a threshold: at most this many tokens committed per row and step, the most confident "
                        "first (RL safety against over-confident parallel commits, d1 issue #25). None = no cap.",
        )

    @_inference
    def sample(self, model: DiffusionModel, prompts: PromptBatch, generator: torch.Generator) -> Rollout:
        c = self.config
        _check_prompts(prompts, model)
        x, attn, p = _start(model, prompts, c.gen_length)
        b, mask_id = x.shape[0], model.mask_token_id
        n_blocks = c.gen_length // c.block_length
        steps_per_block = max(1, c.steps // n_blocks)
        passes = BlockForward(model, attn, c.cache, keep_suffix=c.record_greedy_ids)
        rec = StepRecorder(b, c.gen_length, x.device, model.eos_token_id, c.record_step_stats)
        workspace = RowWorkspace(b * c.block_length)
        row_step = torch.zeros(b, dtype=torch.long, device=x.device)  # per-row step counter
        one = torch.ones(b, dtype=torch.long, device=x.device)
        nfe0 = model.nfe
        for block in range(n_blocks):
            lo, hi = p + block * c.block_length, p + (block + 1) * c.block_length
            schedule = num_transfer_tokens((x[:, lo:hi] == mask_id).sum(-1), steps_per_block)  # [B, S]
            passes.start_block(lo, hi)
            s = 0
            while bool((x[:, lo:hi] == mask_id).any()):
                tail = passes(x)  # [B, Bl, V]; [B, P+L−lo, V] when recording greedy completions
                logits = tail[:, : hi - lo]  # [B, Bl, V]
                greedy = _greedy_fill(x[:, p:], tail, lo - p, mask_id) if c.record_greedy_ids else None
                masked = x[:, lo:hi] == mask_id  # [B, Bl]
                prop, confidence = _propose_block(c, model, logits, x, lo, hi, generator, workspace)
                if c.threshold is None:
                    k = schedule[:, min(s, steps_per_block - 1)]
                    if s >= steps_per_block - 1:
                        k = masked.sum(-1)
                    commit = _pick(c, confidence, k, lo, x.shape[1])
                else:
                    over = masked & (confidence >= c.threshold)  # [B, Bl]
                    if c.max_tokens_per_step is not None:
                        capped = torch.where(over, confidence, torch.full_like(confidence, float("-inf")))
                        over = _pick(c, capped, one * c.max_tokens_per_step, lo, x.shape[1])
                    commit = over | _pick(c, confidence, one, lo, x.shape[1])
                x[:, lo:hi] = torch.where(commit, prop.ids, x[:, lo:hi])
                stats = c.record_step_stats
                rec.add(row_step, lo - p, commit, prop.ids, None, greedy,
                        token_logp=prop.logp if stats else None,
                        token_entropy=prop.entropy(commit) if stats else None)
                row_step = row_step + commit.any(-1).long()
                s += 1
        return _finish(self, model, prompts, x, p, rec, c.block_length, model.nfe - nfe0)
