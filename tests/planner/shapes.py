"""Random-weight checkpoints of the built-in adapters' architectures, written to a directory.

``write_llada_shaped`` writes what the ``llada`` adapter's own ``save_pretrained`` writes (a Llama
``config.json`` with ``mask_token_id``, safetensors and the character tokenizer), so any width and
vocabulary can be tested without LLaDA's published key names. ``write_dream_shaped`` writes a Qwen2
checkpoint the ``dream`` adapter loads the same way.
"""

from __future__ import annotations

from pathlib import Path

import torch

from remask_diffusion.tiny import build_char_tokenizer


def _save(module, path: Path, tok) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    module.config.mask_token_id = tok.mask_token_id
    module.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def write_llada_shaped(path: Path, *, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 4,
                       intermediate: int = 48, seed: int = 0) -> Path:
    """A LLaDA-shaped (untied head, SwiGLU, RMSNorm) checkpoint the ``llada`` adapter loads."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_char_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=4096, tie_word_embeddings=False, rope_theta=500000.0,
                      pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = LlamaForCausalLM(cfg)
    return _save(module, path, tok)


def write_dream_shaped(path: Path, *, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                       intermediate: int = 48, seed: int = 0) -> Path:
    """A Dream-shaped (Qwen2: q/k/v biases) checkpoint the ``dream`` adapter loads."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = build_char_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=4096, tie_word_embeddings=False, use_sliding_window=False,
                      pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = Qwen2ForCausalLM(cfg)
    return _save(module, path, tok)
