"""Records and the state-rebuild rule (spec algorithms.md §2.4, case 19)."""

from __future__ import annotations

import pytest
import torch

from remask import Rewards, StepSelection, take
from remask.testing import fake_prompts, fake_rollout
from remask.trajectory import block_step_table, state_before_step, states_before_steps

M = 99


def test_state_rebuild_spec_case_19():
    o = torch.tensor([[11, 12, 13]])
    s = torch.tensor([[2, 0, 1]])
    states = [state_before_step(o, s, k, M)[0][0].tolist() for k in range(4)]
    assert states == [[M, M, M], [M, 12, M], [M, 12, 13], [11, 12, 13]]
    _, i1 = state_before_step(o, s, 1, M)
    assert i1[0].tolist() == [False, False, True]  # I_1 = {3} in 1-based positions


def test_state_rebuild_per_row_steps_and_vectorised_agree():
    o = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    s = torch.tensor([[3, 0, 1, 2], [0, 0, 1, 1]])
    x, i = state_before_step(o, s, torch.tensor([1, 2]), M)
    assert x.tolist() == [[M, 2, M, M], [5, 6, 7, 8]]
    assert i.sum().item() == 1 + 0
    xs, isets = states_before_steps(o, s, torch.tensor([[0, 1], [1, 2]]), M)
    assert xs.shape == (2, 2, 4)
    for b in range(2):
        for j, k in enumerate([[0, 1], [1, 2]][b]):
            ref_x, ref_i = state_before_step(o[b : b + 1], s[b : b + 1], k, M)
            assert torch.equal(xs[b, j], ref_x[0]) and torch.equal(isets[b, j], ref_i[0])


def test_every_position_committed_exactly_once_in_fake_rollout():
    _, ro = fake_rollout(gen_length=8, block_length=4, steps=4)
    counts = torch.zeros(ro.batch_size, dtype=torch.long)
    for k in range(ro.num_steps):
        counts += (ro.unmask_step == k).sum(-1)
    assert counts.tolist() == [ro.gen_length] * ro.batch_size
    table = block_step_table(ro.unmask_step, ro.block_length)
    assert table[0] == [[0, 1], [2, 3]]


def test_take_selects_rows_recursively():
    _, ro = fake_rollout(group_size=2)
    sub = take(ro, [2, 3])
    assert sub.batch_size == 2
    assert torch.equal(sub.completion_ids, ro.completion_ids[2:4])
    assert sub.prompts.texts == ro.prompts.texts[2:4]
    assert sub.prompts.group_ids.tolist() == [1, 1]
    assert sub.block_length == ro.block_length


def test_records_are_frozen():
    pb = fake_prompts()
    with pytest.raises(Exception):
        pb.texts = ("x",)  # type: ignore[misc]


def test_prompt_batch_rejects_bad_shapes():
    pb = fake_prompts()
    with pytest.raises(ValueError, match="group_ids"):
        type(pb)(pb.prompt_ids, pb.attention_mask, pb.group_ids[:1], pb.texts, pb.references)


def test_group_size_and_unequal_groups():
    assert fake_prompts(group_size=3).group_size == 3
    pb = fake_prompts(group_size=2)
    bad = type(pb)(pb.prompt_ids, pb.attention_mask, torch.tensor([0, 0, 0, 1]), pb.texts, pb.references)
    with pytest.raises(ValueError, match="unequal"):
        _ = bad.group_size


def test_rewards_combine_weights_and_nan():
    a = Rewards.from_scores("a", [1.0, None, 0.0], ["ok", "timeout", "wrong"])
    b = Rewards.from_scores("b", [0.5, 0.5, 0.5])
    total = Rewards.combine([(a, 2.0), (b, 1.0)])
    assert total.total.tolist() == [2.5, 0.5, 0.5]
    assert torch.isnan(total.components["a"][1])
    assert total.reasons["a"] == ("ok", "timeout", "wrong")
    assert total.weights == {"a": 2.0, "b": 1.0}
    with pytest.raises(ValueError, match="twice"):
        Rewards.combine([(a, 1.0), (a, 1.0)])


def test_step_selection_shape_check():
    with pytest.raises(ValueError):
        StepSelection(steps=torch.zeros(2, 3, dtype=torch.long), valid=torch.ones(2, 2, dtype=torch.bool))
