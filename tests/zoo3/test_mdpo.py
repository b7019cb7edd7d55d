"""MDPO: schedule, step-wise advantages, the per-step loss (spec hand cases and autonomousvision/mdpo's own
numbers on fixed tensors), the sampler against the official ``diffusion_generate`` (with and without RCR),
and the registered components."""

from __future__ import annotations

import pytest
import torch
from remask_mdpo.advantage import MDPOStepwiseAdvantage, step_scores, stepwise_advantages
from remask_mdpo.loss import mdpo_step_loss
from remask_mdpo.objective import MDPOObjective, top_k_steps
from remask_mdpo.sampler import MDPOSampler
from remask_mdpo.schedule import transfer_counts

import remask
from remask.errors import RemaskError
from remask.functional import gather_logprobs
from remask.records import PromptBatch
from remask.testing import FakeModel, check_component, fake_context, fake_prompts
from remask.interfaces import ModelOutput

F32_EPS = float(torch.finfo(torch.float32).eps)


# -- schedule (spec M3) ----------------------------------------------------------------------------

def test_spec_m3_schedules():
    assert transfer_counts(32, 5) == [7, 6, 7, 6, 6] and transfer_counts(32, 5, "llada") == [7, 7, 6, 6, 6]
    assert transfer_counts(10, 4) == [3, 2, 3, 2] and transfer_counts(10, 4, "llada") == [3, 3, 2, 2]
    assert set(transfer_counts(512, 128)) == {4} and set(transfer_counts(512, 128, "llada")) == {4}
    assert sum(transfer_counts(37, 6, "maskgit-cosine")) == 37


# -- advantages (spec M1, official) ----------------------------------------------------------------

def test_spec_m1_stepwise_advantages_and_top_k():
    r = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0.0]])
    assert step_scores(r)[0].tolist() == pytest.approx([1.666667, 2.5, 1.0, 0.0], abs=1e-6)
    a = stepwise_advantages(r, 3)
    want = torch.tensor([[0.577200, 0.872757, -0.577300, -0.999900],
                         [0.577200, 0.218189, 1.154601, 0.999900],
                         [-1.154401, -1.090947, -0.577300, 0.0]])
    assert torch.allclose(a, want, atol=1e-5)
    assert top_k_steps(a, 2).tolist() == [[3, 1], [2, 3], [0, 1]]


def test_top_k_breaks_ties_by_the_lower_step():
    assert top_k_steps(torch.tensor([[0.0, 1.0, -1.0, 1.0, 0.5]]), 3).tolist() == [[1, 2, 3]]


def test_advantages_match_official(official):
    fx = official("mdpo")["advantage"]
    for case in fx["cases"]:
        ours = stepwise_advantages(torch.tensor(case["step_rewards"]), case["group_size"])
        assert torch.allclose(ours, torch.tensor(case["advantages"]), atol=1e-5)


def test_groups_of_one_are_refused():
    with pytest.raises(RemaskError, match="groups of at least 2"):
        stepwise_advantages(torch.zeros(3, 4), 1)


# -- loss (spec M2, official) ----------------------------------------------------------------------

def _m2():
    pol = torch.tensor([[[1.0, 0, -1], [0.5, 0.2, 0], [0, 0, 1]]])  # [1, 3, V] positions 1..3
    ref = torch.tensor([[[0.8, 0, -1], [0.5, 0.5, 0], [0, 0.2, 1]]])
    tgt = torch.tensor([[0, 1, 2]])
    tau = 0.5 + F32_EPS
    lp, lr = gather_logprobs(pol, tgt, tau), gather_logprobs(ref, tgt, tau)
    # position 0 is the unmasked prompt-side token 2: weight and value irrelevant
    lp = torch.cat([torch.zeros(1, 1), lp], 1)
    lr = torch.cat([torch.zeros(1, 1), lr], 1)
    conf = torch.tensor([[0.3, 0.9, 0.5, 0.7]])
    masked = torch.tensor([[False, True, True, True]])
    return lp, lr, conf, masked


