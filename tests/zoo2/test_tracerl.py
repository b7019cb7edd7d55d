"""TraceRL: shrinkage, the chunked policy loss, GAE over trace steps and the clipped value loss (spec hand
cases, Gen-Verse/dLLM-RL's numbers on fixed tensors), the selector, advantage and objective."""

from __future__ import annotations

import pytest
import torch
from remask_tracerl.components import TraceRLZScoreAdvantage, TraceShrinkSelector, zscore_advantages
from remask_tracerl.loss import clipped_value_loss, gae_over_trace_steps, tracerl_policy_loss
from remask_tracerl.objective import TraceRLObjective
from remask_tracerl.trace import chunk_of_position, chunk_starts

import remask
from remask.functional import gather_logprobs
from remask.testing import check_component, fake_context, fake_rollout


def _chunks(step_map, shrink):
    s = torch.tensor([step_map])
    starts, valid = chunk_starts(s, shrink)
    return starts, valid, chunk_of_position(s, starts, valid)


def test_spec_t1_shrinkage_and_rows():
    assert _chunks([0, 0, 1, 2, 3, 3], 1)[2].tolist() == [[0, 0, 1, 2, 3, 3]]
    starts, _, chunk = _chunks([0, 0, 1, 2, 3, 3], 2)
    assert starts.tolist() == [[0, 2]] and chunk.tolist() == [[0, 0, 0, 1, 1, 1]]
    assert _chunks([0, 0, 1, 2, 3, 3], 3)[2].tolist() == [[0, 0, 0, 0, 1, 1]]


def test_shrinkage_partitions_like_the_official_collapse(official):
    """dLLM-RL's collapse_k_unique labels each chunk by its last step; the partition must be ours."""
    for case in official("tracerl")["shrink_cases"]:
        chunk = _chunks(case["step_map"], case["shrink"])[2][0].tolist()
        theirs = case["collapsed"]
        for i in range(len(chunk)):
            for j in range(len(chunk)):
                assert (chunk[i] == chunk[j]) == (theirs[i] == theirs[j])


def test_spec_t1_policy_loss():
    _, _, chunk = _chunks([0, 0, 1, 2, 3, 3], 2)
    lr = torch.tensor([[0.1, -0.3, 0.25, 0.0, 0.5, -0.1]])
    t = torch.ones(1, 6, dtype=torch.bool)
    args = dict(epsilon=0.2, beta=0.01)
    assert float(tracerl_policy_loss(lr, torch.zeros(1, 6), torch.tensor([0.5]), chunk, t, 2, **args)[0]) == \
        pytest.approx(-0.511593, abs=1e-6)
    assert float(tracerl_policy_loss(lr, torch.zeros(1, 6), torch.tensor([0.5]), chunk, t, 2, normalize="per_length",
                                     **args)[0]) == pytest.approx(-0.256122, abs=1e-6)
    assert float(tracerl_policy_loss(lr, torch.zeros(1, 6), torch.tensor([-0.5]), chunk, t, 2, epsilon=0.2,
                                     beta=0.0)[0]) == pytest.approx(0.561896, abs=1e-6)
    # a non-target position changes nothing
    t2 = t.clone()
    t2[0, 5] = False
    other = lr.clone()
    other[0, 5] = 9.0
    a = tracerl_policy_loss(other, torch.zeros(1, 6), torch.tensor([0.5]), chunk, t2, 2, **args)[0]
    b = tracerl_policy_loss(lr, torch.zeros(1, 6), torch.tensor([0.5]), chunk, t2, 2, **args)[0]
    assert torch.allclose(a, b)


def test_matches_the_official_policy_loss_and_gradient(official):
    """dLLM-RL @ 10b4fd1 train/rl_llada.py forward_process: every official row is one chunk row."""
    for case in official("tracerl")["policy_cases"]:
        logits = torch.tensor(case["logits"], requires_grad=True)
        labels = torch.tensor(case["labels"])
        targets = torch.tensor(case["p_mask"])
        logp = gather_logprobs(logits, labels)  # [R, T]
        chunk = torch.where(targets, 0, -1)
        loss, _ = tracerl_policy_loss(logp, torch.tensor(case["old_logps"]), torch.tensor(case["advantages"]), chunk,
                                      targets, 1, epsilon=case["epsilon"], beta=case["beta"])
        assert float(loss.detach()) == pytest.approx(case["loss"], abs=1e-6)
        loss.backward()
        assert torch.allclose(logits.grad, torch.tensor(case["grad_logits"]), atol=1e-6)


