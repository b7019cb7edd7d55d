"""Vocabulary-lean sampling steps: upstream compatibility (`noise: llada`, `ties: upstream`) and
agreement of the lean float32 forms with the float64 forms they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from remask_diffusion.llada import LLaDAModel
from remask_diffusion.sampling import propose
from remask_diffusion.samplers import FastDLLMSampler, LLaDASampler

from .checkpoints import write_llada_checkpoint
from .conftest import make_prompts


@pytest.fixture(scope="module")
def llada_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("llada-lean")
    write_llada_checkpoint(path, seed=3)
    return path


def llada_model(path, dtype: str) -> LLaDAModel:
    """The tiny LLaDA-format model; its head gives the mask token a logit of −10⁴, as a trained
    LLaDA does in effect, so that upstream (which does not exclude the mask) never proposes it."""
    model = LLaDAModel(LLaDAModel.Config(path=str(path), dtype=dtype))
    mask = model.mask_token_id

    def suppress_mask(module, args, out):
        out[..., mask] = -1e4
        return out

    model.module.lm_head.register_forward_hook(suppress_mask)
    return model


def reference_generate(model, prompt, *, steps, gen_length, block_length, temperature, seed,
                       confidence_dtype=None, pick="topk"):
    """LLaDA's ``generate`` (semi-AR low-confidence remasking), written out step by step from the
    paper's Algorithm and the public reference: noise from the global RNG with the whole sequence's
    shape in float64, ``exp(ℓ) / (−log u)^τ``, softmax confidence in the model dtype
    (``confidence_dtype=None``) and ``torch.topk`` per row. ``confidence_dtype=float64`` with
    ``pick='stable'`` is remask's previous default instead. Returns ``x`` ``[B, P+L]``."""
    torch.manual_seed(seed)
    mask_id = model.mask_token_id
    b, p = prompt.shape
    x = torch.cat([prompt, torch.full((b, gen_length), mask_id, dtype=torch.long)], dim=1)
    n_blocks = gen_length // block_length
    per_block = steps // n_blocks
    with torch.no_grad():
        for nb in range(n_blocks):
            lo, hi = p + nb * block_length, p + (nb + 1) * block_length
            n = (x[:, lo:hi] == mask_id).sum(-1, keepdim=True)  # [B, 1]
            k_table = n // per_block + (torch.arange(per_block) < n % per_block).long()  # [B, S]
            for i in range(per_block):
                mask_index = x == mask_id
                logits = model.logits(x)  # [B, S, V] model dtype
                if temperature > 0:
                    l64 = logits.to(torch.float64)
                    noise = torch.rand_like(l64, dtype=torch.float64)
                    noisy = l64.exp() / (-torch.log(noise)) ** temperature
                else:
                    noisy = logits
                x0 = noisy.argmax(-1)
                probs = F.softmax(logits if confidence_dtype is None else logits.to(confidence_dtype), dim=-1)
                x0_p = probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
                x0_p[:, hi:] = float("-inf")
                x0 = torch.where(mask_index, x0, x)
                confidence = torch.where(mask_index, x0_p, torch.full_like(x0_p, float("-inf")))
                transfer = torch.zeros_like(x0, dtype=torch.bool)
                for j in range(b):
                    k = int(k_table[j, i])
                    if pick == "topk":
                        idx = torch.topk(confidence[j], k=k).indices
                    else:
                        idx = torch.argsort(confidence[j], descending=True, stable=True)[:k]
                    transfer[j, idx] = True
                x[transfer] = x0[transfer]
    return x


CASES = [
    dict(steps=16, gen_length=16, block_length=8, temperature=0.0),
    dict(steps=8, gen_length=16, block_length=4, temperature=1.0),
    dict(steps=16, gen_length=16, block_length=16, temperature=0.7),
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES)
def test_noise_llada_ties_upstream_reproduce_llada_generate(llada_path, dtype, case):
    model = llada_model(llada_path, dtype)
    prompts = make_prompts(model, texts=("12+7=", "33+4="), group_size=2)  # equal lengths: no padding
    for seed in (0, 1, 2):
        ref = reference_generate(model, prompts.prompt_ids.clone(), seed=seed, **case)
        sampler = LLaDASampler(LLaDASampler.Config(noise="llada", ties="upstream", **case))
        r = sampler.sample(model, prompts, torch.Generator().manual_seed(seed))
        assert torch.equal(r.completion_ids, ref[:, prompts.prompt_length:]), (dtype, case, seed)


