"""Shared tensor functions, checked against hand-computed values (spec algorithms.md §9)."""

from __future__ import annotations

import math

import pytest
import torch

from remask.functional import clipped_surrogate, gather_logprobs, group_mean, group_std, k3_kl, masked_mean


def test_k3_kl_spec_case_3():
    kl = k3_kl(torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25)))
    assert abs(kl.item() - 0.193147) < 1e-6
    assert k3_kl(torch.tensor(-1.3), torch.tensor(-1.3)).item() == 0.0


def test_clipped_surrogate_spec_case_2():
    for rho, adv, want in [(2.0, 1, -1.5), (2.0, -1, 2.0), (0.25, -1, 0.5), (0.25, 1, -0.25)]:
        loss, _ = clipped_surrogate(torch.tensor(rho), torch.tensor(float(adv)), 0.5)
        assert abs(loss.item() - want) < 1e-6


def test_asymmetric_clip_spec_case_15():
    loss, clipped = clipped_surrogate(torch.tensor([1.8, 0.5]), torch.tensor([1.0, -1.0]), 0.2, 0.5)
    assert torch.allclose(loss, torch.tensor([-1.5, 0.8]))
    assert clipped.tolist() == [True, True]


def test_gather_logprobs_matches_log_softmax():
    logits = torch.randn(2, 3, 7)
    ids = torch.randint(0, 7, (2, 3))
    want = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(gather_logprobs(logits, ids), want, atol=1e-6)
    assert torch.allclose(gather_logprobs(logits, ids, temperature=2.0),
                          torch.log_softmax(logits / 2, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1), atol=1e-6)


def test_group_stats_spec_case_6_and_9():
    r = torch.tensor([4.0, 0.0, 2.0])
    assert (r - group_mean(r, 3)).tolist() == [2.0, -2.0, 0.0]
    r2 = torch.tensor([1.0, 0.0, 3.0, 3.0])
    assert (r2 - group_mean(r2, 2)).tolist() == [0.5, -0.5, 0.0, 0.0]
    r3 = torch.tensor([1.0, 0.0, 0.0, 1.0])
    a = (r3 - group_mean(r3, 4)) / (group_std(r3, 4) + 1e-4)
    assert torch.allclose(a, torch.tensor([0.865875, -0.865875, -0.865875, 0.865875]), atol=1e-5)


def test_masked_mean_empty_mask_is_zero():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    m = torch.tensor([[True, False], [False, False]])
    assert masked_mean(x, m).item() == 1.0
    assert masked_mean(x, m, dim=1).tolist() == [1.0, 0.0]


def test_row_advantages_names_the_objective_and_the_fix():
    from remask.errors import RemaskError
    from remask.functional import row_advantages

    out = row_advantages(torch.tensor([1.0, -1.0], dtype=torch.float64), 2, objective="wd1", hint="use advantage: rloo")
    assert out.dtype == torch.float32 and out.tolist() == [1.0, -1.0]
    with pytest.raises(RemaskError, match=r"objective wd1: needs one advantage per row, shape \[2\], got \(2, 3\); use advantage: rloo"):
        row_advantages(torch.zeros(2, 3), 2, objective="wd1", hint="use advantage: rloo")


def test_inner_step_seeds_draw_one_per_update_or_reuse_the_fixed_one():
    from remask.likelihood import draw_mask_seeds, inner_step_seeds

    seeds = inner_step_seeds(torch.Generator().manual_seed(7), 3)
    assert seeds == draw_mask_seeds(torch.Generator().manual_seed(7), 3) and len(set(seeds)) == 3
    assert inner_step_seeds(torch.Generator().manual_seed(7), 0) == draw_mask_seeds(torch.Generator().manual_seed(7), 1)
    assert inner_step_seeds(torch.Generator(), 4, random_masking=False, fixed_seed=42) == [42]
