"""EGSPO on a real rollout: the built-in `tiny` model (random weights) sampled by `llada`.

Checks that what the sampler records is what EGSPO's selection and ratio assume: the recorded
per-step entropies and T=1 log-probs equal a replay on the states rebuilt from ``unmask_step``, the
selector picks the highest-entropy steps, and the objective's first ratio is 1.
"""

from __future__ import annotations

import pytest
import torch
from remask_egspo.objective import EGSPOObjective
from remask_egspo.selection import EntropyTopKSelector
from remask_egspo.states import completion_logits

import remask
from remask.functional import gather_logprobs, token_entropy
from remask.registry import get_registry
from remask.testing import fake_context


def _tiny_rollout(steps: int = 8, gen_length: int = 8, block_length: int = 4, group_size: int = 3):
    reg = get_registry()
    if "llada" not in reg.names("sampler") or "tiny" not in reg.names("model"):
        pytest.skip("needs the `tiny` model and the `llada` sampler (remask_diffusion)")
    from remask.engine import build_prompt_batch

    model_cls = reg.get("model", "tiny")
    model = model_cls(model_cls.Config(path="random", hidden_size=32, num_layers=1, num_heads=2,
                                       intermediate_size=64, max_length=64, seed=0))
    model.module.eval()
    sampler_cls = reg.get("sampler", "llada")
    sampler = sampler_cls(sampler_cls.Config(gen_length=gen_length, block_length=block_length, steps=steps,
                                             temperature=1.0))
    examples = [remask.Example(prompt="12+34=", reference={"answer": "46"}),
                remask.Example(prompt="5+7=", reference={"answer": "12"})]
    prompts = build_prompt_batch(model, examples, group_size=group_size)
    with torch.no_grad():
        rollout = sampler.sample(model, prompts, torch.Generator().manual_seed(0))
    return model, rollout


@pytest.fixture(scope="module")
def tiny():
    return _tiny_rollout()


def test_recorded_step_stats_match_a_replay_on_rebuilt_states(tiny):
    model, rollout = tiny
    assert rollout.step_entropy is not None and rollout.step_logps is not None
    t = rollout.num_steps
    with torch.no_grad():
        for k in range(t):
            x_k, i_k = remask.state_before_step(rollout.completion_ids, rollout.unmask_step, k, model.mask_token_id)
            logits = completion_logits(model, rollout.prompts, x_k)  # [B, L, V]
            w = i_k.float()
            ent = (token_entropy(logits) * w).sum(-1) / w.sum(-1).clamp_min(1)
            logp = (gather_logprobs(logits, rollout.completion_ids) * w).sum(-1)
            assert torch.allclose(rollout.step_entropy[:, k].float(), ent, atol=1e-4), k
            assert torch.allclose(rollout.step_logps[:, k].float(), logp, atol=1e-4), k


def test_entropy_topk_picks_the_highest_entropy_steps_of_a_real_rollout(tiny):
    model, rollout = tiny
    k = 3
    sel = EntropyTopKSelector(EntropyTopKSelector.Config(num_selected=k)).select(rollout, torch.Generator())
    h = rollout.step_entropy.float()
    assert sel.valid.all()
    for row in range(rollout.batch_size):
        chosen = h[row, sel.steps[row]]
        assert (chosen.diff() <= 0).all()  # descending entropy
        others = torch.ones(rollout.num_steps, dtype=torch.bool)
        others[sel.steps[row]] = False
        assert chosen.min() >= h[row, others].max()  # nothing left out beats a chosen step


def test_first_ratio_on_a_real_rollout(tiny):
    model, rollout = tiny
    sel = EntropyTopKSelector(EntropyTopKSelector.Config(num_selected=2)).select(rollout, torch.Generator())
    adv = torch.linspace(-1, 1, rollout.batch_size).unsqueeze(1).expand(-1, 2).contiguous()
    ctx = fake_context(model)
    ctx.reference = None
    ctx.inner_steps = 2
    for mode, tol in (("recompute", 0.0), ("sampler", 1e-4)):
        obj = EGSPOObjective(EGSPOObjective.Config(old_logps=mode, beta=0.0))
        with torch.no_grad():
            state = obj.prepare(rollout=rollout, advantages=adv, selection=sel, context=ctx)
        out = obj.loss(state, inner_step=0, context=ctx)
        assert abs(out.metrics["ratio_mean"] - 1.0) <= tol, mode
        out.loss.backward()
        assert any(p.grad is not None for p in model.module.parameters())
        model.module.zero_grad()
