"""remask.testing.check_component holds an objective to the passes it declares to the memory planner."""

from __future__ import annotations

import torch

import remask
from remask.functional import full_sequence, gather_logprobs, masked_mean
from remask.testing import check_component


class TwoViews(remask.PolicyObjective):
    """Advantage-weighted likelihood averaged over two views of the completion (two passes per loss)."""

    name = "test-two-views"
    uses_reference = False
    declare = False

    class Config(remask.ComponentConfig):
        pass

    def prepare(self, *, rollout, advantages, selection, context):
        return rollout, advantages

    def loss(self, state, *, inner_step, context) -> remask.LossOutput:
        rollout, advantages = state
        model = context.policy
        total = 0.0
        for keep in (False, True):  # fully masked, then every other position revealed
            view = torch.full_like(rollout.completion_ids, model.mask_token_id)
            if keep:
                view[:, ::2] = rollout.completion_ids[:, ::2]
            ids, attn = full_sequence(rollout.prompts, view)  # [B, P+L]
            logits = model.logits(ids, attn)[:, rollout.prompts.prompt_length:]  # [B, L, V]
            per_row = masked_mean(gather_logprobs(logits, rollout.completion_ids), rollout.completion_mask, dim=1)
            total = total + (advantages.to(per_row) * per_row).mean()
        return remask.LossOutput(loss=-total / 2, metrics={}, forward_passes=2)

    def loss_passes(self, *, gen_length, block_length, steps, selected_steps):
        if self.declare:
            return (remask.ForwardPass(),) * 2
        return super().loss_passes(gen_length=gen_length, block_length=block_length, steps=steps,
                                   selected_steps=selected_steps)


def test_undeclared_passes_are_reported():
    problems = check_component(TwoViews)
    assert len(problems) == 1 and "loss ran 2 forward pass(es)" in problems[0] and "override loss_passes" in problems[0]


def test_declared_passes_conform():
    class Declared(TwoViews):
        declare = True

    assert check_component(Declared) == []


def test_decoding_turns_off_dropout_and_gradients_and_restores_the_mode():
    from remask.testing import FakeModel

    model = FakeModel()
    model.module.train(True)
    with model.decoding():
        assert not model.module.training and not torch.is_grad_enabled()
    assert model.module.training and torch.is_grad_enabled()
    model.module.train(False)
    with model.decoding():
        pass
    assert not model.module.training  # an eval-mode caller stays in eval mode