def test_spec_m2_step_loss():
    lp, lr, conf, masked = _m2()
    assert lp[0, 1:].tolist() == pytest.approx([-0.142932, -1.250600, -0.239545], abs=1e-5)
    args = dict(gen_length=4, epsilon=0.2, beta=0.02)
    for a, want in ((0.7, -0.653020), (-0.7, 0.653560)):
        loss, kl = mdpo_step_loss(lp, lp.detach(), lr, torch.tensor([a]), conf, masked, **args)
        assert float(loss) == pytest.approx(want, abs=1e-5)
    assert float(kl) == pytest.approx(0.026274, abs=1e-5)
    old = lp - torch.tensor([[0.0, 0.3, -0.1, 0.05]])  # ρ = e^0.3, e^-0.1, e^0.05
    for a, want in ((0.7, -0.705379), (-0.7, 0.747876)):
        loss, _ = mdpo_step_loss(lp, old, lr, torch.tensor([a]), conf, masked, **args)
        assert float(loss) == pytest.approx(want, abs=1e-5)


def test_step_loss_ignores_unmasked_positions_and_has_the_pg_gradient():
    lp, lr, conf, masked = _m2()
    lp = lp.clone().requires_grad_(True)
    loss, _ = mdpo_step_loss(lp, lp.detach(), None, torch.tensor([0.7]), conf, masked, gen_length=4,
                             epsilon=0.2, beta=0.0)
    loss.backward()
    assert lp.grad[0, 0] == 0
    # d/dℓ_i = −A λ_t c_i / (n_t + 1e-4)
    expect = -0.7 * (4 / 3.0001) * conf[0, 1:] / 3.0001
    assert torch.allclose(lp.grad[0, 1:], expect, atol=1e-6)


def test_loss_matches_official(official):
    fx = official("mdpo")["loss"]
    eps = fx["temperature_eps"]
    for case in fx["cases"]:
        p = case["prompt_length"]
        state = torch.tensor([case["state"]])[:, p:]
        tgt = torch.tensor([case["targets"]])[:, p:]
        tau = case["temperature"] + eps

        def lp(name):
            return gather_logprobs(torch.tensor([case[name]])[:, p:], tgt, tau)

        pol = lp("policy_logits")
        old = lp("old_logits") if case["num_iterations"] > 1 else pol.detach()
        ref = lp("reference_logits") if case["beta"] else None
        loss, _ = mdpo_step_loss(pol, old, ref, torch.tensor([case["advantage"]]), torch.tensor([case["confidence"]]),
                                 state == case["mask_id"], gen_length=state.shape[1], epsilon=case["epsilon"],
                                 beta=case["beta"])
        assert float(loss) == pytest.approx(case["loss"], rel=1e-5, abs=1e-6), case


# -- sampler against the official diffusion_generate -----------------------------------------------

class _TableModel(FakeModel):
    """The fixture's deterministic state-dependent model: ℓ = W + (m Uᵀ) ⊙ Z, m = 1[x = M]."""

    def __init__(self, fx):
        super().__init__()
        self.W, self.U, self.Z = (torch.tensor(fx[k]) for k in ("W", "U", "Z"))
        self.mask_token_id = fx["mask_id"]
        self.eos_token_id = 99  # never produced: completions run to the end

    def forward(self, input_ids, attention_mask=None, **kwargs):
        self.nfe += 1
        m = (input_ids == self.mask_token_id).float()  # [B, S]
        logits = self.W.unsqueeze(0) + (m @ self.U.T).unsqueeze(-1) * self.Z.unsqueeze(0)
        return ModelOutput(logits=logits, hidden_states=None)


