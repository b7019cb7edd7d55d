"""LLaDA and Dream adapters on tiny random checkpoints in their published formats (offline)."""

from __future__ import annotations

import copy

import pytest
import torch

from remask.config import LoraSettings
from remask.modeling import ModelLoadError
from remask.testing import check_component
from remask_diffusion.dream import DREAM_MASK_TOKEN_ID, DreamModel, qwen2_config_from_dream
from remask_diffusion.llada import LLADA_MASK_TOKEN_ID, LLaDAModel, llama_config_from_llada
from remask_diffusion.samplers import DreamSampler, FastDLLMSampler, LLaDASampler
from remask_diffusion.tiny import TinyDiffusionModel

from .checkpoints import llada_reference_logits, write_dream_checkpoint, write_llada_checkpoint
from .conftest import make_prompts


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llada")
    return path, write_llada_checkpoint(path)


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("dream")
    return path, write_dream_checkpoint(path)


def llada(path, **kw) -> LLaDAModel:
    return LLaDAModel(LLaDAModel.Config(path=str(path), dtype="float32", **kw))


def dream(path, **kw) -> DreamModel:
    return DreamModel(DreamModel.Config(path=str(path), dtype="float32", **kw))


# -- LLaDA -------------------------------------------------------------------------------------------


def test_llada_native_loader_matches_llada_forward(llada_dir):
    path, sd = llada_dir
    model = llada(path)
    ids = torch.randint(4, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model.logits(ids)
    torch.testing.assert_close(got, llada_reference_logits(sd, ids), atol=2e-4, rtol=2e-4)
    assert model.mask_token_id == 2 and model.eos_token_id == 1
    assert model.supports_4d_mask and model.supports_kv_cache and not model.shift_logits


def test_llada_defaults_and_unsupported_configs():
    base = dict(d_model=8, n_heads=2, n_layers=1, vocab_size=10)
    assert llama_config_from_llada(base).mask_token_id == LLADA_MASK_TOKEN_ID == 126336
    assert LLaDAModel.Config().path == "GSAI-ML/LLaDA-8B-Instruct"
    with pytest.raises(ModelLoadError, match="block_type"):
        llama_config_from_llada({**base, "block_type": "sequential"})
    with pytest.raises(ModelLoadError, match="alibi"):
        llama_config_from_llada({**base, "alibi": True})


def test_llada_contract_and_not_a_llada_checkpoint(llada_dir, dream_dir):
    assert check_component(LLaDAModel, LLaDAModel.Config(path=str(llada_dir[0]), dtype="float32")) == []
    with pytest.raises(ModelLoadError, match="not LLaDA"):
        llada(dream_dir[0])
    with pytest.raises(ModelLoadError, match="config.json"):
        llada("no-such-org/no-such-model-offline")


def test_llada_lora_save_reload_keeps_adapter_and_base(llada_dir, tmp_path):
    path, _ = llada_dir
    model = llada(path)
    ids = torch.randint(4, 100, (2, 6))
    model.apply_lora(LoraSettings(r=2, alpha=4))
    with torch.no_grad():
        for n, p in model.module.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
        policy = model.logits(ids)
        with model.disable_adapter():
            base = model.logits(ids)
    assert (policy - base).abs().max() > 1e-3
    model.save_pretrained(tmp_path / "adapter")
    assert not (tmp_path / "adapter" / "base").exists()  # the base reloads from its own path
    again = LLaDAModel(LLaDAModel.Config(path=str(tmp_path / "adapter"), dtype="float32"))
    with torch.no_grad():
        torch.testing.assert_close(again.logits(ids), policy)
    ref = copy.deepcopy(again)
    with torch.no_grad():
        with ref.disable_adapter():
            torch.testing.assert_close(ref.logits(ids), base)


def test_llada_full_save_reloads_as_llama(llada_dir, tmp_path):
    model = llada(llada_dir[0])
    model.save_pretrained(tmp_path / "full")
    again = llada(tmp_path / "full")
    ids = torch.randint(4, 100, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(again.logits(ids), model.logits(ids))
    assert again.mask_token_id == model.mask_token_id


# -- Dream -------------------------------------------------------------------------------------------


def test_dream_shift_and_bidirectional(dream_dir):
    from transformers import Qwen2ForCausalLM

    path, sd = dream_dir
    model = dream(path)
    raw_cfg = qwen2_config_from_dream(__import__("json").loads((path / "config.json").read_text()))
    raw = Qwen2ForCausalLM(raw_cfg).eval()
    raw.load_state_dict(sd)
    ids = torch.randint(4, 100, (2, 8), generator=torch.Generator().manual_seed(3))
    full = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    with torch.no_grad():
        unshifted = raw(input_ids=ids, attention_mask=full).logits
        got = model.logits(ids)
        changed = ids.clone()
        changed[:, -1] = (changed[:, -1] - 4 + 1) % 96 + 4
        later = model.logits(changed)
    torch.testing.assert_close(got[:, 1:], unshifted[:, :-1], atol=1e-5, rtol=1e-5)  # i read from i-1
    torch.testing.assert_close(got[:, 0], unshifted[:, 0], atol=1e-5, rtol=1e-5)
    assert (got[:, 1] - later[:, 1]).abs().max() > 1e-4  # bidirectional
    assert model.shift_logits and not model.supports_kv_cache


def test_dream_defaults(dream_dir):
    assert qwen2_config_from_dream({"hidden_size": 8, "num_attention_heads": 2}).mask_token_id == 151666
    assert DREAM_MASK_TOKEN_ID == 151666 and DreamModel.Config().path == "Dream-org/Dream-v0-Instruct-7B"
    assert check_component(DreamModel, DreamModel.Config(path=str(dream_dir[0]), dtype="float32")) == []


def test_dream_padding_mask_is_used(dream_dir):
    model = dream(dream_dir[0])
    ids = torch.randint(4, 100, (1, 6))
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), ids], 1)
    with torch.no_grad():
        a = model.logits(ids)
        b = model.logits(padded, padded != 0)
    torch.testing.assert_close(a[:, 1:], b[:, 3:], atol=1e-5, rtol=1e-5)


# -- every sampler on every adapter ----------------------------------------------------------------


@pytest.mark.parametrize("adapter", ["tiny", "llada", "dream"])
@pytest.mark.parametrize("sampler", [LLaDASampler, DreamSampler, FastDLLMSampler])
def test_every_sampler_on_every_adapter(adapter, sampler, llada_dir, dream_dir, tiny_model):
    model = {"tiny": lambda: tiny_model, "llada": lambda: llada(llada_dir[0]), "dream": lambda: dream(dream_dir[0])}[adapter]()
    prompts = make_prompts(model)
    cfg = dict(gen_length=8, temperature=1.0)
    if sampler is not DreamSampler:
        cfg["block_length"] = 4
    r = sampler(sampler.Config(**cfg)).sample(model, prompts, torch.Generator().manual_seed(0))
    assert r.completion_ids.shape == (4, 8) and bool((r.unmask_step >= 0).all())
    assert not bool((r.completion_ids == model.mask_token_id).any())
    assert torch.isfinite(r.step_logps).all() and r.nfe >= 1 and len(r.texts) == 4


def test_tiny_is_distinct_from_real_adapters():
    assert {TinyDiffusionModel.name, LLaDAModel.name, DreamModel.name} == {"tiny", "llada", "dream"}
