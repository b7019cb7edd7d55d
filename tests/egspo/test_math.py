"""EGSPO's pure functions against the hand-checked values of spec algorithms.md §9.4 (cases 14-19)."""

from __future__ import annotations

import math

import pytest
import torch
from remask_egspo.advantage import (
    decayed_lambda,
    group_baseline_advantages,
    standard_grpo_stepwise_advantages,
    stepwise_returns,
)
from remask_egspo.objective import egspo_step_loss, exact_step_kl, step_logprob_sums
from remask_egspo.selection import (
    committed_steps,
    entropy_from_probs,
    random_steps,
    step_mean_entropy,
    top_entropy_steps,
    uniform_steps,
    usable_steps,
)
from remask_egspo.states import completion_mask_through_eos, one_step_greedy

import remask


# --- case 14: step log-prob and the loss divided by tokens per step ----------------------------


def test_case14_step_logprob_is_sum_over_committed_tokens():
    probs = torch.tensor([[[0.5, 0.25, 0.125, 0.125], [0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]]])  # [1, 3, 4]
    logits = probs.log()
    tokens = torch.tensor([[0, 1, 3]])
    committed = torch.tensor([[True, True, False]])  # I_k = positions 0 and 1
    ell = step_logprob_sums(logits, tokens, committed)
    assert ell.shape == (1,)
    assert ell.item() == pytest.approx(math.log(0.125), abs=1e-6)
    assert ell.item() == pytest.approx(-2.079442, abs=1e-6)
    loss, ratio, _ = egspo_step_loss(
        ell.view(1, 1), ell.view(1, 1), torch.ones(1, 1), torch.ones(1, 1),
        epsilon_low=0.2, epsilon_high=0.5, tokens_per_step=2.0,
    )
    assert ratio.item() == 1.0
    assert loss.item() == pytest.approx(-0.5)


def test_empty_step_has_zero_logprob_and_contributes_nothing():
    logits = torch.randn(2, 3, 5)
    committed = torch.tensor([[False, False, False], [True, False, False]])
    ell = step_logprob_sums(logits, torch.zeros(2, 3, dtype=torch.long), committed)
    assert ell[0].item() == 0.0
    weight = committed.any(-1).float().view(2, 1)  # row 0: I_k = ∅
    adv = torch.tensor([[5.0], [1.0]])
    loss, _, _ = egspo_step_loss(ell.view(2, 1), ell.view(2, 1).detach(), adv, weight,
                                 epsilon_low=0.2, epsilon_high=0.5)
    assert loss.item() == pytest.approx(-1.0)  # only row 1 counts


# --- case 15: asymmetric clipping ---------------------------------------------------------------


@pytest.mark.parametrize("rho, adv, expected", [(1.8, 1.0, -1.5), (0.5, -1.0, 0.8), (1.2, 1.0, -1.2), (0.5, 1.0, -0.5)])
def test_case15_asymmetric_clip(rho, adv, expected):
    logp = torch.tensor([[math.log(rho)]])
    loss, _, _ = egspo_step_loss(logp, torch.zeros(1, 1), torch.tensor([[adv]]), torch.ones(1, 1),
                                 epsilon_low=0.2, epsilon_high=0.5)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    halved, _, _ = egspo_step_loss(logp, torch.zeros(1, 1), torch.tensor([[adv]]), torch.ones(1, 1),
                                   epsilon_low=0.2, epsilon_high=0.5, tokens_per_step=2.0)
    assert halved.item() == pytest.approx(expected / 2, abs=1e-6)


def test_k3_kl_term_on_step_sums():
    logp = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    kl = torch.exp(ref - logp) - (ref - logp) - 1
    loss, _, _ = egspo_step_loss(logp, logp, torch.zeros(1, 1), torch.ones(1, 1), epsilon_low=0.2,
                                 epsilon_high=0.5, beta=0.04, kl=kl)
    assert kl.item() == pytest.approx(0.193147, abs=1e-6)
    assert loss.item() == pytest.approx(0.0077259, abs=1e-7)


