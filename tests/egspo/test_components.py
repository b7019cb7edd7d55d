"""EGSPO components on fakes: contracts, the selection, the stepwise advantages and the objective."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from remask_egspo.advantage import EGSPOStepwiseAdvantage
from remask_egspo.objective import EGSPOObjective
from remask_egspo.selection import EntropyTopKSelector, RandomStepSelector, UniformStepSelector
from remask_egspo.states import completion_logits, one_step_greedy
from torch import nn

import remask
import remask.testing as rt
from remask.errors import RemaskError
from remask.functional import gather_logprobs, token_entropy
from remask.testing import FakeModel, FakeReward, check_component, fake_context, fake_prompts


def with_sampler_records(model: remask.DiffusionModel, rollout: remask.Rollout) -> remask.Rollout:
    """Add what an EGSPO-aware sampler records, computed by replaying the trajectory on ``model``:
    per-step T=1 log-probs and mean entropies of the committed tokens, the all-EOS flag and the
    one-step greedy fills (one forward pass per step on the rebuilt state x_k)."""
    b, l = rollout.completion_ids.shape
    t = rollout.num_steps
    logps = torch.zeros(b, t)
    ent = torch.zeros(b, t)
    all_eos = torch.zeros(b, t, dtype=torch.bool)
    greedy = torch.zeros(b, t, l, dtype=torch.long)
    with torch.no_grad():
        for k in range(t):
            x_k, i_k = remask.state_before_step(rollout.completion_ids, rollout.unmask_step, k, model.mask_token_id)
            logits = completion_logits(model, rollout.prompts, x_k)  # [B, L, V]
            lp = gather_logprobs(logits, rollout.completion_ids)
            h = token_entropy(logits)
            w = i_k.float()
            logps[:, k] = (lp * w).sum(-1)
            ent[:, k] = (h * w).sum(-1) / w.sum(-1).clamp_min(1)
            all_eos[:, k] = ((rollout.completion_ids == model.eos_token_id) | ~i_k).all(-1)
            greedy[:, k] = one_step_greedy(x_k, logits, model.mask_token_id)
    return dataclasses.replace(rollout, step_logps=logps, step_entropy=ent, step_all_eos=all_eos, greedy_ids=greedy)


def recorded_rollout(group_size: int = 2, **sampler) -> tuple[FakeModel, remask.Rollout]:
    model, rollout = rt.fake_rollout(group_size=group_size, **sampler)
    return model, with_sampler_records(model, rollout)


# --- contracts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [RandomStepSelector, UniformStepSelector, EGSPOStepwiseAdvantage, EGSPOObjective])
def test_check_component(cls):
    assert check_component(cls) == []


def test_check_component_entropy_topk(monkeypatch):
    # The kit's fake sampler records no entropies; give check_component a rollout that has them.
    plain = rt.fake_rollout

    def fake_rollout_with_entropy(group_size: int = 2, **config):
        model, rollout = plain(group_size=group_size, **config)
        return model, with_sampler_records(model, rollout)

    monkeypatch.setattr(rt, "fake_rollout", fake_rollout_with_entropy)
    assert check_component(EntropyTopKSelector) == []
    assert check_component(EntropyTopKSelector, EntropyTopKSelector.Config(num_selected=2,
                                                                          terminate_at_last_non_eos=True)) == []


def test_registered_names():
    reg = remask.registry.get_registry()
    assert reg.get("step_selector", "entropy-topk") is EntropyTopKSelector
    assert reg.get("step_selector", "random") is RandomStepSelector
    assert reg.get("step_selector", "uniform") is UniformStepSelector
    assert reg.get("advantage", "egspo-stepwise") is EGSPOStepwiseAdvantage
    assert reg.get("objective", "egspo") is EGSPOObjective


# --- selectors -----------------------------------------------------------------------------------


def test_entropy_selection_on_a_replayed_rollout_picks_the_highest_entropy_steps():
    model, rollout = recorded_rollout(gen_length=12, block_length=4, steps=12)
    sel = EntropyTopKSelector(EntropyTopKSelector.Config(num_selected=3)).select(rollout, torch.Generator())
    h = rollout.step_entropy  # [B, T]
    assert sel.steps.shape == (rollout.batch_size, 3) and sel.valid.all()
    for row in range(rollout.batch_size):
        expected = torch.argsort(h[row], descending=True, stable=True)[:3]
        assert sel.steps[row].tolist() == expected.tolist()
        assert (h[row, sel.steps[row]].diff() <= 0).all()  # descending entropy


def test_entropy_selector_without_entropies_names_the_fix():
    _, rollout = rt.fake_rollout()
    rollout = dataclasses.replace(rollout, step_entropy=None)
    with pytest.raises(RemaskError, match="step_entropy"):
        EntropyTopKSelector().select(rollout, torch.Generator())


def test_terminate_option_needs_step_all_eos():
    _, rollout = rt.fake_rollout()
    rollout = dataclasses.replace(rollout, step_all_eos=None)
    sel = UniformStepSelector(UniformStepSelector.Config(num_selected=2, terminate_at_last_non_eos=True))
    with pytest.raises(RemaskError, match="step_all_eos"):
        sel.select(rollout, torch.Generator())


def test_rows_with_too_few_steps_are_marked_invalid():
    _, rollout = recorded_rollout(gen_length=4, block_length=4, steps=4)  # T = 4
    for cls in (EntropyTopKSelector, RandomStepSelector, UniformStepSelector):
        sel = cls(cls.Config(num_selected=6)).select(rollout, torch.Generator().manual_seed(0))
        assert sel.steps.shape == (rollout.batch_size, 6)
        assert sel.valid.sum(-1).tolist() == [4] * rollout.batch_size, cls.name
        assert (sel.steps[sel.valid] < rollout.num_steps).all()


# --- advantages ----------------------------------------------------------------------------------


class CountingScore:
    """A ``StepContext.score`` that records every call."""

    def __init__(self, reward: remask.RewardModel):
        self.reward = reward
        self.calls: list[list[str]] = []

    def __call__(self, prompts, texts):
        self.calls.append(list(texts))
        return self.reward.score(prompts=prompts.texts, completions=list(texts), references=prompts.references)


def hand_rollout(greedy_texts: list[list[str]], finals: list[str], model: FakeModel) -> remask.Rollout:
    """A rollout over 2 rows x T = 2 steps whose greedy fills decode to ``greedy_texts[row][k]``."""
    tok = model.tokenizer
    length = 4
    prompts = fake_prompts(texts=("1+1=",), group_size=2, answers=("2",))

    def ids(text):
        x = tok.encode(text)[:length]
        return x + [model.eos_token_id] * (length - len(x))

    completion = torch.tensor([ids(t) for t in finals])
    greedy = torch.tensor([[ids(t) for t in row] for row in greedy_texts])  # [B, T, L]
    unmask = torch.tensor([[0, 0, 1, 1]] * 2)
    mask = torch.ones(2, length, dtype=torch.bool)
    return remask.Rollout(prompts=prompts, completion_ids=completion, completion_mask=mask, unmask_step=unmask,
                          block_length=length, num_steps=2, texts=tuple(finals), nfe=2, greedy_ids=greedy)


def test_stepwise_advantage_scores_greedy_completions_once_per_rank():
    model = FakeModel()
    rollout = hand_rollout(greedy_texts=[["2", "7"], ["9", "2"]], finals=["2", "9"], model=model)
    ctx = fake_context(model)
    scorer = CountingScore(FakeReward())
    ctx.score = scorer
    rewards = remask.Rewards.from_scores("fake-contains", [1.0, 0.0])
    selection = remask.StepSelection(steps=torch.tensor([[1, 0], [0, 1]]), valid=torch.ones(2, 2, dtype=torch.bool))
    est = EGSPOStepwiseAdvantage(EGSPOStepwiseAdvantage.Config(lam=0.5, greedy_completions="sampler"))
    adv = est.estimate(rollout=rollout, rewards=rewards, selection=selection, context=ctx)
    # r̂: row 0 steps (1, 0) -> greedy "7", "2" -> (0, 1); row 1 steps (0, 1) -> "9", "2" -> (0, 1)
    assert len(scorer.calls) == 2 and all(len(c) == 2 for c in scorer.calls)  # K calls of B texts
    assert scorer.calls[0] == ["7", "9"]
    g = torch.tensor([[1.5 / 1.5, (1.5 - 0.5) / 1.5], [-0.0 / 1.5, -0.5 / 1.5]])
    expected = g - g.mean(0, keepdim=True)
    assert torch.allclose(adv, expected, atol=1e-6)
    assert ctx.extras["egspo"]["lambda"] == 0.5


def test_lambda_zero_needs_no_intermediate_rewards():
    model = FakeModel()
    rollout = hand_rollout(greedy_texts=[["2", "7"], ["9", "2"]], finals=["2", "9"], model=model)
    ctx = fake_context(model)
    ctx.score = CountingScore(FakeReward())
    rewards = remask.Rewards.from_scores("fake-contains", [1.0, 0.0])
    selection = remask.StepSelection(steps=torch.tensor([[1, 0], [0, 1]]), valid=torch.ones(2, 2, dtype=torch.bool))
    adv = EGSPOStepwiseAdvantage(EGSPOStepwiseAdvantage.Config(lam=0.0)).estimate(
        rollout=rollout, rewards=rewards, selection=selection, context=ctx)
    assert ctx.score.calls == [] and model.nfe == 0
    assert adv.tolist() == [[0.5, 0.5], [-0.5, -0.5]]


def test_lambda_decays_with_the_global_step():
    model = FakeModel()
    rollout = hand_rollout(greedy_texts=[["2", "7"], ["9", "2"]], finals=["2", "9"], model=model)
    ctx = fake_context(model)
    ctx.global_step = 20
    rewards = remask.Rewards.from_scores("fake-contains", [1.0, 0.0])
    selection = remask.StepSelection(steps=torch.tensor([[1], [0]]), valid=torch.ones(2, 1, dtype=torch.bool))
    est = EGSPOStepwiseAdvantage(EGSPOStepwiseAdvantage.Config(lam=0.8, lambda_halve_every=10))
    est.estimate(rollout=rollout, rewards=rewards, selection=selection, context=ctx)
    assert ctx.extras["egspo"]["lambda"] == pytest.approx(0.2)


def test_intermediate_reward_component_by_name():
    model = FakeModel()
    rollout = hand_rollout(greedy_texts=[["2", "7"], ["9", "2"]], finals=["2", "9"], model=model)
    ctx = fake_context(model)

    def score(prompts, texts):
        right = remask.Rewards.from_scores("correct", [1.0 if t == "2" else 0.0 for t in texts])
        always = remask.Rewards.from_scores("format", [5.0] * len(texts))
        return remask.Rewards.combine([(right, 2.0), (always, 1.0)])

    ctx.score = score
    rewards = remask.Rewards.from_scores("x", [1.0, 0.0])
    selection = remask.StepSelection(steps=torch.tensor([[0], [0]]), valid=torch.ones(2, 1, dtype=torch.bool))
    est = EGSPOStepwiseAdvantage(EGSPOStepwiseAdvantage.Config(lam=1.0, intermediate_reward="correct",
                                                              greedy_completions="sampler"))
    r_hat = est.step_rewards(rollout, selection.steps, ctx)
    assert r_hat.flatten().tolist() == [2.0, 0.0]  # weighted component, no format reward
    total = EGSPOStepwiseAdvantage(EGSPOStepwiseAdvantage.Config(lam=1.0, greedy_completions="sampler"))
    assert total.step_rewards(rollout, selection.steps, ctx).flatten().tolist() == [7.0, 5.0]
    bad = EGSPOStepwiseAdvantage(EGSPOStepwiseAdvantage.Config(lam=1.0, intermediate_reward="nope"))
    with pytest.raises(RemaskError, match="correct, format"):
        bad.estimate(rollout=rollout, rewards=rewards, selection=selection, context=ctx)


def test_recomputed_greedy_completions_match_the_sampler_records():
    model, rollout = recorded_rollout(gen_length=8, block_length=4, steps=8)
    steps = torch.tensor([[0, 5, 7]] * rollout.batch_size)
    ctx = fake_context(model)
    from_sampler = EGSPOStepwiseAdvantage(EGSPOStepwiseAdvantage.Config(greedy_completions="sampler"))
    recompute = EGSPOStepwiseAdvantage(EGSPOStepwiseAdvantage.Config(greedy_completions="recompute"))
    before = model.nfe
    fills = recompute.greedy_completions(rollout, steps, ctx)
    assert model.nfe - before == 3  # one forward pass per selected step
    assert torch.equal(fills, from_sampler.greedy_completions(rollout, steps, ctx))
    states, _ = remask.states_before_steps(rollout.completion_ids, rollout.unmask_step, steps, model.mask_token_id)
    kept = states != model.mask_token_id
    assert torch.equal(fills[kept], states[kept])  # committed tokens never change
    _, plain = rt.fake_rollout()
    with pytest.raises(RemaskError, match="greedy_ids"):
        from_sampler.greedy_completions(plain, steps[:, :1], ctx)


# --- objective -----------------------------------------------------------------------------------


def run_engine_like(objective, rollout, advantages, selection, ctx, inner_steps):
    """What the engine does: prepare under no_grad, then one loss per inner step."""
    ctx.inner_steps = inner_steps
    with torch.no_grad():
        state = objective.prepare(rollout=rollout, advantages=advantages, selection=selection, context=ctx)
    return state, [objective.loss(state, inner_step=n, context=ctx) for n in range(inner_steps)]


def test_first_update_ratio_is_exactly_one_when_recomputed():
    model, rollout = recorded_rollout(gen_length=8, block_length=4, steps=8)
    sel = UniformStepSelector(UniformStepSelector.Config(num_selected=4)).select(rollout, torch.Generator())
    adv = torch.randn(rollout.batch_size, 4, generator=torch.Generator().manual_seed(1))
    obj = EGSPOObjective(EGSPOObjective.Config(old_logps="recompute", beta=0.0))
    ctx = fake_context(model)
    state, outs = run_engine_like(obj, rollout, adv, sel, ctx, inner_steps=4)
    for n, out in enumerate(outs):
        assert out.metrics["ratio_mean"] == 1.0
        w = state.weight[:, n]
        expected = -(adv[:, n] * w).sum() / w.sum() / (8 / 8)
        assert out.loss.item() == expected.item()  # bit-identical: ρ = 1 exactly, no clipping
    assert outs[0].forward_passes == 1 + 4  # one policy pass + 4 recomputed old log-probs


class DropoutNet(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.drop = nn.Dropout(0.5)

    def forward(self, ids, mask):
        logits, h = self.inner(ids, mask)
        return self.drop(logits), h


def test_dropout_trap_ratio_is_one_only_in_eval_mode():
    model, rollout = rt.fake_rollout(gen_length=8, block_length=4, steps=8)
    model.module = DropoutNet(model.module)
    sel = UniformStepSelector(UniformStepSelector.Config(num_selected=2)).select(rollout, torch.Generator())
    adv = torch.ones(rollout.batch_size, 2)
    obj = EGSPOObjective(EGSPOObjective.Config(old_logps="recompute", beta=0.0))
    torch.manual_seed(0)
    model.module.eval()  # the engine's default (train.dropout: false)
    _, outs = run_engine_like(obj, rollout, adv, sel, fake_context(model), inner_steps=2)
    assert all(o.metrics["ratio_mean"] == 1.0 for o in outs)
    model.module.train()  # dropout on: the first ratio is no longer 1 (spec §3.3 trap 1)
    _, outs = run_engine_like(obj, rollout, adv, sel, fake_context(model), inner_steps=2)
    assert outs[0].metrics["ratio_mean"] != 1.0


def test_sampler_old_logps_agree_with_recomputed_ones():
    model, rollout = recorded_rollout(gen_length=8, block_length=4, steps=8)
    sel = EntropyTopKSelector(EntropyTopKSelector.Config(num_selected=2)).select(rollout, torch.Generator())
    adv = torch.ones(rollout.batch_size, 2)
    ctx = fake_context(model)
    s_sampler, outs = run_engine_like(EGSPOObjective(EGSPOObjective.Config(old_logps="sampler")),
                                      rollout, adv, sel, ctx, inner_steps=2)
    s_recomp, _ = run_engine_like(EGSPOObjective(EGSPOObjective.Config(old_logps="recompute")),
                                  rollout, adv, sel, ctx, inner_steps=2)
    assert torch.allclose(s_sampler.old_logps, s_recomp.old_logps, atol=1e-5)
    assert abs(outs[0].metrics["ratio_mean"] - 1.0) < 1e-5
    assert outs[0].forward_passes == 1 + 2  # sampler log-probs: only the reference passes in prepare
    _, plain = rt.fake_rollout()
    plain = dataclasses.replace(plain, step_logps=None)
    with pytest.raises(RemaskError, match="step_logps"):
        EGSPOObjective(EGSPOObjective.Config(old_logps="sampler")).prepare(
            rollout=plain, advantages=torch.zeros(plain.batch_size), selection=None, context=ctx)


def test_cycle_schedule_trains_one_rank_per_inner_step():
    model, rollout = recorded_rollout(gen_length=8, block_length=4, steps=8)
    sel = UniformStepSelector(UniformStepSelector.Config(num_selected=2)).select(rollout, torch.Generator())
    adv = torch.zeros(rollout.batch_size, 2)
    adv[:, 1] = torch.tensor([1.0, 1.0, 2.0, 2.0])
    obj = EGSPOObjective(EGSPOObjective.Config(beta=0.0))
    _, outs = run_engine_like(obj, rollout, adv, sel, fake_context(model), inner_steps=4)
    losses = [o.loss.item() for o in outs]
    assert losses[0] == 0.0 and losses[2] == 0.0  # rank 0 has zero advantages
    assert losses[1] != 0.0 and losses[3] != 0.0
    with pytest.raises(RemaskError, match="not a multiple"):
        run_engine_like(obj, rollout, adv, sel, fake_context(model), inner_steps=3)
    every = EGSPOObjective(EGSPOObjective.Config(beta=0.0, schedule="all"))
    _, outs = run_engine_like(every, rollout, adv, sel, fake_context(model), inner_steps=1)
    assert outs[0].forward_passes == 2


@pytest.mark.parametrize("kl", ["k3", "exact"])
def test_kl_is_zero_against_itself_and_positive_otherwise(kl):
    model, rollout = recorded_rollout(gen_length=8, block_length=4, steps=8)
    sel = UniformStepSelector(UniformStepSelector.Config(num_selected=2)).select(rollout, torch.Generator())
    adv = torch.zeros(rollout.batch_size, 2)
    obj = EGSPOObjective(EGSPOObjective.Config(kl=kl, beta=0.1))
    ctx = fake_context(model)
    _, outs = run_engine_like(obj, rollout, adv, sel, ctx, inner_steps=2)
    assert outs[0].metrics["kl"] > 0
    assert outs[0].loss.item() == pytest.approx(0.1 * outs[0].metrics["kl"], rel=1e-5)
    outs[0].loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.module.parameters())
    ctx.reference = model
    _, outs = run_engine_like(obj, rollout, adv, sel, ctx, inner_steps=2)
    assert outs[0].metrics["kl"] == pytest.approx(0.0, abs=1e-6)


def test_objective_accepts_row_advantages_and_rejects_wrong_shapes():
    model, rollout = recorded_rollout(gen_length=8, block_length=4, steps=8)
    sel = UniformStepSelector(UniformStepSelector.Config(num_selected=2)).select(rollout, torch.Generator())
    obj = EGSPOObjective(EGSPOObjective.Config(beta=0.0))
    state, _ = run_engine_like(obj, rollout, torch.arange(4.0), sel, fake_context(model), inner_steps=2)
    assert state.advantages[:, 1].tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(RemaskError, match="do not match"):
        run_engine_like(obj, rollout, torch.zeros(4, 3), sel, fake_context(model), inner_steps=2)


def test_selected_steps_that_committed_nothing_get_no_advantage():
    model = FakeModel()
    rollout = hand_rollout(greedy_texts=[["2", "7"], ["9", "2"]], finals=["2", "9"], model=model)
    rollout = dataclasses.replace(rollout, unmask_step=torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1]]))  # row 0: I_1 = ∅
    selection = remask.StepSelection(steps=torch.tensor([[1, 0], [1, 0]]), valid=torch.ones(2, 2, dtype=torch.bool))
    adv = EGSPOStepwiseAdvantage(EGSPOStepwiseAdvantage.Config(lam=0.0)).estimate(
        rollout=rollout, rewards=remask.Rewards.from_scores("r", [1.0, 0.0]), selection=selection,
        context=fake_context(model))
    assert adv.tolist() == [[0.0, 0.5], [0.0, -0.5]]  # column 0: only row 1 counts, and it is its own mean
