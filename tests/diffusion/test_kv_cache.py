"""KV-cache policies (`cache: none | prefix | dual`) of the `llada` and `fast-dllm` samplers."""

from __future__ import annotations

import pytest
import torch

from remask_diffusion.block_cache import BlockForward
from remask_diffusion.replay import replay_step_stats
from remask_diffusion.samplers import FastDLLMSampler, LLaDASampler

from .conftest import make_prompts


def run(cls, model, prompts, seed=0, **cfg):
    return cls(cls.Config(**cfg)).sample(model, prompts, torch.Generator().manual_seed(seed))


@pytest.fixture()
def padded(tiny_model):
    return make_prompts(tiny_model, texts=("1+2=", "33+44=", "5="), group_size=2)  # left padding


def sequence(model, prompts, gen_length, fill_until, seed=0):
    """``[q, tokens…, M…]``: the first ``fill_until`` completion positions filled at random. # [B, P+L] x2"""
    g = torch.Generator().manual_seed(seed)
    b = prompts.batch_size
    comp = torch.full((b, gen_length), model.mask_token_id)
    comp[:, :fill_until] = torch.randint(4, 100, (b, fill_until), generator=g)
    x = torch.cat([prompts.prompt_ids, comp], 1)
    attn = torch.cat([prompts.attention_mask.bool(), torch.ones(b, gen_length, dtype=torch.bool)], 1)
    return x, attn


@pytest.mark.parametrize("keep_suffix", [False, True])
@pytest.mark.parametrize("policy", ["none", "prefix", "dual"])
def test_block_start_pass_is_the_full_pass(tiny_model, padded, policy, keep_suffix):
    """The block's logits (with keep_suffix: block and suffix) of a block's first pass are the full pass's."""
    x, attn = sequence(tiny_model, padded, 16, 8)
    p = padded.prompt_length
    passes = BlockForward(tiny_model, attn, policy, keep_suffix=keep_suffix)
    passes.start_block(p + 8, p + 12)
    with torch.no_grad():
        got = passes(x)
        want = tiny_model.logits(x, attn)[:, p + 8:] if keep_suffix else tiny_model.logits(x, attn)[:, p + 8:p + 12]
    assert torch.equal(got, want)


@pytest.mark.parametrize("policy", ["prefix", "dual"])
def test_cached_step_on_an_unchanged_state_equals_the_full_pass(tiny_model, padded, policy):
    # With nothing committed since the block start the cache is not stale: a cached step must give
    # the full pass's block logits (up to float rounding). This checks positions, padding and masks.
    x, attn = sequence(tiny_model, padded, 16, 4)
    p = padded.prompt_length
    passes = BlockForward(tiny_model, attn, policy)
    passes.start_block(p + 4, p + 8)
    with torch.no_grad():
        first = passes(x)[:, :4]
        n0 = tiny_model.nfe
        second = passes(x)[:, :4]
        third = passes(x)[:, :4]  # the cache did not grow: the same again
    assert tiny_model.nfe == n0 + 2
    torch.testing.assert_close(second, first, atol=2e-5, rtol=1e-5)
    assert torch.equal(second, third)


def test_dual_cached_step_sees_the_block_but_not_the_stale_suffix(tiny_model, padded):
    x, attn = sequence(tiny_model, padded, 16, 4)
    p = padded.prompt_length
    passes = BlockForward(tiny_model, attn, "dual")
    passes.start_block(p + 4, p + 8)
    with torch.no_grad():
        first = passes(x)[:, :4]
        y = x.clone()
        y[:, p + 5] = 42  # a token committed in the block: the block's logits must change
        z = y.clone()
        z[:, p + 12] = 42  # a suffix change after the block start: invisible to the cached step
        inside, suffix_changed = passes(y), passes(z)
    assert float((inside - first).abs().max()) > 1e-3
    assert torch.equal(inside, suffix_changed)


@pytest.mark.parametrize("cls,cfg", [
    (LLaDASampler, dict(gen_length=16, block_length=4, steps=8, temperature=1.0)),
    (FastDLLMSampler, dict(gen_length=16, block_length=8, threshold=0.05, temperature=0.0)),
])
@pytest.mark.parametrize("policy", ["prefix", "dual"])
def test_first_step_of_the_first_block_is_identical_with_and_without_cache(tiny_model, padded, cls, cfg, policy):
    a = run(cls, tiny_model, padded, cache=policy, **cfg)
    b = run(cls, tiny_model, padded, cache="none", **cfg)
    first = b.unmask_step == 0
    assert torch.equal(a.unmask_step == 0, first)
    assert torch.equal(a.completion_ids[first], b.completion_ids[first])
    assert torch.equal(a.step_logps[:, 0], b.step_logps[:, 0])
    assert torch.equal(a.step_entropy[:, 0], b.step_entropy[:, 0])
    assert a.nfe == b.nfe or cls is FastDLLMSampler


