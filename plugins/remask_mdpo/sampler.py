"""MDPO's sampler ``mdpo``: MaskGIT-scheduled low-confidence decoding that records, at every step, the
one-step prediction of the whole completion and a per-position confidence; optionally with Running
Confidence Remasking (RCR). Follows ``diffusion_generate`` of autonomousvision/mdpo @ e6ae439
(``src/mdlm_generation_utils.py``; spec zoo-mdpo-tracerl.md §1.2), batched with padded prompts.

At step ``t`` with state ``x_t`` (completion part), one forward pass gives logits ``ℓ``; with
temperature ``τ > 0`` they are tempered and top-p / top-k filtered, ``p = softmax(ℓ/τ)``, and every
masked position draws ``x̂0_i ~ Categorical(p_i)`` (``τ = 0``: argmax). The recorded confidence is
``c_i = p_i(x̂0_i)`` (the tempered, filtered probability). The ranking score is ``c`` (``llada``),
``Σ p log p`` (``entropy``) or top1 − top2 (``topk_margin``), ``−∞`` at committed positions and at
positions past the current block. Recorded per step (``Rollout`` fields):

* ``step_pred_ids[t]``  = ``x_t`` with every masked position of the completion replaced by ``x̂0``;
* ``step_confidence[t]`` = ``c`` at the masked positions of ``x_t`` (0 elsewhere), or with RCR the
  running confidence ``ĉ`` after the step (0 where never committed);
* ``step_state_ids[t]`` = ``x_t`` (RCR only: RCR states cannot be rebuilt from ``unmask_step``).

Without RCR, the ``k_s`` highest-scored masked positions of the block are committed. With RCR, every
masked position before the block end is committed (``ĉ_i ←`` its score) and then, unless ``s`` is the
block's last step, the ``Σ_{s'>s} k_{s'}`` positions with the lowest ``ĉ`` over the whole sequence
(``ĉ = 0``, never committed, counts as 1) are masked again.

``mixture`` (the reference's ``mixture_data``, ``mdpo_trainer.py:766-767``): each prompt draws its
``(steps, block_length)`` from a configured set (one draw per prompt from the sampling stream, shared by
its G completions); the rows of each setting are decoded together and put back in order. A rollout has
one number of steps ``T``, so every pair must have the same ``steps``. ``Rollout.block_length`` is then
the smallest drawn block length and ``rollout.sampler["row_block_lengths"]`` holds each row's; MDPO's
advantage and objective never read it, but objectives that do (dTRPO) must not be given a mixture.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

import remask
from remask.errors import RemaskError

from .schedule import transfer_counts

__all__ = ["MDPOSampler", "filter_logits", "check_decode_setting"]


def filter_logits(logits: Tensor, top_p: float | None, top_k: int | None) -> Tensor:
    """Top-p then top-k filtering: removed entries get ``finfo.min`` (as the reference does). # [..., V]"""
    low = torch.finfo(logits.dtype).min
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum > top_p
        drop[..., 1:] = drop[..., :-1].clone()  # keep the first entry past the threshold
        drop[..., 0] = False
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), low)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, low)
    return logits


def check_decode_setting(gen_length: int, steps: int, block_length: int) -> str | None:
    """Why ``(steps, block_length)`` cannot decode ``gen_length`` positions (None if it can; trap M8)."""
    if gen_length % block_length:
        return f"gen_length ({gen_length}) must be a multiple of block_length ({block_length})"
    n_blocks = gen_length // block_length
    if steps % n_blocks:
        return f"steps ({steps}) must be a multiple of the number of blocks ({n_blocks})"
    return None


def _stable_top(score: Tensor, k: int, largest: bool) -> Tensor:
    """Bool mask of the ``k`` largest (or smallest) entries per row; ties go to the lower index. # [B, N]"""
    order = torch.sort(score, dim=-1, descending=largest, stable=True).indices  # [B, N]
    pick = torch.zeros_like(score, dtype=torch.bool)
    return pick.scatter(-1, order[:, :k], True) if k > 0 else pick


