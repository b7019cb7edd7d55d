"""Tiny random-weight checkpoints in the published LLaDA and Dream formats, written to a directory.

The key names and config fields follow the released checkpoints (LLaDA: ``model.transformer.blocks.N
.q_proj/attn_out/ff_proj/up_proj/ff_out``, ``config.json`` with ``d_model``/``n_heads``...; Dream:
Qwen2 names, ``model_type: Dream`` and an ``auto_map`` to its remote code). The character tokenizer
of the tiny model stands in for the real tokenizers; the mask id is set in the config.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from remask_diffusion.tiny import build_char_tokenizer

LLADA = dict(d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=48, rope_theta=500000.0,
             rms_norm_eps=1e-5)
DREAM = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
             intermediate_size=48, rope_theta=10000.0, rms_norm_eps=1e-6)


def _randn(g: torch.Generator, *shape: int, scale: float = 0.2) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


def write_llada_checkpoint(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A LLaDA-format checkpoint (``block_type: llama``, untied head). Returns its state dict."""
    path.mkdir(parents=True, exist_ok=True)
    tok = build_char_tokenizer()
    v, c = len(tok), LLADA
    d, h, kv, m = c["d_model"], c["n_heads"], c["n_kv_heads"], c["mlp_hidden_size"]
    hd = d // h
    g = torch.Generator().manual_seed(seed)
    sd = {"model.transformer.wte.weight": _randn(g, v, d, scale=1.0)}
    for i in range(c["n_layers"]):
        pre = f"model.transformer.blocks.{i}."
        sd[pre + "attn_norm.weight"] = 1 + _randn(g, d, scale=0.1)
        sd[pre + "ff_norm.weight"] = 1 + _randn(g, d, scale=0.1)
        sd[pre + "q_proj.weight"] = _randn(g, d, d)
        sd[pre + "k_proj.weight"] = _randn(g, kv * hd, d)
        sd[pre + "v_proj.weight"] = _randn(g, kv * hd, d)
        sd[pre + "attn_out.weight"] = _randn(g, d, d)
        sd[pre + "ff_proj.weight"] = _randn(g, m, d)
        sd[pre + "up_proj.weight"] = _randn(g, m, d)
        sd[pre + "ff_out.weight"] = _randn(g, d, m)
    sd["model.transformer.ln_f.weight"] = 1 + _randn(g, d, scale=0.1)
    sd["model.transformer.ff_out.weight"] = _randn(g, v, d)
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "model_type": "llada", "architectures": ["LLaDAModelLM"],
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                     "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
        **c, "mlp_ratio": 4, "vocab_size": v, "embedding_size": v, "max_sequence_length": 256,
        "weight_tying": False, "block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu",
        "alibi": False, "rope": True, "include_bias": False, "include_qkv_bias": False,
        "attention_layer_norm": False, "scale_logits": False, "input_emb_norm": False,
        "mask_token_id": tok.mask_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.eos_token_id,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    tok.save_pretrained(str(path))
    return sd


def llada_reference_logits(sd: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """LLaDA's forward written from its description (no padding): the check on the native loader."""
    c = LLADA
    d, h, kv = c["d_model"], c["n_heads"], c["n_kv_heads"]
    hd, (b, s) = d // h, ids.shape
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    freqs = torch.outer(torch.arange(s, dtype=torch.float32), inv)
    ang = torch.cat([freqs, freqs], -1)
    sin, cos = ang.sin(), ang.cos()

    def rope(t):  # [B, heads, S, hd]; LLaDA rotates halves: (x1, x2) -> (-x2, x1)
        t1, t2 = t[..., : hd // 2], t[..., hd // 2:]
        return t * cos + torch.cat([-t2, t1], -1) * sin

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c["rms_norm_eps"]))

    x = sd["model.transformer.wte.weight"][ids]
    for i in range(c["n_layers"]):
        p = lambda n: sd[f"model.transformer.blocks.{i}.{n}.weight"]  # noqa: E731
        y = rms(x, p("attn_norm"))
        q = (y @ p("q_proj").T).view(b, s, h, hd).transpose(1, 2)
        k = (y @ p("k_proj").T).view(b, s, kv, hd).transpose(1, 2).repeat_interleave(h // kv, 1)
        v = (y @ p("v_proj").T).view(b, s, kv, hd).transpose(1, 2).repeat_interleave(h // kv, 1)
        att = torch.softmax(rope(q) @ rope(k).transpose(-1, -2) / hd ** 0.5, -1) @ v  # no causal mask
        x = x + att.transpose(1, 2).reshape(b, s, d) @ p("attn_out").T
        y = rms(x, p("ff_norm"))
        x = x + (torch.nn.functional.silu(y @ p("ff_proj").T) * (y @ p("up_proj").T)) @ p("ff_out").T
    x = rms(x, sd["model.transformer.ln_f.weight"])
    return x @ sd["model.transformer.ff_out.weight"].T


def write_dream_checkpoint(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A Dream-format checkpoint (Qwen2 names with q/k/v biases, ``model_type: Dream``)."""
    path.mkdir(parents=True, exist_ok=True)
    tok = build_char_tokenizer()
    v, c = len(tok), DREAM
    d, h, kv, m = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["intermediate_size"]
    hd = d // h
    g = torch.Generator().manual_seed(seed)
    sd = {"model.embed_tokens.weight": _randn(g, v, d, scale=1.0)}
    for i in range(c["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        sd[pre + "input_layernorm.weight"] = 1 + _randn(g, d, scale=0.1)
        sd[pre + "post_attention_layernorm.weight"] = 1 + _randn(g, d, scale=0.1)
        for name, rows in (("q_proj", d), ("k_proj", kv * hd), ("v_proj", kv * hd)):
            sd[pre + f"self_attn.{name}.weight"] = _randn(g, rows, d)
            sd[pre + f"self_attn.{name}.bias"] = _randn(g, rows, scale=0.05)
        sd[pre + "self_attn.o_proj.weight"] = _randn(g, d, d)
        sd[pre + "mlp.gate_proj.weight"] = _randn(g, m, d)
        sd[pre + "mlp.up_proj.weight"] = _randn(g, m, d)
        sd[pre + "mlp.down_proj.weight"] = _randn(g, d, m)
    sd["model.norm.weight"] = 1 + _randn(g, d, scale=0.1)
    sd["lm_head.weight"] = _randn(g, v, d)
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "model_type": "Dream", "architectures": ["DreamModel"],
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        **c, "vocab_size": v, "max_position_embeddings": 256, "tie_word_embeddings": False, "hidden_act": "silu",
        "mask_token_id": tok.mask_token_id, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
        "bos_token_id": None, "rope_scaling": None, "use_sliding_window": False,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    tok.save_pretrained(str(path))
    return sd
