"""LLaDA (LLaDA-8B-Base/Instruct, LLaDA-1.5) as a native ``transformers`` Llama.

LLaDA's published remote code (an OLMo fork, ``modeling_llada.py``) breaks on transformers 5.x
(ML-GSAI/LLaDA#130) and takes no attention mask (ML-GSAI/LLaDA#90). Its ``block_type: llama``
architecture is exactly a Llama decoder without the causal mask: RMSNorm before attention and
MLP, non-interleaved RoPE, separate ``q/k/v_proj`` and ``attn_out``, SwiGLU with ``ff_proj`` as
the gate, ``up_proj`` and ``ff_out`` as the down projection, and an untied output head
``transformer.ff_out``. So this adapter reads LLaDA's ``config.json``, builds the matching
:class:`transformers.LlamaConfig`, and loads the checkpoint into :class:`LlamaForCausalLM` through
a key mapping (:data:`LLADA_KEY_MAPPING`). No remote code runs; the model gets 4-D masks, padding
masks and the prefix KV cache from :class:`remask.modeling.HFDiffusionModel`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from torch import nn

from remask.modeling import HFDiffusionModel, HFModelConfig, ModelLoadError

__all__ = ["LLaDAModel", "LLADA_KEY_MAPPING", "llama_config_from_llada", "LLADA_MASK_TOKEN_ID"]

#: LLaDA-8B-Instruct's mask token (spec algorithms.md §1)
LLADA_MASK_TOKEN_ID = 126336

#: LLaDA checkpoint key (regex) -> transformers Llama key
LLADA_KEY_MAPPING: dict[str, str] = {
    r"^model\.transformer\.wte\.": "model.embed_tokens.",
    r"^model\.transformer\.ln_f\.": "model.norm.",
    r"^model\.transformer\.ff_out\.": "lm_head.",
    r"^model\.transformer\.blocks\.(\d+)\.attn_norm\.": r"model.layers.\1.input_layernorm.",
    r"^model\.transformer\.blocks\.(\d+)\.ff_norm\.": r"model.layers.\1.post_attention_layernorm.",
    r"^model\.transformer\.blocks\.(\d+)\.q_proj\.": r"model.layers.\1.self_attn.q_proj.",
    r"^model\.transformer\.blocks\.(\d+)\.k_proj\.": r"model.layers.\1.self_attn.k_proj.",
    r"^model\.transformer\.blocks\.(\d+)\.v_proj\.": r"model.layers.\1.self_attn.v_proj.",
    r"^model\.transformer\.blocks\.(\d+)\.attn_out\.": r"model.layers.\1.self_attn.o_proj.",
    r"^model\.transformer\.blocks\.(\d+)\.ff_proj\.": r"model.layers.\1.mlp.gate_proj.",
    r"^model\.transformer\.blocks\.(\d+)\.up_proj\.": r"model.layers.\1.mlp.up_proj.",
    r"^model\.transformer\.blocks\.(\d+)\.ff_out\.": r"model.layers.\1.mlp.down_proj.",
}

#: LLaDA config field -> the only value this adapter supports (anything else is refused by name)
_REQUIRED_LLADA = {
    "block_type": "llama",
    "layer_norm_type": "rms",
    "activation_type": "silu",
    "alibi": False,
    "rope": True,
    "attention_layer_norm": False,
    "scale_logits": False,
    "input_emb_norm": False,
    "clip_qkv": None,
}


def llama_config_from_llada(raw: dict[str, Any], attn_implementation: str = "sdpa") -> Any:
    """The :class:`transformers.LlamaConfig` equivalent to a LLaDA ``config.json``."""
    from transformers import LlamaConfig

    for key, want in _REQUIRED_LLADA.items():
        if key in raw and raw[key] != want and not (want is None and raw[key] in (None, 0)):
            raise ModelLoadError(
                f"model.path: LLaDA config has {key}={raw[key]!r}; the llada adapter supports only {key}={want!r}"
            )
    d_model, n_heads = int(raw["d_model"]), int(raw["n_heads"])
    n_kv = raw.get("n_kv_heads") or (1 if raw.get("multi_query_attention") else n_heads)
    hidden = raw.get("mlp_hidden_size") or int(raw.get("mlp_ratio", 4)) * d_model
    bias = bool(raw.get("include_bias", False))
    cfg = LlamaConfig(
        vocab_size=int(raw.get("embedding_size") or raw["vocab_size"]),
        hidden_size=d_model,
        intermediate_size=int(hidden),
        num_hidden_layers=int(raw["n_layers"]),
        num_attention_heads=n_heads,
        num_key_value_heads=int(n_kv),
        max_position_embeddings=int(raw.get("max_sequence_length", 4096)),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
        rope_theta=float(raw.get("rope_theta", 10000.0)),
        tie_word_embeddings=bool(raw.get("weight_tying", False)),
        attention_bias=bool(raw.get("include_qkv_bias", False)) or bias,
        mlp_bias=bias,
        hidden_act="silu",
        pad_token_id=raw.get("pad_token_id"),
        eos_token_id=raw.get("eos_token_id"),
        bos_token_id=raw.get("bos_token_id"),
        attn_implementation=attn_implementation,
    )
    cfg.rope_theta = float(raw.get("rope_theta", 10000.0))
    cfg.mask_token_id = int(raw.get("mask_token_id", LLADA_MASK_TOKEN_ID))
    return cfg


def read_checkpoint_config(source: str, revision: str | None = None) -> dict[str, Any]:
    """``config.json`` of a local directory or a Hub repository (cache or download)."""
    local = Path(source) / "config.json"
    if local.is_file():
        return json.loads(local.read_text())
    try:
        from transformers.utils import cached_file

        path = cached_file(source, "config.json", revision=revision)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model.path: cannot find config.json for {source!r}: {exc}".splitlines()[0]) from None
    if path is None:
        raise ModelLoadError(f"model.path: {source!r} has no config.json")
    return json.loads(Path(path).read_text())


class LLaDAModel(HFDiffusionModel):
    """LLaDA-8B / LLaDA-1.5 checkpoints loaded natively as a bidirectional Llama (mask id 126336)."""

    name = "llada"
    default_mask_token_id = LLADA_MASK_TOKEN_ID

    class Config(HFModelConfig):
        path: str = Field(
            "GSAI-ML/LLaDA-8B-Instruct",
            description="LLaDA checkpoint: local directory or Hub name (LLaDA key names or a remask save_pretrained).",
        )
        dtype: Literal["float32", "bfloat16", "float16"] = Field("bfloat16",
                           description="Parameter dtype (bfloat16 for the 8B checkpoints).")

    @classmethod
    def architecture_from_raw(cls, raw: dict[str, Any], config: Any) -> Any:
        """LLaDA's ``config.json`` as the Llama config it loads into (the memory planner's input)."""
        if raw.get("model_type") == "llada":
            return llama_config_from_llada(raw, config.attn_implementation)
        return super().architecture_from_raw(raw, config)

    def load(self, source: str) -> tuple[Any, nn.Module]:
        from transformers import AutoTokenizer, LlamaForCausalLM

        cfg = self.config
        raw = read_checkpoint_config(source, cfg.revision)
        common = dict(dtype=self.torch_dtype, revision=cfg.revision, attn_implementation=cfg.attn_implementation)
        try:
            if raw.get("model_type") == "llada":
                llama = llama_config_from_llada(raw, cfg.attn_implementation)
                module = LlamaForCausalLM.from_pretrained(source, config=llama, key_mapping=LLADA_KEY_MAPPING, **common)
            elif raw.get("model_type") == "llama":  # written by save_pretrained of this adapter
                # transformers 5 saves with the checkpoint's original (LLaDA) key names again
                module = LlamaForCausalLM.from_pretrained(source, key_mapping=LLADA_KEY_MAPPING, **common)
            else:
                raise ModelLoadError(
                    f"model.path: {source} is a {raw.get('model_type')!r} checkpoint, not LLaDA (model_type 'llada')"
                )
            tok = AutoTokenizer.from_pretrained(source, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"model.path: cannot load LLaDA from {source}: {exc}".splitlines()[0]) from None
        if getattr(module.config, "mask_token_id", None) is None:
            module.config.mask_token_id = int(raw.get("mask_token_id", LLADA_MASK_TOKEN_ID))
        return tok, module
