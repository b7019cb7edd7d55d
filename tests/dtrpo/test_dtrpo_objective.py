"""The `dtrpo` objective: spec cases 21 and 22, pairs, forward-pass counts, offline trajectories,
errors, the contract checks and a few optimizer steps on the tiny model."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

import remask
from remask.errors import RemaskError
from remask.testing import FakeModel, check_component, fake_context, fake_rollout
from remask_dtrpo.components import DTRPOObjective, OnePerBlockSelector, RawRewardAdvantage
from remask_dtrpo.pairs import build_pairs, dpo_loss

from dtrpo_support import make_rollout, semi_ar_unmask_step


def context(policy, reference, seed=0):
    return remask.StepContext(policy=policy, reference=reference, generator=torch.Generator().manual_seed(seed),
                              score=lambda p, t: None, group_size=2)


def run(obj, rollout, adv, ctx, selection=None, inner_step=0):
    with torch.no_grad():
        state = obj.prepare(rollout=rollout, advantages=adv, selection=selection, context=ctx)
    return state, obj.loss(state, inner_step=inner_step, context=ctx)


# ----------------------------------------------------------------------------- spec cases 21, 22


def test_case22_dpo_margin():
    assert float(dpo_loss(torch.tensor([2.0]), torch.tensor([-3.0]), 0.1)) == pytest.approx(0.474077, abs=1e-6)
    assert float(dpo_loss(torch.tensor([-3.0]), torch.tensor([2.0]), 0.1)) == pytest.approx(0.974077, abs=1e-6)


@pytest.mark.parametrize("implementation, attention", [("single-pass", "block-causal"), ("per-block", "block-causal"),
                                                        ("auto", "full")])
@pytest.mark.parametrize("trajectory", ["recorded", "schedule-matched"])
def test_case21_reference_identity_gives_ln2(policy, rollout, implementation, attention, trajectory):
    obj = DTRPOObjective(DTRPOObjective.Config(implementation=implementation, attention=attention,
                                               trajectory=trajectory, pairing="all-pairs"))
    state, out = run(obj, rollout, torch.tensor([1.0, 0.0, 0.0, 2.0]), context(policy, policy))
    assert float(out.loss.detach()) == pytest.approx(math.log(2), abs=1e-6)
    r_hat, _ = obj.log_ratios(state, policy)
    assert torch.equal(r_hat, torch.zeros_like(r_hat))
    assert state.newly.any()


# ----------------------------------------------------------------------------- pairs


def test_pairs_best_vs_worst_all_pairs_random_pairs():
    scores = torch.tensor([0.0, 1.0, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    p = build_pairs(scores, groups, "best-vs-worst")
    assert (p.chosen.tolist(), p.rejected.tolist(), p.ties) == ([1], [0], 1)
    p = build_pairs(scores, groups, "all-pairs")
    assert p.count == 5 and p.ties == 1 + 6  # (1,3) tied in group 0; group 1 all tied
    assert all(scores[c] > scores[r] for c, r in zip(p.chosen, p.rejected))
    p = build_pairs(scores, groups, "random-pairs", generator=torch.Generator().manual_seed(0))
    assert p.count + p.ties == 4  # two disjoint pairs per group of 4
    assert p.ties >= 2
    used = p.chosen.tolist() + p.rejected.tolist()
    assert len(used) == len(set(used))


def test_pairs_skip_nonfinite_and_respect_tolerance():
    p = build_pairs(torch.tensor([float("nan"), 1.0, 1.0 + 1e-9, 0.0]), torch.zeros(4, dtype=torch.long),
                    "all-pairs", tie_tolerance=1e-6)
    assert 0 not in p.chosen.tolist() + p.rejected.tolist()
    assert p.ties == 1 and p.count == 2


def test_pairs_from_rewards_through_objective(policy, reference, rollout):
    obj = DTRPOObjective(DTRPOObjective.Config(pairing="best-vs-worst"))
    state, out = run(obj, rollout, torch.tensor([0.0, 1.0, 1.0, 1.0]), context(policy, reference))
    assert out.metrics["pairs/count"] == 1 and out.metrics["pairs/ties_skipped"] == 1
    assert state.rollout.batch_size == 2  # only the rows of pairs are forwarded
    with torch.no_grad():
        r_hat, _ = obj.log_ratios(state, policy)
    margin = 0.1 * (r_hat[state.pairs.chosen] - r_hat[state.pairs.rejected])
    assert float(out.loss.detach()) == pytest.approx(float(torch.nn.functional.softplus(-margin).mean()), abs=1e-6)
    assert out.metrics["rewards/margins"] == pytest.approx(float(margin.mean()), abs=1e-6)


def test_no_pair_gives_zero_loss_with_graph(policy, reference, rollout):
    obj = DTRPOObjective()
    _, out = run(obj, rollout, torch.ones(4), context(policy, reference))
    assert float(out.loss.detach()) == 0.0 and out.loss.requires_grad
    assert out.metrics["pairs/count"] == 0 and out.metrics["pairs/ties_skipped"] == 2


def test_raw_reward_advantage():
    _, ro = fake_rollout()
    rw = remask.Rewards.from_scores("r", [0.5, 1.0, None, 0.0])
    assert RawRewardAdvantage().estimate(rollout=ro, rewards=rw, selection=None, context=fake_context()).tolist() \
        == [0.5, 1.0, 0.0, 0.0]


# ----------------------------------------------------------------------------- forward passes, options


def test_forward_passes_single_pass_vs_per_block(policy, reference):
    ro = make_rollout(policy, semi_ar_unmask_step(4, 12, 4, 2, seed=2), 4)  # N_B = 3
    counts = {}
    for impl in ("single-pass", "per-block"):
        obj = DTRPOObjective(DTRPOObjective.Config(implementation=impl, attention="block-causal"))
        ctx = context(policy, reference)
        before = policy.nfe + reference.nfe
        state, out0 = run(obj, ro, torch.tensor([1.0, 0.0, 0.0, 1.0]), ctx)
        out1 = obj.loss(state, inner_step=1, context=ctx)
        assert policy.nfe + reference.nfe - before == out0.forward_passes + out1.forward_passes
        counts[impl] = (out0.forward_passes, out1.forward_passes, out0.metrics["forward_passes"])
        assert out1.metrics["forward_passes/reference"] == 0
    assert counts["single-pass"] == (2, 1, 2.0)
    assert counts["per-block"] == (6, 3, 6.0)


def test_single_pass_and_per_block_give_the_same_loss_and_gradient(policy, reference, rollout):
    losses, grads = [], []
    for impl in ("single-pass", "per-block"):
        model = copy.deepcopy(policy)
        obj = DTRPOObjective(DTRPOObjective.Config(implementation=impl, attention="block-causal"))
        ctx = context(model, reference, seed=3)
        state, out = run(obj, rollout, torch.tensor([1.0, 0.0, 0.0, 1.0]), ctx)
        model.module.zero_grad()
        out = obj.loss(state, inner_step=0, context=ctx)
        out.loss.backward()
        losses.append(float(out.loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in model.module.parameters() if p.grad is not None]))
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_length_normalisation_and_token_scope(policy, reference, rollout):
    mask = torch.ones(4, 8, dtype=torch.bool)
    mask[:, 5:] = False
    ro = dataclasses.replace(rollout, completion_mask=mask)
    adv = torch.tensor([1.0, 0.0, 0.0, 1.0])
    plain = DTRPOObjective(DTRPOObjective.Config())
    normed = DTRPOObjective(DTRPOObjective.Config(length_normalize=True))
    scoped = DTRPOObjective(DTRPOObjective.Config(tokens="completion"))
    s1, _ = run(plain, ro, adv, context(policy, reference, seed=4))
    s2, _ = run(normed, ro, adv, context(policy, reference, seed=4))
    s3, _ = run(scoped, ro, adv, context(policy, reference, seed=4))
    with torch.no_grad():
        r1, _ = plain.log_ratios(s1, policy)
        r2, _ = normed.log_ratios(s2, policy)
    torch.testing.assert_close(r2, r1 / 5.0)
    assert not (s3.newly[:, 5:]).any() and s1.newly[:, 5:].any()


def test_uses_selection_from_the_selector(policy, reference, rollout):
    sel = OnePerBlockSelector().select(rollout, torch.Generator().manual_seed(9))
    obj = DTRPOObjective(DTRPOObjective.Config(pairing="all-pairs"))
    state, _ = run(obj, rollout, torch.tensor([1.0, 0.0, 0.0, 1.0]), context(policy, reference), selection=sel)
    assert torch.equal(state.block_steps, sel.steps)
    assert torch.equal(state.block_weights, sel.weights)


def test_offline_rows_get_schedule_matched_trajectories(policy, reference, rollout):
    unknown = torch.full_like(rollout.unmask_step, -1)
    ro = dataclasses.replace(rollout, unmask_step=unknown, num_steps=4)
    obj = DTRPOObjective()
    state, out = run(obj, ro, torch.tensor([1.0, 0.0, 0.0, 1.0]), context(policy, reference))
    assert out.metrics["trajectory/schedule_matched_rows"] == 4
    assert int(state.unmask_step.min()) == 0 and int(state.unmask_step.max()) == 3  # 2 steps per block
    assert torch.isfinite(out.loss)
    with pytest.raises(RemaskError, match="trajectory 'recorded'"):
        run(DTRPOObjective(DTRPOObjective.Config(trajectory="recorded")), ro, torch.tensor([1.0, 0, 0, 1]),
            context(policy, reference))


# ----------------------------------------------------------------------------- errors and contract


def test_errors_name_the_fix(policy, reference, rollout):
    ctx = context(policy, reference)
    with pytest.raises(RemaskError, match="advantage"):
        run(DTRPOObjective(), rollout, torch.zeros(4, 2), ctx)
    bad = remask.StepSelection(steps=torch.zeros(4, 3, dtype=torch.long), valid=torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(RemaskError, match="one-per-block"):
        run(DTRPOObjective(), rollout, torch.tensor([1.0, 0, 0, 1]), ctx, selection=bad)
    with pytest.raises(RemaskError, match="single-pass"):
        run(DTRPOObjective(DTRPOObjective.Config(attention="full", implementation="single-pass")), rollout,
            torch.tensor([1.0, 0, 0, 1]), ctx)

    class No4D(FakeModel):
        name = "no-4d"
        supports_4d_mask = False

    _, fro = fake_rollout()
    with pytest.raises(RemaskError, match="objective.attention: full"):
        run(DTRPOObjective(DTRPOObjective.Config(attention="block-causal")), fro, torch.tensor([1.0, 0, 0, 1]),
            context(No4D(), No4D()))
    # auto falls back to one full-attention forward per block
    _, out = run(DTRPOObjective(), fro, torch.tensor([1.0, 0, 0, 1]), context(No4D(), No4D(FakeModel.Config(seed=1))))
    assert out.forward_passes == 2 * fro.num_blocks


def test_objective_contract_and_registration():
    from remask.registry import get_registry

    assert check_component(DTRPOObjective) == []
    assert check_component(RawRewardAdvantage) == []
    assert get_registry().get("objective", "dtrpo") is DTRPOObjective
    assert DTRPOObjective.requires_whole_groups and DTRPOObjective.uses_reference


# ----------------------------------------------------------------------------- learning


def test_optimizer_steps_raise_the_chosen_margin(policy, reference, rollout):
    model = copy.deepcopy(policy)
    obj = DTRPOObjective(DTRPOObjective.Config(beta=0.5))
    ctx = context(model, reference)
    opt = torch.optim.Adam(model.module.parameters(), lr=3e-3)
    margins = []
    for step in range(6):
        with torch.no_grad():
            state = obj.prepare(rollout=rollout, advantages=torch.tensor([1.0, 0.0, 0.0, 1.0]), selection=None,
                                context=ctx)
        out = obj.loss(state, inner_step=0, context=ctx)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        margins.append(out.metrics["rewards/margins"])
    assert margins[-1] > margins[0] + 0.5, margins


def test_likelihood_estimator_contract_and_draws(policy, reference, rollout):
    from remask.registry import get_registry
    from remask_dtrpo.components import DTRPOSinglePassEstimator, DTRPOTrajectoryEstimator

    assert check_component(DTRPOTrajectoryEstimator) == []
    assert check_component(DTRPOSinglePassEstimator) == []
    assert get_registry().get("likelihood", "dtrpo-trajectory") is DTRPOTrajectoryEstimator
    assert get_registry().get("likelihood", "dtrpo-single-pass") is DTRPOSinglePassEstimator
    assert DTRPOTrajectoryEstimator().config.attention == "full"
    single = DTRPOSinglePassEstimator()
    assert (single.config.attention, single.config.implementation) == ("block-causal", "single-pass")
    before = policy.nfe + reference.nfe
    single.log_ratio(policy=policy, reference=reference, rollout=rollout, generator=torch.Generator().manual_seed(0))
    assert policy.nfe + reference.nfe - before == 2
    est = DTRPOTrajectoryEstimator()
    a = est.log_ratio(policy=policy, reference=reference, rollout=rollout, generator=torch.Generator().manual_seed(0))
    b = est.log_ratio(policy=policy, reference=reference, rollout=rollout, generator=torch.Generator().manual_seed(0))
    c = est.log_ratio(policy=policy, reference=reference, rollout=rollout, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4,) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(est.log_ratio(policy=policy, reference=policy, rollout=rollout,
                                     generator=torch.Generator().manual_seed(0)), torch.zeros(4))