def test_sampler_matches_official_with_and_without_rcr(official):
    fx = official("mdpo")["sampler"]
    model = _TableModel(fx)
    prompts = PromptBatch(torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.bool), torch.tensor([0]), ("",), ({},))
    for case in fx["cases"]:
        s = MDPOSampler(MDPOSampler.Config(gen_length=fx["gen_length"], block_length=case["block_length"],
                                           steps=case["steps"], temperature=0.0, rcr=case["rcr"],
                                           conf_alg=case["conf_alg"]))
        ro = s.sample(model, prompts, torch.Generator().manual_seed(0))
        assert ro.completion_ids[0].tolist() == case["final"], case
        assert ro.step_pred_ids[0].tolist() == case["preds"], case
        conf = torch.tensor(case["confidence"])
        if case["rcr"]:
            assert ro.step_state_ids[0].tolist() == case["states"]
            assert torch.allclose(ro.step_confidence[0], conf, atol=1e-6)
        else:  # we record c at the masked positions of x_t only (the loss never reads the others)
            masked = torch.tensor(case["states"]) == fx["mask_id"]
            assert torch.allclose(ro.step_confidence[0][masked], conf[masked], atol=1e-6)
            x_t, _ = remask.states_before_steps(ro.completion_ids, ro.unmask_step,
                                                torch.arange(ro.num_steps).unsqueeze(0), fx["mask_id"])
            assert x_t[0].tolist() == case["states"]  # without RCR the states are rebuilt from unmask_step


def test_rcr_states_are_not_a_function_of_unmask_step(official):
    """Spec M3: under RCR a remasked token can come back as another one, so x_t must be recorded."""
    fx = official("mdpo")["sampler"]
    model = _TableModel(fx)
    prompts = PromptBatch(torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.bool), torch.tensor([0]), ("",), ({},))
    differs = []
    for case in (c for c in fx["cases"] if c["rcr"]):
        ro = MDPOSampler(MDPOSampler.Config(gen_length=8, block_length=case["block_length"], steps=case["steps"],
                                            temperature=0.0, rcr=True, conf_alg=case["conf_alg"])).sample(
            model, prompts, torch.Generator())
        rebuilt, _ = remask.states_before_steps(ro.completion_ids, ro.unmask_step,
                                                torch.arange(ro.num_steps).unsqueeze(0), fx["mask_id"])
        differs.append(rebuilt[0].tolist() != case["states"])
    assert any(differs)


def test_sampled_rollout_records_and_take_keeps_the_fields():
    model = FakeModel()
    s = MDPOSampler(MDPOSampler.Config(gen_length=8, block_length=4, steps=4, temperature=0.7, top_k=5, rcr=True))
    ro = s.sample(model, fake_prompts(), torch.Generator().manual_seed(1))
    b = ro.batch_size
    assert ro.step_pred_ids.shape == ro.step_confidence.shape == ro.step_state_ids.shape == (b, 4, 8)
    assert torch.equal(ro.step_pred_ids[:, -1].long(), ro.completion_ids)  # the last step commits every mask
    assert ro.nfe == 4
    sub = remask.take(ro, [2, 0])
    assert torch.equal(sub.step_pred_ids, ro.step_pred_ids[[2, 0]])
    assert torch.equal(sub.step_state_ids, ro.step_state_ids[[2, 0]])
    again = s.sample(model, fake_prompts(), torch.Generator().manual_seed(1))
    assert torch.equal(again.step_pred_ids, ro.step_pred_ids)


def test_sampler_config_refuses_uneven_blocks():
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        MDPOSampler.Config(gen_length=8, block_length=4, steps=3)


# -- components ------------------------------------------------------------------------------------

def _mdpo_rollout(temperature=0.7, rcr=False):
    model = FakeModel()
    s = MDPOSampler(MDPOSampler.Config(gen_length=6, block_length=6, steps=3, temperature=temperature, rcr=rcr))
    prompts = fake_prompts(answers=["2", "5"])
    return model, s.sample(model, prompts, torch.Generator().manual_seed(0))


def test_estimator_scores_every_step_and_reuses_the_final_reward():
    model, ro = _mdpo_rollout()
    ctx = fake_context(model)
    calls = []
    score = ctx.score

    def counting(prompts, texts):
        calls.append(len(texts))
        return score(prompts, texts)

    ctx.score = counting
    final = ctx.score(ro.prompts, list(ro.texts))
    calls.clear()
    adv = MDPOStepwiseAdvantage().estimate(rollout=ro, rewards=final, selection=None, context=ctx)
    assert adv.shape == (ro.batch_size, 3) and torch.isfinite(adv).all()
    assert len(calls) == 1 and calls[0] <= ro.batch_size * 2  # one batched call, distinct texts only
    assert {"mdpo/over_denoising_rate", "mdpo/final_reward"} <= set(ctx.extras)
    # R_{T−1} is the final reward: rescoring x̂0_{T−1} gives the same values
    last = model.decode(ro.step_pred_ids[:, -1].long(), ro.completion_mask)
    assert torch.equal(ctx.score(ro.prompts, last).total, final.total)