def test_exact_kl_by_hand():
    p = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    q = torch.tensor([[0.25, 0.75], [0.9, 0.1]])
    kl = exact_step_kl(p.log(), q.log(), torch.tensor([1, 1]), 2)
    by_hand = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl[0].item() == 0.0  # row 0 committed nothing
    assert kl[1].item() == pytest.approx(by_hand, abs=1e-6)  # second position: identical distributions


# --- case 16: stepwise returns and group-mean advantages -----------------------------------------


def test_case16_stepwise_returns_table():
    final = torch.tensor([1.0, 1.0, 0.0, 0.0])
    step = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    g = stepwise_returns(final, step, lam=0.5, normalize=True)
    assert g.flatten().tolist() == pytest.approx([1.0, 0.666667, -0.333333, 0.0], abs=1e-6)


def test_case16_group_of_two_and_plain_egspo():
    returns = torch.tensor([[1.0], [-1.0 / 3.0]])
    adv = group_baseline_advantages(returns, torch.ones(2, 1, dtype=torch.bool), group_size=2)
    assert adv.flatten().tolist() == pytest.approx([0.666667, -0.666667], abs=1e-6)
    final = torch.tensor([1.0, 0.0, 3.0])
    step = torch.rand(3, 4)
    g0 = stepwise_returns(final, step, lam=0.0)
    assert torch.equal(g0, final.unsqueeze(1).expand(3, 4))  # λ = 0: every G = r(x0)


def test_advantages_are_per_rank_and_skip_invalid_entries():
    returns = torch.tensor([[1.0, 2.0], [3.0, 10.0], [0.0, 0.0], [2.0, 4.0]])
    valid = torch.tensor([[True, True], [True, False], [True, True], [True, True]])
    adv = group_baseline_advantages(returns, valid, group_size=2)
    assert adv[:, 0].tolist() == pytest.approx([-1.0, 1.0, -1.0, 1.0])
    assert adv[0, 1].item() == 0.0 and adv[1, 1].item() == 0.0  # column mean over the valid entry only
    assert adv[2:, 1].tolist() == pytest.approx([-2.0, 2.0])


def test_standard_grpo_returns_variant():
    final = torch.tensor([1.0, 0.0])
    step = torch.tensor([[0.0], [1.0]])
    valid = torch.ones(2, 1, dtype=torch.bool)
    adv = standard_grpo_stepwise_advantages(final, step, valid, lam=0.5, group_size=2, normalize=False)
    assert adv.flatten().tolist() == pytest.approx([0.5 + 0.5, -0.5 - 0.5])
    adv_n = standard_grpo_stepwise_advantages(final, step, valid, lam=0.5, group_size=2, normalize=True)
    assert adv_n.flatten().tolist() == pytest.approx([1.0 / 1.5, -1.0 / 1.5])


def test_lambda_halves_every_n_steps():
    assert decayed_lambda(0.5, 0, 0) == 0.5
    assert decayed_lambda(0.5, 99, 0) == 0.5
    assert decayed_lambda(0.5, 9, 10) == 0.5
    assert decayed_lambda(0.5, 10, 10) == 0.25
    assert decayed_lambda(0.5, 25, 10) == 0.125


# --- case 17: entropy-guided selection ----------------------------------------------------------


def test_case17_top_entropy_steps_in_descending_order():
    h = torch.tensor([[0.1, 2.0, 0.5, 1.5]])
    steps, valid = top_entropy_steps(h, torch.ones(1, 4, dtype=torch.bool), 2)
    assert steps.tolist() == [[1, 3]]
    assert valid.all()


def test_case17_one_hot_step_has_zero_entropy():
    probs = torch.zeros(3, 5)
    probs[torch.arange(3), torch.tensor([0, 0, 0])] = 1.0
    h_tok = entropy_from_probs(probs)
    assert torch.equal(h_tok, torch.zeros(3))
    uniform = entropy_from_probs(torch.full((1, 4), 0.25))
    assert uniform.item() == pytest.approx(math.log(4))
    per_step = step_mean_entropy(torch.tensor([[0.0, 0.0, math.log(4), 0.0]]), torch.tensor([[0, 0, 1, 1]]), 3)
    assert per_step[0].tolist() == pytest.approx([0.0, math.log(4) / 2, 0.0])


