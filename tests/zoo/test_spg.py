"""SPG: the sandwiched bounds (hand cases, the official code's numbers), the block-random masks, the objective."""

from __future__ import annotations

import math

import pytest
import torch
from remask_spg.loss import lower_bound, spg_loss, spg_sequence_logps, upper_bound
from remask_spg.masks import block_random_masks, block_random_views
from remask_spg.objective import SPGObjective

from remask.functional import gather_logprobs
from remask.testing import check_component, fake_context, fake_rollout


def test_hand_case_bounds():
    """One row, |o| = 2, two views: M_1 = {0}, M_2 = {0, 1}; p = (0.5, 0.25)."""
    logp = torch.log(torch.tensor([[[0.5, 0.25]], [[0.5, 0.25]]]))  # [N=2, B=1, L=2]
    scored = torch.tensor([[[True, False]], [[True, True]]])
    cm = torch.ones(1, 2, dtype=torch.bool)
    lower = math.log(0.5) / 2 + (math.log(0.5) + math.log(0.25)) / 4  # mean of per-view token means
    assert float(lower_bound(logp, scored)) == pytest.approx(lower)
    # β = 1: t̂ = (1/2, 1); a_0 = (0.5/0.5 + 0.5/1)/2 = 0.75, a_1 = (0 + 0.25/1)/2 = 0.125
    assert float(upper_bound(logp, scored, cm, 1.0)) == pytest.approx((math.log(0.75) + math.log(0.125)) / 2)
    seq = spg_sequence_logps(logp, scored, cm, torch.tensor([False]), negative_bound="mix", eubo_beta=1.0, mix_weight=0.5)
    assert float(seq) == pytest.approx(0.5 * (math.log(0.75) + math.log(0.125)) / 2 + 0.5 * lower)
    pos = spg_sequence_logps(logp, scored, cm, torch.tensor([True]), negative_bound="eubo", eubo_beta=1.0)
    assert float(pos) == pytest.approx(lower)


def test_upper_bound_is_above_lower_bound_for_a_single_full_view():
    """With every token scored once (t̂ = 1), EUBO at β = 1 is log-mean-exp ≥ mean log (Jensen)."""
    logp = torch.log(torch.tensor([[[0.9, 0.1, 0.5]]]))
    scored = torch.ones_like(logp, dtype=torch.bool)
    assert float(upper_bound(logp, scored, torch.ones(1, 3, dtype=torch.bool), 1.0)) == pytest.approx(
        float(lower_bound(logp, scored)))  # one view: a_k = p_k, so both are mean log p here
    two = torch.cat([logp, torch.log(torch.tensor([[[0.2, 0.6, 0.5]]]))])
    s2 = torch.ones_like(two, dtype=torch.bool)
    assert float(upper_bound(two, s2, torch.ones(1, 3, dtype=torch.bool), 1.0)) >= float(lower_bound(two, s2))


def test_loss_is_length_weighted():
    seq = torch.tensor([-1.0, -2.0])
    adv = torch.tensor([1.0, -1.0])
    assert float(spg_loss(seq, adv, torch.tensor([1, 3]))) == pytest.approx((1 * 1 + (-2) * 3) / 4)


def test_matches_the_official_implementation(official):
    """facebookresearch/SPG @ a1c7120 _get_per_seq_logps + compute_loss, on the masks its own
    forward_process drew and fixed logits."""
    fx = official("spg")
    assert fx["commit"].startswith("a1c7120")
    for case in fx["cases"]:
        logits = torch.tensor(case["completion_logits"])  # [B, N, L, V]
        ids = torch.tensor(case["completion_ids"])  # [B, L]
        cm = torch.tensor(case["completion_mask"]).bool()
        logp = gather_logprobs(logits.transpose(0, 1), ids.unsqueeze(0).expand(logits.shape[1], -1, -1))  # [N, B, L]
        scored = torch.tensor(case["masked"]).bool().transpose(0, 1) & cm.unsqueeze(0)  # [N, B, L]
        adv = torch.tensor(case["advantages"])
        seq = spg_sequence_logps(logp, scored, cm, adv > 0, negative_bound=case["logp_estimation"],
                                 eubo_beta=case["eubo_beta"], mix_weight=case["mix_weight"])
        assert seq.tolist() == pytest.approx(case["per_seq_logps"], abs=1e-5)
        assert float(spg_loss(seq, adv, cm.sum(-1))) == pytest.approx(case["loss"], abs=1e-5)


def test_block_random_masks_follow_the_block_structure():
    cm = torch.tensor([[1] * 8, [1] * 5 + [0] * 3, [1] * 3 + [0] * 5, [1] + [0] * 7], dtype=torch.bool)
    for seed in range(20):
        m = block_random_masks(cm, 4, 2, torch.Generator().manual_seed(seed))  # [2, 4, 8]
        assert (m | cm).all() and m[:, ~cm].all()  # post-EOS always masked
        for j in range(2):
            for i in range(4):
                row = m[j, i]
                first = int(row.nonzero()[0])  # some completion token is masked in every view
                blk = first // 4
                assert row[(blk + 1) * 4:].all()  # every later block fully masked
                assert not row[: blk * 4].any()  # earlier blocks clean
                assert blk * 4 < int(cm[i].sum())  # the chosen block holds completion tokens


def test_views_are_seeded_and_score_only_completion_tokens():
    _, ro = fake_rollout(gen_length=8, block_length=4)
    p = ro.prompts
    v1 = block_random_views(p.prompt_ids, p.attention_mask, ro.completion_ids, ro.completion_mask, 99,
                            block_length=4, num_t=2, seed=5)
    v2 = block_random_views(p.prompt_ids, p.attention_mask, ro.completion_ids, ro.completion_mask, 99,
                            block_length=4, num_t=2, seed=5)
    assert torch.equal(v1.input_ids, v2.input_ids) and v1.num_views == 2
    assert not (v1.masked & ~ro.completion_mask.bool()).any()
    assert torch.equal(v1.masked, v1.input_ids[..., -8:] == 99)


def test_contract_and_bad_block_length():
    from remask.errors import RemaskError

    assert check_component(SPGObjective) == []
    model, ro = fake_rollout(gen_length=8, block_length=4)
    with pytest.raises(RemaskError, match="block_length"):
        SPGObjective(SPGObjective.Config(block_length=3)).prepare(
            rollout=ro, advantages=torch.zeros(ro.batch_size), selection=None, context=fake_context(model))
