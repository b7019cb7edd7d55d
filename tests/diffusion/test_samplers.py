"""Samplers: spec cases 10-13 and 19, recorded statistics, determinism, EOS, padding, Fast-dLLM cache."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from remask import DiffusionModel, ModelOutput, state_before_step
from remask.functional import gather_logprobs, token_entropy
from remask.testing import FakeTokenizer, check_component
from remask_diffusion.sampling import (
    completion_mask_through_eos,
    gumbel_max,
    inverse_cdf_sample,
    num_transfer_tokens,
    select_top_k,
    top_p_filter,
)
from remask_diffusion.samplers import DreamSampler, FastDLLMSampler, LLaDASampler

from .conftest import make_prompts

SAMPLERS = [LLaDASampler, DreamSampler, FastDLLMSampler]


def run(cls, model, prompts, seed=0, **cfg):
    return cls(cls.Config(**cfg)).sample(model, prompts, torch.Generator().manual_seed(seed))


# -- spec case 10: transfer schedule ------------------------------------------------------------


def test_case10_transfer_schedule():
    assert num_transfer_tokens(torch.tensor([32]), 5).tolist() == [[7, 7, 6, 6, 6]]
    assert num_transfer_tokens(torch.tensor([32]), 16).tolist() == [[2] * 16]
    rows = num_transfer_tokens(torch.tensor([32, 5, 3]), 5)
    assert rows.tolist() == [[7, 7, 6, 6, 6], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert rows.sum(-1).tolist() == [32, 5, 3]


# -- spec case 11: Gumbel-max --------------------------------------------------------------------


def test_case11_gumbel_forms_agree_and_tau0_is_argmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 7, generator=g, dtype=torch.float64) * 3
    u = torch.rand(200, 7, generator=g, dtype=torch.float64)
    for tau in (0.3, 1.0, 2.0):
        llada_form = (logits.exp() / (-torch.log(u)) ** tau).argmax(-1)
        assert torch.equal(gumbel_max(logits, tau, u), llada_form)
    assert torch.equal(gumbel_max(logits, 0.0, u), logits.argmax(-1))


def test_case11_gumbel_frequencies_match_tempered_softmax():
    logits = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    tau = 0.7
    u = torch.rand(100_000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    draws = gumbel_max(logits.expand(100_000, 3), tau, u)
    freq = torch.bincount(draws, minlength=3).double() / 100_000
    assert torch.allclose(freq, torch.softmax(logits / tau, -1), atol=0.01)


def test_inverse_cdf_sampler_frequencies_and_zero_mass():
    probs = torch.tensor([0.2, 0.0, 0.5, 0.3]).expand(50_000, 4)
    draws = inverse_cdf_sample(probs, torch.rand(50_000, generator=torch.Generator().manual_seed(2)))
    freq = torch.bincount(draws, minlength=4).double() / 50_000
    assert freq[1] == 0 and torch.allclose(freq, probs[0].double(), atol=0.01)


def test_top_p_keeps_the_crossing_token():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]


def test_select_top_k_ignores_forbidden_positions():
    conf = torch.tensor([[0.1, float("-inf"), 0.7, 0.3], [0.5, 0.5, float("-inf"), float("-inf")]])
    out = select_top_k(conf, torch.tensor([2, 3]))
    assert out.tolist() == [[False, False, True, True], [True, True, False, False]]


# -- spec case 12: block confinement -------------------------------------------------------------


@pytest.mark.parametrize("cls,cfg", [
    (LLaDASampler, dict(gen_length=16, block_length=4, steps=8, temperature=1.0)),
    (FastDLLMSampler, dict(gen_length=16, block_length=4, threshold=0.05, temperature=1.0)),
    (FastDLLMSampler, dict(gen_length=16, block_length=4, threshold=None, steps=8)),
])
def test_case12_block_confinement(tiny_model, prompts, cls, cfg):
    r = run(cls, tiny_model, prompts, **cfg)
    blocks = r.unmask_step.view(r.batch_size, -1, 4)  # [B, n_blocks, Bl]
    assert bool((r.unmask_step >= 0).all()) and r.completion_ids.shape == (4, 16)
    # every step of block b precedes every step of block b+1: nothing later is committed during a block,
    # and a block has no mask left when the next begins
    assert bool((blocks.amax(-1)[:, :-1] < blocks.amin(-1)[:, 1:]).all())
    if cls is LLaDASampler:
        per_block = 2
        expected_block = torch.arange(4).view(1, 4, 1)
        assert torch.equal(blocks // per_block, expected_block.expand_as(blocks))
        # exactly k_s = 2 // 2 = ... commits per step: 4 positions over 2 steps -> 2 each
        counts = torch.stack([(r.unmask_step == k).sum(-1) for k in range(r.num_steps)], -1)
        assert bool((counts == 2).all()) and r.num_steps == 8
    assert not bool((r.completion_ids == tiny_model.mask_token_id).any())


# -- spec case 13: low-confidence order ------------------------------------------------------------


class PeakedModel(DiffusionModel):
    """Fixed logits: completion position 5 proposes token 10 with p = 0.9, every other position is flat-ish."""

    name = "peaked-stub"

    def __init__(self, prompt_len: int, gen_length: int) -> None:
        super().__init__()
        self.tokenizer = FakeTokenizer()
        self.mask_token_id, self.eos_token_id, self.pad_token_id = 2, 1, 0
        v = self.tokenizer.vocab_size
        self.module = torch.nn.Linear(1, 1)
        probs = torch.full((prompt_len + gen_length, v), 0.0)
        probs[:, 3:] = 1.0
        probs[:, 3 + 7] = 40.0  # p ~ 0.45 < 0.5 for the favourite token elsewhere
        probs = probs / probs.sum(-1, keepdim=True)
        peak = torch.full((v,), 0.1 / (v - 1))
        peak[10] = 0.9
        probs[prompt_len + 5] = peak
        self.fixed = torch.log(probs.clamp_min(1e-12))

    def forward(self, input_ids, attention_mask=None, **kw) -> ModelOutput:
        self.nfe += 1
        return ModelOutput(logits=self.fixed.expand(input_ids.shape[0], -1, -1).clone())


def test_case13_low_confidence_commits_the_confident_position_first():
    tok = FakeTokenizer()
    from remask.testing import fake_prompts

    prompts = fake_prompts(("1+1=",), group_size=1, tokenizer=tok)
    model = PeakedModel(prompts.prompt_length, 8)
    assert float(model.fixed[prompts.prompt_length].exp().max()) < 0.5
    r = run(LLaDASampler, model, prompts, gen_length=8, block_length=8, steps=8)
    assert r.unmask_step[0, 5] == 0 and int((r.unmask_step == 0).sum()) == 1
    assert r.completion_ids[0, 5] == 10


# -- spec case 19 from a real rollout, and the recorded statistics ---------------------------------


@pytest.mark.parametrize("cls,cfg", [
    (LLaDASampler, dict(gen_length=16, block_length=8, steps=8, temperature=1.0)),
    (FastDLLMSampler, dict(gen_length=16, block_length=8, threshold=0.03, temperature=1.0, cache="none")),
    (DreamSampler, dict(gen_length=16, steps=6, temperature=1.0, top_p=None, alg="maskgit_plus")),
])
def test_case19_state_rebuild_reproduces_recorded_step_stats(tiny_model, prompts, cls, cfg):
    r = run(cls, tiny_model, prompts, seed=4, **cfg)
    m = tiny_model.mask_token_id
    x0, _ = state_before_step(r.completion_ids, r.unmask_step, 0, m)
    assert bool((x0 == m).all())
    xT, _ = state_before_step(r.completion_ids, r.unmask_step, r.num_steps, m)
    assert torch.equal(xT, r.completion_ids)
    ids_full = torch.cat([r.prompts.prompt_ids, r.completion_ids], 1)
    attn = torch.cat([r.prompts.attention_mask, torch.ones_like(r.completion_mask)], 1)
    for k in range(r.num_steps):
        xk, ik = state_before_step(r.completion_ids, r.unmask_step, k, m)
        with torch.no_grad():
            logits = tiny_model.logits(torch.cat([r.prompts.prompt_ids, xk], 1), attn)[:, r.prompts.prompt_length:]
        logp = gather_logprobs(logits, r.completion_ids)  # [B, L]
        expected = (logp * ik).sum(-1)
        torch.testing.assert_close(r.step_logps[:, k], expected, atol=1e-4, rtol=1e-4)
        ent = (token_entropy(logits) * ik).sum(-1) / ik.sum(-1).clamp_min(1)
        torch.testing.assert_close(r.step_entropy[:, k], ent, atol=1e-4, rtol=1e-4)
        all_eos = ik.any(-1) & ((r.completion_ids == tiny_model.eos_token_id) | ~ik).all(-1)
        assert torch.equal(r.step_all_eos[:, k], all_eos)
    assert ids_full.shape[1] == r.prompts.prompt_length + 16


def test_case19_rebuild_rule_by_hand():
    o = torch.tensor([[11, 12, 13]])
    s = torch.tensor([[2, 0, 1]])
    states = [state_before_step(o, s, k, 2)[0].tolist()[0] for k in range(4)]
    assert states == [[2, 2, 2], [2, 12, 2], [2, 12, 13], [11, 12, 13]]


# -- determinism, greedy, padding, EOS -------------------------------------------------------------


@pytest.mark.parametrize("cls", SAMPLERS)
def test_same_generator_same_rollout(tiny_model, prompts, cls):
    cfg = dict(temperature=1.0, gen_length=16)
    a = run(cls, tiny_model, prompts, seed=7, **cfg)
    b = run(cls, tiny_model, prompts, seed=7, **cfg)
    c = run(cls, tiny_model, prompts, seed=8, **cfg)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.unmask_step, b.unmask_step)
    assert torch.equal(a.step_logps, b.step_logps) and a.texts == b.texts
    assert not torch.equal(a.completion_ids, c.completion_ids)
    assert a.nfe > 0 and a.sampler["name"] == cls.name


@pytest.mark.parametrize("cls", SAMPLERS)
def test_temperature_zero_is_greedy_and_seed_free(tiny_model, prompts, cls):
    extra = {"alg": "maskgit_plus"} if cls is DreamSampler else {}
    a = run(cls, tiny_model, prompts, seed=1, temperature=0.0, gen_length=16, **extra)
    b = run(cls, tiny_model, prompts, seed=2, temperature=0.0, gen_length=16, **extra)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.completion_ids[0], a.completion_ids[1])  # the two rows of a group agree


@pytest.mark.parametrize("cls", SAMPLERS)
def test_left_padded_batch_equals_rows_alone(tiny_model, cls):
    extra = {"alg": "maskgit_plus"} if cls is DreamSampler else {}
    both = make_prompts(tiny_model, ("7+8=", "123+456="), group_size=1)
    alone = make_prompts(tiny_model, ("7+8=",), group_size=1)
    assert not bool(both.attention_mask[0].all())  # the short prompt is padded
    a = run(cls, tiny_model, both, temperature=0.0, gen_length=16, **extra)
    b = run(cls, tiny_model, alone, temperature=0.0, gen_length=16, **extra)
    assert torch.equal(a.completion_ids[0], b.completion_ids[0])
    assert torch.equal(a.unmask_step[0], b.unmask_step[0])


def test_completion_mask_runs_through_first_eos():
    ids = torch.tensor([[5, 6, 1, 1], [1, 5, 5, 5], [5, 5, 5, 5]])
    assert completion_mask_through_eos(ids, 1).int().tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]


class EosAfterTwo(PeakedModel):
    """Predicts token 10 at completion positions 0-1 and EOS everywhere after."""

    def __init__(self, prompt_len: int, gen_length: int) -> None:
        super().__init__(prompt_len, gen_length)
        logits = torch.full_like(self.fixed, -5.0)
        logits[:, 1] = 5.0
        logits[prompt_len:prompt_len + 2, 1] = -5.0
        logits[prompt_len:prompt_len + 2, 10] = 5.0
        self.fixed = logits


@pytest.mark.parametrize("cls", SAMPLERS)
def test_eos_masking_and_text_cut(cls):
    from remask.testing import fake_prompts

    prompts = fake_prompts(("1+1=",), group_size=2)
    model = EosAfterTwo(prompts.prompt_length, 8)
    r = run(cls, model, prompts, gen_length=8, temperature=0.0, **({"block_length": 4} if cls is not DreamSampler else {}))
    assert r.completion_mask.int().tolist()[0] == [1, 1, 1, 0, 0, 0, 0, 0]
    assert r.texts[0] == model.tokenizer.decode([10, 10])
    assert bool(r.step_all_eos.any())
    final_steps = r.unmask_step[0, 4:]  # the second half only ever commits EOS
    assert bool(r.step_all_eos[0, final_steps].all())


# -- switches, Dream schedule, Fast-dLLM specifics --------------------------------------------------


@pytest.mark.parametrize("cls", SAMPLERS)
def test_record_step_stats_off(tiny_model, prompts, cls):
    r = run(cls, tiny_model, prompts, gen_length=8, **({"block_length": 8} if cls is not DreamSampler else {}),
            record_step_stats=False)
    assert r.step_logps is None and r.step_entropy is None and r.step_all_eos is not None


def test_dream_reveals_floor_of_linear_schedule(tiny_model, prompts):
    r = run(DreamSampler, tiny_model, prompts, gen_length=8, steps=4, alg="maskgit_plus", temperature=0.5)
    t = torch.linspace(1, 1e-3, 5, dtype=torch.float64)
    remaining, expected = 8, []
    for i in range(4):
        k = remaining if i == 3 else math.floor(remaining * (1 - float(t[i + 1]) / float(t[i])))
        expected.append(k)
        remaining -= k
    counts = [int((r.unmask_step[0] == i).sum()) for i in range(r.num_steps)]
    assert counts == [k for k in expected][: r.num_steps] and sum(counts) == 8
    assert r.block_length == 8 and r.num_blocks == 1


@pytest.mark.parametrize("alg", ["origin", "topk_margin", "entropy"])
def test_dream_algorithms_complete(tiny_model, prompts, alg):
    r = run(DreamSampler, tiny_model, prompts, gen_length=8, steps=4, alg=alg, temperature=0.7, top_k=20, alg_temp=0.3)
    assert bool((r.unmask_step >= 0).all()) and r.num_steps <= 4
    assert not bool((r.completion_ids == tiny_model.mask_token_id).any())


def test_fast_dllm_cache_matches_no_cache_when_exact(tiny_model, prompts):
    # A threshold this low commits a whole block in its first step, which the cache always computes
    # from a full pass: the cached and uncached rollouts must agree exactly.
    cfg = dict(gen_length=16, block_length=4, threshold=1e-9, temperature=1.0)
    a = run(FastDLLMSampler, tiny_model, prompts, cache="prefix", **cfg)
    b = run(FastDLLMSampler, tiny_model, prompts, cache="none", **cfg)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.nfe == b.nfe == 4
    assert a.num_steps == 4


def test_fast_dllm_cache_first_step_of_block_is_exact(tiny_model, prompts):
    cfg = dict(gen_length=16, block_length=8, threshold=0.05, temperature=0.0)
    a = run(FastDLLMSampler, tiny_model, prompts, cache="prefix", **cfg)
    b = run(FastDLLMSampler, tiny_model, prompts, cache="none", **cfg)
    assert torch.equal(a.unmask_step == 0, b.unmask_step == 0)
    assert torch.equal(a.completion_ids[a.unmask_step == 0], b.completion_ids[b.unmask_step == 0])


def test_fast_dllm_commits_at_least_one_token_per_row_step(tiny_model, prompts):
    r = run(FastDLLMSampler, tiny_model, prompts, gen_length=16, block_length=8, threshold=0.99, temperature=1.0)
    for row in r.unmask_step:
        used = torch.unique(row)
        assert torch.equal(used, torch.arange(int(row.max()) + 1))  # no idle steps per row
    assert r.nfe <= 16


def test_llada_cfg_runs_with_one_forward_per_step(tiny_model, prompts):
    r = run(LLaDASampler, tiny_model, prompts, gen_length=8, block_length=8, steps=4, cfg_scale=1.5)
    assert r.nfe == 4 and not bool((r.completion_ids == tiny_model.mask_token_id).any())


def test_block_length_must_divide_gen_length():
    with pytest.raises(ValueError, match="must divide"):
        LLaDASampler.Config(gen_length=10, block_length=4)


def test_mask_in_prompt_is_a_user_error(tiny_model):
    from remask.errors import RemaskError

    bad = make_prompts(tiny_model, ("1+1=",), group_size=1)
    ids = bad.prompt_ids.clone()
    ids[0, 0] = tiny_model.mask_token_id
    import dataclasses

    with pytest.raises(RemaskError, match="mask token"):
        run(LLaDASampler, tiny_model, dataclasses.replace(bad, prompt_ids=ids))


@pytest.mark.parametrize("cls", SAMPLERS)
def test_contract(cls, tiny_model):
    assert check_component(cls) == []
    assert check_component(cls, model=tiny_model) == []


class PromptSensitiveModel(PeakedModel):
    """Logits that depend on whether the prompt is visible: a check of the CFG combination."""

    def forward(self, input_ids, attention_mask=None, **kw) -> ModelOutput:
        self.nfe += 1
        b, s = input_ids.shape
        visible = (input_ids != self.mask_token_id).float().sum(-1, keepdim=True)  # [B, 1]
        base = torch.arange(self.tokenizer.vocab_size, dtype=torch.float32) / 10.0  # [V]
        logits = base.view(1, 1, -1) * visible.view(b, 1, 1) / s
        return ModelOutput(logits=logits.expand(b, s, -1).clone())


def test_llada_cfg_combines_conditional_and_unconditional_logits():
    from remask.testing import fake_prompts

    prompts = fake_prompts(("12+3=",), group_size=1)
    model = PromptSensitiveModel(prompts.prompt_length, 8)
    sampler = LLaDASampler(LLaDASampler.Config(gen_length=4, block_length=4, steps=4, cfg_scale=2.0))
    x = torch.cat([prompts.prompt_ids, torch.full((1, 4), 2)], 1)
    attn = torch.ones_like(x, dtype=torch.bool)
    p = prompts.prompt_length
    got = sampler._logits(model, x, attn, prompts.attention_mask, slice(p, None))  # the completion's logits
    cond = model.forward(x).logits[:, p:]
    uncond_x = x.clone()
    uncond_x[:, :p] = 2
    unc = model.forward(uncond_x).logits[:, p:]
    torch.testing.assert_close(got, unc + 3.0 * (cond - unc))
    assert not torch.allclose(cond, unc)


def test_random_remasking_follows_schedule_but_not_confidence(tiny_model, prompts):
    a = run(LLaDASampler, tiny_model, prompts, seed=1, gen_length=8, block_length=8, steps=4,
            remasking="random", temperature=0.0)
    b = run(LLaDASampler, tiny_model, prompts, seed=2, gen_length=8, block_length=8, steps=4,
            remasking="random", temperature=0.0)
    for r in (a, b):
        counts = torch.stack([(r.unmask_step == k).sum(-1) for k in range(4)], -1)
        assert bool((counts == 2).all())
    assert not torch.equal(a.unmask_step, b.unmask_step)  # the order comes from the generator


def test_bad_block_length_is_a_config_error_naming_the_field(tmp_path):
    from remask.config import parse_config
    from remask.errors import ConfigError

    raw = {"model": {"name": "tiny"}, "task": {"name": "x"}, "rewards": [{"name": "y"}],
           "advantage": {"name": "z"}, "objective": {"name": "w"},
           "sampler": {"name": "llada", "gen_length": 10, "block_length": 4}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert any(line.startswith("<config>: sampler") and "must divide" in line for line in info.value.problems)


def test_sampling_runs_in_eval_mode_and_restores_training_mode(tiny_model, prompts):
    from remask.config import LoraSettings

    m = copy.deepcopy(tiny_model)
    m.apply_lora(LoraSettings(r=2, dropout=0.5))
    with torch.no_grad():
        for n, p in m.module.named_parameters():
            if "lora_B" in n:
                p.add_(0.3)
    m.eval()
    expected = run(LLaDASampler, m, prompts, seed=3, gen_length=8, block_length=8, steps=4, temperature=1.0)
    m.train()
    got = run(LLaDASampler, m, prompts, seed=3, gen_length=8, block_length=8, steps=4, temperature=1.0)
    assert m.module.training  # restored
    assert torch.equal(got.completion_ids, expected.completion_ids)
    torch.testing.assert_close(got.step_logps, expected.step_logps)


@pytest.mark.parametrize("cls,cfg", [
    (LLaDASampler, dict(gen_length=16, block_length=8, steps=8, temperature=1.0)),
    (FastDLLMSampler, dict(gen_length=16, block_length=8, threshold=0.03, temperature=1.0, cache="none")),
    (FastDLLMSampler, dict(gen_length=16, block_length=8, threshold=1e-9, temperature=1.0, cache="prefix")),
    (DreamSampler, dict(gen_length=16, steps=6, temperature=1.0, alg="maskgit_plus")),
])
def test_greedy_ids_are_one_step_completions_of_rebuilt_states(tiny_model, prompts, cls, cfg):
    r = run(cls, tiny_model, prompts, seed=2, record_greedy_ids=True, **cfg)
    off = run(cls, tiny_model, prompts, seed=2, **cfg)
    assert off.greedy_ids is None and torch.equal(off.completion_ids, r.completion_ids)
    assert r.greedy_ids.shape == (4, r.num_steps, 16)
    m = tiny_model.mask_token_id
    attn = torch.cat([r.prompts.attention_mask, torch.ones_like(r.completion_mask)], 1)
    for k in range(r.num_steps):
        xk, _ = state_before_step(r.completion_ids, r.unmask_step, k, m)
        with torch.no_grad():
            logits = tiny_model.logits(torch.cat([r.prompts.prompt_ids, xk], 1), attn)[:, r.prompts.prompt_length:]
        logits[..., m] = float("-inf")
        expected = torch.where(xk == m, logits.argmax(-1), xk)
        assert torch.equal(r.greedy_ids[:, k], expected)
        assert bool((r.greedy_ids[:, k] != m).all())