@pytest.mark.parametrize("gamma, lam, adv, ret", [
    (1.0, 1.0, [1.1, 0.9, 0.7, 0.3, 0.5], [1.2] * 5),
    (1.0, 0.0, [0.4, 0.2, 0.3, 0.3, 0.5], None),
    (0.9, 0.5, [0.53, 0.33, 0.40, 0.30, 0.50], [0.972, 0.972, 1.08, 1.2, 1.2]),
])
def test_spec_t2_gae_over_trace_steps(gamma, lam, adv, ret):
    _, _, chunk = _chunks([0, 0, 1, 2, 2], 1)
    r, a = gae_over_trace_steps(torch.tensor([1.2]), torch.tensor([[0.1, 0.3, 0.5, 0.9, 0.7]]), chunk,
                                torch.ones(1, 5, dtype=torch.bool), 3, gamma=gamma, lam=lam)
    assert a[0].tolist() == pytest.approx(adv, abs=1e-6)
    if ret is not None:
        assert r[0].tolist() == pytest.approx(ret, abs=1e-6)


def test_spec_t2_clipped_value_loss():
    v_old = torch.tensor([[0.1, 0.3, 0.5, 0.9, 0.7]])
    loss = clipped_value_loss(torch.tensor([[0.5, 0.2, 0.9, 1.0, 0.65]]), v_old, torch.full((1, 5), 1.2),
                              torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 5, dtype=torch.bool), 1, clip=0.2)
    assert float(loss) == pytest.approx(0.240250, abs=1e-6)


def test_matches_the_official_gae(official):
    """dLLM-RL @ 10b4fd1 train/train_trado_value.py compute_returns_and_advantages_from_fragments."""
    for case in official("tracerl")["gae_cases"]:
        s = torch.tensor(case["step_map"])
        starts, valid = chunk_starts(s, 1)
        chunk = chunk_of_position(s, starts, valid)
        r, a = gae_over_trace_steps(torch.tensor(case["reward"]), torch.tensor(case["old_values"]), chunk,
                                    torch.ones_like(s, dtype=torch.bool), starts.shape[1],
                                    gamma=case["gamma"], lam=case["lam"])
        assert torch.allclose(r, torch.tensor(case["returns"]), atol=1e-5)
        assert torch.allclose(a, torch.tensor(case["advantages"]), atol=1e-5)


def test_zscore_uses_population_std_and_the_accuracy_band():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    plain = zscore_advantages(r, 4)
    assert plain[:4].tolist() == pytest.approx([3 ** 0.5, -(3 ** 0.5) / 3, -(3 ** 0.5) / 3, -(3 ** 0.5) / 3], abs=1e-6)
    assert plain[4:8].tolist() == [0.0] * 4  # all equal -> 0
    banded = zscore_advantages(r, 4, min_accuracy=0.3, max_accuracy=0.8)
    assert banded[:4].tolist() == [0.0] * 4  # accuracy 0.25 is outside the band
    assert banded[8:].tolist() == pytest.approx([1.0, -1.0, 1.0, -1.0])