class MDPOSampler(remask.Sampler):
    """MDPO's MaskGIT-scheduled sampler recording one-step predictions and confidences (optionally RCR)."""

    name = "mdpo"

    class Config(remask.ComponentConfig):
        gen_length: int = Field(256, ge=1, description="L: completion positions generated per row.")
        block_length: int = Field(256, ge=1, description="Positions per semi-autoregressive block (L = one block).")
        steps: int = Field(128, ge=1, description="T: total denoising steps (split evenly over the blocks).")
        temperature: float = Field(
            0.4, ge=0, description="τ: logits are divided by τ and proposals drawn from Categorical(softmax); 0 = argmax "
            "(MDPO README run: 0.4)."
        )
        top_p: float | None = Field(None, gt=0, le=1, description="Nucleus filtering of the tempered logits (None: off).")
        top_k: int | None = Field(None, ge=1, description="Top-k filtering of the tempered logits (None: off).")
        conf_alg: Literal["llada", "entropy", "topk_margin"] = Field(
            "llada", description="Ranking score: p(x̂0) (llada), Σ p log p (entropy), top1 − top2 (topk_margin). "
            "The recorded confidence is p(x̂0) in every case (RCR records the score)."
        )
        rcr: bool = Field(False, description="Running Confidence Remasking: committed tokens can be remasked later.")
        schedule: Literal["maskgit-linear", "maskgit-cosine", "llada"] = Field(
            "maskgit-linear", description="Tokens per step inside a block: MaskGIT γ schedule (the reference) or LLaDA's "
            "even split."
        )
        exclude_mask_token: bool = Field(
            True, description="Never propose the mask token (the reference does not exclude it; a proposal equal to M "
            "would leave a position uncommitted at the end)."
        )
        mixture: list[tuple[int, int]] | None = Field(
            None, min_length=1, description="mixture_data: each prompt draws its (steps, block_length) from these pairs "
            "(uniformly, shared by its G completions); steps and block_length above are then unused. All pairs need "
            "the same steps. Reference training: [[steps, 128], [steps, 512]]. None: one setting for every row."
        )

        @model_validator(mode="after")
        def _blocks_divide(self) -> Any:
            for steps, block in self.mixture or [(self.steps, self.block_length)]:
                if steps < 1 or block < 1:
                    raise ValueError(f"(steps, block_length) = ({steps}, {block}) must both be positive")
                problem = check_decode_setting(self.gen_length, steps, block)
                if problem:
                    raise ValueError(problem if not self.mixture else f"mixture pair ({steps}, {block}): {problem}")
            if self.mixture and len({s for s, _ in self.mixture}) > 1:
                raise ValueError(f"mixture: every pair needs the same steps (a rollout has one T); got "
                                 f"{sorted({s for s, _ in self.mixture})}")
            return self

    def _propose(self, logits: Tensor, masked: Tensor, generator: torch.Generator, mask_id: int
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """Proposals, recorded confidence and ranking score at every completion position. # [B, L] x3"""
        c = self.config
        logits = logits.float()
        if c.exclude_mask_token and 0 <= mask_id < logits.shape[-1]:
            logits = logits.clone()
            logits[..., mask_id] = float("-inf")
        if c.temperature > 0:
            logits = logits / c.temperature
        logits = filter_logits(logits, c.top_p, c.top_k)
        probs = torch.softmax(logits, dim=-1)  # [B, L, V]
        if c.temperature > 0:
            flat = probs.reshape(-1, probs.shape[-1])
            rows = masked.reshape(-1)
            ids = probs.argmax(-1).reshape(-1)
            if bool(rows.any()):  # draw only where something is masked
                drawn = torch.multinomial(flat[rows].cpu(), 1, generator=generator).squeeze(-1)
                ids[rows] = drawn.to(ids.device)
            ids = ids.view(masked.shape)
        else:
            ids = probs.argmax(-1)
        conf = probs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # [B, L] p(x̂0)
        if c.conf_alg == "entropy":
            score = (probs * torch.log(probs + 1e-10)).sum(-1)
        elif c.conf_alg == "topk_margin":
            top2 = probs.topk(2, dim=-1).values
            score = top2[..., 0] - top2[..., 1]
        else:
            score = conf
        return ids, conf, score

    def sample(self, model: remask.DiffusionModel, prompts: remask.PromptBatch, generator: torch.Generator) -> remask.Rollout:
        with model.decoding():
            if self.config.mixture:
                return self._sample_mixture(model, prompts, generator)
            return self._sample(model, prompts, generator)

    def _sample_mixture(self, model: remask.DiffusionModel, prompts: remask.PromptBatch,
                        generator: torch.Generator) -> remask.Rollout:
        """Each prompt's rows decoded with the (steps, block_length) pair its group drew; rows in input order."""
        c = self.config
        groups = prompts.group_ids.cpu()  # [B]
        first = torch.unique_consecutive(groups)  # [n] one entry per prompt, in order
        drawn = torch.randint(len(c.mixture), (first.numel(),), generator=generator)  # [n]
        choice = torch.empty_like(groups)  # [B] pair index of each row
        for g, k in zip(first.tolist(), drawn.tolist()):
            choice[groups == g] = k
        parts: list[tuple[Tensor, remask.Rollout]] = []
        for k in sorted(set(drawn.tolist())):
            rows = (choice == k).nonzero().flatten()  # [b_k]
            steps, block = c.mixture[k]
            part = MDPOSampler(c.model_copy(update={"mixture": None, "steps": steps, "block_length": block}))
            parts.append((rows, part._sample(model, remask.take(prompts, rows), generator)))
        order = torch.cat([rows for rows, _ in parts]).argsort()  # position of each input row in the concatenation

        def cat(field: str) -> Tensor | None:
            values = [getattr(r, field) for _, r in parts]
            if values[0] is None:
                return None
            return torch.cat([v.to(values[0].device) for v in values])[order.to(values[0].device)]

        texts = [t for _, r in parts for t in r.texts]
        return remask.Rollout(
            prompts=prompts,
            completion_ids=cat("completion_ids"),
            completion_mask=cat("completion_mask"),
            unmask_step=cat("unmask_step"),
            block_length=min(c.mixture[k][1] for k in drawn.tolist()),  # the rows differ: see the class docs
            num_steps=c.mixture[0][0],
            texts=tuple(texts[i] for i in order.tolist()),
            nfe=sum(r.nfe for _, r in parts),
            step_pred_ids=cat("step_pred_ids"),  # [B, T, L]
            step_confidence=cat("step_confidence"),  # [B, T, L]
            step_state_ids=cat("step_state_ids"),  # [B, T, L] or None
            sampler={"name": self.name, **c.model_dump(mode="json"),
                     "row_block_lengths": tuple(c.mixture[k][1] for k in choice.tolist())},  # [B], sliced by take()
        )

    def _sample(self, model: remask.DiffusionModel, prompts: remask.PromptBatch, generator: torch.Generator) -> remask.Rollout:
        c = self.config
        device, mask_id = model.device, model.mask_token_id
        if generator.device.type != "cpu":
            raise RemaskError("sampler mdpo: the generator must be a CPU torch.Generator")
        b, p = prompts.prompt_ids.shape
        l = c.gen_length
        x = torch.full((b, l), mask_id, dtype=torch.long, device=device)  # [B, L] completion state
        _, attn = remask.functional.full_sequence(prompts, x)  # [B, P+L]
        prompt_ids = prompts.prompt_ids.to(device)
        n_blocks = l // c.block_length
        per_block = c.steps // n_blocks
        counts = transfer_counts(c.block_length, per_block, c.schedule)  # every block starts fully masked
        last_commit = torch.full((b, l), -1, dtype=torch.long, device=device)  # [B, L]
        running = torch.zeros(b, l, dtype=torch.float32, device=device)  # ĉ over the completion [B, L]
        pos = torch.arange(l, device=device)
        preds, confs, states = [], [], []
        nfe0 = model.nfe
        for block in range(n_blocks):
            end = (block + 1) * c.block_length
            for s in range(per_block):
                step = block * per_block + s
                masked = x == mask_id  # [B, L]
                if c.rcr:
                    states.append(x.to(torch.int32).cpu())
                logits = model.logits(torch.cat([prompt_ids, x], dim=1), attn, keep=slice(p, None))  # [B, L, V]
                ids, conf, score = self._propose(logits, masked, generator, mask_id)
                pred = torch.where(masked, ids, x)  # x̂0_t [B, L]
                preds.append(pred.to(torch.int32).cpu())
                if not c.rcr:
                    confs.append(torch.where(masked, conf, torch.zeros_like(conf)).cpu())
                rank = torch.where(masked & (pos < end), score, torch.full_like(score, float("-inf")))  # [B, L]
                if c.rcr:
                    commit = rank > float("-inf")  # every masked position before the block end
                    x = torch.where(commit, pred, x)
                    running = torch.where(commit, score.float(), running)
                    last_commit = torch.where(commit, torch.full_like(last_commit, step), last_commit)
                    if s < per_block - 1:
                        # the prompt also holds ĉ = 0 -> 1 in the reference; it never ranks below a committed token
                        again = _stable_top(torch.where(running == 0, torch.ones_like(running), running),
                                            sum(counts[s + 1:]), largest=False)
                        x = torch.where(again, torch.full_like(x, mask_id), x)
                    confs.append(running.clone().cpu())
                else:
                    commit = _stable_top(rank, counts[s], largest=True) & (rank > float("-inf"))
                    x = torch.where(commit, pred, x)
                    last_commit = torch.where(commit, torch.full_like(last_commit, step), last_commit)
        eos = model.eos_token_id
        completion_mask = (torch.cumsum((x == eos).long(), -1) - (x == eos).long()) == 0  # through the first EOS
        return remask.Rollout(
            prompts=prompts,
            completion_ids=x,
            completion_mask=completion_mask,
            unmask_step=last_commit,
            block_length=c.block_length,
            num_steps=c.steps,
            texts=tuple(model.decode(x, completion_mask)),
            nfe=model.nfe - nfe0,
            step_pred_ids=torch.stack(preds, 1),  # [B, T, L]
            step_confidence=torch.stack(confs, 1),  # [B, T, L]
            step_state_ids=torch.stack(states, 1) if c.rcr else None,  # [B, T, L]
            sampler={"name": self.name, **c.model_dump(mode="json")},
        )
