"""TraFL: spec algorithms.md §9.6 cases 24–27, the mask sampler, the LogZHead and the objective contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import remask
from remask.testing import FakeModel, check_component, fake_context, fake_rollout
from remask_trafl.head import LogZHead, pool_prompt_states
from remask_trafl.losses import (
    mask_log_ratio,
    masked_token_average,
    optimal_log_partition,
    reward_tilt,
    sequence_surrogate,
    trafl_loss,
    trajectory_balance_residual,
)
from remask_trafl.masks import complementary_masks, completion_span
from remask_trafl.objective import TraflError, TraflObjective


def centred(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    return rewards - remask.functional.group_mean(rewards, group_size)


class TableModel(remask.DiffusionModel):
    """A mask predictor with the same categorical at every position: ``softmax(bias)`` over V = 4."""

    name = "table"

    def __init__(self, bias: list[float]) -> None:
        super().__init__(None)
        self.tokenizer = None
        self.mask_token_id, self.eos_token_id, self.pad_token_id = 0, 1, 2
        self.module = nn.Module()
        self.module.bias = nn.Parameter(torch.tensor(bias, dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None, *, position_ids=None, past_key_values=None,
                use_cache=False, output_hidden_states=False):
        self.nfe += 1
        logits = self.module.bias.expand(*input_ids.shape, -1)  # [B, S, V]
        hidden = nn.functional.one_hot(input_ids, 4).float()  # [B, S, 4]
        return remask.ModelOutput(logits=logits, hidden_states=hidden if output_hidden_states else None)


def table_rollout(rows: int, length: int, token: int = 3) -> remask.Rollout:
    prompts = remask.PromptBatch(
        prompt_ids=torch.full((rows, 2), 3), attention_mask=torch.ones(rows, 2, dtype=torch.bool),
        group_ids=torch.zeros(rows, dtype=torch.long), texts=("p",) * rows, references=({},) * rows,
    )
    ids = torch.full((rows, length), token)
    return remask.Rollout(
        prompts=prompts, completion_ids=ids, completion_mask=torch.ones(rows, length, dtype=torch.bool),
        unmask_step=torch.zeros(rows, length, dtype=torch.long), block_length=length, num_steps=1,
        texts=("",) * rows, nfe=0,
    )


def table_context(policy: remask.DiffusionModel, reference: remask.DiffusionModel, seed: int = 0) -> remask.StepContext:
    return remask.StepContext(policy=policy, reference=reference, generator=torch.Generator().manual_seed(seed),
                              score=lambda p, t: None, group_size=2)


# -- spec case 24: the residual -------------------------------------------------------------------


def test_case24_residual_pure():
    d_hat = torch.tensor([0.3, 0.3])
    r_tilde = centred(torch.tensor([1.0, 0.0]), 2)
    assert torch.allclose(r_tilde, torch.tensor([0.5, -0.5]))
    tilt = reward_tilt(r_tilde, beta=2.0, span_length=torch.tensor([4, 4]))
    assert torch.allclose(tilt, torch.tensor([0.25, -0.25]))
    delta = trajectory_balance_residual(d_hat, tilt, torch.zeros(2))
    assert torch.allclose(delta, torch.tensor([0.05, 0.55]))
    assert trafl_loss(delta).item() == pytest.approx(0.1525, abs=1e-7)
    # β instead of β/u ("per_sequence" units)
    assert torch.allclose(reward_tilt(r_tilde, 2.0, None), torch.tensor([1.0, -1.0]))


def test_case24_residual_through_the_objective():
    """A policy whose log-ratio to a uniform reference is 0.3 on every token gives D̂ = 0.3 for any mask."""
    e = math.exp(0.3)
    t = math.log(3 * e / (4 - e))  # softmax([0,0,0,t])[3] = e^0.3 / 4
    policy, reference = TableModel([0.0, 0.0, 0.0, t]), TableModel([0.0] * 4)
    objective = TraflObjective(TraflObjective.Config(beta=2.0, span="all"))
    ctx = table_context(policy, reference)
    state = objective.prepare(rollout=table_rollout(2, 4), advantages=torch.tensor([0.5, -0.5]),
                              selection=None, context=ctx)
    out = objective.loss(state, inner_step=0, context=ctx)
    assert out.loss.item() == pytest.approx(0.1525, abs=1e-6)
    assert out.metrics["trafl/d_hat_mean"] == pytest.approx(0.3, abs=1e-6)
    assert out.metrics["trafl/z_mean"] == 0.0
    assert out.metrics["trafl/residual_rms"] == pytest.approx(math.sqrt(0.1525), abs=1e-6)
    # per_sequence scaling: δ = 0.3 − 2·[0.5, −0.5] = [−0.7, 1.3] -> loss (0.49 + 1.69) / 2
    objective2 = TraflObjective(TraflObjective.Config(beta=2.0, span="all", reward_scaling="per_sequence"))
    state2 = objective2.prepare(rollout=table_rollout(2, 4), advantages=torch.tensor([0.5, -0.5]),
                                selection=None, context=ctx)
    assert objective2.loss(state2, inner_step=0, context=ctx).loss.item() == pytest.approx(1.09, abs=1e-6)


# -- spec case 25: reference identity --------------------------------------------------------------


def test_case25_reference_identity():
    policy, reference = FakeModel(), FakeModel()  # same seed: θ = ref, two objects
    _, rollout = fake_rollout(group_size=2)
    ctx = fake_context(policy)
    ctx.reference = reference
    objective = TraflObjective()
    state = objective.prepare(rollout=rollout, advantages=torch.zeros(rollout.batch_size), selection=None, context=ctx)
    out = objective.loss(state, inner_step=0, context=ctx)
    assert out.metrics["trafl/d_hat_mean"] == 0.0 and out.metrics["trafl/d_hat_std"] == 0.0
    assert out.loss.item() == 0.0  # z_φ starts at 0: the optimum at θ = ref
    out.loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in policy.module.parameters())
    # δ = z for every row: loss = z², the head's bias gradient is 2z, the reference gets nothing
    for z in (0.7, -1.5):
        policy.module.zero_grad()
        with torch.no_grad():
            objective.head.input.bias.fill_(z)
            objective.head.input.bias.grad = None
        out = objective.loss(state, inner_step=1, context=ctx)
        assert out.loss.item() == pytest.approx(z * z, rel=1e-6)
        out.loss.backward()
        assert objective.head.input.bias.grad.item() == pytest.approx(2 * z, rel=1e-6)
        assert all(p.grad is None for p in reference.module.parameters())
        assert not state.prompt_features.requires_grad and not state.ref_logps.requires_grad


# -- spec case 26: complementary masks -------------------------------------------------------------


def test_case26_complementary_pairs_partition_the_span():
    g = torch.Generator().manual_seed(0)
    span = torch.zeros(2000, 9, dtype=torch.bool)
    span[:, :6] = True  # u = 6, three positions outside the span
    masks = complementary_masks(span, num_pairs=2, generator=g)  # [4, 2000, 9]
    assert masks.shape == (4, 2000, 9)
    for p in range(2):
        s, rest = masks[2 * p], masks[2 * p + 1]
        assert not (s & rest).any()
        assert torch.equal(s | rest, span)
        sizes = s.sum(-1)
        assert int(sizes.min()) == 1 and int(sizes.max()) == 5
        freq = torch.bincount(sizes, minlength=6)[1:].float() / sizes.numel()
        assert torch.allclose(freq, torch.full((5,), 0.2), atol=0.03)  # |S| ~ U{1..5}
    # each position is equally likely to be in S (a uniform subset)
    per_position = masks[0][:, :6].float().mean(0)
    assert torch.allclose(per_position, torch.full((6,), 0.5), atol=0.04)
    # the two pairs are drawn independently
    assert not torch.equal(masks[0], masks[2])


def test_case26_single_position_and_empty_spans():
    span = torch.tensor([[True, False, False], [False, False, False], [True, True, False]])
    masks = complementary_masks(span, num_pairs=2, generator=torch.Generator().manual_seed(1))
    for k in range(4):
        assert torch.equal(masks[k, 0], span[0])  # u = 1: both masks are the single position
        assert not masks[k, 1].any()  # u = 0: nothing to mask
    assert masks[0, 2].sum() == 1 and torch.equal(masks[0, 2] | masks[1, 2], span[2])


def test_case26_span_modes_and_determinism():
    completion_mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    assert torch.equal(completion_span(completion_mask, "eos"), completion_mask)
    assert completion_span(completion_mask, "all").all()
    a = complementary_masks(completion_mask, 2, torch.Generator().manual_seed(5))
    b = complementary_masks(completion_mask, 2, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not (a & ~completion_mask).any()
    long_span = torch.ones(8, 12, dtype=torch.bool)
    assert not torch.equal(complementary_masks(long_span, 2, torch.Generator().manual_seed(5)),
                           complementary_masks(long_span, 2, torch.Generator().manual_seed(6)))
    with pytest.raises(ValueError, match="span mode"):
        completion_span(completion_mask, "prefix")


def test_case26_uniform_model_gate():
    """A uniform model over |V| = 4: every a_M under θ alone is −ln 4; with ref = θ every a_M is 0."""
    model = TableModel([0.0] * 4)
    rollout = table_rollout(3, 6)
    masks = complementary_masks(torch.ones(3, 6, dtype=torch.bool), 2, torch.Generator().manual_seed(0))
    logits = model.logits(torch.cat([rollout.prompts.prompt_ids, rollout.completion_ids], 1))[:, 2:]
    logp = remask.functional.gather_logprobs(logits, rollout.completion_ids).expand(4, -1, -1)  # [K, B, L]
    assert torch.allclose(masked_token_average(logp, masks), torch.full((4, 3), -math.log(4)))
    assert torch.equal(mask_log_ratio(logp, logp, masks), torch.zeros(4, 3))
    assert torch.allclose(sequence_surrogate(torch.tensor([[1.0, 2.0], [3.0, 4.0]])), torch.tensor([2.0, 3.0]))


# -- spec case 27: the optimal normaliser ---------------------------------------------------------


def test_case27_optimal_normaliser():
    d_hat = torch.tensor([0.3, 0.3])
    tilt = torch.tensor([0.25, -0.25])
    z_star = optimal_log_partition(d_hat, tilt)
    assert z_star.item() == pytest.approx(-0.3)
    best = trafl_loss(trajectory_balance_residual(d_hat, tilt, z_star.expand(2)))
    assert best.item() == pytest.approx(0.0625)
    d2, t2 = torch.tensor([0.2, -0.4, 0.9]), torch.tensor([0.1, 0.3, -0.4])
    z2 = optimal_log_partition(d2, t2)
    for eps in (1e-2, -1e-2):
        assert trafl_loss(d2 - t2 + z2) < trafl_loss(d2 - t2 + z2 + eps)
    assert torch.allclose(optimal_log_partition(torch.stack([d_hat, d_hat]), torch.stack([tilt, -tilt])),
                          torch.tensor([-0.3, -0.3]))


def test_head_learns_optimal_normaliser_per_prompt():
    """On a fixed rollout the LogZHead (trained alone) reaches z*(x) of each prompt's group."""
    torch.manual_seed(0)
    _, rollout = fake_rollout(group_size=4)
    ctx = fake_context(FakeModel())
    objective = TraflObjective(TraflObjective.Config(beta=2.0))
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    adv = centred(rewards, 4)
    state = objective.prepare(rollout=rollout, advantages=adv, selection=None, context=ctx)
    with torch.no_grad():
        out = objective.loss(state, inner_step=0, context=ctx)
    opt = torch.optim.Adam(objective.head.parameters(), lr=0.05)
    for step in range(300):
        opt.zero_grad()
        loss = objective.loss(state, inner_step=1 + step, context=ctx).loss
        loss.backward()
        opt.step()
    # recompute D̂ and the tilt exactly as the loss does and compare z with the per-group optimum
    with torch.no_grad():
        p = rollout.prompts.prompt_length
        logps = torch.stack([remask.functional.gather_logprobs(
            ctx.policy.logits(state.masked_inputs[k], state.attention_mask)[:, p:], state.completion_ids)
            for k in range(4)])
        d_hat = sequence_surrogate(mask_log_ratio(logps, state.ref_logps, state.masks))
        tilt = reward_tilt(adv, 2.0, state.span_length)
        z_star = optimal_log_partition(d_hat.view(2, 4), tilt.view(2, 4))  # [2]
        z = objective.log_partition(state).view(2, 4)
    assert abs(float(z_star[0] - z_star[1])) > 0.05  # the two prompts need different normalisers
    assert torch.allclose(z, z_star.unsqueeze(-1).expand(2, 4), atol=2e-3)
    assert out.metrics["trafl/z_mean"] == 0.0