def test_band_filters_on_the_named_accuracy_reward_and_warns_on_a_non_accuracy_total(caplog):
    """Exact match + partial credit (0..2) is no accuracy: filtering the total silently zeroed every
    advantage on tiny-scan; `accuracy_reward` names the 0/1 reward the band is meant for."""
    from remask.records import Rewards

    _, ro = fake_rollout(group_size=2)  # 4 groups of 2
    correct = Rewards.from_scores("correct", [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    partial = Rewards.from_scores("digits", [1.0, 0.9, 1.0, 1.0, 0.8, 0.6, 0.9, 1.0])
    rewards = Rewards.combine([(correct, 1.0), (partial, 1.0)])  # totals 2.0, 0.9, 2.0, 2.0, ...
    banded = TraceRLZScoreAdvantage(TraceRLZScoreAdvantage.Config(min_accuracy=0.2, max_accuracy=0.8))
    with caplog.at_level("WARNING", logger="remask"):
        on_total = banded.estimate(rollout=ro, rewards=rewards, selection=None, context=None)
    # total means 1.45, 2.0, 0.7, 1.45: only group 2 (accuracy 0) is in the band, the others are dropped
    assert on_total[:4].tolist() == [0.0] * 4 and on_total[6:].tolist() == [0.0] * 2 and on_total[4] > 0 > on_total[5]
    assert "not accuracies in [0, 1]" in caplog.text and "accuracy_reward" in caplog.text
    named = TraceRLZScoreAdvantage(TraceRLZScoreAdvantage.Config(accuracy_reward="correct"))
    adv = named.estimate(rollout=ro, rewards=rewards, selection=None, context=None)
    # accuracies 0.5, 1.0, 0.0, 0.5: groups 0 and 3 are kept, z-scored on the total reward
    assert adv[2:6].tolist() == [0.0] * 4 and adv[0] > 0 > adv[1] and adv[7] > 0 > adv[6]
    with pytest.raises(remask.RemaskError, match="accuracy_reward: no reward named 'nope'"):
        TraceRLZScoreAdvantage(TraceRLZScoreAdvantage.Config(accuracy_reward="nope")).estimate(
            rollout=ro, rewards=rewards, selection=None, context=None)


def test_contracts():
    assert check_component(TraceShrinkSelector) == []
    assert check_component(TraceRLZScoreAdvantage) == []
    assert check_component(TraceRLObjective) == []
    assert check_component(TraceRLObjective, TraceRLObjective.Config(value={"enabled": True})) == []


def test_objective_states_forward_passes_and_value_head():
    model, ro = fake_rollout(group_size=2)  # unmask_step [0,0,1,1,2,2,3,3]
    sel = TraceShrinkSelector(TraceShrinkSelector.Config(shrink=2)).select(ro, torch.Generator())
    assert sel.steps[0].tolist() == [0, 2]
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    obj = TraceRLObjective(TraceRLObjective.Config(value={"enabled": True, "gamma": 1.0, "lam": 1.0}))
    obj.setup(policy=model)
    assert set(obj.extra_modules()) == {"value_head"} and obj.extra_param_groups()[0]["lr"] == 5e-6
    assert float(obj.value_head.weight.detach().abs().sum()) == 0.0  # zero-initialised: V ≡ 0
    ctx = fake_context(model)
    state = obj.prepare(rollout=ro, advantages=adv, selection=sel, context=ctx)
    assert state.prepare_forward_passes == 2  # one batched forward per chunk index
    # γ = λ = 1 and V ≡ 0: A_i = R_i = A_j on every trainable token
    assert torch.allclose(state.advantages, adv.unsqueeze(-1).expand(4, 8))
    # ℓ_old of a position comes from its chunk's state: chunk 1 sees positions 0..3 clean
    with torch.no_grad():
        x = ro.completion_ids.clone()
        x[:, 4:] = model.mask_token_id
        ids = torch.cat([ro.prompts.prompt_ids, x], 1)
        attn = torch.cat([ro.prompts.attention_mask, torch.ones_like(x, dtype=torch.bool)], 1)
        lp = gather_logprobs(model.forward(ids, attn).logits[:, -8:], ro.completion_ids)
    assert torch.allclose(state.old_logps[:, 4:], lp[:, 4:], atol=1e-5)
    out = obj.loss(state, inner_step=0, context=ctx)
    assert out.forward_passes == 4 and out.metrics["tracerl/value_loss"] == pytest.approx(0.5 * float((adv ** 2).mean()))
    out.loss.backward()
    assert obj.value_head.weight.grad is not None and obj.value_head.weight.grad.abs().sum() > 0
    assert not obj.uses_reference


def test_without_a_selector_every_step_is_a_chunk():
    model, ro = fake_rollout(group_size=2)
    obj = TraceRLObjective()
    state = obj.prepare(rollout=ro, advantages=torch.zeros(4), selection=None, context=fake_context(model))
    assert state.starts[0].tolist() == [0, 1, 2, 3] and state.prepare_forward_passes == 4


def test_rollouts_without_a_recorded_trace_are_refused():
    import dataclasses

    from remask.errors import RemaskError

    model, ro = fake_rollout(group_size=2)
    offline = dataclasses.replace(ro, unmask_step=torch.full_like(ro.unmask_step, -1))
    with pytest.raises(RemaskError, match="recorded"):
        TraceRLObjective().prepare(rollout=offline, advantages=torch.zeros(4), selection=None,
                                   context=fake_context(model))
