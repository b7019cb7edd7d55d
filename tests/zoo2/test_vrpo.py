"""VRPO: the per-row stratified ELBO and the DPO-on-ELBO loss (spec hand cases, LLaDA's official ELBO
estimator and DARE's loss on fixed tensors), variance reduction, and the objective."""

from __future__ import annotations

import math

import pytest
import torch
from remask_vrpo.estimator import VRPOElboLogRatio
from remask_vrpo.loss import best_vs_worst, normalise_elbo, vrpo_loss
from remask_vrpo.objective import VRPOObjective

from remask.errors import RemaskError
from remask.likelihood import fixed_count_weights, stratified_count_views, stratified_time_views
from remask.testing import check_component, fake_context, fake_rollout


def _elbo(masks: torch.Tensor, view_logps: torch.Tensor, span: torch.Tensor | None = None) -> torch.Tensor:
    """B̂ = Σ_k (1/N) Σ_n w_n ℓ_n with the fixed-count weights u/l of the given masks. masks/logps [N, L] -> []."""
    span = torch.ones(masks.shape[-1], dtype=torch.bool) if span is None else span
    w = fixed_count_weights(masks.unsqueeze(1), span.unsqueeze(0), include_zero=False)[:, 0]  # [N, L]
    return (w * view_logps).sum() / masks.shape[0]


def _v1():
    def views(length, masked_sets, probs):
        m = torch.zeros(len(masked_sets), length, dtype=torch.bool)
        lp = torch.full((len(masked_sets), length), -50.0)  # unmasked positions carry weight 0
        for j, (pos, pr) in enumerate(zip(masked_sets, probs)):
            for i, p in zip(pos, pr):
                m[j, i - 1] = True
                lp[j, i - 1] = math.log(p)
        return m, lp

    tw = _elbo(*views(4, [[1, 2, 4], [3]], [[0.5, 0.4, 0.9], [0.7]]))
    rw = _elbo(*views(4, [[1, 2, 4], [3]], [[0.4, 0.4, 0.8], [0.6]]))
    tl = _elbo(*views(2, [[2], [1, 2]], [[0.2], [0.3, 0.25]]))
    rl = _elbo(*views(2, [[2], [1, 2]], [[0.3], [0.3, 0.35]]))
    return tw, rw, tl, rl


def test_spec_v1_elbo_score_loss_and_gradient():
    tw, rw, tl, rl = _v1()
    assert [float(x) for x in (tw, rw, tl, rl)] == pytest.approx([-1.856549, -2.392135, -2.904571, -2.330870], abs=1e-6)
    pol = torch.tensor([float(tw), float(tl)], requires_grad=True)
    loss, score = vrpo_loss(pol[:1], pol[1:], rw.reshape(1), rl.reshape(1), beta=0.1)
    assert float(score.detach()) == pytest.approx(0.110929, abs=1e-6)
    assert float(loss.detach()) == pytest.approx(0.639220, abs=1e-6)
    loss.backward()
    assert pol.grad.tolist() == pytest.approx([-0.047230, 0.047230], abs=1e-6)
    # DARE's scaling: ÷ the padded maximum length (8 here)
    n = lambda x: normalise_elbo(x.reshape(1), torch.tensor([4]), 8, "max_length")  # noqa: E731
    loss8, score8 = vrpo_loss(n(tw), n(tl), n(rw), n(rl), beta=0.1)
    assert float(score8) == pytest.approx(0.013866, abs=1e-6) and float(loss8) == pytest.approx(0.686238, abs=1e-6)


def test_matches_lladas_official_elbo_estimator(official):
    """ML-GSAI/LLaDA @ b7e6c35 get_log_likelihood: our fixed-count weights on the masks it drew give its value."""
    fx = official("vrpo")
    assert fx["commit"]["ML-GSAI/LLaDA"].startswith("b7e6c35")
    for case in fx["elbo_cases"]:
        masks = torch.tensor(case["masks"])
        got = _elbo(masks, torch.tensor(case["view_logps"]) * masks)
        assert float(got) == pytest.approx(case["elbo"], abs=1e-4)