# -- the objective's contract and engine interplay ------------------------------------------------


@pytest.mark.parametrize("config", [
    {},
    {"head": "mlp", "hidden_size": 16, "z_features": "prompt_and_masked_completion"},
    {"span": "all", "reward_scaling": "per_sequence", "num_mask_pairs": 1},
])
def test_check_component(config):
    assert check_component(TraflObjective, TraflObjective.Config(**config)) == []


def test_config_rejects_bad_values():
    with pytest.raises(Exception, match="hidden_size"):
        TraflObjective.Config(hidden_size=0)
    with pytest.raises(Exception, match="extra"):
        TraflObjective.Config(num_masks=4)


def test_masks_shared_by_policy_and_reference_and_forward_count():
    _, rollout = fake_rollout(group_size=2)
    ctx = fake_context(FakeModel())
    objective = TraflObjective()
    ref_before, pol_before = ctx.reference.nfe, ctx.policy.nfe
    state = objective.prepare(rollout=rollout, advantages=torch.zeros(4), selection=None, context=ctx)
    assert ctx.reference.nfe - ref_before == 4 + 1  # one pass per mask + one for the prompt features
    p = rollout.prompts.prompt_length
    completion = state.masked_inputs[:, :, p:]  # [K, B, L]
    assert torch.equal(completion == ctx.policy.mask_token_id, state.masks)
    assert torch.equal(state.masked_inputs[:, :, :p], rollout.prompts.prompt_ids.expand(4, -1, -1))
    # recompute the reference log-probs from the stored inputs: the same masks served both models
    ref = torch.stack([remask.functional.gather_logprobs(
        ctx.reference.logits(state.masked_inputs[k], state.attention_mask)[:, p:], rollout.completion_ids)
        for k in range(4)])
    assert torch.allclose(ref, state.ref_logps)
    out0 = objective.loss(state, inner_step=0, context=ctx)
    out1 = objective.loss(state, inner_step=1, context=ctx)
    assert out0.forward_passes == 4 + 5 and out1.forward_passes == 4
    assert ctx.policy.nfe - pol_before == 8
    # seeded: the same generator state gives the same masks
    again = objective.prepare(rollout=rollout, advantages=torch.zeros(4), selection=None,
                              context=fake_context(FakeModel()))
    assert torch.equal(again.masks, state.masks)


