"""The built-in tiny model: bidirectional attention, tokenizer, LoRA, saving, deepcopy, KV cache."""

from __future__ import annotations

import copy

import pytest
import torch

from remask.config import LoraSettings
from remask.modeling import ModelLoadError, crop_cache
from remask.testing import check_component
from remask_diffusion.tiny import TinyDiffusionModel, build_char_tokenizer

SMALL = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


def small(**kw) -> TinyDiffusionModel:
    return TinyDiffusionModel(TinyDiffusionModel.Config(**{**SMALL, **kw}))


def test_contract():
    assert check_component(TinyDiffusionModel) == []


def test_registered_under_tiny():
    from remask.registry import get_registry

    assert get_registry().get("model", "tiny") is TinyDiffusionModel


def test_default_size_is_small():
    m = TinyDiffusionModel()
    assert 100_000 < m.num_parameters() < 10_000_000
    assert m.supports_4d_mask and m.supports_kv_cache


def test_attention_is_bidirectional(tiny_model):
    ids = torch.randint(4, 100, (2, 10), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1 - 4) % 96 + 4
    with torch.no_grad():
        a = tiny_model.logits(ids)
        b = tiny_model.logits(changed)
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-4  # a later token changes an earlier position


def test_left_padding_does_not_change_real_positions(tiny_model):
    tok = tiny_model.tokenizer
    ids = torch.tensor([tok("12+7=", add_special_tokens=False).input_ids])
    padded = torch.cat([torch.full((1, 3), tiny_model.pad_token_id), ids], dim=1)
    mask = padded != tiny_model.pad_token_id
    with torch.no_grad():
        a = tiny_model.logits(ids)
        b = tiny_model.logits(padded, mask)
    torch.testing.assert_close(a, b[:, 3:], atol=1e-5, rtol=1e-5)


def test_nfe_counts_forwards(tiny_model):
    before = tiny_model.nfe
    with torch.no_grad():
        tiny_model.logits(torch.zeros(1, 3, dtype=torch.long))
        tiny_model.logits(torch.zeros(1, 3, dtype=torch.long))
    assert tiny_model.nfe == before + 2


def test_tokenizer_round_trip(tmp_path):
    tok = build_char_tokenizer()
    text = "Q: 12*3=?\nA: 36 <ok>"
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert (tok.pad_token_id, tok.eos_token_id, tok.mask_token_id) == (0, 1, 2)
    assert tok.convert_ids_to_tokens(tok("é", add_special_tokens=False).input_ids) == ["<unk>"]
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False).input_ids == ids
    assert again.mask_token_id == 2 and len(again) == 100


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = small(seed=1)
    after = torch.rand(1)
    b = small(seed=1)
    c = small(seed=2)
    assert torch.equal(expected, after)
    pa, pb, pc = (next(m.module.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_save_and_load_full_weights(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "ckpt")
    again = TinyDiffusionModel(TinyDiffusionModel.Config(path=str(tmp_path / "ckpt")))
    ids = torch.randint(4, 100, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(tiny_model.logits(ids), again.logits(ids))
    assert again.mask_token_id == tiny_model.mask_token_id


def test_lora_all_linear_disable_save_reload_deepcopy(tmp_path):
    m = small(seed=3)
    ids = torch.randint(4, 100, (2, 7))
    with torch.no_grad():
        base = m.logits(ids)
    m.apply_lora(LoraSettings(r=4, alpha=8, target_modules="all-linear"))
    assert m.has_adapter
    lora_names = [n for n, _ in m.module.named_parameters() if "lora_A" in n]
    assert any("q_proj" in n for n in lora_names) and any("down_proj" in n for n in lora_names)
    assert not any("lm_head" in n for n in lora_names)
    with torch.no_grad():
        for n, p in m.module.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
        policy = m.logits(ids)
        with m.disable_adapter():
            ref = m.logits(ids)
    torch.testing.assert_close(ref, base)
    assert (policy - base).abs().max() > 1e-3
    m.save_pretrained(tmp_path / "adapter")
    again = TinyDiffusionModel(TinyDiffusionModel.Config(path=str(tmp_path / "adapter")))
    assert again.has_adapter
    with torch.no_grad():
        torch.testing.assert_close(again.logits(ids), policy)
        with again.disable_adapter():
            torch.testing.assert_close(again.logits(ids), base)
    frozen = copy.deepcopy(again)
    with torch.no_grad():
        for p in again.module.parameters():
            p.add_(1.0)
        torch.testing.assert_close(frozen.logits(ids), policy)
    assert frozen.tokenizer is again.tokenizer


def test_lora_twice_is_refused():
    m = small()
    m.apply_lora(LoraSettings(r=2))
    with pytest.raises(Exception, match="twice"):
        m.apply_lora(LoraSettings(r=2))


def test_gradient_checkpointing_trains(tiny_model):
    m = copy.deepcopy(tiny_model)
    m.enable_gradient_checkpointing()
    m.train()
    loss = m.logits(torch.randint(4, 100, (2, 6))).logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is not None for p in m.module.parameters() if p.requires_grad)


def test_prefix_kv_cache_matches_full_pass(tiny_model):
    ids = torch.randint(4, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, :2] = False
    with torch.no_grad():
        full = tiny_model.forward(ids, mask, use_cache=True)
        cache = crop_cache(full.past_key_values, 7)
        assert cache.get_seq_length() == 7
        tail = tiny_model.forward(ids[:, 7:], mask, past_key_values=cache, use_cache=True)
    torch.testing.assert_close(tail.logits, full.logits[:, 7:], atol=1e-5, rtol=1e-5)


def test_missing_builtin_names_rebuild_command(tmp_path, monkeypatch):
    import remask_diffusion.tiny as tiny_module

    monkeypatch.setattr(tiny_module, "CHECKPOINT_DIR", tmp_path)  # as if the checkpoint were not built
    with pytest.raises(ModelLoadError, match="rebuild"):
        TinyDiffusionModel(TinyDiffusionModel.Config(path="builtin:tiny-arith"))
    with pytest.raises(ModelLoadError, match="unknown built-in"):
        TinyDiffusionModel(TinyDiffusionModel.Config(path="builtin:nope"))


def test_bad_sizes_and_paths_are_user_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="num_heads"):
        small(num_heads=3)
    with pytest.raises(ModelLoadError, match="directory"):
        TinyDiffusionModel(TinyDiffusionModel.Config(path=str(tmp_path / "nothing-here")))


def test_eager_attention_matches_sdpa_with_padding():
    a = small(seed=4)
    b = small(seed=4, attn_implementation="eager")
    ids = torch.randint(4, 100, (2, 8), generator=torch.Generator().manual_seed(5))
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, :3] = False
    with torch.no_grad():
        torch.testing.assert_close(a.logits(ids, mask), b.logits(ids, mask), atol=1e-5, rtol=1e-5)