def test_matches_dares_dpo_loss(official):
    """yjyddq/DARE @ 83ae8a3 (third-party VRPO) compute_dpo_loss: loss and gradients."""
    for case in official("vrpo")["dpo_cases"]:
        pol = torch.tensor([case["policy_chosen"], case["policy_rejected"]], requires_grad=True)
        loss, _ = vrpo_loss(pol[0], pol[1], torch.tensor(case["ref_chosen"]), torch.tensor(case["ref_rejected"]),
                            case["beta"])
        assert float(loss.detach()) == pytest.approx(case["loss"], abs=1e-6)
        loss.backward()
        assert pol.grad[0].tolist() == pytest.approx(case["grad_chosen"], abs=1e-7)
        assert pol.grad[1].tolist() == pytest.approx(case["grad_rejected"], abs=1e-7)


def test_stratified_counts_follow_the_official_rule_up_to_tie_rounding(official):
    """DARE/LLaDA: l_j = ((round(k + j·L/n) − 1) mod L) + 1 with torch.round (ties to even). remask rounds
    ties up (so each view's count stays uniform); the two differ only where j·L/n ends in .5."""
    for case in official("vrpo")["count_cases"]:
        big_l, n, counts = case["L"], case["n"], case["counts"]
        k = counts[0]
        even = [((round(k + j * big_l / n) - 1) % big_l) + 1 for j in range(n)]  # Python round: ties to even
        up = [((math.floor(k + j * big_l / n + 0.5) - 1) % big_l) + 1 for j in range(n)]
        assert even == counts
        for j in range(n):
            if (j * big_l / n) % 1 != 0.5:
                assert up[j] == counts[j]


def test_views_are_stratified_per_row_and_each_count_is_uniform():
    comp = torch.ones(1, 6, dtype=torch.long)
    seen = torch.zeros(4, 7)
    for seed in range(600):
        v = stratified_count_views(torch.zeros(1, 2, dtype=torch.long), comp, 9, n_t=4, seed=seed)
        counts = (v.input_ids[:, 0, 2:] == 9).sum(-1)  # [4]
        assert v.token_weights[:, 0].sum(-1).tolist() == pytest.approx([6.0] * 4)  # Σ_masked u/l = u
        steps = [(int(counts[(j + 1) % 4]) - int(counts[j])) % 6 for j in range(4)]
        assert sorted(steps) == [1, 1, 2, 2]  # offsets 1.5 apart on the circle of 6 levels
        for j, c in enumerate(counts.tolist()):
            seen[j, c] += 1
    freq = seen[:, 1:] / 600
    assert torch.allclose(freq, torch.full_like(freq, 1 / 6), atol=0.06)


def test_span_keeps_post_eos_tokens_clean():
    comp = torch.tensor([[5, 6, 7, 2, 2, 2]])
    span = torch.tensor([[True, True, True, True, False, False]])
    v = stratified_count_views(torch.zeros(1, 1, dtype=torch.long), comp, 9, n_t=3, n_yt=2, seed=4, span=span)
    assert v.num_views == 6
    assert not (v.input_ids[:, 0, 1 + 4:] == 9).any() and (v.token_weights[:, 0, 4:] == 0).all()
    counts = (v.input_ids[:, 0, 1:] == 9).sum(-1)
    assert counts[0::2].tolist() == counts[1::2].tolist()  # n_yt masks share each count


@pytest.mark.parametrize("n_t, n_yt, variance", [(1, 2, 0.744167), (2, 1, 0.474167), (4, 1, 0.237083)])
def test_spec_v2_optimal_allocation_variance(n_t, n_yt, variance):
    """Toy model log p(y_i | l masked) = a_i − 0.3(l − 1): Var(B̂) by budget split (i.i.d. counts, exact values)."""
    a = torch.tensor([-0.2, -1.0, -0.5])
    comp = torch.ones(1, 3, dtype=torch.long)
    draws = []
    for seed in range(3000):
        v = stratified_count_views(torch.zeros(1, 1, dtype=torch.long), comp, 9, n_t=n_t, n_yt=n_yt, seed=seed,
                                   stratified=False)
        masked = v.token_weights[:, 0] != 0  # [N, 3]
        logp = a - 0.3 * (masked.sum(-1, keepdim=True) - 1)  # [N, 3]
        draws.append(float((v.token_weights[:, 0] * logp).sum() / v.num_views))
    d = torch.tensor(draws, dtype=torch.float64)
    assert float(d.mean()) == pytest.approx(-2.6, abs=0.05)
    assert float(d.var()) == pytest.approx(variance, rel=0.1)