@pytest.mark.parametrize("rcr", [False, True])
def test_objective_on_an_mdpo_rollout(rcr):
    model, ro = _mdpo_rollout(rcr=rcr)
    ctx = fake_context(model)
    adv = torch.linspace(-1, 1, ro.batch_size * 3).view(ro.batch_size, 3)
    obj = MDPOObjective(MDPOObjective.Config(num_train_steps=2))
    assert obj.uses_reference
    state = obj.prepare(rollout=ro, advantages=adv, selection=None, context=ctx)
    assert state.input_ids.shape[0] == ro.batch_size * 2 and state.temperature == pytest.approx(0.7)
    out = obj.loss(state, inner_step=0, context=ctx)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.module.parameters())
    assert MDPOObjective(MDPOObjective.Config(beta=0.0)).uses_reference is False


def test_objective_refuses_a_temperature_mismatch_and_per_row_advantages():
    model, ro = _mdpo_rollout(temperature=0.7)
    ctx = fake_context(model)
    with pytest.raises(RemaskError, match="differs from the sampler"):
        MDPOObjective(MDPOObjective.Config(temperature=1.0)).prepare(
            rollout=ro, advantages=torch.zeros(ro.batch_size, 3), selection=None, context=ctx)
    with pytest.raises(RemaskError, match="mdpo-stepwise"):
        MDPOObjective().prepare(rollout=ro, advantages=torch.zeros(ro.batch_size), selection=None, context=ctx)


def test_other_samplers_are_refused_with_without_records_error():
    from remask.testing import fake_rollout
    model, ro = fake_rollout()
    with pytest.raises(RemaskError, match="use sampler: mdpo"):
        MDPOObjective(MDPOObjective.Config(without_records="error")).prepare(
            rollout=ro, advantages=torch.zeros(ro.batch_size), selection=None, context=fake_context(model))
    with pytest.raises(RemaskError, match="use sampler: mdpo"):
        MDPOStepwiseAdvantage(MDPOStepwiseAdvantage.Config(without_records="error")).estimate(
            rollout=ro, rewards=remask.Rewards.from_scores("r", [0.0] * ro.batch_size), selection=None,
            context=fake_context(model))


def test_recomputed_predictions_equal_the_greedy_mdpo_record():
    """without_records: recompute rebuilds x_t from unmask_step and fills it greedily: at τ = 0 this is exactly
    what the mdpo sampler records, so prepare builds the same training rows either way."""
    model, ro = _mdpo_rollout(temperature=0.0)
    ctx = fake_context(model)
    bare = remask.take(ro, list(range(ro.batch_size)))
    object.__setattr__(bare, "step_pred_ids", None)
    object.__setattr__(bare, "step_confidence", None)
    adv = torch.linspace(-1, 1, ro.batch_size * 3).view(ro.batch_size, 3)
    obj = MDPOObjective(MDPOObjective.Config(num_train_steps=2))
    a = obj.prepare(rollout=ro, advantages=adv, selection=None, context=ctx)
    b = obj.prepare(rollout=bare, advantages=adv, selection=None, context=ctx)
    assert torch.equal(a.targets, b.targets) and torch.equal(a.masked, b.masked)
    assert torch.allclose(a.weights, b.weights, atol=1e-6)
    est = MDPOStepwiseAdvantage()
    rewards = ctx.score(ro.prompts, list(ro.texts))
    assert torch.allclose(est.estimate(rollout=ro, rewards=rewards, selection=None, context=ctx),
                          est.estimate(rollout=bare, rewards=rewards, selection=None, context=ctx))


def test_check_component():
    assert check_component(MDPOSampler) == []
    assert check_component(MDPOSampler, MDPOSampler.Config(gen_length=8, block_length=4, steps=4, rcr=True)) == []
    # check_component runs estimators and objectives on a generic fake rollout without MDPO's step records:
    # the default `without_records: recompute` path
    assert check_component(MDPOStepwiseAdvantage) == []
    assert check_component(MDPOObjective) == []
