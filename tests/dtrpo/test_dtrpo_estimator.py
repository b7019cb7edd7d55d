"""dTRPO's trajectory log-ratio estimator: spec cases 20 and 23, the staircase mask, unbiasedness on
the tiny model, the one-per-block selector and schedule-matched trajectories."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import remask
from remask.testing import check_component
from remask_dtrpo.components import DTRPOObjective, OnePerBlockSelector
from remask_dtrpo.trajectory_ratio import (
    block_sums,
    block_step_candidates,
    draw_block_steps,
    exact_trajectory_log_ratio,
    newly_unmasked_logps_full_state,
    newly_unmasked_logps_per_block,
    newly_unmasked_logps_single_pass,
    remasked_completion,
    schedule_matched_unmask_step,
    staircase_attention_mask,
    trajectory_log_ratio,
    transfer_schedule,
)

from dtrpo_support import make_rollout, semi_ar_unmask_step


# ----------------------------------------------------------------------------- spec case 20


def test_case20_one_block_enumeration_gives_exact_mean():
    delta_all = torch.tensor([0.1, 0.2, 0.3, 0.4])  # Δ_t for t = 1..4, exact log-ratio 1.0
    estimates = [float(trajectory_log_ratio(delta_all[t].view(1, 1), torch.tensor([[4.0]]))) for t in range(4)]
    assert estimates == pytest.approx([0.4, 0.8, 1.2, 1.6], abs=1e-6)
    assert sum(estimates) / 4 == pytest.approx(1.0, abs=1e-6)


def test_case20_two_blocks_mean_is_sum_of_exact_values():
    d1, d2 = torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([-0.5, 0.25])  # T_B = 4 and 2
    w = torch.tensor([[4.0, 2.0]])
    values = [float(trajectory_log_ratio(torch.stack([d1[a], d2[b]]).view(1, 2), w))
              for a, b in itertools.product(range(4), range(2))]
    assert sum(values) / len(values) == pytest.approx(float(d1.sum() + d2.sum()), abs=1e-6)


def test_draws_are_uniform_over_the_steps_each_block_took():
    # block 0 took steps {0, 1, 2, 3}; block 1 (threshold-style) only {4, 5}
    unmask = torch.tensor([[0, 1, 2, 3, 4, 4, 5, 5]]).expand(4000, -1)
    steps, counts = draw_block_steps(unmask, 4, torch.Generator().manual_seed(0))
    assert counts[0].tolist() == [4, 2]
    freq0 = torch.bincount(steps[:, 0], minlength=4).float() / 4000
    freq1 = torch.bincount(steps[:, 1] - 4, minlength=2).float() / 4000
    assert torch.allclose(freq0, torch.full((4,), 0.25), atol=0.03)
    assert torch.allclose(freq1, torch.full((2,), 0.5), atol=0.03)


def test_draws_are_reproducible_from_the_generator():
    unmask = semi_ar_unmask_step(6, 8, 4, 4, seed=1)
    a, _ = draw_block_steps(unmask, 4, torch.Generator().manual_seed(7))
    b, _ = draw_block_steps(unmask, 4, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- re-masking and the staircase


def test_remasked_completion_rebuilds_each_block_before_its_step():
    y = torch.tensor([[10, 11, 12, 13, 14, 15]])
    s = torch.tensor([[0, 1, 1, 2, 3, 2]])  # blocks of 3: block 0 steps {0,1}, block 1 steps {2,3}
    z, newly = remasked_completion(y, s, torch.tensor([[1, 3]]), 3, mask_token_id=2)
    assert z.tolist() == [[10, 2, 2, 13, 2, 15]]
    assert newly.tolist() == [[False, True, True, False, True, False]]


def test_staircase_mask_by_hand():
    # P = 2 with one left pad, L = 4, block length 2: layout [pad, q, y0 y1, y2 y3, z0 z1, z2 z3]
    m = staircase_attention_mask(torch.tensor([[False, True]]), 4, 2)[0, 0].int()
    expected = torch.tensor([
        # pad q  y0 y1 y2 y3 z0 z1 z2 z3
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # pad: itself (no empty row) and the real prompt
        [0, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # prompt sees the prompt only
        [0, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # clean block 0 sees prompt + block 0
        [0, 1, 1, 1, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # clean block 1 sees prompt + blocks 0, 1
        [0, 1, 1, 1, 1, 1, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0, 1, 1, 0, 0],  # re-masked block 0: prompt + itself
        [0, 1, 0, 0, 0, 0, 1, 1, 0, 0],
        [0, 1, 1, 1, 0, 0, 0, 0, 1, 1],  # re-masked block 1: prompt + clean block 0 + itself
        [0, 1, 1, 1, 0, 0, 0, 0, 1, 1],
    ])
    assert torch.equal(m, expected)


# ----------------------------------------------------------------------------- spec case 23


def test_case23_single_pass_equals_per_block_on_tiny_model(policy, rollout):
    steps, _ = draw_block_steps(rollout.unmask_step, 4, torch.Generator().manual_seed(0))
    z, newly = remasked_completion(rollout.completion_ids, rollout.unmask_step, steps, 4, policy.mask_token_id)
    with torch.no_grad():
        single = newly_unmasked_logps_single_pass(policy, rollout.prompts, rollout.completion_ids, z, 4)
        per_block = newly_unmasked_logps_per_block(policy, rollout.prompts, rollout.completion_ids, z, 4)
    assert newly.any()
    torch.testing.assert_close(single, per_block, atol=1e-5, rtol=1e-5)
    assert single.abs().min() > 0  # real log-probs, not zeros


def test_case23_holds_for_uneven_blocks_and_three_blocks(policy):
    ro = make_rollout(policy, semi_ar_unmask_step(4, 10, 4, 3, seed=3), 4)  # blocks of 4, 4, 2
    steps, _ = draw_block_steps(ro.unmask_step, 4, torch.Generator().manual_seed(1))
    z, _ = remasked_completion(ro.completion_ids, ro.unmask_step, steps, 4, policy.mask_token_id)
    with torch.no_grad():
        single = newly_unmasked_logps_single_pass(policy, ro.prompts, ro.completion_ids, z, 4)
        per_block = newly_unmasked_logps_per_block(policy, ro.prompts, ro.completion_ids, z, 4)
    torch.testing.assert_close(single, per_block, atol=1e-5, rtol=1e-5)


def test_single_pass_block_sees_no_later_block(policy, rollout):
    steps = torch.zeros(4, 2, dtype=torch.long)
    steps[:, 1] = 2
    z, _ = remasked_completion(rollout.completion_ids, rollout.unmask_step, steps, 4, policy.mask_token_id)
    changed = rollout.completion_ids.clone()
    changed[:, 4:] = (changed[:, 4:] - 4 + 1) % 96 + 4  # change block 1 everywhere
    z2 = z.clone()
    z2[:, 4:] = torch.where(z[:, 4:] == policy.mask_token_id, z[:, 4:], changed[:, 4:])
    with torch.no_grad():
        a = newly_unmasked_logps_single_pass(policy, rollout.prompts, rollout.completion_ids, z, 4)
        b = newly_unmasked_logps_single_pass(policy, rollout.prompts, changed, z2, 4)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=1e-5, rtol=1e-5)  # block 0 unaffected
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-4  # block 1 did change


def test_full_state_reads_the_exact_sampler_state(policy, rollout):
    steps, _ = draw_block_steps(rollout.unmask_step, 4, torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = newly_unmasked_logps_full_state(policy, rollout.prompts, rollout.completion_ids,
                                              rollout.unmask_step, steps, 4)
        for b in range(2):
            x_t, _ = remask.state_before_step(rollout.completion_ids, rollout.unmask_step, steps[:, b],
                                              policy.mask_token_id)
            ids, attn = remask.functional.full_sequence(rollout.prompts, x_t)
            logp = torch.log_softmax(policy.logits(ids, attn)[:, -8:].float(), -1)
            want = logp.gather(-1, rollout.completion_ids.unsqueeze(-1)).squeeze(-1)
            torch.testing.assert_close(got[:, 4 * b: 4 * b + 4], want[:, 4 * b: 4 * b + 4], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- unbiasedness on the tiny model


def _estimates(policy, reference, rollout, draws: int, attention: str, seed: int = 0) -> torch.Tensor:
    """R̂ of row 0 of ``rollout`` for ``draws`` independent draws, through the objective's code path."""
    rows = torch.zeros(draws, dtype=torch.long)
    rep = remask.take(rollout, rows)
    prompts = rep.prompts.__class__(rep.prompts.prompt_ids, rep.prompts.attention_mask,
                                    torch.arange(draws) // 2, rep.prompts.texts, rep.prompts.references)
    rep = rep.__class__(**{**{f: getattr(rep, f) for f in rep.__dataclass_fields__}, "prompts": prompts})
    obj = DTRPOObjective(DTRPOObjective.Config(attention=attention))
    ctx = remask.StepContext(policy=policy, reference=reference, generator=torch.Generator().manual_seed(seed),
                             score=lambda p, t: None)
    adv = torch.tensor([1.0, 0.0]).repeat(draws // 2)  # pairs (0,1), (2,3), ...: every row is used
    with torch.no_grad():
        state = obj.prepare(rollout=rep, advantages=adv, selection=None, context=ctx)
        r_hat, _ = obj.log_ratios(state, policy)
    assert state.rollout.batch_size == draws
    return r_hat


@pytest.mark.parametrize("attention", ["block-causal", "full"])
def test_estimator_is_unbiased_on_tiny_model(policy, reference, attention):
    # row 0: 2 blocks of 4 with 4 steps each (one token per step); exact Σ over all 8 steps
    ro = make_rollout(policy, semi_ar_unmask_step(2, 8, 4, 4, seed=5), 4, group_size=2, texts=("12+7=",))
    with torch.no_grad():
        exact = float(exact_trajectory_log_ratio(policy, reference, ro.prompts, ro.completion_ids,
                                                 ro.unmask_step, 4, attention=attention)[0])
    r = _estimates(policy, reference, ro, draws=400, attention=attention)
    mean, se = float(r.mean()), float(r.std() / math.sqrt(r.numel()))
    assert se > 1e-3  # the draws do vary
    assert abs(mean - exact) < 3 * se, (mean, exact, se)


def test_exact_sum_equals_enumeration_of_all_draws(policy, reference):
    # 1 row, 2 blocks with T_B = 2 and 3 (threshold style): average of the 6 enumerated R̂ == exact
    unmask = torch.tensor([[0, 0, 1, 1, 2, 3, 3, 4]]).repeat(2, 1)
    ro = make_rollout(policy, unmask, 4, group_size=2, texts=("9+9=",))
    candidates, counts = block_step_candidates(unmask, 4)
    assert counts[0].tolist() == [2, 3]
    values = []
    with torch.no_grad():
        for a, b in itertools.product(range(2), range(3)):
            steps = torch.tensor([[candidates[0, 0, a], candidates[0, 1, b]]]).repeat(2, 1)
            z, newly = remasked_completion(ro.completion_ids, unmask, steps, 4, policy.mask_token_id)
            lp = newly_unmasked_logps_single_pass(policy, ro.prompts, ro.completion_ids, z, 4)
            lr = newly_unmasked_logps_single_pass(reference, ro.prompts, ro.completion_ids, z, 4)
            values.append(float(trajectory_log_ratio(block_sums(lp - lr, newly, 4, 2), counts.float())[0]))
        exact = float(exact_trajectory_log_ratio(policy, reference, ro.prompts, ro.completion_ids, unmask, 4)[0])
    assert sum(values) / len(values) == pytest.approx(exact, abs=1e-4)
    assert max(values) - min(values) > 1e-3


# ----------------------------------------------------------------------------- schedule-matched trajectories


def test_transfer_schedule_matches_llada():
    assert transfer_schedule(32, 5) == [7, 7, 6, 6, 6]
    assert transfer_schedule(32, 16) == [2] * 16
    assert transfer_schedule(3, 5) == [1, 1, 1, 0, 0]


def test_schedule_matched_trajectory_follows_the_schedule():
    s = schedule_matched_unmask_step((3, 10), 4, 3, torch.Generator().manual_seed(0))  # blocks 4, 4, 2
    for row in s.tolist():
        assert sorted(row[:4]) == [0, 0, 1, 2]  # schedule [2, 1, 1]
        assert sorted(row[4:8]) == [3, 3, 4, 5]
        assert sorted(row[8:]) == [6, 7]  # 2 tokens over 3 steps: [1, 1, 0]
    table = remask.block_step_table(s, 4)
    assert [len(b) for b in table[0]] == [3, 3, 2]


def test_schedule_matched_order_is_uniform():
    s = schedule_matched_unmask_step((3000, 4), 4, 4, torch.Generator().manual_seed(1))  # one token per step
    first = (s == 0).float().mean(0)  # P(position i is committed first)
    assert torch.allclose(first, torch.full((4,), 0.25), atol=0.03)


# ----------------------------------------------------------------------------- the selector


def test_selector_contract():
    assert check_component(OnePerBlockSelector) == []


def test_selector_registered():
    from remask.registry import get_registry

    assert get_registry().get("step_selector", "one-per-block") is OnePerBlockSelector


def test_selector_steps_weights_and_validity(policy):
    unmask = torch.tensor([[0, 1, 2, 3, 4, 4, 5, 5], [0, 0, 0, 1, 2, 3, 4, 5], [-1] * 8, [0, 1, 2, 3, 4, 5, 6, 7]])
    ro = make_rollout(policy, unmask.clamp(min=0), 4)
    ro = ro.__class__(**{**{f: getattr(ro, f) for f in ro.__dataclass_fields__}, "unmask_step": unmask})
    sel = OnePerBlockSelector().select(ro, torch.Generator().manual_seed(0))
    assert sel.steps.shape == (4, 2)
    assert sel.weights.tolist() == [[4, 2], [2, 4], [1, 1], [4, 4]]
    assert sel.valid.tolist() == [[True, True], [True, True], [False, False], [True, True]]
    for r in (0, 1, 3):
        for b in range(2):
            assert int(sel.steps[r, b]) in unmask[r, 4 * b: 4 * b + 4].tolist()


def test_case23_holds_for_adapters_that_shift_logits(rollout):
    """Dream-style adapters predict token i from position i-1; the single pass must still match."""
    from remask.registry import get_registry
    from dtrpo_support import SMALL

    base = get_registry().get("model", "tiny")

    class Shifted(base):
        name = "tiny-shifted"
        shift_logits = True

    model = Shifted(Shifted.Config(**SMALL, seed=2))
    steps, _ = draw_block_steps(rollout.unmask_step, 4, torch.Generator().manual_seed(4))
    z, _ = remasked_completion(rollout.completion_ids, rollout.unmask_step, steps, 4, model.mask_token_id)
    with torch.no_grad():
        single = newly_unmasked_logps_single_pass(model, rollout.prompts, rollout.completion_ids, z, 4)
        per_block = newly_unmasked_logps_per_block(model, rollout.prompts, rollout.completion_ids, z, 4)
    torch.testing.assert_close(single, per_block, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_case23_on_llada_and_dream_adapters(family, tmp_path):
    """Single pass == per block on the real LLaDA and Dream adapters (tiny random checkpoints in the
    published formats, written by the diffusion tests' helper); Dream shifts its logits by one."""
    import importlib.util
    from pathlib import Path

    from remask.registry import get_registry

    helper = Path(__file__).resolve().parents[1] / "diffusion" / "checkpoints.py"
    if not helper.is_file():
        pytest.skip("tests/diffusion/checkpoints.py is not available")
    spec = importlib.util.spec_from_file_location("dtrpo_diffusion_checkpoints", helper)
    ck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ck)
    getattr(ck, f"write_{family}_checkpoint")(tmp_path / family)
    cls = get_registry().get("model", family)
    model = cls(cls.Config(path=str(tmp_path / family), dtype="float32", device="cpu"))
    if not model.supports_4d_mask:
        pytest.skip(f"{family} adapter does not accept 4-D masks")
    ro = make_rollout(model, semi_ar_unmask_step(4, 8, 4, 2, seed=0), 4)
    steps, _ = draw_block_steps(ro.unmask_step, 4, torch.Generator().manual_seed(0))
    z, _ = remasked_completion(ro.completion_ids, ro.unmask_step, steps, 4, model.mask_token_id)
    with torch.no_grad():
        single = newly_unmasked_logps_single_pass(model, ro.prompts, ro.completion_ids, z, 4)
        per_block = newly_unmasked_logps_per_block(model, ro.prompts, ro.completion_ids, z, 4)
    torch.testing.assert_close(single, per_block, atol=1e-5, rtol=1e-5)
