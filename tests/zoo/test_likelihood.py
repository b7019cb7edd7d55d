"""The public likelihood building blocks (remask.likelihood): hand-checkable properties of each view family."""

from __future__ import annotations

import pytest
import torch

import remask
from remask import likelihood as lk
from remask.functional import full_sequence
from remask.testing import FakeModel, fake_rollout

MASK = 99


def _ids(b: int = 4, p: int = 3, l: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(b * p).view(b, p) % 50, 10 + torch.arange(b * l).view(b, l) % 40


def test_public_api_exports_the_module():
    assert remask.likelihood is lk and "token_logprobs" in lk.__all__
    for name in lk.__all__:
        assert getattr(lk, name) is not None


def test_draw_mask_seeds_is_seeded_and_in_range():
    a = lk.draw_mask_seeds(torch.Generator().manual_seed(1), 6, 4096)
    b = lk.draw_mask_seeds(torch.Generator().manual_seed(1), 6, 4096)
    assert a == b and all(0 <= s < 4096 for s in a) and len(set(a)) > 1


def test_one_step_view_masks_whole_completion_and_is_a_function_of_the_seed():
    q, o = _ids()
    attn = torch.ones_like(q, dtype=torch.bool)
    v1 = lk.one_step_views(q, attn, o, MASK, p_mask_prompt=0.5, seed=3)
    v2 = lk.one_step_views(q, attn, o, MASK, p_mask_prompt=0.5, seed=3)
    assert torch.equal(v1.input_ids, v2.input_ids)
    assert (v1.input_ids[0, :, 3:] == MASK).all() and v1.masked.all()
    assert torch.equal(v1.token_weights, torch.ones(1, 4, 6))


def test_elbo_weights_are_unbiased_one_per_token():
    """E[1[masked]/t] = 1 for every token (LLaDA eq. 3), also for antithetic and complementary views."""
    q, o = _ids(b=2, l=5)
    for kwargs in ({}, {"antithetic": True}, {"complementary": True}):
        w = torch.stack([lk.elbo_views(q, o, MASK, n_mc=2, seed=s, **kwargs).token_weights.mean(0)
                         for s in range(4000)]).mean(0)  # [B, L]
        assert torch.allclose(w, torch.ones_like(w), atol=0.12), (kwargs, w)


def test_complementary_elbo_views_partition_the_completion():
    q, o = _ids()
    v = lk.elbo_views(q, o, MASK, n_mc=3, seed=5, complementary=True)
    assert v.num_views == 6
    first, second = v.masked[:3], v.masked[3:]
    assert not (first & second).any() and (first | second).all()
    assert torch.equal(v.input_ids[:3, :, 3:] == MASK, first)


def test_antithetic_pairs_use_t_and_one_minus_t():
    q, o = _ids(b=1, l=400)
    v = lk.elbo_views(q, o, MASK, n_mc=2, seed=11, antithetic=True)
    rates = v.masked.float().mean(-1).squeeze(-1)  # [2]
    assert abs(float(rates.sum()) - 1.0) < 0.12  # t + (1 - t) = 1 up to sampling noise


def test_fixed_count_masks_exactly_k_span_tokens_with_weight_c_over_k():
    q, o = _ids(b=3, l=8)
    span = torch.tensor([[1] * 8, [1] * 5 + [0] * 3, [1] * 2 + [0] * 6], dtype=torch.bool)
    v = lk.fixed_count_views(q, o, MASK, n_mc=4, seed=2, span=span)
    k = v.masked.sum(-1)  # [N, B]
    u = span.sum(-1)
    assert ((k >= 1) & (k <= u)).all()
    assert not (v.masked & ~span).any()
    w = v.token_weights.sum(-1)  # Σ_k weight = k · u/k = u on every view
    assert torch.allclose(w, u.float().expand_as(w))


def test_fixed_count_weights_are_unbiased_for_both_count_laws():
    q, o = _ids(b=2, l=4)
    for kwargs in ({"include_zero": False}, {"include_zero": True}, {"include_zero": True, "complementary": True},
                   {"include_zero": True, "stratified": True}):
        w = torch.stack([lk.fixed_count_views(q, o, MASK, n_mc=1, seed=s, **kwargs).token_weights.mean(0)
                         for s in range(3000)]).mean(0)
        assert torch.allclose(w, torch.ones_like(w), atol=0.1), (kwargs, w)


def test_stratified_counts_cover_every_level_once():
    """ESPO's linspace offsets: with B = u + 1 rows every count 0..u appears exactly once."""
    u = torch.full((8,), 7)
    for seed in range(5):
        k = lk.draw_mask_counts(u, torch.Generator().manual_seed(seed), include_zero=True, stratified=True)
        assert sorted(k.tolist()) == list(range(8))


def test_complementary_fixed_count_needs_include_zero():
    q, o = _ids()
    with pytest.raises(ValueError, match="include_zero"):
        lk.fixed_count_views(q, o, MASK, n_mc=1, seed=0, complementary=True)


def test_token_logprobs_is_the_weighted_mean_of_view_logprobs():
    model, ro = fake_rollout(gen_length=6, block_length=3, steps=4)
    _, attn = full_sequence(ro.prompts, ro.completion_ids)
    v = lk.fixed_count_views(ro.prompts.prompt_ids, ro.completion_ids, model.mask_token_id, n_mc=2, seed=1,
                             include_zero=True, complementary=True)
    with torch.no_grad():
        per_view = lk.view_logprobs(model, v, attn, ro.completion_ids)  # [N, B, L]
        weighted = lk.token_logprobs(model, v, attn, ro.completion_ids)  # [B, L]
    assert per_view.shape == (4, ro.batch_size, 6)
    assert torch.allclose(weighted, (per_view * v.token_weights).mean(0), atol=1e-6)


def test_exact_trajectory_equals_sum_of_per_step_transition_logprobs():
    """Σ_k [ℓ_θ(k) − ℓ_ref(k)] from step_logprob_sums == exact_trajectory_log_ratio(attention='full')
    for a single-block trajectory (one block: the full state is the sampler's state)."""
    model, ro = fake_rollout(gen_length=4, block_length=4, steps=4)
    ref = FakeModel(FakeModel.Config(seed=3))
    total = torch.zeros(ro.batch_size)
    with torch.no_grad():
        for k in range(ro.num_steps):
            x_k, committed = remask.state_before_step(ro.completion_ids, ro.unmask_step, k, model.mask_token_id)
            lp = lk.step_logprob_sums(lk.completion_logits(model, ro.prompts, x_k), ro.completion_ids, committed)
            lr = lk.step_logprob_sums(lk.completion_logits(ref, ro.prompts, x_k), ro.completion_ids, committed)
            total += lp - lr
        exact = lk.exact_trajectory_log_ratio(model, ref, ro.prompts, ro.completion_ids, ro.unmask_step, 4, "full")
    assert torch.allclose(total, exact, atol=1e-5)


def test_block_step_estimate_is_unbiased_on_enumeration():
    """Spec §9.5 case 20: T_B·Δ_t over t ∈ {1..4} averages to the exact Σ_t Δ_t."""
    delta = torch.tensor([0.1, 0.2, 0.3, 0.4])
    draws = [float(lk.trajectory_log_ratio(delta[t].view(1, 1), torch.tensor([[4]]))) for t in range(4)]
    assert sum(draws) / 4 == pytest.approx(1.0)
