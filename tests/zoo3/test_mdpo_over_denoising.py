"""MDPO's over-denoising data selection (data filter ``over-denoising``, spec zoo-mdpo-tracerl.md §1.7) and
``mixture_data`` (per-prompt (steps, block_length), trap M8), on hand-checkable cases."""

from __future__ import annotations

import pytest
import torch
from remask_mdpo.advantage import score_step_predictions
from remask_mdpo.over_denoising import OverDenoisingFilter, over_denoised
from remask_mdpo.sampler import MDPOSampler

import remask
from remask.errors import RemaskError
from remask.testing import FakeModel, FakeTask, check_component, fake_data_filter_context, fake_prompts

# FakeTokenizer: digit d is id 3 + d, EOS is 1
RIGHT, WRONG = [8, 1], [6, 1]  # "5", "3"


def test_spec_rule_keeps_only_right_then_wrong_rows():
    r = torch.tensor([[0.0, 1, 1, 0],  # over-denoising (spec §1.11 M1 row 0): kept
                      [0.0, 0, 1, 1],  # right at the end: dropped
                      [0.0, 0, 0, 0],  # never right: dropped
                      [1.0, 0, 0, 0],  # right at the first step only: kept
                      [1.0, 1, 1, 1]])  # always right: dropped
    assert over_denoised(r).tolist() == [True, False, False, True, False]
    assert over_denoised(torch.tensor([[0.0, 0.5, 0]]), threshold=0.5).tolist() == [True]
    assert over_denoised(torch.tensor([[0.0, 0.5, 0]]), threshold=1.0).tolist() == [False]


def test_step_rewards_of_recorded_predictions_give_the_spec_rows():
    """x̂0_t of 3 rows over T = 4 steps (the last is the final answer), scored by 'is it 5'."""
    preds = torch.tensor([[WRONG, RIGHT, RIGHT, WRONG],
                          [WRONG, WRONG, RIGHT, RIGHT],
                          [WRONG, WRONG, WRONG, WRONG]])  # [3, T=4, L=2]
    prompts = fake_prompts(("a", "b", "c"), group_size=1)
    calls = []

    def score(p, texts):
        calls.append(list(texts))
        return remask.Rewards.from_scores("five", [float(t == "5") for t in texts])

    final = torch.tensor([0.0, 1.0, 0.0])
    r = score_step_predictions(FakeModel(), prompts, preds, final, score)
    assert r.tolist() == [[0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]]
    assert len(calls) == 1 and len(calls[0]) == 5  # one call, each distinct text of a row once (not 9)
    assert over_denoised(r).tolist() == [True, False, False]


def _filter_with_rewards(table, **config):
    """The filter with its decode replaced by fixed step rewards per example index."""
    f = OverDenoisingFilter(OverDenoisingFilter.Config(gen_length=4, steps=4, block_length=4, **config))
    seen = []

    def fake_step_rewards(examples, context, steps, block):
        seen.append((steps, block, [e.id for e in examples]))
        return torch.tensor([table[int(e.id.split("-")[1])] for e in examples], dtype=torch.float32)

    f.step_rewards = fake_step_rewards
    return f, seen


TABLE = [[0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0.5, 0]]
EXAMPLES = list(FakeTask(FakeTask.Config(size=6)).examples("train"))


def test_select_keeps_the_over_denoised_prompts_and_counts():
    f, seen = _filter_with_rewards(TABLE)
    keep = f.select(examples=EXAMPLES, context=fake_data_filter_context())
    assert keep.tolist() == [True, False, False, True, False, False]
    assert f.last_counts == {"candidates": 6, "kept": 2, "final_correct": 2, "never_correct": 2}
    assert seen == [(4, 4, [e.id for e in EXAMPLES])]
    f, _ = _filter_with_rewards(TABLE, correct_threshold=0.5)
    assert f.select(examples=EXAMPLES, context=fake_data_filter_context()).tolist()[5] is True


def test_too_few_kept_falls_back_to_all_or_stops():
    f, _ = _filter_with_rewards(TABLE, min_kept=3)
    assert f.select(examples=EXAMPLES, context=fake_data_filter_context()).tolist() == [True] * 6
    assert f.last_counts["fallback"] == 1 and f.last_counts["kept"] == 2
    f, _ = _filter_with_rewards(TABLE, min_kept=3, fallback="error")
    with pytest.raises(RemaskError, match="kept 2 of 6 prompts, fewer than min_kept = 3"):
        f.select(examples=EXAMPLES, context=fake_data_filter_context())


