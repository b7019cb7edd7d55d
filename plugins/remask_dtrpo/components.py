"""dTRPO's registered components: step selector ``one-per-block``, advantage ``raw-reward``,
objective ``dtrpo`` (spec algorithms.md §3.4; equations reconstructed, see docs/algorithms/dtrpo.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import remask
from remask.errors import RemaskError

from .pairs import Pairs, build_pairs, dpo_loss
from .trajectory_ratio import (
    block_step_candidates,
    block_sums,
    draw_block_steps,
    newly_unmasked_logps_full_state,
    newly_unmasked_logps_per_block,
    newly_unmasked_logps_single_pass,
    remasked_completion,
    schedule_matched_unmask_step,
    trajectory_log_ratio,
)

__all__ = ["OnePerBlockSelector", "RawRewardAdvantage", "DTRPOObjective", "DTRPOState", "DTRPOTrajectoryEstimator",
           "DTRPOSinglePassEstimator"]


class DTRPOError(RemaskError):
    """A dTRPO pipeline was configured in a way that cannot work."""


class OnePerBlockSelector(remask.StepSelector):
    """One uniformly drawn step per block, t_b ~ U over the steps block b took (dTRPO §3.4 (2))."""

    name = "one-per-block"

    class Config(remask.ComponentConfig):
        pass

    def select(self, rollout: remask.Rollout, generator: torch.Generator) -> remask.StepSelection:
        """``steps [B, N_B]``: the drawn step of every block; ``weights [B, N_B] = T_B`` (1 / P(t_b)).

        Blocks of rows whose trajectory was not recorded (negative ``unmask_step``) are marked
        invalid; ``dtrpo`` then draws a schedule-matched trajectory for them.
        """
        steps, counts = draw_block_steps(rollout.unmask_step, rollout.block_length, generator)  # [B, N_B]
        unrecorded = (rollout.unmask_step < 0).any(-1, keepdim=True)  # [B, 1]
        valid = (counts > 0) & (steps >= 0) & ~unrecorded
        steps = torch.where(valid, steps, torch.zeros_like(steps))
        return remask.StepSelection(steps=steps, valid=valid, weights=counts.to(torch.float32))


class RawRewardAdvantage(remask.AdvantageEstimator):
    """The weighted total reward itself, unchanged: a ranking score for pairwise objectives."""

    name = "raw-reward"

    class Config(remask.ComponentConfig):
        pass

    def estimate(self, *, rollout, rewards, selection, context) -> Tensor:
        if rewards.total.shape[0] != rollout.batch_size:
            raise RemaskError(
                f"advantage raw-reward: {rewards.total.shape[0]} rewards for {rollout.batch_size} rollout rows"
            )
        return rewards.total.float().clone()  # [B]


@dataclass(frozen=True)
class DTRPOState:
    """What ``prepare`` hands to ``loss`` for one micro-batch (rows restricted to those in pairs)."""

    rollout: remask.Rollout  # the rows used by at least one pair
    unmask_step: Tensor  # [n, L] recorded, or schedule-matched where the data had none
    block_steps: Tensor  # [n, N_B] t_b (sampler step indices), shared by policy and reference
    block_weights: Tensor  # [n, N_B] w_b = T_B (1 / P(t_b))
    remasked: Tensor  # [n, L] re-masked final state z
    newly: Tensor  # [n, L] bool, I_{b, t_b} within the token scope
    ref_block_logps: Tensor  # [n, N_B] Σ_{i ∈ I_{b,t_b}} log μ_ref(y_i | τ_{b,t_b})
    pairs: Pairs  # chosen / rejected indices into the n rows
    ties: int
    lengths: Tensor  # [n] float, completion lengths for the optional normalisation
    implementation: str  # "single-pass" | "per-block" | "full-state"
    reference_forwards: int
    schedule_matched_rows: int
    empty: bool  # no pair in this micro-batch: the loss is 0 (graph kept for distributed training)


class DTRPOObjective(remask.PolicyObjective):
    """dTRPO: DPO on trajectory log-ratios estimated from one re-masked step per block (§3.4)."""

    name = "dtrpo"
    requires_whole_groups = True
    uses_reference = True

    class Config(remask.ComponentConfig):
        beta: float = Field(0.1, gt=0, description="β of the DPO-form loss −log σ(β [R̂(τ_w) − R̂(τ_l)]).")
        pairing: Literal["best-vs-worst", "all-pairs", "random-pairs"] = Field(
            "best-vs-worst",
            description="How pairs are built within each group from the advantages (chosen = higher). "
            "A framework choice, not from the paper.",
        )
        tie_tolerance: float = Field(
            1e-6, ge=0, description="Scores closer than this are a tie: the pair is skipped and counted."
        )
        length_normalize: bool = Field(
            False, description="Divide R̂ by the completion length (tokens through the first EOS)."
        )
        tokens: Literal["all", "completion"] = Field(
            "all",
            description="Which committed tokens count in Δ: every position of the trajectory ('all', "
            "the EOS fill included) or only those through the first EOS ('completion').",
        )
        attention: Literal["auto", "block-causal", "full"] = Field(
            "auto",
            description="How the model reads τ_{b,t_b}: 'block-causal' (prompt, clean blocks < b, block b "
            "re-masked; later blocks unseen; single pass possible), 'full' (the exact sampler state with "
            "the masked future and full attention; one forward per block), 'auto' (block-causal when the "
            "model adapter accepts 4-D masks, else full).",
        )
        implementation: Literal["auto", "single-pass", "per-block"] = Field(
            "auto",
            description="Block-causal log-probs from one staircase forward ('single-pass') or N_B forwards "
            "('per-block'); 'auto' picks single-pass. 'full' attention is always per block.",
        )
        trajectory: Literal["auto", "recorded", "schedule-matched"] = Field(
            "auto",
            description="'recorded': rebuild states from unmask_step; 'schedule-matched': ignore it and draw a "
            "random-order trajectory with the sampler's schedule (§3.4 (3)); 'auto': recorded unless a row's "
            "unmask_step is negative (not recorded).",
        )
        offline_steps_per_block: int | None = Field(
            None,
            ge=1,
            description="T_B of schedule-matched trajectories; None: rollout.num_steps // number of blocks "
            "(at least 1).",
        )

    # ------------------------------------------------------------------ prepare (no grad)

    def _attention(self, policy: remask.DiffusionModel, reference: remask.DiffusionModel | None) -> str:
        c = self.config
        models = [m for m in (policy, reference) if m is not None]
        four_d = all(getattr(m, "supports_4d_mask", False) for m in models)
        attention = c.attention if c.attention != "auto" else ("block-causal" if four_d else "full")
        if attention == "block-causal" and not four_d:
            names = ", ".join(sorted({getattr(m, "name", type(m).__name__) for m in models}))
            raise DTRPOError(
                f"objective dtrpo: attention 'block-causal' needs a model adapter that accepts a 4-D attention "
                f"mask, and {names} does not; set objective.attention: full (one forward per block)"
            )
        if attention == "full" and c.implementation == "single-pass":
            raise DTRPOError(
                "objective dtrpo: implementation 'single-pass' needs attention 'block-causal'; with attention "
                "'full' every block needs its own forward (set objective.implementation: per-block or auto)"
            )
        return attention

    def _implementation(self, attention: str) -> str:
        if attention == "full":
            return "full-state"
        return "per-block" if self.config.implementation == "per-block" else "single-pass"

    def _steps(self, rollout: remask.Rollout, selection: remask.StepSelection | None,
               generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, int]:
        """``(unmask_step, t_b, w_b, rows made schedule-matched)`` for the rows of ``rollout``."""
        c = self.config
        unmask_step = rollout.unmask_step
        n_blocks = rollout.num_blocks
        if c.trajectory == "schedule-matched":
            synth_rows = torch.ones(rollout.batch_size, dtype=torch.bool, device=unmask_step.device)
        elif c.trajectory == "auto":
            synth_rows = (unmask_step < 0).any(-1)
        else:
            if bool((unmask_step < 0).any()):
                raise DTRPOError(
                    "objective dtrpo: trajectory 'recorded' but some rows have no recorded unmask_step "
                    "(negative values); set objective.trajectory: auto or schedule-matched"
                )
            synth_rows = torch.zeros(rollout.batch_size, dtype=torch.bool, device=unmask_step.device)
        n_synth = int(synth_rows.sum())
        if n_synth:
            steps_per_block = c.offline_steps_per_block or max(1, rollout.num_steps // n_blocks)
            synthetic = schedule_matched_unmask_step(
                tuple(unmask_step.shape), rollout.block_length, steps_per_block, generator
            ).to(unmask_step.device)
            unmask_step = torch.where(synth_rows.unsqueeze(-1), synthetic, unmask_step)
        drawn, counts = draw_block_steps(unmask_step, rollout.block_length, generator)  # [B, N_B]
        weights = counts.to(torch.float32)
        if selection is not None and n_synth < rollout.batch_size:
            self._check_selection(selection, unmask_step, rollout.block_length, n_blocks)
            use = (selection.valid & ~synth_rows.unsqueeze(-1)).to(drawn.device)  # [B, N_B]
            sel_w = selection.weights if selection.weights is not None else counts.to(torch.float32)
            drawn = torch.where(use, selection.steps.to(drawn.device), drawn)
            weights = torch.where(use, sel_w.to(weights.device, torch.float32), weights)
        return unmask_step, drawn, weights, n_synth

    @staticmethod
    def _check_selection(selection: remask.StepSelection, unmask_step: Tensor, block_length: int,
                         n_blocks: int) -> None:
        if selection.num_selected != n_blocks:
            raise DTRPOError(
                f"objective dtrpo needs one selected step per block ({n_blocks} blocks) but the step selector "
                f"chose {selection.num_selected}; use step_selector: one-per-block (or none)"
            )
        candidates, counts = block_step_candidates(unmask_step, block_length)  # [B, N_B, T_max]
        hit = (candidates == selection.steps.to(candidates.device).unsqueeze(-1)).any(-1)  # [B, N_B]
        bad = selection.valid.to(hit.device) & ~hit
        if bool(bad.any()):
            r, b = (int(x) for x in torch.nonzero(bad)[0])
            raise DTRPOError(
                f"objective dtrpo: selected step {int(selection.steps[r, b])} of row {r} is not a step of block {b}; "
                "use step_selector: one-per-block"
            )

    def _newly_logps(self, model: remask.DiffusionModel, rollout: remask.Rollout, unmask_step: Tensor,
                     block_steps: Tensor, remasked: Tensor, implementation: str) -> tuple[Tensor, int]:
        """``log μ(y_i | τ_{b(i), t_b})`` ``[n, L]`` and the number of forwards spent."""
        y = rollout.completion_ids
        if implementation == "single-pass":
            return newly_unmasked_logps_single_pass(model, rollout.prompts, y, remasked, rollout.block_length), 1
        if implementation == "per-block":
            return newly_unmasked_logps_per_block(model, rollout.prompts, y, remasked, rollout.block_length), \
                rollout.num_blocks
        return newly_unmasked_logps_full_state(model, rollout.prompts, y, unmask_step, block_steps,
                                               rollout.block_length), rollout.num_blocks

    def trajectory_draw(self, rollout: remask.Rollout, selection: remask.StepSelection | None,
                        policy: remask.DiffusionModel, reference: remask.DiffusionModel,
                        generator: torch.Generator) -> dict:
        """Draw t_b (or take them from ``selection``), re-mask, and run the reference (no grad).

        Returns the trajectory fields of :class:`DTRPOState` for every row of ``rollout``.
        """
        c = self.config
        attention = self._attention(policy, reference)
        implementation = self._implementation(attention)
        unmask_step, block_steps, weights, n_synth = self._steps(rollout, selection, generator)
        remasked, newly = remasked_completion(
            rollout.completion_ids, unmask_step, block_steps, rollout.block_length, policy.mask_token_id
        )  # [n, L], [n, L]
        if c.tokens == "completion":
            newly = newly & rollout.completion_mask.to(newly.device)
        with torch.no_grad():
            ref_lp, ref_forwards = self._newly_logps(reference, rollout, unmask_step, block_steps, remasked,
                                                     implementation)  # [n, L]
        ref_blocks = block_sums(ref_lp, newly, rollout.block_length, rollout.num_blocks)  # [n, N_B]
        return dict(
            rollout=rollout, unmask_step=unmask_step, block_steps=block_steps, block_weights=weights,
            remasked=remasked, newly=newly, ref_block_logps=ref_blocks.detach(),
            lengths=rollout.lengths.float().clamp(min=1.0), implementation=implementation,
            reference_forwards=ref_forwards, schedule_matched_rows=n_synth,
        )

    def loss_passes(self, *, gen_length: int, block_length: int, steps: int,
                    selected_steps: int) -> tuple[remask.ForwardPass, ...]:
        """``single-pass``: one staircase pass over [prompt, y, z]; ``per-block``: block b reads P + (b+1)·B;
        attention ``full``: one full-state pass per block (``auto`` assumes a model that takes 4-D masks)."""
        n_blocks = -(-gen_length // block_length)
        if self.config.attention == "full":
            return (remask.ForwardPass(),) * n_blocks
        if self.config.implementation == "per-block":
            return tuple(remask.ForwardPass(completion_length=min(gen_length, (b + 1) * block_length) / gen_length)
                         for b in range(n_blocks))
        return (remask.ForwardPass(completion_length=2.0),)

    def prepare(self, *, rollout, advantages, selection, context) -> DTRPOState:
        if advantages.dim() != 1:
            raise DTRPOError(
                f"objective dtrpo ranks completions by one score per row, but the advantage estimator gave shape "
                f"{tuple(advantages.shape)}; use advantage: raw-reward or group-mean"
            )
        if context.reference is None:
            raise DTRPOError("objective dtrpo needs the reference policy (context.reference is None)")
        c = self.config
        self._attention(context.policy, context.reference)  # configuration errors before any work
        pairs = build_pairs(advantages, rollout.prompts.group_ids, c.pairing, c.tie_tolerance, context.generator)
        empty = pairs.count == 0
        if empty:  # still run one row so every parameter gets a (zero) gradient under DDP
            rows = torch.zeros(1, dtype=torch.long)
        else:
            rows = torch.unique(torch.cat([pairs.chosen, pairs.rejected]))  # [n] sorted
        remap = torch.full((rollout.batch_size,), -1, dtype=torch.long)
        remap[rows] = torch.arange(rows.numel())
        used = remask.take(rollout, rows)
        sel = remask.take(selection, rows) if selection is not None else None
        fields = self.trajectory_draw(used, sel, context.policy, context.reference, context.generator)
        return DTRPOState(**fields, pairs=Pairs(remap[pairs.chosen], remap[pairs.rejected], pairs.ties),
                          ties=pairs.ties, empty=empty)

    # ------------------------------------------------------------------ loss (with grad)

    def log_ratios(self, state: DTRPOState, policy: remask.DiffusionModel) -> tuple[Tensor, int]:
        """``R̂_θ(τ) = Σ_b T_B Δ_{b,t_b}`` for the prepared rows (optionally ÷ length). ``[n]``."""
        lp, forwards = self._newly_logps(policy, state.rollout, state.unmask_step, state.block_steps,
                                         state.remasked, state.implementation)  # [n, L]
        blocks = block_sums(lp, state.newly, state.rollout.block_length, state.rollout.num_blocks)  # [n, N_B]
        delta = blocks - state.ref_block_logps.to(blocks.device)  # [n, N_B]
        r_hat = trajectory_log_ratio(delta, state.block_weights.to(delta.device))  # [n]
        if self.config.length_normalize:
            r_hat = r_hat / state.lengths.to(r_hat.device)
        return r_hat, forwards

    def loss(self, state: DTRPOState, *, inner_step: int, context: remask.StepContext) -> remask.LossOutput:
        beta = self.config.beta
        r_hat, policy_forwards = self.log_ratios(state, context.policy)  # [n]
        ref_forwards = state.reference_forwards if inner_step == 0 else 0
        forwards = policy_forwards + ref_forwards
        metrics: dict[str, float] = {
            "pairs/count": float(state.pairs.count),
            "pairs/ties_skipped": float(state.ties),
            "forward_passes": float(forwards),
            "forward_passes/policy": float(policy_forwards),
            "forward_passes/reference": float(ref_forwards),
            "trajectory/schedule_matched_rows": float(state.schedule_matched_rows),
        }
        if state.empty:
            loss = r_hat.sum() * 0.0
            return remask.LossOutput(loss=loss, metrics=metrics, forward_passes=forwards)
        r_w, r_l = r_hat[state.pairs.chosen], r_hat[state.pairs.rejected]  # [n_pairs]
        per_pair = dpo_loss(r_w, r_l, beta)  # [n_pairs]
        loss = per_pair.mean()
        with torch.no_grad():
            chosen, rejected = beta * r_w.detach(), beta * r_l.detach()
            metrics.update({
                "rewards/chosen": float(chosen.mean()),
                "rewards/rejected": float(rejected.mean()),
                "rewards/margins": float((chosen - rejected).mean()),
                "rewards/accuracies": float((chosen > rejected).float().mean()),
                "log_ratio/mean": float(r_hat.detach().mean()),
            })
        return remask.LossOutput(loss=loss, metrics=metrics, forward_passes=forwards)



class DTRPOTrajectoryEstimator(remask.LikelihoodEstimator):
    """dTRPO's R̂ = Σ_b T_B Δ_{b,t_b} on the exact sampler states (full attention, N_B passes)."""

    name = "dtrpo-trajectory"
    scale = "trajectory"

    class Config(remask.ComponentConfig):
        attention: Literal["auto", "block-causal", "full"] = Field(
            "full", description="As objective dtrpo's `attention`: how the model reads τ_{b,t_b}."
        )
        implementation: Literal["auto", "single-pass", "per-block"] = Field(
            "auto", description="As objective dtrpo's `implementation`: one staircase forward or one per block."
        )
        trajectory: Literal["auto", "recorded", "schedule-matched"] = Field(
            "auto", description="As objective dtrpo's `trajectory`: recorded unmask_step or schedule-matched."
        )
        offline_steps_per_block: int | None = Field(
            None, ge=1, description="T_B of schedule-matched trajectories (None: num_steps // blocks)."
        )

    def __init__(self, config: remask.ComponentConfig | None = None) -> None:
        super().__init__(config)
        self._objective = DTRPOObjective(DTRPOObjective.Config(**self.config.model_dump()))

    @torch.no_grad()
    def log_ratio(self, *, policy, reference, rollout, generator) -> Tensor:
        fields = self._objective.trajectory_draw(rollout, None, policy, reference, generator)
        none = torch.zeros(0, dtype=torch.long)
        state = DTRPOState(**fields, pairs=Pairs(none, none, 0), ties=0, empty=False)
        r_hat, _ = self._objective.log_ratios(state, policy)
        return r_hat  # [B]


class DTRPOSinglePassEstimator(DTRPOTrajectoryEstimator):
    """dTRPO's R̂ from one block-causal staircase pass (exact only for block-causal models)."""

    name = "dtrpo-single-pass"

    class Config(DTRPOTrajectoryEstimator.Config):
        attention: Literal["auto", "block-causal", "full"] = Field(
            "block-causal", description="As objective dtrpo's `attention`: how the model reads τ_{b,t_b}."
        )
        implementation: Literal["auto", "single-pass", "per-block"] = Field(
            "single-pass", description="As objective dtrpo's `implementation`: one staircase forward or one per block."
        )
