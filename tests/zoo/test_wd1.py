"""wd1: the weighted-likelihood loss (hand case, the official code's numbers) and the objective."""

from __future__ import annotations

import pytest
import torch
from remask_wd1.loss import wd1_loss, wd1_weights
from remask_wd1.objective import WD1Objective

from remask.functional import masked_sum
from remask.testing import check_component, fake_context, fake_rollout


def test_spec_hand_case():
    """Spec algorithms.md §9.7 case 28."""
    w_pos, w_neg = wd1_weights(torch.tensor([1.0, -1.0]), 2)
    assert w_pos.tolist() == pytest.approx([0.880797, 0.119203], abs=1e-6)
    assert w_neg.tolist() == pytest.approx([0.119203, 0.880797], abs=1e-6)
    assert float(wd1_loss(torch.tensor([-1.0, -2.0]), torch.tensor([1.0, -1.0]), 2)) == pytest.approx(-0.761594, abs=1e-6)


def test_equal_advantages_give_zero_loss_and_positive_only_is_the_weighted_nll():
    s = torch.tensor([-1.0, -3.0, -2.0])
    assert float(wd1_loss(s, torch.zeros(3), 3)) == pytest.approx(0.0, abs=1e-7)
    # with one term only: −Σ softmax(0)·S = mean NLL of the group
    assert float(wd1_loss(s, torch.zeros(3), 3, negative_term=False)) == pytest.approx(2.0)


def test_weights_run_per_group_and_loss_averages_groups():
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    s = torch.tensor([-1.0, -2.0, -0.5, -4.0])
    by_group = wd1_loss(s, adv, 2)
    separate = (wd1_loss(s[:2], adv[:2], 2) + wd1_loss(s[2:], adv[2:], 2)) / 2
    assert torch.allclose(by_group, separate)
    assert not torch.allclose(by_group, wd1_loss(s, adv, 4))


def test_matches_the_official_implementation(official):
    """xiaohangt/wd1 @ 0898985 RevDiffuGRPOTrainer.compute_loss on fixed per-token log-probs."""
    fx = official("wd1")
    assert fx["commit"].startswith("0898985")
    for case in fx["cases"]:
        logp = torch.tensor(case["per_token_logps"])
        mask = torch.tensor(case["completion_mask"]).bool()
        seq = masked_sum(logp, mask, dim=-1)
        ours = wd1_loss(seq, torch.tensor(case["advantages"]), case["micro_batch"])  # softmax over the micro-batch
        assert float(ours) == pytest.approx(case["loss"], abs=1e-5)


def test_contract_and_gradient_direction():
    assert check_component(WD1Objective) == []
    model, ro = fake_rollout(group_size=2)
    ctx = fake_context(model)
    ctx.inner_steps = 2
    obj = WD1Objective()
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    state = obj.prepare(rollout=ro, advantages=adv, selection=None, context=ctx)
    assert len(state.views) == 2 and state.softmax_size == 2
    out = obj.loss(state, inner_step=1, context=ctx)
    assert out.forward_passes == 1 and torch.isfinite(out.loss)
    assert not obj.uses_reference and obj.requires_whole_groups


def test_micro_batch_not_holding_whole_groups_is_refused():
    from remask.errors import RemaskError

    model, ro = fake_rollout(group_size=2)
    obj = WD1Objective(WD1Objective.Config(softmax_over="group"))
    from remask import take

    part = take(ro, [0, 1, 2])
    with pytest.raises(RemaskError, match="whole groups"):
        obj.prepare(rollout=part, advantages=torch.zeros(3), selection=None, context=fake_context(model))
