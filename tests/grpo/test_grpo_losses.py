"""Spec algorithms.md §9.1–9.2, cases 1–9, on the pure functions of remask_grpo (exact values)."""

from __future__ import annotations

import math

import pytest
import torch

from remask_grpo.advantages import group_mean_advantages, group_mean_std_advantages, rloo_advantages
from remask.likelihood import elbo_views, one_step_views, prompt_mask
from remask_grpo.losses import (
    clip_fractions,
    importance_ratio,
    inner_iteration_index,
    policy_gradient_loss,
    reduce_token_loss,
)


def _ones(b: int, l: int) -> torch.Tensor:
    return torch.ones(b, l, dtype=torch.bool)


def test_case1_identity_ratio():
    logp = torch.log(torch.tensor([[0.3, 0.6], [0.2, 0.9]]))
    terms = policy_gradient_loss(logp, logp.clone(), torch.tensor([2.0, 0.0]), _ones(2, 2), eps_low=0.5)
    assert terms.loss.item() == pytest.approx(-1.0, abs=1e-7)
    assert torch.equal(terms.ratio, torch.ones(2, 2))


@pytest.mark.parametrize(
    "ratio, adv, expected",
    [(2.0, 1.0, -1.5), (2.0, -1.0, 2.0), (0.25, -1.0, 0.5), (0.25, 1.0, -0.25)],
)
def test_case2_clipping(ratio, adv, expected):
    old = torch.zeros(1, 1)
    logp = torch.full((1, 1), math.log(ratio))
    terms = policy_gradient_loss(logp, old, torch.tensor([adv]), _ones(1, 1), eps_low=0.5)
    assert terms.loss.item() == pytest.approx(expected, abs=1e-6)


def test_case2_clip_metrics_follow_trl():
    # ρ = 2 with A > 0 is high-clipped; ρ = 0.25 with A < 0 low-clipped; the other two are not clipped
    ratio = torch.tensor([[2.0], [2.0], [0.25], [0.25]])
    adv = torch.tensor([[1.0], [-1.0], [-1.0], [1.0]])
    out = clip_fractions(ratio, adv, _ones(4, 1), 0.5, 0.5)
    assert out["clip_ratio/high_mean"].item() == 0.25
    assert out["clip_ratio/low_mean"].item() == 0.25
    assert out["clip_ratio/region_mean"].item() == 0.5


def test_asymmetric_clip_uses_eps_high_above():
    logp = torch.full((1, 1), math.log(2.0))
    # ε_low = 0.2, ε_high = 0.5: clip at 1.5 for A > 0 -> loss −1.5 (symmetric 0.2 would give −1.2)
    sym = policy_gradient_loss(logp, torch.zeros(1, 1), torch.tensor([1.0]), _ones(1, 1), eps_low=0.2)
    asym = policy_gradient_loss(logp, torch.zeros(1, 1), torch.tensor([1.0]), _ones(1, 1), eps_low=0.2, eps_high=0.5)
    assert sym.loss.item() == pytest.approx(-1.2, abs=1e-6)
    assert asym.loss.item() == pytest.approx(-1.5, abs=1e-6)


def test_case3_k3_kl():
    logp = torch.full((1, 1), math.log(0.5))
    ref = torch.full((1, 1), math.log(0.25))
    terms = policy_gradient_loss(logp, logp.clone(), torch.tensor([0.0]), _ones(1, 1), ref_logp=ref, beta=0.04)
    assert terms.kl.item() == pytest.approx(0.193147, abs=1e-6)
    assert terms.loss.item() == pytest.approx(0.0077259, abs=1e-7)
    same = policy_gradient_loss(logp, logp.clone(), torch.tensor([0.0]), _ones(1, 1), ref_logp=logp.clone(), beta=0.04)
    assert same.kl.item() == 0.0


def test_beta_without_reference_is_refused():
    with pytest.raises(ValueError, match="ref_logp"):
        policy_gradient_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), _ones(1, 1), beta=0.1)


def test_case4_token_mean_vs_sequence_mean():
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool)  # lengths [1, 3]
    adv = torch.tensor([1.0, -1.0])
    tok = policy_gradient_loss(logp, logp.clone(), adv, mask, normalisation="per_token")
    seq = policy_gradient_loss(logp, logp.clone(), adv, mask, normalisation="per_sequence")
    assert tok.loss.item() == pytest.approx(0.5, abs=1e-7)
    assert seq.loss.item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="normalisation"):
        reduce_token_loss(logp, mask, "per_batch")  # type: ignore[arg-type]