@pytest.mark.parametrize("cls,cfg", [
    (LLaDASampler, dict(gen_length=16, block_length=4, steps=4, temperature=1.0)),
    (FastDLLMSampler, dict(gen_length=16, block_length=4, threshold=1e-9, temperature=1.0)),
])
@pytest.mark.parametrize("policy", ["prefix", "dual"])
def test_one_step_per_block_rollouts_are_identical(tiny_model, padded, cls, cfg, policy):
    a = run(cls, tiny_model, padded, cache=policy, **cfg)
    b = run(cls, tiny_model, padded, cache="none", **cfg)
    for field in ("completion_ids", "unmask_step", "step_logps", "step_entropy", "step_all_eos"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.nfe == b.nfe == 4


@pytest.mark.parametrize("cls,cfg", [
    (LLaDASampler, dict(gen_length=16, block_length=8, steps=8, temperature=1.0)),
    (FastDLLMSampler, dict(gen_length=16, block_length=8, threshold=0.06, temperature=1.0)),
    (FastDLLMSampler, dict(gen_length=16, block_length=8, threshold=None, steps=8, temperature=0.0)),
])
@pytest.mark.parametrize("policy", ["none", "prefix", "dual"])
def test_recorded_step_stats_equal_the_replay_under_the_same_cache(tiny_model, padded, cls, cfg, policy):
    r = run(cls, tiny_model, padded, seed=2, cache=policy, **cfg)
    logps, entropy = replay_step_stats(tiny_model, r, policy)
    torch.testing.assert_close(r.step_logps, logps, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(r.step_entropy, entropy, atol=1e-4, rtol=1e-4)


def test_cached_rollouts_are_approximate_and_the_replay_knows_it(tiny_model, padded):
    # the same dual-cached rollout replayed without the cache gives different log-probs: the
    # recorded values belong to the cached (behaviour) policy
    r = run(LLaDASampler, tiny_model, padded, seed=2, cache="dual", gen_length=16, block_length=8, steps=8,
            temperature=1.0)
    exact, _ = replay_step_stats(tiny_model, r, "none")
    assert float((exact - r.step_logps).abs().max()) > 1e-3


def test_left_padded_row_decodes_as_alone_with_dual_cache(tiny_model):
    cfg = dict(gen_length=16, block_length=8, threshold=0.05, temperature=0.0, cache="dual")
    both = make_prompts(tiny_model, texts=("1+2=", "33+44="), group_size=1)
    alone = make_prompts(tiny_model, texts=("1+2=",), group_size=1)
    a = run(FastDLLMSampler, tiny_model, both, **cfg)
    b = run(FastDLLMSampler, tiny_model, alone, **cfg)
    assert torch.equal(a.completion_ids[:1], b.completion_ids)
    assert torch.equal(a.unmask_step[:1], b.unmask_step)


def test_config_refuses_dual_with_greedy_ids_and_cfg_with_cache():
    with pytest.raises(ValueError, match="record_greedy_ids"):
        FastDLLMSampler.Config(cache="dual", record_greedy_ids=True)
    with pytest.raises(ValueError, match="cfg_scale"):
        LLaDASampler.Config(cache="prefix", cfg_scale=1.0)


def test_dual_cache_on_the_llada_adapter(tmp_path):
    # grouped-query attention and LLaDA's RoPE base: the cached step on an unchanged state equals
    # the full pass, and a one-step-per-block rollout is identical with and without the cache
    from remask_diffusion.llada import LLaDAModel

    from .checkpoints import write_llada_checkpoint

    write_llada_checkpoint(tmp_path)
    model = LLaDAModel(LLaDAModel.Config(path=str(tmp_path), dtype="float32"))
    prompts = make_prompts(model, texts=("1+2=", "33+44="), group_size=1)
    x, attn = sequence(model, prompts, 16, 8)
    p = prompts.prompt_length
    passes = BlockForward(model, attn, "dual")
    passes.start_block(p + 8, p + 12)
    with torch.no_grad():
        first = passes(x)[:, :4]
        second = passes(x)
    torch.testing.assert_close(second, first, atol=2e-5, rtol=1e-5)
    cfg = dict(gen_length=16, block_length=4, threshold=1e-9, temperature=1.0)
    a = run(FastDLLMSampler, model, prompts, cache="dual", **cfg)
    b = run(FastDLLMSampler, model, prompts, cache="none", **cfg)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.step_logps, b.step_logps)
