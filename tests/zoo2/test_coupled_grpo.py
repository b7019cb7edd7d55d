"""Coupled-GRPO: the coupled estimate and the loss (spec hand cases, the official code's numbers), the objective."""

from __future__ import annotations

import math

import pytest
import torch
from remask_coupled_grpo.estimator import CoupledLogRatio
from remask_coupled_grpo.loss import coupled_grpo_loss
from remask_coupled_grpo.objective import CoupledGRPOObjective

from remask.likelihood import coupled_views, coupled_weights, token_logprobs
from remask.testing import check_component, fake_context, fake_rollout


def _combine(weights: torch.Tensor, view_logps: torch.Tensor) -> torch.Tensor:
    """token_logprobs' reduction: (1/N) Σ_n w_n ℓ_n."""
    return (weights * view_logps).sum(0) / weights.shape[0]


def _c1_views():
    s = torch.tensor([[True, False, False, True]])
    full = torch.log(torch.tensor([0.50, 0.25, 0.40, 0.80]))
    part = torch.log(torch.tensor([0.60, 0.30, 0.50, 0.90]))  # each token's prob in the view where it is masked
    # unweighted view log-probs; where a token is visible its value must not matter (weight 0): put junk there
    v1 = torch.where(s[0], part, torch.full((4,), -99.0))
    v2 = torch.where(~s[0], part, torch.full((4,), -99.0))
    return s, torch.stack([full, v1, v2]).unsqueeze(1)  # [3, 1, 4]


def test_spec_c1_coupled_estimate():
    s, vl = _c1_views()
    got = _combine(coupled_weights(s, torch.tensor([0.25])), vl)[0]
    assert got.tolist() == pytest.approx([-1.368225, -1.495796, -0.920243, -0.322293], abs=1e-6)
    assert float(got.sum()) == pytest.approx(-4.106557, abs=1e-6)
    mean = _combine(coupled_weights(s, torch.tensor([0.25]), pair_reduction="mean"), vl)[0]
    assert mean.tolist() == pytest.approx([-0.857399, -1.094471, -0.689194, -0.216932], abs=1e-6)


@pytest.mark.parametrize("t", [0.2, 0.5, 0.8])
def test_context_free_model_gives_one_and_a_half_log_p_for_every_t(t):
    """Spec C1 identity: log p = ln ½ in every view ⇒ E_u[ℓ̃] = 1.5·ln ½ (exactly, averaging over u)."""
    g = torch.Generator().manual_seed(0)
    u = torch.rand(20000, 1, generator=g)
    w = coupled_weights(u < t, torch.full((20000,), t))  # [3, 20000, 1]
    est = _combine(w, torch.full_like(w, math.log(0.5))).mean()
    assert float(est) == pytest.approx(1.5 * math.log(0.5), rel=0.02)


def test_views_partition_the_completion_and_never_touch_the_prompt():
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    comp = torch.arange(7, 7 + 12).view(2, 6)
    v = coupled_views(prompt, comp, 99, seed=5)
    assert v.num_views == 3
    assert (v.input_ids[:, :, :3] == prompt).all()
    masked = v.input_ids[:, :, 3:] == 99  # [3, B, L]
    assert masked[0].all()
    assert not (masked[1] & masked[2]).any() and (masked[1] | masked[2]).all()
    # one t per call (t_per=batch) in [0.2, 0.8]: read it back from the pair weights w = 3·½/t
    t = 1.5 / v.token_weights[1][masked[1]]
    assert torch.allclose(t, t[0].expand_as(t)) and 0.2 <= float(t[0]) <= 0.8
    again = coupled_views(prompt, comp, 99, seed=5)
    assert torch.equal(again.input_ids, v.input_ids) and torch.equal(again.token_weights, v.token_weights)
    assert not torch.equal(coupled_views(prompt, comp, 99, seed=6).input_ids, v.input_ids)
    per_row = coupled_views(prompt, comp, 99, seed=5, t_per="row", full_view=False)
    assert per_row.num_views == 2


def test_spec_c2_loss_and_post_eos_token():
    r = torch.tensor([2.5, 0.5, 0.0])
    adv = r - (r.sum() - r) / 2  # RLOO
    assert adv.tolist() == pytest.approx([2.25, -0.75, -1.5])
    logp = torch.tensor([[-1.0, -0.5], [-2.0, -1.0], [-0.3, -4.0]])
    old = torch.tensor([[-1.2, -0.5], [-1.0, -1.0], [-0.5, -1.0]])
    ref = torch.tensor([[-1.0, -0.7], [-2.0, -0.9], [-0.3, -9.0]])
    mask = torch.tensor([[1, 1], [1, 1], [1, 0]]).bool()
    terms = coupled_grpo_loss(logp, old, adv, mask, ref_logp=ref, eps_low=0.5, eps_high=None, beta=0.01)
    assert float(terms.loss) == pytest.approx(-0.408163, abs=1e-6)
    other = logp.clone()
    other[2, 1] = 3.0  # the post-EOS token must not change the loss
    assert float(coupled_grpo_loss(other, old, adv, mask, ref_logp=ref, eps_low=0.5, eps_high=None,
                                   beta=0.01).loss) == pytest.approx(-0.408163, abs=1e-6)
    assert bool(terms.low_clipped[1, 0]) and not bool(terms.high_clipped.any())