def test_prompt_features_are_per_prompt_reference_means():
    _, rollout = fake_rollout(group_size=2)
    ctx = fake_context(FakeModel())
    state = TraflObjective().prepare(rollout=rollout, advantages=torch.zeros(4), selection=None, context=ctx)
    pr = rollout.prompts
    hidden = ctx.reference.forward(pr.prompt_ids, pr.attention_mask, output_hidden_states=True).hidden_states
    assert torch.allclose(state.prompt_features, pool_prompt_states(hidden, pr.attention_mask), atol=1e-6)
    assert torch.equal(state.prompt_features[0], state.prompt_features[1])
    assert not torch.equal(state.prompt_features[0], state.prompt_features[2])


def test_lazy_head_joins_an_optimizer_built_before_the_first_prepare():
    objective = TraflObjective(TraflObjective.Config(head="mlp", head_learning_rate=0.1))
    assert objective.head.is_lazy
    groups = objective.extra_param_groups()
    assert groups[0]["lr"] == 0.1 and len(groups[0]["params"]) == 4
    assert set(objective.extra_modules()) == {"log_z_head"}
    ids_before = [id(p) for p in objective.head.parameters()]
    opt = torch.optim.AdamW(groups)
    _, rollout = fake_rollout(group_size=2)
    ctx = fake_context(FakeModel())
    state = objective.prepare(rollout=rollout, advantages=torch.tensor([1.0, -1.0, 0.5, -0.5]),
                              selection=None, context=ctx)
    out = objective.loss(state, inner_step=0, context=ctx)
    out.loss.backward()
    opt.step()
    assert not objective.head.is_lazy and objective.head.hidden_size == 16
    assert [id(p) for p in objective.head.parameters()] == ids_before
    assert objective.head.output.bias.item() != 0.0  # the optimizer trained the materialised head
    # checkpoint round trip into a fresh (lazy) objective gives the same z
    fresh = TraflObjective(TraflObjective.Config(head="mlp"))
    fresh.head.load_state_dict(objective.head.state_dict())
    assert torch.allclose(fresh.log_partition(state), objective.log_partition(state))


