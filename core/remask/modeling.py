"""Shared base of the Hugging Face model adapters (tiny, LLaDA, Dream, third-party ones).

An adapter subclasses :class:`HFDiffusionModel` and supplies two things: how to load a tokenizer and
a ``transformers`` module from a resolved source (:meth:`HFDiffusionModel.load`), and which token ids
play mask / EOS / pad. Everything else lives here, written once:

* device and dtype placement, ``builtin:<name>`` checkpoint resolution;
* :meth:`HFDiffusionModel.forward`: the bidirectional pass. A stock decoder (Llama, Qwen2) becomes a
  mask predictor when it is given a 4-D boolean attention mask that is True over every real key
  (True = may attend), so the ``[B, S]`` padding mask is widened to ``[B, 1, S_q, S_kv]`` and
  position ids are counted over real tokens only (left padding). A one-position logit shift for
  models adapted from AR checkpoints (Dream) is undone here, so position ``i`` always predicts
  token ``i``. Each call adds one to ``nfe``;
* PEFT LoRA (:meth:`apply_lora`), the reference policy as the adapter disabled
  (:meth:`disable_adapter`), ``save_pretrained`` / reload with the same adapter, gradient
  checkpointing, ``copy.deepcopy`` for a frozen reference, FSDP2 sharding (:meth:`HFDiffusionModel.fully_shard`);
* :func:`crop_cache`: trims a prefix KV cache back to a length (Fast-dLLM's prefix cache).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from .config import LoraSettings
from .errors import RemaskError
from .interfaces import ComponentConfig, DiffusionModel, ModelOutput

__all__ = [
    "HFModelConfig",
    "HFDiffusionModel",
    "ModelLoadError",
    "DTYPES",
    "resolve_device",
    "bidirectional_mask",
    "padding_position_ids",
    "crop_cache",
    "read_config_json",
    "quantize_linear_4bit",
    "ADAPTER_MANIFEST",
]

#: config name -> torch dtype
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: file written next to a saved PEFT adapter, naming the base it applies to
ADAPTER_MANIFEST = "remask_adapter.json"


class ModelLoadError(RemaskError):
    """A model path or checkpoint could not be loaded."""


class HFModelConfig(ComponentConfig):
    """Options shared by every Hugging Face model adapter."""

    path: str = Field(
        ...,
        description=(
            "Local checkpoint directory or Hugging Face Hub name; `builtin:<name>` for a checkpoint shipped "
            "inside a plugin package. A directory written by `save_pretrained` with a LoRA adapter loads "
            "its base and the adapter."
        ),
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Parameter dtype of the loaded module (bfloat16 for 7-8B models on GPU)."
    )
    device: str = Field("auto", description="Torch device: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda:0'.")
    trust_remote_code: bool = Field(
        False, description="Allow modeling/tokenizer code shipped with a checkpoint to run (tokenizers only here)."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of `path`.")
    mask_token_id: int | None = Field(
        None, description="Override the mask token id (default: the checkpoint config, then the tokenizer)."
    )
    attn_implementation: Literal["sdpa", "eager"] = Field(
        "sdpa",
        description="transformers attention kernel; `eager` receives the bidirectional mask in additive (0 / -inf) form.",
    )


def read_config_json(source: str, revision: str | None = None) -> dict[str, Any]:
    """``config.json`` of a local directory, or of a Hub repository (the Hub cache, else that one file)."""
    local = Path(source) / "config.json"
    if local.is_file():
        return json.loads(local.read_text())
    if Path(source).is_dir():
        raise ModelLoadError(f"model.path: {source} has no config.json")
    try:
        from transformers.utils import cached_file

        path = cached_file(source, "config.json", revision=revision)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model.path: cannot find config.json for {source!r}: {exc}".splitlines()[0]) from None
    if path is None:
        raise ModelLoadError(f"model.path: {source!r} has no config.json")
    return json.loads(Path(path).read_text())


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"model.device: {device!r} is not a torch device ({exc})") from None


def bidirectional_mask(
    attention_mask: Tensor | None,  # None, [B, S_kv] bool padding mask, or [B, 1, S_q, S_kv] bool
    batch_size: int,
    query_length: int,
    key_length: int,
    device: torch.device,
) -> Tensor:
    """The ``[B, 1, S_q, S_kv]`` boolean mask (True = may attend) of a full bidirectional pass.

    Every query attends to every real key. Padding queries attend to the real keys as well, so no
    row of the mask is all False (an all-False row makes SDPA return NaN).
    """
    if attention_mask is None:
        return torch.ones(batch_size, 1, query_length, key_length, dtype=torch.bool, device=device)
    if attention_mask.dim() == 4:
        return attention_mask.to(device=device, dtype=torch.bool)
    keys = attention_mask.to(device=device, dtype=torch.bool)  # [B, S_kv]
    if keys.shape[-1] != key_length:
        raise ValueError(f"attention mask covers {keys.shape[-1]} keys, the pass has {key_length}")
    return keys[:, None, None, :].expand(batch_size, 1, query_length, key_length)


def padding_position_ids(attention_mask: Tensor | None, batch_size: int, query_length: int,
                         key_length: int, device: torch.device) -> Tensor:
    """Position ids counted over real tokens (left padding does not shift positions). # [B, S_q]

    With a 2-D mask the last ``S_q`` of the ``S_kv`` positions are returned (a pass fed after a KV
    cache of ``S_kv - S_q`` positions). Padding positions get 0.
    """
    if attention_mask is None or attention_mask.dim() != 2:
        pos = torch.arange(key_length - query_length, key_length, device=device)
        return pos.unsqueeze(0).expand(batch_size, -1)
    m = attention_mask.to(device=device, dtype=torch.long)  # [B, S_kv]
    pos = (m.cumsum(-1) - 1).clamp_min(0)  # [B, S_kv]
    return pos[:, key_length - query_length:]


def crop_cache(cache: Any, length: int) -> Any:
    """Trim a transformers KV cache (``DynamicCache``) in place to its first ``length`` positions.

    Uses the negative-count form of ``Cache.crop``, which means "remove that many" on both
    transformers 4.57 and 5.x.
    """
    extra = int(cache.get_seq_length()) - int(length)
    if extra > 0:
        cache.crop(-extra)
    return cache


def quantize_linear_4bit(module: nn.Module, compute_dtype: torch.dtype, device: torch.device) -> nn.Module:
    """Replace every ``nn.Linear`` but the output head with a bitsandbytes NF4 ``Linear4bit``.

    QLoRA's storage (Dettmers et al. 2023, eq. 5-6): 4-bit NormalFloat blocks of 64 weights with an
    absmax constant each, the constants themselves quantised to 8 bits in blocks of 256 ("double
    quantisation"); matmuls dequantise to ``compute_dtype``. The weights are quantised when they are
    moved to ``device`` (CUDA, or bitsandbytes' CPU backend). The output head stays in full precision,
    as ``transformers``' bitsandbytes loader keeps it.
    """
    import bitsandbytes as bnb

    head = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    for name, child in list(module.named_modules()):
        for attr, linear in list(child.named_children()):
            if not isinstance(linear, nn.Linear) or linear is head or isinstance(linear, bnb.nn.Linear4bit):
                continue
            q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                  compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4",
                                  device="meta")
            q.weight = bnb.nn.Params4bit(linear.weight.data.to("cpu"), requires_grad=False,
                                         compress_statistics=True, quant_type="nf4")
            if linear.bias is not None:
                q.bias = nn.Parameter(linear.bias.data, requires_grad=False)
            setattr(child, attr, q.to(device))  # .to() quantises
    module.is_loaded_in_4bit = True  # what PEFT and transformers look for
    return module


class HFDiffusionModel(DiffusionModel):
    """Base of adapters over a ``transformers`` mask predictor; see the module docstring.

    Subclasses implement :meth:`load` (and may override :meth:`resolve_builtin`,
    :meth:`special_token_ids`). Class attributes:

    * ``shift_logits``: the network predicts token ``i`` at position ``i - 1`` (Dream); the shift
      is undone in :meth:`forward`;
    * ``default_mask_token_id``: used when neither the config override nor the checkpoint config
      nor the tokenizer names a mask token.
    """

    Config: ClassVar[type[ComponentConfig]] = HFModelConfig
    supports_4d_mask: ClassVar[bool] = True
    supports_kv_cache: ClassVar[bool] = True
    supports_logits_to_keep: ClassVar[bool] = True
    shift_logits: ClassVar[bool] = False
    default_mask_token_id: ClassVar[int | None] = None
    supports_4bit: ClassVar[bool] = True  # QLoRA: apply_lora quantises the loaded base to NF4
    # set by the engine when it shards the parameters: votes before each pass (remask.lockstep)
    lockstep: Any = None

    def __init__(self, config: ComponentConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.torch_dtype = DTYPES[cfg.dtype]
        self.target_device = resolve_device(cfg.device)
        source = self.resolve_source(cfg.path)
        adapter_dir: Path | None = None
        self.base_source = source  # what a saved adapter records as its base
        if Path(source).is_dir() and (Path(source) / "adapter_config.json").is_file():
            adapter_dir = Path(source)
            source, self.base_source = self._adapter_base(adapter_dir)
        self.tokenizer, module = self.load(source)
        module = module.to(dtype=self.torch_dtype)
        if adapter_dir is not None:
            from peft import PeftModel

            module = PeftModel.from_pretrained(module, str(adapter_dir), is_trainable=True)
        self.module: nn.Module = module.to(self.target_device)
        self.module.eval()
        self.mask_token_id, self.eos_token_id, self.pad_token_id = self.special_token_ids()
        base = self.base_module
        self._cache_kwarg = "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"

    # -- loading hooks --------------------------------------------------------------------------

    def load(self, source: str) -> tuple[Any, nn.Module]:
        """Return ``(tokenizer, module)`` for a resolved local directory or Hub name."""
        raise NotImplementedError(f"{type(self).__name__} must implement load()")

    @classmethod
    def resolve_builtin(cls, name: str) -> Path:
        """Directory of the built-in checkpoint ``name`` (``path: builtin:<name>``)."""
        raise ModelLoadError(f"model {cls.name!r} ships no built-in checkpoints (asked for builtin:{name})")

    @classmethod
    def resolve_source(cls, path: str) -> str:
        """``builtin:<name>`` -> its directory; local paths are expanded; Hub names pass through."""
        if path.startswith("builtin:"):
            return str(cls.resolve_builtin(path.split(":", 1)[1]))
        local = Path(path).expanduser()
        if local.exists():
            if not local.is_dir():
                raise ModelLoadError(f"model.path: {path} is a file; give the checkpoint directory")
            return str(local)
        return path

    @classmethod
    def architecture_config(cls, config: ComponentConfig) -> Any:
        """The ``transformers`` config of the network ``config`` loads, read from ``config.json`` only
        (no weights: what the memory planner builds on the meta device). A saved LoRA adapter
        directory answers for its base."""
        source = cls.resolve_source(config.path)
        raw = read_config_json(source, getattr(config, "revision", None))
        if "base_model_name_or_path" in raw or (Path(source) / "adapter_config.json").is_file():
            manifest = Path(source) / ADAPTER_MANIFEST
            base = json.loads(manifest.read_text())["base"] if manifest.is_file() else raw.get("base_model_name_or_path")
            if manifest.is_file() and json.loads(manifest.read_text()).get("base_saved"):
                base = str(Path(source) / "base")
            raw = read_config_json(cls.resolve_source(str(base)), getattr(config, "revision", None))
        return cls.architecture_from_raw(raw, config)

    @classmethod
    def architecture_from_raw(cls, raw: dict[str, Any], config: ComponentConfig) -> Any:
        """A checkpoint's ``config.json`` as a ``transformers`` config; adapters whose checkpoints use
        their own format (LLaDA, Dream) override this."""
        from transformers import AutoConfig

        kind = raw.get("model_type")
        try:
            arch = AutoConfig.for_model(kind, **{k: v for k, v in raw.items() if k != "model_type"})
        except (ValueError, KeyError) as exc:
            raise ModelLoadError(f"model.path: cannot read a {kind!r} architecture from config.json: {exc}") from None
        arch._attn_implementation = getattr(config, "attn_implementation", "sdpa")
        return arch

    def _adapter_base(self, adapter_dir: Path) -> tuple[str, str]:
        """(resolved base source, base as written) of an adapter directory written by save_pretrained."""
        manifest = adapter_dir / ADAPTER_MANIFEST
        if manifest.is_file():
            info = json.loads(manifest.read_text())
            if info.get("base_saved"):
                return str(adapter_dir / "base"), str(info.get("base", ""))
            base = str(info["base"])
            return self.resolve_source(base), base
        peft_cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
        base = peft_cfg.get("base_model_name_or_path")
        if not base:
            raise ModelLoadError(f"model.path: {adapter_dir} holds a LoRA adapter that does not name its base model")
        return self.resolve_source(str(base)), str(base)

    def special_token_ids(self) -> tuple[int, int, int]:
        """``(mask, eos, pad)`` ids: config override / checkpoint config / tokenizer / class default."""
        tok = self.tokenizer
        mask = self.config.mask_token_id
        if mask is None:
            mask = getattr(getattr(self.base_module, "config", None), "mask_token_id", None)
        if mask is None:
            mask = getattr(tok, "mask_token_id", None)
        if mask is None:
            mask = self.default_mask_token_id
        if mask is None:
            raise ModelLoadError(f"model {self.name!r}: no mask token id; set model.mask_token_id")
        eos = getattr(tok, "eos_token_id", None)
        if eos is None:
            raise ModelLoadError(f"model {self.name!r}: the tokenizer has no EOS token")
        pad = getattr(tok, "pad_token_id", None)
        return int(mask), int(eos), int(eos if pad is None else pad)

    # -- the forward pass --------------------------------------------------------------------------

    def forward(
        self,
        input_ids: Tensor,  # [B, S] long
        attention_mask: Tensor | None = None,  # [B, S_kv] bool padding mask, or [B, 1, S, S_kv] bool
        *,
        position_ids: Tensor | None = None,  # [B, S] long
        past_key_values: Any = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        logits_to_keep: slice | None = None,
    ) -> ModelOutput:
        """One bidirectional pass; ``logits[:, i]`` predicts token ``i``. Adds 1 to ``nfe``.

        With ``past_key_values`` (a prefix cache of ``C`` positions) ``input_ids`` holds the
        positions after the prefix and a 2-D ``attention_mask`` covers all ``C + S`` keys.
        ``logits_to_keep`` (a slice of the ``S`` query positions) runs the output layer on those
        positions only: ``logits`` is ``[B, |slice|, V]`` (``hidden_states`` stay ``[B, S, H]``).
        """
        if self.lockstep is not None:
            self.lockstep.before_forward()
        self.nfe += 1
        device = self.device
        input_ids = input_ids.to(device)
        b, s = input_ids.shape
        past = 0 if past_key_values is None else int(past_key_values.get_seq_length())
        kv = past + s
        if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[-1] == s and past:
            prefix = torch.ones(b, past, dtype=torch.bool, device=device)
            attention_mask = torch.cat([prefix, attention_mask.to(device=device, dtype=torch.bool)], dim=1)
        if position_ids is None:
            position_ids = padding_position_ids(attention_mask, b, s, kv, device)
        mask4 = bidirectional_mask(attention_mask, b, s, kv, device)  # [B, 1, S, S_kv]
        if self.config.attn_implementation == "eager":  # eager adds the mask: give it 0 / -inf form
            mask4 = torch.zeros(mask4.shape, dtype=self.torch_dtype, device=device).masked_fill(
                ~mask4, torch.finfo(self.torch_dtype).min
            )
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": mask4,
            "position_ids": position_ids.to(device),
            "use_cache": bool(use_cache),
            "output_hidden_states": bool(output_hidden_states),
        }
        if past_key_values is not None:
            kwargs[self._cache_kwarg] = past_key_values
        if logits_to_keep is not None:
            start, stop, stride = logits_to_keep.indices(s)
            if stride != 1:
                raise ValueError(f"logits_to_keep: a contiguous slice of positions is needed (got step {stride})")
            rows = torch.arange(start, stop, device=device)  # [K]
            if self.shift_logits:  # logits[i] is the network's output at i − 1 (position 0 keeps its own)
                rows = (rows - 1).clamp_min(0)
            kwargs["logits_to_keep"] = rows
        out = self.module(**kwargs)
        logits = out.logits  # [B, S, V], or [B, K, V] with logits_to_keep
        if self.shift_logits and logits_to_keep is None:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        hidden = out.hidden_states[-1] if output_hidden_states and out.hidden_states is not None else None
        cache = None
        if use_cache:
            cache = getattr(out, "cache", None)
            if cache is None and "past_key_values" in out.keys():
                cache = out["past_key_values"]
        return ModelOutput(logits=logits, hidden_states=hidden, past_key_values=cache)

    # -- PEFT -------------------------------------------------------------------------------------

    @property
    def has_adapter(self) -> bool:
        from peft import PeftModel

        return isinstance(self.module, PeftModel)

    @property
    def base_module(self) -> nn.Module:
        """The ``transformers`` model without the PEFT wrapper (LoRA layers stay injected)."""
        return self.module.get_base_model() if self.has_adapter else self.module  # type: ignore[operator]

    def apply_lora(self, settings: LoraSettings) -> None:
        """Wrap the module with a PEFT LoRA adapter (``target_modules: all-linear`` supported)."""
        from peft import LoraConfig, get_peft_model

        if self.has_adapter:
            raise RemaskError(f"model {self.name!r} already carries a LoRA adapter; apply_lora was called twice")
        if settings.load_in_4bit:
            # QLoRA (Dettmers et al. 2023, §3): frozen NF4 base with double quantisation, LoRA in
            # the compute dtype; the reference policy is the adapter disabled over the same base
            from .planner import bnb_unavailable

            why = bnb_unavailable(self.target_device)
            if why:
                raise RemaskError(f"train.lora.load_in_4bit: {why}")
            self.module = quantize_linear_4bit(self.module, self.torch_dtype, self.target_device)
        target = settings.target_modules
        lora = LoraConfig(
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=target if isinstance(target, str) else list(target),
            bias="none",
        )
        try:
            self.module = get_peft_model(self.module, lora)
        except ValueError as exc:
            raise RemaskError(f"train.lora.target_modules: {exc}") from None
        self.module.to(self.target_device)

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """The base network without its LoRA adapter (the reference policy)."""
        if not self.has_adapter:
            raise RuntimeError(f"model adapter {self.name!r} has no adapter to disable")
        with self.module.disable_adapter():  # type: ignore[operator]
            yield

    # -- saving ----------------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> None:
        """Write the model so that ``path: <path>`` loads it back (same adapter, same tokenizer).

        Without an adapter: full weights + config + tokenizer. With one: the PEFT adapter, the
        tokenizer and :data:`ADAPTER_MANIFEST` naming the base; a base that cannot be loaded again
        from where it came from (fresh random weights) is saved under ``path/base``.
        """
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(out))
        if not self.has_adapter:
            self.module.save_pretrained(str(out))
            return
        self.module.save_pretrained(str(out))  # adapter_config.json + adapter_model.safetensors
        base_saved = not self._base_reloadable()
        if base_saved:
            base = copy.deepcopy(self.module).unload()  # base layers back, adapter dropped
            base.save_pretrained(str(out / "base"))
            self.tokenizer.save_pretrained(str(out / "base"))
        (out / ADAPTER_MANIFEST).write_text(
            json.dumps({"base": self.base_source, "base_saved": base_saved, "model": self.name}, indent=2)
        )

    def _base_reloadable(self) -> bool:
        """Whether ``base_source`` names weights on disk or on the Hub (not a fresh random init)."""
        return bool(self.base_source) and self.base_source != "random"

    # -- module helpers ----------------------------------------------------------------------------

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations during backward (non-reentrant, works with PEFT and frozen bases)."""
        base = self.base_module
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x name
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(base.config, "use_cache"):
            base.config.use_cache = False

    def fully_shard(self, *, reshard_after_forward: bool = True) -> None:
        """Shard the parameters over the default process group with FSDP2 (``torch.distributed.fsdp
        .fully_shard``): each decoder layer is one unit, the rest of the network (embeddings, final
        norm, head) the root unit. Works on CPU with gloo (accelerate shards only CUDA modules), with or
        without a LoRA adapter; :meth:`disable_adapter` keeps working on the sharded module."""
        from torch.distributed.fsdp import fully_shard

        lists = [m for m in self.base_module.modules() if isinstance(m, nn.ModuleList)]
        if not lists:
            raise RemaskError(f"model {self.name!r}: no list of decoder layers to shard")
        for layer in max(lists, key=len):
            fully_shard(layer, reshard_after_forward=reshard_after_forward)
        fully_shard(self.module, reshard_after_forward=reshard_after_forward)

    def to(self, device: str | torch.device) -> HFDiffusionModel:
        self.module.to(device)
        self.target_device = torch.device(device)
        return self

    def train(self, mode: bool = True) -> HFDiffusionModel:
        self.module.train(mode)
        return self

    def eval(self) -> HFDiffusionModel:
        return self.train(False)

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.module.parameters()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def __deepcopy__(self, memo: dict[int, Any]) -> HFDiffusionModel:
        """A frozen-reference copy: module and counters copied, tokenizer shared (it is immutable)."""
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            if key == "tokenizer":
                clone.__dict__[key] = value
            else:
                clone.__dict__[key] = copy.deepcopy(value, memo)
        return clone
