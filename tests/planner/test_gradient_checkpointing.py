"""Gradient checkpointing (non-reentrant ``torch.utils.checkpoint``) changes memory, not gradients:
on every built-in adapter, with and without LoRA, the gradients of one loss are those of the same
model without checkpointing (to float32 rounding: the recomputed forward runs the same kernels)."""

from __future__ import annotations

import pytest
import torch
from shapes import write_dream_shaped, write_llada_shaped

from remask.config import LoraSettings
from remask_diffusion.dream import DreamModel
from remask_diffusion.llada import LLaDAModel
from remask_diffusion.tiny import TinyDiffusionModel


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return {"llada": write_llada_shaped(root / "llada"), "dream": write_dream_shaped(root / "dream")}


def _build(kind: str, checkpoints: dict) -> object:
    if kind == "tiny":
        return TinyDiffusionModel(TinyDiffusionModel.Config(hidden_size=32, num_layers=2, num_heads=4,
                                                            intermediate_size=48, device="cpu"))
    cls = {"llada": LLaDAModel, "dream": DreamModel}[kind]
    return cls(cls.Config(path=str(checkpoints[kind]), dtype="float32", device="cpu"))


def _grads(kind: str, checkpoints: dict, *, lora: bool, checkpointing: bool) -> dict[str, torch.Tensor]:
    model = _build(kind, checkpoints)
    if lora:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            model.apply_lora(LoraSettings(r=4, alpha=8))
        with torch.no_grad():  # B starts at zero; give it values so every LoRA gradient is non-trivial
            for name, p in model.module.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    if checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 100, (3, 10), generator=g)  # [B, S]
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[0, :3] = False  # left padding
    target = torch.randint(4, 100, (3, 10), generator=g)  # [B, S]
    logits = model.logits(ids, mask)  # [B, S, V]
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())
    loss.backward()
    base = model.base_module
    assert any(getattr(m, "gradient_checkpointing", False) for m in base.modules()) == checkpointing
    return {n: p.grad.clone() for n, p in model.module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("kind", ["tiny", "llada", "dream"])
def test_checkpointing_keeps_gradients(kind, lora, checkpoints):
    plain = _grads(kind, checkpoints, lora=lora, checkpointing=False)
    recomputed = _grads(kind, checkpoints, lora=lora, checkpointing=True)
    assert plain.keys() == recomputed.keys() and plain
    if lora:
        assert all("lora_" in n for n in plain)
    for name, grad in plain.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(recomputed[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_recomputes_in_backward(checkpoints):
    """With checkpointing each decoder layer runs twice per training step (forward + recompute)."""
    calls = {True: 0, False: 0}
    for on in (False, True):
        model = _build("llada", checkpoints)
        if on:
            model.enable_gradient_checkpointing()
        model.train()
        layer = model.base_module.model.layers[0].self_attn.q_proj  # inside the checkpointed region
        handle = layer.register_forward_hook(lambda *_, on=on: calls.__setitem__(on, calls[on] + 1))
        model.logits(torch.randint(4, 100, (2, 6))).sum().backward()
        handle.remove()
    assert calls == {False: 1, True: 2}
