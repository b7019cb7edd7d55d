"""Checkpoints in the Hugging Face layout, written atomically.

``output_dir/checkpoint-<step>/`` holds

* the policy: ``adapter_model.safetensors`` + ``adapter_config.json`` (PEFT) or
  ``model.safetensors`` (full weights), through the adapter's ``save_pretrained`` when it has one;
* ``optimizer.pt``, ``scheduler.pt``;
* ``rng_state_<rank>.pth``: every RNG stream of every process;
* ``objective.pt``: the objective's ``state_dict()`` and its extra modules (TraFL's heads);
* ``reference.safetensors`` when the reference is a frozen copy that ``ref_update_every`` changes;
* under FSDP: ``sharded/``, model and optimizer state as ``torch.distributed.checkpoint`` writes
  them (each process its shards; what ``--resume`` loads), and the policy gathered to full tensors
  in the Hugging Face layout (``model.safetensors`` + ``config.json``, or the PEFT adapter files
  and, for a base that can be loaded again, the adapter manifest naming it);
* ``trainer_state.json`` (written last), in Hugging Face's ``TrainerState`` layout (``global_step``,
  ``max_steps``, ``log_history``, ...) with remask's own fields (data position, rollouts done,
  the resolved config) under ``"remask"``.

A checkpoint is first written to ``.tmp-checkpoint-<step>/`` and renamed when complete, so a kill
during the write leaves the previous checkpoint as the latest loadable one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import RemaskError
from ..interfaces import DiffusionModel

__all__ = [
    "CHECKPOINT_PREFIX",
    "TRAINER_STATE",
    "list_checkpoints",
    "latest_checkpoint",
    "resolve_resume",
    "tmp_dir_for",
    "finalize",
    "rotate",
    "save_model_weights",
    "load_model_weights",
    "save_module_state",
    "load_module_state",
    "write_json",
    "SHARDED_DIR",
    "save_sharded",
    "load_sharded",
    "save_full_weights",
]

SHARDED_DIR = "sharded"

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (those with a ``trainer_state.json``), oldest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / TRAINER_STATE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """``None`` -> no resume; ``"latest"`` -> newest checkpoint in ``output_dir`` (None if none);
    a path -> that checkpoint (or the newest checkpoint inside a run directory)."""
    if resume is None:
        return None
    if resume == "latest":
        return latest_checkpoint(output_dir)
    p = Path(resume)
    if (p / TRAINER_STATE).is_file():
        return p
    inner = latest_checkpoint(p)
    if inner is not None:
        return inner
    raise RemaskError(f"--resume {resume}: not a checkpoint directory (no {TRAINER_STATE}) and no checkpoint-<step>/ inside")


def tmp_dir_for(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f".tmp-{CHECKPOINT_PREFIX}{step}"


def write_json(path: Path, data: Any) -> None:
    """Write JSON and fsync it (the trainer state marks a checkpoint complete)."""
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def finalize(tmp: Path, output_dir: str | Path, step: int) -> Path:
    """Atomically publish ``tmp`` as ``checkpoint-<step>`` (replacing an older one of that step)."""
    final = Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"
    if final.exists():
        trash = Path(output_dir) / f".old-{CHECKPOINT_PREFIX}{step}"
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)
    try:  # make the rename durable
        fd = os.open(str(Path(output_dir)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass
    return final


def rotate(output_dir: str | Path, save_total_limit: int | None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond ``save_total_limit``; also stale temp dirs."""
    removed = []
    root = Path(output_dir)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((f".tmp-{CHECKPOINT_PREFIX}", f".old-{CHECKPOINT_PREFIX}")):
                shutil.rmtree(p, ignore_errors=True)
    if save_total_limit:
        ckpts = list_checkpoints(output_dir)
        for p in ckpts[: max(0, len(ckpts) - save_total_limit)]:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------


def _is_peft(module: torch.nn.Module) -> bool:
    peft = sys.modules.get("peft")  # never imported -> cannot be a PEFT module (and import is slow)
    return peft is not None and isinstance(module, peft.PeftModel)


def save_module_state(module: torch.nn.Module, path: Path) -> None:
    """A plain module's tensors as safetensors (shared storages are cloned apart)."""
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(path))


