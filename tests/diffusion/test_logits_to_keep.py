"""``DiffusionModel.logits(keep=)``: the output layer runs on the kept positions only, with the values
of the full pass (bit-identical on CPU), for every built-in adapter (Dream's logit shift included) and
for a third-party adapter without ``supports_logits_to_keep``; samplers decode identically with it."""

from __future__ import annotations

import pytest
import torch

from remask.testing import FakeModel, FullLogits
from remask_diffusion.dream import DreamModel
from remask_diffusion.llada import LLaDAModel
from remask_diffusion.samplers import DreamSampler, FastDLLMSampler, LLaDASampler

from .checkpoints import write_dream_checkpoint, write_llada_checkpoint
from .conftest import make_prompts


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("keep")
    write_llada_checkpoint(root / "llada")
    write_dream_checkpoint(root / "dream")
    return {"tiny": tiny_model,
            "llada": LLaDAModel(LLaDAModel.Config(path=str(root / "llada"), dtype="float32")),
            "dream": DreamModel(DreamModel.Config(path=str(root / "dream"), dtype="float32"))}


def _batch(model, length=12, seed=0):
    prompts = make_prompts(model, texts=("1+2=", "33+44=", "5="), group_size=1)  # left padding
    g = torch.Generator().manual_seed(seed)
    vocab = model.module.config.vocab_size
    comp = torch.randint(4, min(vocab, 90), (prompts.batch_size, length), generator=g)
    comp[:, length // 2:] = model.mask_token_id
    x = torch.cat([prompts.prompt_ids, comp], 1)
    attn = torch.cat([prompts.attention_mask, torch.ones_like(comp, dtype=torch.bool)], 1)
    return prompts, x, attn


class _Rows:
    """Counts the positions that reach the output layer (``lm_head`` input ``[B, K, H]``)."""

    def __init__(self, model):
        self.seen: list[int] = []
        self.handle = model.module.get_output_embeddings().register_forward_hook(
            lambda mod, inp, out: self.seen.append(inp[0].shape[1]))


@pytest.mark.parametrize("name", ["tiny", "llada", "dream"])
def test_kept_positions_equal_the_full_pass_and_skip_the_output_layer_elsewhere(adapters, name):
    model = adapters[name]
    prompts, x, attn = _batch(model)
    p, s = prompts.prompt_length, x.shape[1]
    assert model.supports_logits_to_keep
    rows = _Rows(model)
    with torch.no_grad():
        full = model.logits(x, attn)  # [B, S, V]
        # the completion, one block, a block at the very start (Dream: position 0 keeps its own output)
        for keep in (slice(p, None), slice(p + 4, p + 8), slice(0, 3), slice(-5, None)):
            got = model.logits(x, attn, keep=keep)
            assert torch.equal(got, full[:, keep]), (name, keep)
    rows.handle.remove()
    assert rows.seen == [s, s - p, 4, 3, 5]


def test_keep_with_a_prefix_cache_and_explicit_positions(adapters):
    """The kept slice indexes the query positions of a cached pass (after the prefix)."""
    from remask.modeling import crop_cache

    model = adapters["llada"]
    prompts, x, attn = _batch(model)
    p = prompts.prompt_length
    with torch.no_grad():
        out = model.forward(x, attn, use_cache=True)
        crop_cache(out.past_key_values, p)
        full = model.forward(x[:, p:], attn, past_key_values=out.past_key_values, use_cache=True).logits  # [B, L, V]
        crop_cache(out.past_key_values, p)
        kept = model.forward(x[:, p:], attn, past_key_values=out.past_key_values, use_cache=True,
                             logits_to_keep=slice(2, 6)).logits
    assert torch.equal(kept, full[:, 2:6])


def test_an_adapter_without_logits_to_keep_gets_a_slice_of_the_full_pass():
    model = FakeModel()
    assert not model.supports_logits_to_keep
    ids = torch.randint(3, 10, (2, 9))
    with torch.no_grad():
        assert torch.equal(model.logits(ids, keep=slice(4, 7)), model.logits(ids)[:, 4:7])


def test_strided_slices_are_refused(adapters):
    model = adapters["tiny"]
    _, x, attn = _batch(model)
    with pytest.raises(ValueError, match="contiguous slice"):
        model.logits(x, attn, keep=slice(0, 8, 2))


@pytest.mark.parametrize("cls, cfg", [
    (LLaDASampler, dict(gen_length=8, block_length=4, steps=8, temperature=1.0, cache="none")),
    (LLaDASampler, dict(gen_length=8, block_length=4, steps=8, temperature=0.0, cache="prefix")),
    (LLaDASampler, dict(gen_length=8, block_length=4, steps=8, temperature=1.0, cache="none", record_greedy_ids=True)),
    (LLaDASampler, dict(gen_length=8, block_length=4, steps=8, temperature=1.0, cfg_scale=1.5)),
    (FastDLLMSampler, dict(gen_length=8, block_length=4, steps=8, temperature=1.0, threshold=0.3, cache="dual")),
    (DreamSampler, dict(gen_length=8, steps=8, temperature=1.0)),
])
def test_rollouts_are_bit_identical_with_and_without_kept_logits(adapters, cls, cfg):
    model = adapters["dream"] if cls is DreamSampler else adapters["llada"]
    prompts = make_prompts(model, texts=("1+2=", "33+44="), group_size=2)
    sampler = cls(cls.Config(**cfg))
    lean = sampler.sample(model, prompts, torch.Generator().manual_seed(3))
    full = sampler.sample(FullLogits(model), prompts, torch.Generator().manual_seed(3))
    for field in ("completion_ids", "unmask_step", "step_logps", "step_entropies", "greedy_ids"):
        a, b = getattr(lean, field, None), getattr(full, field, None)
        assert (a is None) == (b is None), field
        if a is not None:
            assert torch.equal(a, b), field


@pytest.mark.slow  # a subprocess importing transformers: ~6 s
def test_kept_logits_benchmark_runs_tiny_and_finds_identical_rollouts():
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "kept_logits.py"
    out = subprocess.run([sys.executable, str(script), "--tiny"], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "NFE" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["llada, no cache", "llada, prefix cache", "llada, dual cache",
                                                       "fast-dllm 0.9, dual cache"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[-1] == "yes", row  # both variants decode identically
        assert float(cells[5]) >= float(cells[6]) > 0, row  # kept logits never larger than full ones
    no_cache = [c.strip() for c in rows[0].strip("|").split("|")]
    assert float(no_cache[5]) > float(no_cache[6])  # an uncached pass keeps one block of the whole sequence


def test_the_engines_reference_keeps_logits_like_its_policy(adapters):
    """The reference wrapper (a frozen copy here) passes `keep` through to the adapter's output layer."""
    from remask.engine.components import make_reference

    model = adapters["tiny"]
    reference = make_reference(model, lora=False)
    assert reference.supports_logits_to_keep
    prompts, x, attn = _batch(model)
    p = prompts.prompt_length
    rows = _Rows(reference.base)
    with torch.no_grad():
        got = reference.logits(x, attn, keep=slice(p, None))
        want = model.logits(x, attn)[:, p:]
    rows.handle.remove()
    assert torch.equal(got, want) and rows.seen == [x.shape[1] - p]
