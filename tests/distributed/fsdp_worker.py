"""What each of the 2 gloo processes of ``test_fsdp_cpu.py`` runs (and the 1-process baseline).

A tiny remask model (the ``tiny`` adapter, random weights) trains ``STEPS`` AdamW steps on one
fixed global batch of ``ROWS`` rows; with ``world`` processes each process takes its contiguous
``ROWS / world`` rows and FSDP2 averages the gradients, so the update is the single-process one.
Sharded runs also use gradient checkpointing (the 1-process baseline does not), so the comparison
covers both. Rank 0 writes the full (gathered) trainable weights, and the reference policy's logits,
to ``out``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

ROWS, SEQ, STEPS = 4, 10, 3


def build(lora: bool):
    from remask.config import LoraSettings
    from remask_diffusion.tiny import TinyDiffusionModel

    model = TinyDiffusionModel(TinyDiffusionModel.Config(hidden_size=32, num_layers=2, num_heads=4,
                                                         intermediate_size=48, device="cpu", seed=3))
    if lora:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(5)
            model.apply_lora(LoraSettings(r=4, alpha=8))
        with torch.no_grad():  # LoRA B starts at zero; give the adapter a non-trivial start
            for name, p in model.module.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    return model


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(4, 100, (ROWS, SEQ), generator=g), torch.randint(4, 100, (ROWS, SEQ), generator=g)


def step(model, optimizer, ids, target) -> None:
    model.train()
    logits = model.logits(ids)  # [R, S, V]
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def full_state(model) -> dict[str, torch.Tensor]:
    """Trainable weights gathered to full tensors (DTensor -> full) under their plain names."""
    out = {}
    for name, p in model.module.named_parameters():
        if p.requires_grad:
            t = p.full_tensor() if hasattr(p, "full_tensor") else p
            out[name] = t.detach().clone()
    return out


def reference_logits(model, reference, ids) -> torch.Tensor:
    with torch.no_grad():
        if reference is None:  # LoRA: the policy's own (sharded) network with the adapter disabled
            with model.disable_adapter():
                return model.logits(ids)
        return reference.logits(ids)


def run(out: str, lora: bool, world: int, rank: int, resume_check: bool = False) -> None:
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    model = build(lora)
    reference = None if lora else copy.deepcopy(model)  # full training: a frozen copy of the start
    if reference is not None:
        reference.module.requires_grad_(False)
    if world > 1:  # sharded runs also recompute activations: neither may change the update
        model.enable_gradient_checkpointing()
        model.fully_shard()
        if reference is not None:
            reference.fully_shard()
        from torch.distributed.tensor import DTensor

        params = list(model.module.parameters()) + (list(reference.module.parameters()) if reference else [])
        assert all(isinstance(p, DTensor) for p in params)  # every weight is sharded ...
        assert any(p.to_local().numel() < p.numel() for p in params)  # ... and this process holds a part
    optimizer = torch.optim.AdamW([p for p in model.module.parameters() if p.requires_grad], lr=1e-2)
    ids, target = batch()
    rows = slice(rank * ROWS // world, (rank + 1) * ROWS // world)
    for i in range(STEPS):
        if resume_check and i == STEPS - 1:
            model, optimizer = _save_and_resume(model, optimizer, lora, Path(out) / "dcp")
        step(model, optimizer, ids[rows], target[rows])
    ref = reference_logits(model, reference, ids)
    weights = full_state(model)
    if rank == 0:
        save_file({**weights, "__reference_logits": ref.contiguous()}, str(Path(out) / "result.safetensors"))


def _save_and_resume(model, optimizer, lora: bool, where: Path):
    """Save the sharded model and optimizer with torch.distributed.checkpoint, build a fresh sharded
    model, load it back, and continue from there (what ``--resume`` must do under FSDP)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model.module, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(where))
    fresh = build(lora)
    with torch.no_grad():  # make sure nothing of the old weights survives by accident
        for p in fresh.module.parameters():
            p.add_(1.0)
    fresh.enable_gradient_checkpointing()
    fresh.fully_shard()
    fresh_opt = torch.optim.AdamW([p for p in fresh.module.parameters() if p.requires_grad], lr=1e-2)
    msd, osd = get_state_dict(fresh.module, fresh_opt)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(where))
    set_state_dict(fresh.module, fresh_opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return fresh, fresh_opt
