"""`remask sample`: builds the config's model and sampler and prints completions."""

from __future__ import annotations

import torch
import yaml

from remask import AdvantageEstimator, ComponentConfig, LossOutput, PolicyObjective
from remask.cli import main
from remask.commands.sample import prompt_batch
from remask.testing import FakeReward, FakeTask, plugin_of, registered_plugin


class ZeroAdvantage(AdvantageEstimator):
    name = "zero-adv-test"
    Config = ComponentConfig

    def estimate(self, *, rollout, rewards, selection, context):
        return torch.zeros(rollout.batch_size)


class NoObjective(PolicyObjective):
    name = "no-objective-test"
    Config = ComponentConfig
    uses_reference = False

    def prepare(self, **kw):
        return None

    def loss(self, state, *, inner_step, context):
        return LossOutput(loss=torch.zeros(()))


def write_config(tmp_path, sampler):
    cfg = {
        "model": {"name": "tiny", "path": "random", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                  "intermediate_size": 32},
        "task": {"name": "fake-task"},
        "sampler": sampler,
        "rewards": [{"name": "fake-contains"}],
        "advantage": {"name": "zero-adv-test"},
        "objective": {"name": "no-objective-test"},
        "train": {"group_size": 2, "prompts_per_step": 1, "seed": 5},
    }
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_sample_prints_completions_and_states(tmp_path, capsys):
    path = write_config(tmp_path, {"name": "llada", "gen_length": 8, "block_length": 4, "steps": 4})
    with registered_plugin(plugin_of(FakeTask, FakeReward, ZeroAdvantage, NoObjective)):
        code = main(["sample", str(path), "--prompt", "1+2=", "--prompt", "3*4=", "--n", "2", "--steps",
                     "--sampler.temperature", "1.0"])
        first = capsys.readouterr().out
        assert main(["sample", str(path), "--prompt", "1+2=", "--prompt", "3*4=", "--n", "2", "--steps",
                     "--sampler.temperature", "1.0"]) == 0
        again = capsys.readouterr().out
    assert code == 0 and first.splitlines()[:-1] == again.splitlines()[:-1]  # same seed, same completions
    lines = first.splitlines()
    assert [ln.split(" ", 1)[0] for ln in lines[:4]] == ["[0.0]", "[0.1]", "[1.0]", "[1.1]"]
    states = [ln for ln in lines if ln.startswith("  ") and "|" in ln]
    assert len(states) == 5 and "________" in states[0]  # 4 steps -> 5 states, the first all masked
    assert "sampler llada" in lines[-1] and "4 forward passes" in lines[-1]


def test_sample_rejects_bad_n(tmp_path, capsys):
    path = write_config(tmp_path, {"name": "dream", "gen_length": 4, "steps": 2})
    with registered_plugin(plugin_of(FakeTask, FakeReward, ZeroAdvantage, NoObjective)):
        assert main(["sample", str(path), "--prompt", "x", "--n", "0"]) == 2
    assert "--n" in capsys.readouterr().err


def test_prompt_batch_left_pads(tiny_model):
    batch = prompt_batch(tiny_model, ["1+2=", "100+200="], 3)
    assert batch.prompt_ids.shape == (6, 8) and batch.group_ids.tolist() == [0, 0, 0, 1, 1, 1]
    assert batch.attention_mask[0].tolist() == [False] * 4 + [True] * 4
    assert batch.prompt_ids[0, 0] == tiny_model.pad_token_id
