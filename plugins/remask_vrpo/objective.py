"""The ``vrpo`` objective: DPO on ELBOs with VRPO's three variance reductions (LLaDA 1.5, arXiv 2505.19223).

``prepare`` (no grad, once per micro-batch) pairs the rows of each group (best against worst
advantage; offline preference stores hold chosen/rejected as a group of 2 with rewards 1/0), draws
one mask seed from the likelihood stream, builds ``n = n_t · n_yt`` fixed-count views per row with
mask counts stratified across the views (:func:`remask.likelihood.stratified_count_views`;
``n_yt = 1`` is the paper's optimal allocation), and scores them with the reference:
``B̂_ref(y) = Σ_k ℓ_ref(o_k)`` (:func:`remask.likelihood.token_logprobs`). ``loss`` scores the
*same* views with the policy (antithetic sampling; with ``antithetic: false`` the policy gets views
of another seed) and applies :func:`remask_vrpo.loss.vrpo_loss`. There is no official training code;
the estimator follows LLaDA's ``get_log_likelihood`` (ML-GSAI/LLaDA @ b7e6c35) and the loss the paper
(see docs/algorithms/vrpo.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.errors import RemaskError
from remask.functional import full_sequence
from remask.likelihood import (
    NoisyViews,
    draw_mask_seeds,
    stratified_count_views,
    stratified_time_views,
    token_logprobs,
    views_to,
)

from .loss import best_vs_worst, normalise_elbo, vrpo_loss

__all__ = ["VRPOObjective", "VRPOState"]


@dataclass(frozen=True)
class VRPOState:
    """What ``prepare`` computed for one micro-batch."""

    policy_views: NoisyViews  # the views the policy is scored on (= ref_views when antithetic)
    attention_mask: Tensor  # [B, P+L] bool
    completion_ids: Tensor  # [B, L] long
    span: Tensor  # [B, L] bool, the tokens the ELBO masks and counts
    chosen: Tensor  # [n] long row indices
    rejected: Tensor  # [n] long row indices
    ref_elbo: Tensor  # [B] B̂_ref (normalised)
    prepare_forward_passes: int


class VRPOObjective(remask.PolicyObjective):
    """VRPO: −log σ(β[(B̂_θ − B̂_ref)(y_w) − (B̂_θ − B̂_ref)(y_l)]) with stratified, shared-noise ELBOs."""

    name = "vrpo"
    requires_whole_groups = True  # pairs are formed within each prompt's group
    uses_reference = True

    class Config(remask.ComponentConfig):
        beta: float = Field(
            0.1, gt=0, description="β of the DPO score on ELBO differences (the paper's value is not confirmed here; "
            "DARE uses 0.2 with length_normalize: max_length)."
        )
        n_t: int = Field(
            8, ge=1, description="Timesteps (mask counts) per row: the paper's budget n with optimal allocation "
            "(n = 8 is recalled, not confirmed; DARE: 4). Forward passes per row and model = n_t * n_yt."
        )
        n_yt: int = Field(
            1, ge=1, description="Masks per timestep; 1 is VRPO's optimal allocation (n_t = n, n_yt = 1)."
        )
        timesteps: Literal["discrete-stratified", "discrete", "continuous-stratified", "continuous"] = Field(
            "discrete-stratified",
            description="discrete-stratified: counts l_j spread evenly over 1..L_y from one uniform offset "
            "(LLaDA's get_log_likelihood, DARE); discrete: every count drawn independently from U{1..L_y}; "
            "continuous(-stratified): the paper's random-t form, t_j = (j + v)/n_t (or i.i.d. U(0,1)), each token "
            "masked w.p. t_j, weight 1/t_j.",
        )
        antithetic: bool = Field(
            True, description="Score the policy and the reference on the same masked views (VRPO); false draws the "
            "policy's views from another seed (ablation)."
        )
        tokens: Literal["completion", "all"] = Field(
            "completion", description="completion: mask and count the tokens through the first EOS (L_y = |y|); "
            "all: every gen_length position, EOS padding included (LLaDA SFT convention)."
        )
        length_normalize: Literal["none", "max_length", "response_length"] = Field(
            "none", description="none: the paper's raw ELBO; max_length: ÷ gen_length (DARE, an effective "
            "β/gen_length); response_length: ÷ the row's L_y."
        )
        tie_tolerance: float = Field(
            1e-6, ge=0, description="Groups whose best and worst advantage differ by at most this give no pair."
        )

    def loss_passes(self, *, gen_length: int, block_length: int, steps: int,
                    selected_steps: int) -> tuple[remask.ForwardPass, ...]:
        """n_t · n_yt stratified views."""
        return (remask.ForwardPass(),) * (self.config.n_t * self.config.n_yt)

    def prepare(self, *, rollout, advantages, selection, context) -> VRPOState:
        c = self.config
        if advantages.dim() != 1 or advantages.shape[0] != rollout.batch_size:
            raise RemaskError(
                f"objective vrpo: needs one score per row, shape [{rollout.batch_size}], got {tuple(advantages.shape)}; "
                "use advantage: raw-reward (offline preference stores hold rewards 1 / 0)"
            )
        group = max(1, rollout.prompts.group_size)
        if group < 2 or rollout.batch_size % group:
            raise RemaskError(
                f"objective vrpo: pairs need whole groups of at least 2 rows per micro-batch; got {rollout.batch_size} "
                f"rows in groups of {group} (set train.group_size >= 2 and train.micro_batch_size a multiple of it)"
            )
        chosen, rejected = best_vs_worst(advantages, group, c.tie_tolerance)
        device = context.device
        if context.reference is None:
            raise RemaskError("objective vrpo: needs the reference policy, but the engine provided none")
        prompts = rollout.prompts
        completion_ids = rollout.completion_ids.to(device)  # [B, L]
        _, attention = full_sequence(prompts, completion_ids)  # [B, P+L]
        if c.tokens == "completion":
            span = rollout.completion_mask.cpu().bool()  # [B, L]
        else:
            span = torch.ones(rollout.completion_ids.shape, dtype=torch.bool)
        seeds = draw_mask_seeds(context.generator, 1 if c.antithetic else 2)

        def build(seed: int) -> NoisyViews:
            views = stratified_count_views if c.timesteps.startswith("discrete") else stratified_time_views
            return views_to(views(
                prompts.prompt_ids, rollout.completion_ids, context.policy.mask_token_id, n_t=c.n_t, n_yt=c.n_yt,
                seed=seed, span=span, stratified=c.timesteps.endswith("stratified")), device)

        ref_views = build(seeds[0])
        policy_views = ref_views if c.antithetic else build(seeds[1])
        span = span.to(device)
        with torch.no_grad():
            ref = token_logprobs(context.reference, ref_views, attention, completion_ids)  # [B, L]
        ref_elbo = self._elbo(ref, span)
        return VRPOState(policy_views=policy_views, attention_mask=attention, completion_ids=completion_ids,
                         span=span, chosen=chosen.to(device), rejected=rejected.to(device), ref_elbo=ref_elbo,
                         prepare_forward_passes=ref_views.num_views)

    def _elbo(self, token_terms: Tensor, span: Tensor) -> Tensor:
        """``Σ_k`` over the span, normalised per ``length_normalize``. ``[B, L] -> [B]``."""
        elbo = (token_terms * span.to(token_terms.dtype)).sum(-1)  # [B]
        return normalise_elbo(elbo, span.sum(-1), span.shape[-1], self.config.length_normalize)

    def loss(self, state: VRPOState, *, inner_step: int, context) -> remask.LossOutput:
        c = self.config
        views = state.policy_views
        pol = self._elbo(token_logprobs(context.policy, views, state.attention_mask, state.completion_ids),
                         state.span)  # [B] B̂_θ, with grad
        passes = views.num_views + (state.prepare_forward_passes if inner_step == 0 else 0)
        n = int(state.chosen.numel())
        if n == 0:  # no pair in this micro-batch: a zero loss that still touches the policy (DDP)
            return remask.LossOutput(loss=pol.sum() * 0.0, metrics={"vrpo/pairs": 0.0}, forward_passes=passes)
        w, l = state.chosen, state.rejected
        loss, score = vrpo_loss(pol[w], pol[l], state.ref_elbo[w], state.ref_elbo[l], c.beta)
        with torch.no_grad():
            rc = c.beta * (pol[w] - state.ref_elbo[w])
            rr = c.beta * (pol[l] - state.ref_elbo[l])
            metrics = {
                "rewards/chosen": float(rc.mean()),
                "rewards/rejected": float(rr.mean()),
                "rewards/margins": float(score.mean()),
                "rewards/accuracies": float((score > 0).float().mean()),
                "vrpo/pairs": float(n),
                "vrpo/elbo_policy_mean": float(pol.detach().mean()),
                "vrpo/elbo_ref_mean": float(state.ref_elbo.mean()),
            }
        return remask.LossOutput(loss=loss, metrics=metrics, forward_passes=passes)