def test_matches_the_official_estimator(official):
    """ml-diffucoder @ f735e01: forward_process + selective_log_softmax on fixed masks and view log-probs."""
    fx = official("coupled_grpo")
    assert fx["commit"].startswith("f735e01")
    for case in fx["estimator_cases"]:
        s = torch.tensor(case["pair_mask"])
        b = s.shape[0]
        w = coupled_weights(s, torch.full((b,), case["t"]))
        got = _combine(w, torch.tensor(case["view_logps"]))
        assert torch.allclose(got, torch.tensor(case["coupled_logps"]), atol=1e-5)


def test_matches_the_official_loss_and_gradient(official):
    """ml-diffucoder @ f735e01: DiffuGRPOTrainer.compute_loss with fixed per-token log-probs (μ = 1 and 2)."""
    for case in official("coupled_grpo")["loss_cases"]:
        logp = torch.tensor(case["logps"], requires_grad=True)
        old = logp.detach() if case["old_logps"] is None else torch.tensor(case["old_logps"])
        terms = coupled_grpo_loss(logp, old, torch.tensor(case["advantages"]),
                                  torch.tensor(case["completion_mask"]).bool(), ref_logp=torch.tensor(case["ref_logps"]),
                                  eps_low=case["epsilon"], eps_high=case["epsilon"], beta=case["beta"])
        assert float(terms.loss.detach()) == pytest.approx(case["loss"], abs=1e-6)
        terms.loss.backward()
        assert torch.allclose(logp.grad, torch.tensor(case["grad"]), atol=1e-6)


def test_token_logprobs_on_coupled_views_equals_the_hand_combination():
    """The objective's path (token_logprobs over coupled views) is the per-view combination above."""
    from remask.functional import full_sequence
    from remask.likelihood import view_logprobs

    model, ro = fake_rollout(group_size=2)
    v = coupled_views(ro.prompts.prompt_ids, ro.completion_ids, model.mask_token_id, seed=3)
    _, attn = full_sequence(ro.prompts, ro.completion_ids)
    with torch.no_grad():
        direct = token_logprobs(model, v, attn, ro.completion_ids)
        by_hand = _combine(v.token_weights, view_logprobs(model, v, attn, ro.completion_ids))
    assert torch.allclose(direct, by_hand, atol=1e-5)


def test_contract_objective_and_estimator():
    assert check_component(CoupledGRPOObjective) == []
    assert check_component(CoupledLogRatio) == []


def test_prepare_and_loss_forward_passes_and_same_views():
    model, ro = fake_rollout(group_size=2)
    ctx = fake_context(model)
    ctx.inner_steps = 2
    obj = CoupledGRPOObjective()
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    state = obj.prepare(rollout=ro, advantages=adv, selection=None, context=ctx)
    assert len(state.views) == 2 and state.old_logps.shape == (2, 4, ro.completion_ids.shape[1])
    assert state.prepare_forward_passes == 12  # (old + ref) × 2 seeds × 3 views
    out0 = obj.loss(state, inner_step=0, context=ctx)
    out1 = obj.loss(state, inner_step=1, context=ctx)
    assert out0.forward_passes == 15 and out1.forward_passes == 3
    # first inner step: θ = θ_old on identical views, so ρ ≡ 1 and nothing is clipped
    assert out0.metrics["clip_ratio/region_mean"] == 0.0 and out0.metrics["kl"] > 0
    out0.loss.backward()


def test_micro_batch_counter_replays_the_official_seed_order():
    obj = CoupledGRPOObjective(CoupledGRPOObjective.Config(mask_index="micro-batch-counter"))
    # μ = 2: the official `_step` is incremented before compute_loss, so calls use seeds 1, 0, 1, 0
    assert [obj.mask_index_for(i % 2, 2) for i in range(4)] == [1, 0, 1, 0]
    assert obj.state_dict() == {"loss_calls": 4}
    fresh = CoupledGRPOObjective(CoupledGRPOObjective.Config(mask_index="micro-batch-counter"))
    fresh.load_state_dict(obj.state_dict())
    assert fresh.mask_index_for(0, 2) == 1


def test_beta_zero_needs_no_reference_and_bad_range_is_refused():
    assert not CoupledGRPOObjective(CoupledGRPOObjective.Config(beta=0.0)).uses_reference
    with pytest.raises(ValueError, match="t_low"):
        CoupledGRPOObjective.Config(t_low=0.7, t_high=0.3)
