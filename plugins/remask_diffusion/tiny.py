"""The built-in tiny masked diffusion LM: a stock ``transformers`` Llama made bidirectional.

No attention is written here. :class:`remask.modeling.HFDiffusionModel` hands the Llama module a
4-D boolean mask that is True over every real key, which turns the causal decoder into a
bidirectional mask predictor (checked by ``tests/diffusion/test_tiny.py``: changing a later token
changes an earlier position's logits). The tokenizer is a real ``PreTrainedTokenizerFast`` built in
code: one token per printable ASCII character and newline, plus ``<pad> <eos> <mask> <unk>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from remask.modeling import HFDiffusionModel, HFModelConfig, ModelLoadError

__all__ = ["TinyDiffusionModel", "build_char_tokenizer", "CHECKPOINT_DIR", "SPECIAL_TOKENS"]

#: where `builtin:<name>` checkpoints of this plugin live
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"

#: special tokens, in id order (ids 0..3)
SPECIAL_TOKENS = ("<pad>", "<eos>", "<mask>", "<unk>")

#: how to rebuild each built-in checkpoint when it is missing
BUILTIN_REBUILD = {
    "tiny-arith": "`remask sft examples/tiny-arith-sft.yaml`",
    "tiny-scan": "`remask sft examples/tiny-scan-sft.yaml`",
    "tiny-step": "`remask sft examples/tiny-step-sft.yaml`",
}


def build_char_tokenizer() -> Any:
    """A character-level ``PreTrainedTokenizerFast``: specials, then ``\\n`` and ASCII 32..126.

    Vocabulary size 100. Unknown characters map to ``<unk>``; decoding concatenates characters.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = ["\n"] + [chr(c) for c in range(32, 127)]
    vocab = {tok: i for i, tok in enumerate(list(SPECIAL_TOKENS) + chars)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one char each
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", mask_token="<mask>", unk_token="<unk>",
        padding_side="left",
    )
    return tok


class TinyDiffusionModel(HFDiffusionModel):
    """Built-in tiny bidirectional masked diffusion transformer (Llama config, character tokenizer)."""

    name = "tiny"

    class Config(HFModelConfig):
        path: str = Field(
            "random",
            description=(
                "'random' for fresh weights of the size below (what `remask sft` trains from scratch), "
                "'builtin:tiny-arith', 'builtin:tiny-scan' or 'builtin:tiny-step' for a shipped checkpoint, or a directory written "
                "by save_pretrained."
            ),
        )
        hidden_size: int = Field(128, ge=8, description="Model width (path: random only).")
        num_layers: int = Field(4, ge=1, description="Transformer layers (path: random only).")
        num_heads: int = Field(4, ge=1, description="Attention heads; must divide hidden_size (path: random only).")
        intermediate_size: int = Field(384, ge=8, description="SwiGLU inner width (path: random only).")
        max_length: int = Field(512, ge=8, description="Maximum prompt + completion length (path: random only).")
        seed: int = Field(0, description="Seed of the random initial weights (path: random only).")

    @classmethod
    def resolve_builtin(cls, name: str) -> Path:
        path = CHECKPOINT_DIR / name
        if not (path / "config.json").is_file():
            how = BUILTIN_REBUILD.get(name)
            if how is None:
                known = ", ".join(sorted(BUILTIN_REBUILD)) or "(none)"
                raise ModelLoadError(f"model.path: unknown built-in checkpoint builtin:{name}; known: {known}")
            raise ModelLoadError(f"model.path: built-in checkpoint builtin:{name} is missing ({path}); rebuild it with {how}")
        return path

    @classmethod
    def architecture_config(cls, config: Any) -> Any:
        """The Llama config of ``path: random`` from the size fields, else the checkpoint's config.json."""
        if config.path == "random":
            return cls._random_config(config, build_char_tokenizer())
        return super().architecture_config(config)

    @staticmethod
    def _random_config(cfg: Any, tok: Any) -> Any:
        from transformers import LlamaConfig

        if cfg.hidden_size % cfg.num_heads:
            raise ModelLoadError(f"model.num_heads: {cfg.num_heads} does not divide model.hidden_size {cfg.hidden_size}")
        llama = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_heads,
            max_position_embeddings=cfg.max_length,
            tie_word_embeddings=True,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=None,
            attn_implementation=cfg.attn_implementation,
        )
        llama.mask_token_id = tok.mask_token_id
        return llama

    def load(self, source: str) -> tuple[Any, nn.Module]:
        from transformers import AutoTokenizer, LlamaForCausalLM

        cfg = self.config
        if source == "random":
            tok = build_char_tokenizer()
            llama = self._random_config(cfg, tok)
            with torch.random.fork_rng(devices=[]):  # seeded weights without touching the global stream
                torch.manual_seed(cfg.seed)
                module = LlamaForCausalLM(llama)
            return tok, module
        if not Path(source).is_dir():
            raise ModelLoadError(f"model.path: {source!r} is neither 'random', builtin:<name>, nor a directory")
        try:
            tok = AutoTokenizer.from_pretrained(source)
            module = LlamaForCausalLM.from_pretrained(
                source, dtype=self.torch_dtype, attn_implementation=cfg.attn_implementation
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"model.path: cannot load a tiny checkpoint from {source}: {exc}") from None
        return tok, module