def test_max_candidates_decodes_a_seeded_subset():
    subsets = set()
    for seed in range(10):
        f, seen = _filter_with_rewards(TABLE, max_candidates=3)
        keep = f.select(examples=EXAMPLES, context=fake_data_filter_context(seed=seed))
        decoded = [int(i.split("-")[1]) for i in seen[0][2]]
        assert len(decoded) == 3 and f.last_counts["candidates"] == 3
        subsets.add(tuple(decoded))
        if {0, 3} & set(decoded):  # undecoded rows are not kept
            assert keep.tolist() == [i in decoded and i in (0, 3) for i in range(6)]
        else:  # nothing kept: the fallback trains on the whole split
            assert keep.tolist() == [True] * 6 and f.last_counts["fallback"] == 1
        f2, seen2 = _filter_with_rewards(TABLE, max_candidates=3)
        f2.select(examples=EXAMPLES, context=fake_data_filter_context(seed=seed))
        assert seen2 == seen  # the same subset for the same stream
    assert len(subsets) > 1


def test_selection_mixture_decodes_each_prompt_with_its_drawn_pair():
    f, seen = _filter_with_rewards(TABLE, mixture=[(4, 1), (4, 4)])
    keep = f.select(examples=EXAMPLES, context=fake_data_filter_context(seed=1))
    assert {(s, b) for s, b, _ in seen} <= {(4, 1), (4, 4)}
    ids = [i for _, _, rows in seen for i in rows]
    assert sorted(ids) == sorted(e.id for e in EXAMPLES)  # every prompt decoded exactly once
    assert keep.tolist() == [True, False, False, True, False, False]


def test_config_refuses_settings_that_cannot_decode():
    with pytest.raises(ValueError, match=r"mixture pair \(3, 2\): steps \(3\) must be a multiple of the number of blocks"):
        OverDenoisingFilter.Config(gen_length=4, mixture=[(4, 4), (3, 2)])
    with pytest.raises(ValueError, match="every pair needs the same steps"):
        MDPOSampler.Config(gen_length=4, mixture=[(4, 4), (2, 2)])
    with pytest.raises(ValueError, match=r"mixture pair \(4, 3\): gen_length \(4\) must be a multiple of block_length"):
        MDPOSampler.Config(gen_length=4, mixture=[(4, 4), (4, 3)])


def test_filter_decodes_with_the_mdpo_sampler_on_a_fake_model():
    f = OverDenoisingFilter(OverDenoisingFilter.Config(gen_length=4, steps=4, block_length=2, batch_size=4))
    ctx = fake_data_filter_context()
    r = f.step_rewards(EXAMPLES, ctx, 4, 2)
    assert r.shape == (6, 4) and set(r.unique().tolist()) <= {0.0, 1.0}
    keep = f.select(examples=EXAMPLES, context=ctx)
    assert keep.shape == (6,) and keep.dtype == torch.bool
    assert check_component(OverDenoisingFilter, f.config) == []


def test_training_mixture_draws_one_pair_per_prompt_and_matches_plain_decodes():
    model = FakeModel()
    prompts = fake_prompts(("1+1=", "2+3=", "4+4=", "5+1="), group_size=2)
    cfg = dict(gen_length=4, steps=4, temperature=0.0)
    for seed in range(20):  # a seed that draws both pairs
        ro = MDPOSampler(MDPOSampler.Config(mixture=[(4, 2), (4, 4)], **cfg)).sample(
            model, prompts, torch.Generator().manual_seed(seed))
        blocks = ro.sampler["row_block_lengths"]
        if len(set(blocks)) == 2:
            break
    assert len(set(blocks)) == 2 and ro.block_length == 2 and ro.num_steps == 4
    assert all(blocks[2 * j] == blocks[2 * j + 1] for j in range(4))  # the G rows of a prompt share the pair
    plain = {b: MDPOSampler(MDPOSampler.Config(block_length=b, **cfg)).sample(model, prompts, torch.Generator())
             for b in (2, 4)}
    for i, b in enumerate(blocks):  # τ = 0: each row is exactly the plain decode with its block length
        for field in ("completion_ids", "unmask_step", "step_pred_ids", "step_confidence"):
            assert torch.equal(getattr(ro, field)[i], getattr(plain[b], field)[i]), (i, field)
        assert ro.texts[i] == plain[b].texts[i]
    assert ro.nfe == 8  # one decode of T = 4 forwards per drawn pair
    assert remask.take(ro, [1, 0]).sampler["row_block_lengths"] == (blocks[1], blocks[0])