@pytest.mark.parametrize("normalisation", ["per_token", "per_sequence"])
def test_case5_eos_masking(normalisation):
    # completion [a, b, EOS, EOS] -> mask [1, 1, 1, 0]; the log-prob at position 3 must not matter
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    old = torch.log(torch.tensor([[0.5, 0.4, 0.3, 0.2]]))
    ref = torch.log(torch.tensor([[0.6, 0.2, 0.3, 0.1]]))
    a = torch.log(torch.tensor([[0.55, 0.3, 0.35, 0.2]])).requires_grad_(True)
    b = a.detach().clone()
    b[0, 3] = math.log(0.9)
    b.requires_grad_(True)
    kw = dict(ref_logp=ref, eps_low=0.2, beta=0.04, normalisation=normalisation)
    la = policy_gradient_loss(a, old, torch.tensor([1.3]), mask, **kw).loss
    lb = policy_gradient_loss(b, old, torch.tensor([1.3]), mask, **kw).loss
    assert la.item() == lb.item()
    la.backward()
    lb.backward()
    assert a.grad[0, 3].item() == 0.0 and b.grad[0, 3].item() == 0.0
    assert torch.equal(a.grad[:, :3], b.grad[:, :3])


def test_case6_group_mean_advantage():
    assert group_mean_advantages(torch.tensor([4.0, 0.0, 2.0]), 3).tolist() == [2.0, -2.0, 0.0]
    equal = group_mean_advantages(torch.tensor([1.0, 1.0, 1.0]), 3)
    assert equal.tolist() == [0.0, 0.0, 0.0]
    logp = torch.randn(3, 4)
    loss = policy_gradient_loss(logp, logp - 0.1, equal, _ones(3, 4)).loss
    assert loss.item() == 0.0
    assert group_mean_advantages(torch.tensor([1.0, 0.0, 3.0, 3.0]), 2).tolist() == [0.5, -0.5, 0.0, 0.0]


def test_case7_mask_determinism_and_rate():
    attn = torch.ones(4, 50, dtype=torch.bool)
    assert torch.equal(prompt_mask(attn, 0.15, seed=7), prompt_mask(attn, 0.15, seed=7))
    assert not torch.equal(prompt_mask(attn, 0.15, seed=7), prompt_mask(attn, 0.15, seed=8))
    prompt_ids = torch.randint(3, 40, (4, 50))
    completion = torch.randint(3, 40, (4, 6))
    view = one_step_views(prompt_ids, attn, completion, mask_token_id=2, p_mask_prompt=0.15, seed=7)
    assert view.num_views == 1
    assert (view.input_ids[0, :, 50:] == 2).all()  # completion always fully masked
    assert torch.equal(view.input_ids[0, :, :50] == 2, prompt_mask(attn, 0.15, seed=7))
    rate = prompt_mask(torch.ones(100, 1000, dtype=torch.bool), 0.15, seed=123).float().mean().item()
    assert abs(rate - 0.15) < 0.005


def test_case7_left_padding_is_never_masked():
    attn = torch.zeros(2, 10, dtype=torch.bool)
    attn[:, 6:] = True
    m = prompt_mask(attn, 1.0, seed=0)
    assert not m[:, :6].any() and m[:, 6:].all()


def test_case8_inner_iteration_index():
    assert inner_iteration_index(4, 3) == 1
    assert [inner_iteration_index(s, 3) for s in range(6)] == [0, 1, 2, 0, 1, 2]
    with pytest.raises(ValueError):
        inner_iteration_index(1, 0)


def test_case9_group_mean_std_advantage():
    adv = group_mean_std_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4)
    assert adv.tolist() == pytest.approx([0.865875, -0.865875, -0.865875, 0.865875], abs=1e-6)
    assert group_mean_std_advantages(torch.tensor([2.0, 2.0]), 2).tolist() == [0.0, 0.0]


def test_rloo_leave_one_out():
    adv = rloo_advantages(torch.tensor([4.0, 0.0, 2.0, 1.0, 1.0, 1.0]), 3)
    # 4 − (0+2)/2 = 3, 0 − (4+2)/2 = −3, 2 − (4+0)/2 = 0; equal rewards -> 0
    assert adv.tolist() == [3.0, -3.0, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        rloo_advantages(torch.tensor([1.0]), 1)


def test_importance_ratio():
    assert importance_ratio(torch.tensor([0.0]), torch.tensor([math.log(2.0)])).item() == pytest.approx(0.5)


def test_elbo_views_weights_are_inverse_t_on_masked_tokens():
    prompt = torch.randint(3, 40, (64, 5))
    completion = torch.randint(3, 40, (64, 32))
    v = elbo_views(prompt, completion, mask_token_id=2, n_mc=3, seed=11)
    assert v.input_ids.shape == (3, 64, 37) and v.token_weights.shape == (3, 64, 32)
    assert torch.equal(v.input_ids[:, :, :5], prompt.expand(3, -1, -1))  # prompt clean
    masked = v.input_ids[:, :, 5:] == 2
    w = v.token_weights
    assert (w[~masked] == 0).all() and (w[masked] >= 1.0).all()
    for n in range(3):  # one weight 1/t per row and view
        for j in range(64):
            vals = w[n, j][masked[n, j]]
            if vals.numel():
                assert torch.allclose(vals, vals[0].expand_as(vals))
    # t ~ U(0, 1] -> on average half of the completion is masked
    assert abs(masked.float().mean().item() - 0.5) < 0.06
    again = elbo_views(prompt, completion, mask_token_id=2, n_mc=3, seed=11)
    assert torch.equal(again.input_ids, v.input_ids) and torch.equal(again.token_weights, v.token_weights)