def test_default_lean_path_equals_previous_float64_path_in_float32(llada_path):
    # remask's previous default: float64 softmax confidence, stable lower-index ties. At τ = 0 no
    # noise is involved, so the float32 form must pick the same tokens in the same order.
    model = llada_model(llada_path, "float32")
    prompts = make_prompts(model, texts=("12+7=", "33+4="), group_size=2)
    case = dict(steps=16, gen_length=16, block_length=8, temperature=0.0)
    ref = reference_generate(model, prompts.prompt_ids.clone(), seed=0, confidence_dtype=torch.float64,
                             pick="stable", **case)
    r = LLaDASampler(LLaDASampler.Config(**case)).sample(model, prompts, torch.Generator().manual_seed(0))
    assert torch.equal(r.completion_ids, ref[:, prompts.prompt_length:])


def test_propose_matches_the_float64_forms():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 300, generator=g) * 4  # [B, N, V]
    current = torch.full((3, 5), 7)
    masked = torch.rand(3, 5, generator=g) < 0.7
    mask_id = 7
    logits[0, 0, mask_id] = 100.0  # the mask token would win: it must be excluded by index
    prop = propose(logits, current, masked, temperature=0.0, noise="gumbel", generator=None, mask_token_id=mask_id)
    old = logits.clone()
    old[..., mask_id] = float("-inf")
    want_ids = torch.where(masked, old.argmax(-1), current)
    assert torch.equal(prop.ids, want_ids)
    p64 = torch.softmax(logits.double(), -1).gather(-1, want_ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(prop.confidence[masked].double(), p64[masked], atol=1e-6, rtol=1e-5)
    assert bool(torch.isinf(prop.confidence[~masked]).all())
    logp = torch.log_softmax(logits.float(), -1).gather(-1, want_ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(prop.logp[masked], logp[masked])
    commit = masked & (torch.rand(3, 5, generator=g) < 0.5)
    lp = torch.log_softmax(logits.float(), -1)
    ent = -(lp.exp() * lp).sum(-1)
    got = prop.entropy(commit)
    torch.testing.assert_close(got[commit], ent[commit], atol=1e-5, rtol=1e-5)
    assert bool((got[~commit] == 0).all())
    assert torch.equal(logits[0, 0, mask_id], torch.tensor(100.0))  # the caller's logits are untouched


def test_float32_gumbel_samples_the_tempered_softmax():
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0, 0.5]]]).expand(1, 4000, 5).contiguous()  # [1, N, V]
    current = torch.full((1, 4000), 3)
    masked = torch.ones(1, 4000, dtype=torch.bool)
    tau = 0.8
    prop = propose(logits, current, masked, temperature=tau, noise="gumbel",
                   generator=torch.Generator().manual_seed(0), mask_token_id=3)
    freq = torch.bincount(prop.ids.flatten(), minlength=5).double() / 4000
    want = logits[0, 0].double().clone()
    want[3] = float("-inf")
    want = torch.softmax(want / tau, -1)
    assert freq[3] == 0
    assert float((freq - want).abs().max()) < 0.03  # 4000 draws: std of each frequency < 0.008


def test_rl_safety_cap_limits_tokens_per_step(tiny_model, prompts):
    # threshold 1e-9 commits a whole block at once; a cap of 2 must spread it over >= 4 steps
    cfg = dict(gen_length=16, block_length=8, threshold=1e-9, temperature=1.0, cache="none")
    free = FastDLLMSampler(FastDLLMSampler.Config(**cfg)).sample(tiny_model, prompts, torch.Generator().manual_seed(0))
    capped = FastDLLMSampler(FastDLLMSampler.Config(max_tokens_per_step=2, **cfg)).sample(
        tiny_model, prompts, torch.Generator().manual_seed(0))
    assert free.num_steps == 2
    per_step = torch.stack([(capped.unmask_step == k).sum(-1) for k in range(capped.num_steps)], 1)  # [B, T]
    assert int(per_step.max()) <= 2 and capped.num_steps == 8 and capped.nfe == 8


@pytest.mark.parametrize("chunk", [7, 16, 1024])
def test_two_level_inverse_cdf_equals_the_full_float64_cumsum(chunk):
    from remask_diffusion.sampling import inverse_cdf_sample

    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(2000, 50, generator=g) * 3, -1)
    probs[probs < 0.01] = 0.0  # zero-mass tokens inside and at the ends of slices
    u = torch.rand(2000, generator=g)
    cdf = probs.double().cumsum(-1)
    want = torch.searchsorted(cdf, (u.double() * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    got = inverse_cdf_sample(probs, u, chunk=chunk)
    assert torch.equal(got, want.clamp_max(49))
    assert bool((probs.gather(-1, got.unsqueeze(-1)) > 0).all())