def test_unusable_steps_are_never_selected_before_usable_ones():
    h = torch.tensor([[9.0, 0.1, 8.0, float("nan")]])
    usable = torch.tensor([[False, True, True, True]])
    steps, valid = top_entropy_steps(h, usable, 4)
    assert steps[0, :3].tolist() == [2, 1, 3]
    assert valid.tolist() == [[True, True, True, False]]


def test_usable_steps_excludes_empty_steps_and_caps_at_last_non_eos():
    unmask = torch.tensor([[0, 0, 2, 3, 4, 5]])  # step 1 commits nothing
    assert committed_steps(unmask, 6).tolist() == [[True, False, True, True, True, True]]
    all_eos = torch.tensor([[False, True, False, False, True, True]])
    cap = usable_steps(unmask, 6, all_eos, terminate_at_last_non_eos=True)
    assert cap.tolist() == [[True, False, True, True, False, False]]
    everything_eos = usable_steps(unmask, 6, torch.ones(1, 6, dtype=torch.bool), terminate_at_last_non_eos=True)
    assert everything_eos.tolist() == committed_steps(unmask, 6).tolist()


def test_random_steps_end_with_the_last_step_and_are_distinct():
    usable = torch.ones(3, 10, dtype=torch.bool)
    usable[2, 7:] = False
    g = torch.Generator().manual_seed(0)
    steps, valid = random_steps(usable, 4, g)
    assert steps.shape == (3, 4) and valid.all()
    assert steps[:, -1].tolist() == [9, 9, 6]
    for row in steps.tolist():
        assert len(set(row)) == 4
    again, _ = random_steps(usable, 4, torch.Generator().manual_seed(0))
    assert torch.equal(steps, again)
    few = torch.zeros(1, 10, dtype=torch.bool)
    few[0, [2, 5]] = True
    s, v = random_steps(few, 4, torch.Generator().manual_seed(1))
    assert v.sum().item() == 2 and s[0, -1].item() == 5 and set(s[v].tolist()) == {2, 5}


def test_uniform_steps_match_reference_linspace():
    steps, valid = uniform_steps(torch.ones(1, 8, dtype=torch.bool), 4)
    expected = torch.cat([torch.linspace(0, 6, 3).long(), torch.tensor([7])])
    assert steps[0].tolist() == expected.tolist() == [0, 3, 6, 7]
    assert valid.all()
    short, v = uniform_steps(torch.tensor([[True, False, True, False]]), 4)
    assert short[0, :2].tolist() == [0, 2] and v.tolist() == [[True, True, False, False]]


# --- case 18: one-step greedy completion --------------------------------------------------------


def test_case18_greedy_fill_keeps_committed_tokens():
    a, b, c, m = 5, 6, 7, 2
    state = torch.tensor([[a, m, m]])
    logits = torch.zeros(1, 3, 10)
    logits[0, 0, 9] = 10.0  # the model would change position 0: it must not
    logits[0, 1, b] = 10.0
    logits[0, 2, c] = 10.0
    assert one_step_greedy(state, logits, m).tolist() == [[a, b, c]]
    logits[0, 1, m] = 50.0  # the mask token is never a proposal
    assert one_step_greedy(state, logits, m).tolist() == [[a, b, c]]


def test_completion_mask_through_first_eos():
    ids = torch.tensor([[4, 1, 5, 1], [4, 5, 6, 7]])
    assert completion_mask_through_eos(ids, 1).tolist() == [[True, True, False, False], [True] * 4]


# --- case 19: state rebuild as used by the objective -------------------------------------------


def test_case19_state_rebuild_for_selected_steps():
    m = 2
    o = torch.tensor([[10, 11, 12]])
    unmask = torch.tensor([[2, 0, 1]])
    states, committed = remask.states_before_steps(o, unmask, torch.tensor([[0, 1, 2, 3]]), m)
    assert states[0].tolist() == [[m, m, m], [m, 11, m], [m, 11, 12], [10, 11, 12]]
    assert committed[0, 1].nonzero().flatten().tolist() == [2]  # I_1 = {3} in 1-based positions
