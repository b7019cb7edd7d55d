"""Dream (Dream-v0-Base/Instruct-7B) as a native ``transformers`` Qwen2 with the logit shift undone.

Dream's published model is a Qwen2 decoder (same parameter names: ``model.layers.N.self_attn.q_proj``
with biases, ``mlp.gate_proj``..., ``lm_head``) run without the causal mask, and, because it was
adapted from an AR checkpoint, the prediction for position ``i`` is read from the logits at
``i - 1`` (spec algorithms.md §1). This adapter builds a :class:`transformers.Qwen2Config` from
Dream's ``config.json`` and loads the weights into :class:`Qwen2ForCausalLM` directly, so no
remote code runs and the model works on transformers 5.x; the padding mask is passed as a 4-D
bidirectional mask with position ids counted over real tokens (what Dream's own
``diffusion_generate`` does), and ``shift_logits`` undoes the shift in
:meth:`remask.modeling.HFDiffusionModel.forward`.

No prefix KV cache: with the shift, the first position after a cached prefix would need the
prefix's last logits, which a cached pass does not recompute (``supports_kv_cache = False``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from torch import nn

from remask.modeling import HFDiffusionModel, HFModelConfig, ModelLoadError

from .llada import read_checkpoint_config

__all__ = ["DreamModel", "DREAM_MASK_TOKEN_ID", "qwen2_config_from_dream"]

#: Dream-7B's mask token (spec algorithms.md §1, configuration_dream.py)
DREAM_MASK_TOKEN_ID = 151666

_QWEN2_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
    "tie_word_embeddings", "hidden_act", "attention_dropout", "pad_token_id", "bos_token_id", "eos_token_id",
)


def qwen2_config_from_dream(raw: dict[str, Any], attn_implementation: str = "sdpa") -> Any:
    """The :class:`transformers.Qwen2Config` equivalent to a Dream ``config.json``."""
    from transformers import Qwen2Config

    kwargs = {k: raw[k] for k in _QWEN2_FIELDS if k in raw and raw[k] is not None}
    cfg = Qwen2Config(**kwargs, use_sliding_window=False, attn_implementation=attn_implementation)
    if "rope_theta" in raw:
        cfg.rope_theta = float(raw["rope_theta"])
    cfg.mask_token_id = int(raw.get("mask_token_id", DREAM_MASK_TOKEN_ID))
    return cfg


class DreamModel(HFDiffusionModel):
    """Dream-7B checkpoints loaded natively as a bidirectional Qwen2 (mask id 151666, logit shift undone)."""

    name = "dream"
    default_mask_token_id = DREAM_MASK_TOKEN_ID
    shift_logits = True
    supports_kv_cache = False

    class Config(HFModelConfig):
        path: str = Field(
            "Dream-org/Dream-v0-Instruct-7B",
            description="Dream checkpoint: local directory or Hub name (Dream/Qwen2 key names or a remask save_pretrained).",
        )
        dtype: Literal["float32", "bfloat16", "float16"] = Field("bfloat16",
                           description="Parameter dtype (bfloat16 for the 7B checkpoints).")

    @classmethod
    def architecture_from_raw(cls, raw: dict[str, Any], config: Any) -> Any:
        """Dream's ``config.json`` as the Qwen2 config it loads into (the memory planner's input)."""
        if str(raw.get("model_type", "")).lower() == "dream":
            return qwen2_config_from_dream(raw, config.attn_implementation)
        return super().architecture_from_raw(raw, config)

    def load(self, source: str) -> tuple[Any, nn.Module]:
        from transformers import AutoTokenizer, Qwen2ForCausalLM

        cfg = self.config
        raw = read_checkpoint_config(source, cfg.revision)
        common = dict(dtype=self.torch_dtype, revision=cfg.revision, attn_implementation=cfg.attn_implementation)
        kind = str(raw.get("model_type", "")).lower()
        try:
            if kind == "dream":
                module = Qwen2ForCausalLM.from_pretrained(
                    source, config=qwen2_config_from_dream(raw, cfg.attn_implementation), **common
                )
            elif kind == "qwen2":  # written by save_pretrained of this adapter
                module = Qwen2ForCausalLM.from_pretrained(source, **common)
            else:
                raise ModelLoadError(f"model.path: {source} is a {kind!r} checkpoint, not Dream (model_type 'Dream')")
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"model.path: cannot load Dream from {source}: {exc}".splitlines()[0]) from None
        tok = self._tokenizer(source)
        if getattr(module.config, "mask_token_id", None) is None:
            module.config.mask_token_id = int(raw.get("mask_token_id", DREAM_MASK_TOKEN_ID))
        return tok, module

    def _tokenizer(self, source: str) -> Any:
        """Dream's tokenizer is Qwen2's under a remote-code class name; without trust_remote_code
        it is loaded with the stock Qwen2 tokenizer class from the same files."""
        from transformers import AutoTokenizer

        cfg = self.config
        try:
            return AutoTokenizer.from_pretrained(source, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
        except (OSError, ValueError) as first:
            try:
                from transformers import Qwen2Tokenizer

                return Qwen2Tokenizer.from_pretrained(source, revision=cfg.revision)
            except (OSError, ValueError):
                raise ModelLoadError(f"model.path: cannot load Dream's tokenizer from {source}: {first}".splitlines()[0]) from None
