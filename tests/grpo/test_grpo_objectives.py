"""Objective-level tests of `grpo` and `d1` and the advantage estimators, on remask.testing fakes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import remask
from remask.errors import RemaskError
from remask.testing import FakeModel, FakeSampler, check_component, fake_context, fake_prompts, fake_rollout
from remask_grpo.advantages import GroupMeanAdvantage, GroupMeanStdAdvantage, RLOOAdvantage
from remask.likelihood import one_step_views, token_logprobs
from remask_grpo.objectives import D1Objective, GRPOObjective, policy_gradient_step_loss

ALL = [GRPOObjective, D1Objective, GroupMeanAdvantage, GroupMeanStdAdvantage, RLOOAdvantage]
LONG = ("12+34=46 and 5*6=30 so", "9-4=5 then 7+8=15 and")


def _setup(inner_steps: int = 3, seed: int = 0):
    model = FakeModel()
    prompts = fake_prompts(texts=LONG, group_size=2)
    rollout = FakeSampler(FakeSampler.Config(gen_length=8)).sample(model, prompts, torch.Generator().manual_seed(1))
    ctx = fake_context(model, seed=seed)
    ctx.inner_steps = inner_steps
    ctx.group_size = 2
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    return model, rollout, ctx, adv


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.name)
def test_check_component(cls):
    assert check_component(cls) == []


def test_check_component_grpo_elbo_and_sequence_normalisation():
    cfg = GRPOObjective.Config(likelihood="elbo", n_mc=2, normalisation="per_sequence", epsilon_high=0.28)
    assert check_component(GRPOObjective, cfg) == []


def test_registered_names():
    reg = remask.registry.get_registry()
    assert {"grpo", "d1"} <= set(reg.names("objective"))
    assert {"group-mean", "group-mean-std", "rloo"} <= set(reg.names("advantage"))


@pytest.mark.parametrize("cls, likelihood", [(D1Objective, "one-step"), (GRPOObjective, "one-step"),
                                              (GRPOObjective, "elbo")])
def test_ratio_exactly_one_at_first_inner_step(cls, likelihood):
    model, rollout, ctx, adv = _setup(inner_steps=3)
    cfg = cls.Config(beta=0.0) if cls is D1Objective else cls.Config(beta=0.0, likelihood=likelihood)
    obj = cls(cfg)
    with torch.no_grad():
        state = obj.prepare(rollout=rollout, advantages=adv, selection=None, context=ctx)
    assert state.old_logps is not None and state.old_logps.shape == (3, 4, 8)
    logp = token_logprobs(model, state.views[0], state.attention_mask, state.completion_ids)
    assert torch.equal(logp, state.old_logps[0])  # bit for bit: ρ = 1
    out = obj.loss(state, inner_step=0, context=ctx)
    expected = -(adv.unsqueeze(-1) * state.completion_mask).sum() / state.completion_mask.sum()
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-7)
    assert out.metrics["clip_ratio/region_mean"] == 0.0


def test_mu_one_uses_stop_grad_of_current_logps():
    model, rollout, ctx, adv = _setup(inner_steps=1)
    obj = D1Objective(D1Objective.Config(beta=0.04))
    with torch.no_grad():
        state = obj.prepare(rollout=rollout, advantages=adv, selection=None, context=ctx)
    assert state.old_logps is None and state.num_masks == 1
    assert state.ref_logps is not None  # β ≠ 0 with μ = 1 works (d1 raises NameError here)
    assert state.prepare_forward_passes == 1  # reference only
    out = obj.loss(state, inner_step=0, context=ctx)
    assert out.forward_passes == 2  # policy + reference
    assert out.metrics["clip_ratio/region_mean"] == 0.0 and out.metrics["kl"] > 0
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.module.parameters())


def test_masks_deterministic_per_seed_and_shared_by_policy_old_and_reference():
    model, rollout, ctx, adv = _setup(inner_steps=3, seed=5)
    obj = D1Objective()
    with torch.no_grad():
        state = obj.prepare(rollout=rollout, advantages=adv, selection=None, context=ctx)
        _, _, ctx2, _ = _setup(inner_steps=3, seed=5)
        again = obj.prepare(rollout=rollout, advantages=adv, selection=None, context=ctx2)
    assert state.mask_seeds == again.mask_seeds and len(set(state.mask_seeds)) == 3
    p = rollout.prompts
    for m, seed in enumerate(state.mask_seeds):
        view = one_step_views(p.prompt_ids, p.attention_mask, rollout.completion_ids, model.mask_token_id,
                              p_mask_prompt=0.15, seed=seed)
        assert torch.equal(view.input_ids, state.views[m].input_ids)
        with torch.no_grad():
            old = token_logprobs(model, view, state.attention_mask, state.completion_ids)
            ref = token_logprobs(ctx.reference, view, state.attention_mask, state.completion_ids)
        assert torch.equal(old, state.old_logps[m]) and torch.equal(ref, state.ref_logps[m])
    # different inner iterations see different prompt masks
    assert not torch.equal(state.views[0].input_ids, state.views[1].input_ids)
    assert state.prepare_forward_passes == 6  # 3 masks x (old + reference)


def test_fixed_mask_when_random_masking_is_off():
    _, rollout, ctx, adv = _setup(inner_steps=4)
    obj = D1Objective(D1Objective.Config(random_masking=False))
    before = ctx.generator.get_state()
    with torch.no_grad():
        state = obj.prepare(rollout=rollout, advantages=adv, selection=None, context=ctx)
    assert state.mask_seeds == (42,) and state.old_logps.shape[0] == 1
    assert torch.equal(before, ctx.generator.get_state())  # nothing drawn


def test_generator_stream_only_global_rng_untouched():
    _, rollout, ctx, adv = _setup(inner_steps=2)
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    obj = GRPOObjective(GRPOObjective.Config(likelihood="elbo"))
    with torch.no_grad():
        state = obj.prepare(rollout=rollout, advantages=adv, selection=None, context=ctx)
    obj.loss(state, inner_step=1, context=ctx)
    assert torch.equal(torch.rand(3), expected)


def test_case5_eos_masking_objective_level():
    model, rollout, ctx, adv = _setup(inner_steps=2)
    mask = torch.ones_like(rollout.completion_mask)
    mask[:, 5:] = False
    ids = rollout.completion_ids.clone()
    ids[:, 4] = model.eos_token_id
    a = dataclasses.replace(rollout, completion_ids=ids, completion_mask=mask)
    ids_b = ids.clone()
    ids_b[:, 5:] = (ids_b[:, 5:] + 7) % 40 + 3  # change every post-EOS token
    b = dataclasses.replace(rollout, completion_ids=ids_b, completion_mask=mask)
    losses = []
    for ro in (a, b):
        _, _, ctx_i, _ = _setup(inner_steps=2)
        obj = D1Objective(D1Objective.Config(beta=0.04))
        with torch.no_grad():
            state = obj.prepare(rollout=ro, advantages=adv, selection=None, context=ctx_i)
        losses.append([obj.loss(state, inner_step=m, context=ctx_i).loss.item() for m in range(2)])
    assert losses[0] == losses[1]


def test_case8_d1_micro_batch_counter_selects_mask_step_mod_mu():
    model, rollout, ctx, adv = _setup(inner_steps=3)
    obj = D1Objective(D1Objective.Config(mask_index="d1-micro-batch-counter", beta=0.04))
    with torch.no_grad():
        state = obj.prepare(rollout=rollout, advantages=adv, selection=None, context=ctx)
    outs = [obj.loss(state, inner_step=i % 3, context=ctx) for i in range(4)]  # _step = 1, 2, 3, 4
    assert obj.state_dict() == {"loss_calls": 4}
    by_index = [policy_gradient_step_loss(state, m, ctx, eps_low=0.5, eps_high=None, beta=0.04,
                                          normalisation="per_token", count_prepare=False) for m in range(3)]
    # the KL differs per mask (the reference differs from the policy), so the mask is identifiable
    assert len({round(o.metrics["kl"], 9) for o in by_index}) == 3
    assert outs[3].metrics["kl"] == by_index[1].metrics["kl"]  # _step = 4 -> seed index 1, old_logps[1]
    assert outs[0].metrics["kl"] == by_index[1].metrics["kl"]  # _step = 1 -> 1
    assert outs[2].metrics["kl"] == by_index[0].metrics["kl"]  # _step = 3 -> 0
    fresh = D1Objective(D1Objective.Config(mask_index="d1-micro-batch-counter"))
    fresh.load_state_dict({"loss_calls": 3})
    assert fresh.mask_index_for(0, 3) == 1


def test_default_inner_step_maps_to_mask_index():
    _, rollout, ctx, adv = _setup(inner_steps=3)
    obj = D1Objective(D1Objective.Config(beta=0.04))
    with torch.no_grad():
        state = obj.prepare(rollout=rollout, advantages=adv, selection=None, context=ctx)
    for m in range(3):
        direct = policy_gradient_step_loss(state, m, ctx, eps_low=0.5, eps_high=None, beta=0.04,
                                           normalisation="per_token", count_prepare=False)
        assert obj.loss(state, inner_step=m, context=ctx).metrics["kl"] == direct.metrics["kl"]
    assert obj.state_dict() == {"loss_calls": 0}


def test_uses_reference_is_instance_level():
    assert D1Objective(D1Objective.Config(beta=0.0)).uses_reference is False
    assert D1Objective().uses_reference is True
    assert GRPOObjective(GRPOObjective.Config(beta=0.0)).uses_reference is False
    _, rollout, ctx, adv = _setup(inner_steps=2)
    ctx.reference = None
    obj = GRPOObjective(GRPOObjective.Config(beta=0.0))
    with torch.no_grad():
        state = obj.prepare(rollout=rollout, advantages=adv, selection=None, context=ctx)
    out = obj.loss(state, inner_step=0, context=ctx)
    assert "kl" not in out.metrics and out.forward_passes == 3  # policy now + old policy (2 masks) in prepare
    with pytest.raises(RemaskError, match="reference"):
        GRPOObjective().prepare(rollout=rollout, advantages=adv, selection=None, context=ctx)


def test_per_step_advantages_are_refused_with_a_clear_error():
    _, rollout, ctx, _ = _setup()
    with pytest.raises(RemaskError, match="one advantage per row"):
        D1Objective().prepare(rollout=rollout, advantages=torch.zeros(4, 3), selection=None, context=ctx)


def test_grpo_normalisation_switch_changes_the_loss():
    model, rollout, ctx, adv = _setup(inner_steps=1)
    mask = torch.ones_like(rollout.completion_mask)
    mask[0, 2:] = False
    ro = dataclasses.replace(rollout, completion_mask=mask)
    vals = {}
    for norm in ("per_token", "per_sequence"):
        obj = GRPOObjective(GRPOObjective.Config(beta=0.0, normalisation=norm))
        state = obj.prepare(rollout=ro, advantages=adv, selection=None, context=ctx)
        vals[norm] = obj.loss(state, inner_step=0, context=ctx).loss.item()
    # ρ = 1: per_token = −Σ A_j |o_j| / Σ|o| = −(2 − 8 + 4 − 4)/26; per_sequence = −mean(A) = 0
    assert vals["per_token"] == pytest.approx(6 / 26, abs=1e-6)
    assert vals["per_sequence"] == pytest.approx(0.0, abs=1e-7)


def test_elbo_counts_n_mc_forwards():
    _, rollout, ctx, adv = _setup(inner_steps=2)
    obj = GRPOObjective(GRPOObjective.Config(likelihood="elbo", n_mc=3))
    with torch.no_grad():
        state = obj.prepare(rollout=rollout, advantages=adv, selection=None, context=ctx)
    assert state.prepare_forward_passes == 2 * 3 * 2  # 2 masks x 3 samples x (old + reference)
    assert obj.loss(state, inner_step=1, context=ctx).forward_passes == 3


def test_advantage_estimators_on_records():
    _, ro = fake_rollout(group_size=2)
    rw = remask.Rewards.from_scores("r", [1.0, 0.0, 3.0, None])  # NaN ("cannot judge") counts as 0
    ctx = fake_context()
    assert GroupMeanAdvantage().estimate(rollout=ro, rewards=rw, selection=None, context=ctx).tolist() == [0.5, -0.5, 1.5, -1.5]
    std = GroupMeanStdAdvantage().estimate(rollout=ro, rewards=rw, selection=None, context=ctx)
    assert std.tolist() == pytest.approx([0.5 / (0.5 ** 0.5 + 1e-4), -0.5 / (0.5 ** 0.5 + 1e-4),
                                          1.5 / (4.5 ** 0.5 + 1e-4), -1.5 / (4.5 ** 0.5 + 1e-4)], rel=1e-6)
    assert RLOOAdvantage().estimate(rollout=ro, rewards=rw, selection=None, context=ctx).tolist() == [1.0, -1.0, 3.0, -3.0]
    _, single = fake_rollout(group_size=1)
    with pytest.raises(RemaskError, match="rloo"):
        RLOOAdvantage().estimate(rollout=single, rewards=remask.Rewards.from_scores("r", [1.0, 0.0]),
                                 selection=None, context=ctx)
    with pytest.raises(RemaskError, match="rewards for"):
        GroupMeanAdvantage().estimate(rollout=ro, rewards=remask.Rewards.from_scores("r", [1.0]),
                                      selection=None, context=ctx)