def load_module_state(module: torch.nn.Module, path: Path) -> None:
    state = load_file(str(path))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected:
        raise RemaskError(f"{path}: weights do not match the model (unexpected keys such as {unexpected[0]!r})")
    trainable_missing = [k for k in missing if k in dict(module.named_parameters()) and
                         dict(module.named_parameters())[k].requires_grad]
    if trainable_missing:
        raise RemaskError(f"{path}: trainable weights missing from the checkpoint (e.g. {trainable_missing[0]!r})")


def save_model_weights(model: DiffusionModel, path: Path, module: torch.nn.Module | None = None) -> None:
    """The policy in the Hugging Face layout: the adapter's ``save_pretrained`` when it has one,
    else PEFT's ``save_pretrained`` for a PEFT module, else ``model.safetensors``."""
    path.mkdir(parents=True, exist_ok=True)
    module = module if module is not None else model.module
    saver = getattr(model, "save_pretrained", None)
    if callable(saver):
        saver(str(path))
    elif _is_peft(module):
        module.save_pretrained(str(path))
    else:
        save_module_state(module, path / "model.safetensors")


def load_model_weights(model: DiffusionModel, path: Path) -> None:
    """Load what :func:`save_model_weights` wrote back into ``model.module`` (exactly)."""
    module = model.module
    adapter = path / "adapter_model.safetensors"
    if adapter.is_file() and _is_peft(module):
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(module, load_file(str(adapter)))
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise RemaskError(f"{adapter}: adapter weights do not match the model (e.g. {unexpected[0]!r})")
        return
    shards = sorted(p for p in path.glob("*.safetensors") if p.name not in ("adapter_model.safetensors",
                                                                              "reference.safetensors"))
    if not shards:
        raise RemaskError(f"{path}: no model weights (*.safetensors) in the checkpoint")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(str(shard)))
    target = module.get_base_model() if _is_peft(module) else module
    missing, unexpected = target.load_state_dict(state, strict=False)
    if unexpected:
        raise RemaskError(f"{path}: weights do not match the model (unexpected keys such as {unexpected[0]!r})")
    params = dict(target.named_parameters())
    bad = [k for k in missing if k in params and params[k].requires_grad]
    if bad:
        raise RemaskError(f"{path}: trainable weights missing from the checkpoint (e.g. {bad[0]!r})")


# ---------------------------------------------------------------------------------------------
# Sharded (FSDP2) policies
# ---------------------------------------------------------------------------------------------


def save_sharded(module: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Model and optimizer state of an FSDP2-sharded ``module`` with ``torch.distributed.checkpoint``
    (collective: every process writes its own shards; nothing is gathered)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(module, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(path))


def load_sharded(module: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Load what :func:`save_sharded` wrote back into the sharded ``module`` and ``optimizer``
    (exactly: each process reads its shards; collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(module, optimizer)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def save_full_weights(model: DiffusionModel, path: Path, *, is_main: bool) -> None:
    """The sharded policy gathered to full tensors (collective; only the main process holds and
    writes them) in the Hugging Face layout: ``save_pretrained(state_dict=...)`` of the
    ``transformers`` / PEFT module (PEFT writes the adapter only) plus the tokenizer, or
    ``model.safetensors`` for a plain module."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    module = model.module
    full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not is_main:
        return
    first: dict[int, str] = {}  # tied weights (embeddings = head) are written once, as unsharded saves do
    for name, param in module.named_parameters(remove_duplicate=False):
        if first.setdefault(id(param), name) != name:
            full.pop(name, None)
    path.mkdir(parents=True, exist_ok=True)
    saver = getattr(module, "save_pretrained", None)
    if callable(saver):
        saver(str(path), state_dict=full)
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(str(path))
        base = getattr(model, "base_source", None)
        if _is_peft(module) and base and base != "random":  # as HFDiffusionModel.save_pretrained: name the base
            from ..modeling import ADAPTER_MANIFEST

            (path / ADAPTER_MANIFEST).write_text(json.dumps(
                {"base": base, "base_saved": False, "model": getattr(model, "name", "")}, indent=2))
    else:
        save_file({k: v.detach().contiguous().clone() for k, v in full.items()}, str(path / "model.safetensors"))