def test_setup_sizes_the_head_in_place_from_the_model():
    objective = TraflObjective()
    params = list(objective.head.parameters())
    objective.setup(policy=FakeModel(), reference=FakeModel())
    assert objective.head.hidden_size == 16
    assert [id(p) for p in objective.head.parameters()] == [id(p) for p in params]
    assert not objective.head(torch.randn(3, 16)).any()  # output layer starts at zero
    eager = LogZHead(16, kind="mlp", width=8, init_seed=3)
    lazy = LogZHead(None, kind="mlp", width=8, init_seed=3)
    lazy(torch.zeros(1, 16))
    assert torch.equal(eager.input.weight, lazy.input.weight)  # seeded, not the global RNG


def test_bad_inputs_are_one_line_errors():
    _, rollout = fake_rollout(group_size=2)
    ctx = fake_context(FakeModel())
    objective = TraflObjective()
    with pytest.raises(TraflError, match=r"one centred reward per row"):
        objective.prepare(rollout=rollout, advantages=torch.zeros(4, 3), selection=None, context=ctx)
    ctx.reference = None
    with pytest.raises(TraflError, match="reference"):
        objective.prepare(rollout=rollout, advantages=torch.zeros(4), selection=None, context=ctx)
    sized = TraflObjective(TraflObjective.Config(hidden_size=8))
    ctx = fake_context(FakeModel())
    state = sized.prepare(rollout=rollout, advantages=torch.zeros(4), selection=None, context=ctx)
    with pytest.raises(TraflError, match="hidden size 8"):
        sized.loss(state, inner_step=0, context=ctx)
    assert issubclass(TraflError, remask.RemaskError)
