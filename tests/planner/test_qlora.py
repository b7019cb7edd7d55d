"""QLoRA on the llada and dream adapters, run on bitsandbytes' CPU backend: the base becomes NF4
``Linear4bit`` layers (double quantisation), only the LoRA weights train, and the reference policy is
the adapter disabled over the same quantised base. ``remask validate`` names what cannot run."""

from __future__ import annotations

import pytest
import torch
from shapes import write_dream_shaped, write_llada_shaped

from remask.cli import main
from remask.config import LoraSettings
from remask_diffusion.dream import DreamModel
from remask_diffusion.llada import LLaDAModel

bnb = pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("qlora")
    return {"llada": write_llada_shaped(root / "llada", hidden=64, intermediate=128),
            "dream": write_dream_shaped(root / "dream", hidden=64, intermediate=128)}


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_qlora_quantises_the_base_and_trains_only_the_adapter(kind, checkpoints):
    cls = {"llada": LLaDAModel, "dream": DreamModel}[kind]
    model = cls(cls.Config(path=str(checkpoints[kind]), dtype="float32", device="cpu"))
    ids = torch.randint(4, 100, (2, 12), generator=torch.Generator().manual_seed(0))  # [B, S]
    with torch.no_grad():
        exact = model.logits(ids)  # [B, S, V]
    model.apply_lora(LoraSettings(r=4, alpha=8, load_in_4bit=True))
    base = model.base_module
    quantised = [m for m in base.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantised) == 2 * 7  # q k v o gate up down in each of 2 layers
    for layer in quantised:
        w = layer.weight
        assert w.dtype == torch.uint8 and w.quant_state.quant_type == "nf4" and w.quant_state.nested  # double quant
    assert not isinstance(base.get_output_embeddings(), bnb.nn.Linear4bit)  # the head stays full precision
    with torch.no_grad():
        quant = model.logits(ids)
        with model.disable_adapter():
            reference = model.logits(ids)
    torch.testing.assert_close(reference, quant)  # LoRA B starts at zero: the policy is the quantised base
    assert not torch.equal(quant, exact)  # it is quantised ...
    assert (quant - exact).abs().max() < 0.25 * exact.abs().max()  # ... to NF4 precision
    model.train()
    trainable = model.trainable_parameters()
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    loss = torch.nn.functional.cross_entropy(model.logits(ids).flatten(0, 1), ids.flatten())
    loss.backward()
    named = dict(model.module.named_parameters())
    assert all(("lora_" in n) == p.requires_grad for n, p in named.items())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in named.items() if "lora_B" in n)
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    optimizer.step()
    with torch.no_grad():
        after = model.logits(ids)
        with model.disable_adapter():
            torch.testing.assert_close(model.logits(ids), reference)  # the reference did not move
    assert not torch.allclose(after, quant)  # the policy did


def test_qlora_without_a_backend_is_refused_by_name(checkpoints, monkeypatch):
    import remask.planner

    monkeypatch.setattr(remask.planner, "bnb_unavailable", lambda device: "bitsandbytes is not importable (test)")
    model = LLaDAModel(LLaDAModel.Config(path=str(checkpoints["llada"]), dtype="float32", device="cpu"))
    with pytest.raises(Exception, match=r"train.lora.load_in_4bit: bitsandbytes is not importable \(test\)"):
        model.apply_lora(LoraSettings(r=4, load_in_4bit=True))


def test_the_cpu_backend_is_found_usable():
    from remask.planner import bnb_unavailable

    assert bnb_unavailable(torch.device("cpu")) is None


def _config(tmp_path, checkpoints, **train):
    import yaml

    raw = {"model": {"name": "llada", "path": str(checkpoints["llada"]), "dtype": "bfloat16", "device": "cpu"},
           "task": {"name": "arithmetic"}, "sampler": {"name": "llada", "gen_length": 8, "block_length": 8, "steps": 4},
           "rewards": [{"name": "arithmetic-digits"}], "advantage": {"name": "group-mean"},
           "objective": {"name": "d1"},
           "train": {"prompts_per_step": 2, "group_size": 2, "lora": {"r": 4, "load_in_4bit": True}, **train}}
    path = tmp_path / "qlora.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_validate_reports_what_this_machine_cannot_run(tmp_path, checkpoints, monkeypatch, capsys):
    import remask.planner

    path = _config(tmp_path, checkpoints)
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err  # bnb's CPU backend works here
    capsys.readouterr()
    monkeypatch.setattr(remask.planner, "bnb_unavailable", lambda device: "bitsandbytes has no usable cpu backend")
    monkeypatch.setattr(remask.planner, "dtype_unavailable",
                        lambda dtype, device: None if dtype == "float32" else f"{dtype} does not compute on cpu")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("train.lora.load_in_4bit: bitsandbytes has no usable cpu backend" in line for line in err)
    assert any("model.dtype: bfloat16 does not compute on cpu" in line for line in err)


def test_engine_trains_qlora_and_resumes_exactly(tmp_path):
    """`remask train` with `train.lora.load_in_4bit`: 3 steps straight equal 2 steps + --resume + 1."""
    from safetensors.torch import load_file

    from remask.config import load_config
    from remask.engine import train

    root = __import__("pathlib").Path(__file__).resolve().parents[2]

    def config(out, steps):
        return load_config(str(root / "examples" / "tiny-arith-d1.yaml"), {
            "train.output_dir": str(out), "train.max_steps": steps, "train.prompts_per_step": 2,
            "train.group_size": 2, "train.inner_steps": 1, "train.save_steps": 1, "train.save_total_limit": None,
            "train.progress": False,
            "train.lora": {"r": 4, "alpha": 8, "load_in_4bit": True}, "eval.limit": 2})

    train(config(tmp_path / "straight", 3))
    train(config(tmp_path / "resumed", 2))
    train(config(tmp_path / "resumed", 3), resume="latest")
    a = load_file(str(tmp_path / "straight" / "checkpoint-3" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint-3" / "adapter_model.safetensors"))
    first = load_file(str(tmp_path / "straight" / "checkpoint-1" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and a
    assert any(not bool((a[k] == first[k]).all()) for k in a)  # the adapter trained
    for k in a:
        assert bool((a[k] == b[k]).all()), k