@pytest.mark.parametrize("timesteps", ["discrete-stratified", "discrete", "continuous-stratified", "continuous"])
def test_theta_equal_ref_gives_ln2_only_with_shared_noise(timesteps):
    """Spec V3: with shared masks B̂_θ − B̂_ref = 0 for every draw, so L = ln 2; independent masks break it."""
    model, ro = fake_rollout(group_size=2)
    adv = torch.tensor([1.0, 0.0, 0.0, 1.0])
    for antithetic, exact in ((True, True), (False, False)):
        ctx = fake_context(model)
        ctx.reference = model
        obj = VRPOObjective(VRPOObjective.Config(n_t=2, antithetic=antithetic, timesteps=timesteps))
        state = obj.prepare(rollout=ro, advantages=adv, selection=None, context=ctx)
        assert state.chosen.tolist() == [0, 3] and state.rejected.tolist() == [1, 2]
        out = obj.loss(state, inner_step=0, context=ctx)
        assert (float(out.loss.detach()) == pytest.approx(math.log(2), abs=1e-6)) is exact
        assert out.forward_passes == 4  # 2 views for the reference + 2 for the policy


def test_pairs_ties_and_a_micro_batch_without_pairs():
    chosen, rejected = best_vs_worst(torch.tensor([0.0, 1.0, 0.5, 0.5, 1.0, 1.0 + 1e-9]), 2, tie_tolerance=1e-6)
    assert chosen.tolist() == [1] and rejected.tolist() == [0]
    model, ro = fake_rollout(group_size=2)
    ctx = fake_context(model)
    obj = VRPOObjective(VRPOObjective.Config(n_t=1))
    state = obj.prepare(rollout=ro, advantages=torch.zeros(4), selection=None, context=ctx)
    out = obj.loss(state, inner_step=0, context=ctx)
    assert float(out.loss.detach()) == 0.0 and out.loss.requires_grad and out.metrics["vrpo/pairs"] == 0.0


def test_groups_of_one_are_refused_with_a_clear_error():
    model, ro = fake_rollout(group_size=1)
    with pytest.raises(RemaskError, match="group_size"):
        VRPOObjective().prepare(rollout=ro, advantages=torch.zeros(ro.batch_size), selection=None,
                                context=fake_context(model))


def test_contract_objective_and_estimator():
    assert check_component(VRPOObjective, VRPOObjective.Config(n_t=2)) == []
    assert check_component(VRPOElboLogRatio) == []


def test_continuous_views_are_unbiased_stratified_and_respect_the_span():
    comp = torch.ones(1, 6, dtype=torch.long)
    span = torch.tensor([[True, True, True, True, True, False]])
    totals = torch.zeros(4)
    draws = 800
    for seed in range(draws):
        v = stratified_time_views(torch.zeros(1, 1, dtype=torch.long), comp, 9, n_t=4, seed=seed, span=span)
        w = v.token_weights[:, 0]  # [4, 6]
        assert (w[:, 5] == 0).all() and not (v.input_ids[:, 0, 6] == 9).any()
        for j in range(4):  # view j's t lies in its stratum [j/4, (j+1)/4)
            row = w[j][w[j] > 0]
            if row.numel():
                assert j / 4 - 1e-6 <= float(1.0 / row[0]) <= (j + 1) / 4 + 1e-6
        totals += w.sum(-1)
    # E[Σ_span 1[masked]/t] = |span| = 5 for every view
    assert torch.allclose(totals / draws, torch.full((4,), 5.0), rtol=0.15)
