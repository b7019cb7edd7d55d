"""Pipeline config: YAML, overrides and one readable line per problem."""

from __future__ import annotations

import pytest
import yaml

from remask.config import apply_overrides, check_batch_arithmetic, load_config, parse_config, parse_override_args
from remask.config import TrainConfig
from remask.errors import ConfigError
from remask.testing import FakeModel, FakeReward, FakeSampler, FakeTask, plugin_of, registered_plugin
from remask import AdvantageEstimator, ComponentConfig, PolicyObjective, LossOutput, RewardName
from pydantic import Field
import torch


class ZeroAdvantage(AdvantageEstimator):
    """Zero advantages."""

    name = "zero"

    def estimate(self, *, rollout, rewards, selection, context):
        return torch.zeros(rollout.batch_size)


class ToyObjective(PolicyObjective):
    """Mean log-prob of the completion."""

    name = "toy"

    class Config(ComponentConfig):
        beta: float = Field(0.04, ge=0, description="KL weight")
        clip: float = Field(0.2, description="clip range")

    def prepare(self, *, rollout, advantages, selection, context):
        return rollout

    def loss(self, state, *, inner_step, context):
        return LossOutput(loss=torch.zeros((), requires_grad=True))


class BandAdvantage(AdvantageEstimator):
    """Zero advantages; its config names rewards of the pipeline (the RewardName marker)."""

    name = "band"

    class Config(ComponentConfig):
        accuracy: RewardName | None = Field(None, description="the 0/1 reward")
        extras: list[RewardName] = Field(default_factory=list, description="more rewards")
        note: str = Field("", description="a plain string, not a reward name")

    def estimate(self, *, rollout, rewards, selection, context):
        return torch.zeros(rollout.batch_size)


PLUGIN = plugin_of(FakeModel, FakeSampler, FakeReward, FakeTask, ZeroAdvantage, BandAdvantage, ToyObjective)

BASE = {
    "model": {"name": "fake"},
    "task": {"name": "fake-task", "size": 5},
    "sampler": {"name": "fake-sampler", "gen_length": 4},
    "rewards": [{"name": "fake-contains", "weight": 2.0}],
    "advantage": {"name": "zero"},
    "objective": {"name": "toy", "beta": 0.1},
    "train": {"max_steps": 3, "group_size": 2, "prompts_per_step": 2},
}


@pytest.fixture(autouse=True)
def _plugin():
    with registered_plugin(PLUGIN, name="config-test"):
        yield


def write(tmp_path, data, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def problems(raw, source="cfg.yaml"):
    with pytest.raises(ConfigError) as exc:
        parse_config(raw, source=source)
    return exc.value.problems


def test_valid_config_builds_every_component(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.objective.name == "toy" and cfg.objective.params.beta == 0.1
    assert cfg.rewards[0].weight == 2.0 and cfg.task.params.size == 5
    assert cfg.train.max_steps == 3 and cfg.eval.split == "test"
    assert isinstance(cfg.objective.build(kind="objective"), ToyObjective)
    # the resolved config round-trips
    again = parse_config(yaml.safe_load(cfg.to_yaml()))
    assert again.dump() == cfg.dump()


def test_dotted_overrides(tmp_path):
    over = parse_override_args(["--objective.beta", "0.02", "--train.max_steps=7", "--rewards.0.weight", "3"])
    assert over == {"objective.beta": "0.02", "train.max_steps": "7", "rewards.0.weight": "3"}  # read per field
    cfg = load_config(write(tmp_path, BASE), over)
    assert cfg.objective.params.beta == 0.02 and cfg.train.max_steps == 7 and cfg.rewards[0].weight == 3
    assert cfg.replace(**{"objective.clip": 0.3}).objective.params.clip == 0.3


def test_override_argument_errors():
    with pytest.raises(ConfigError, match="missing value"):
        parse_override_args(["--objective.beta"])
    with pytest.raises(ConfigError, match="unexpected argument"):
        parse_override_args(["beta=3"])


def test_malformed_yaml_names_line_and_column(tmp_path):
    p = write(tmp_path, "model:\n  name: fake\ntask: [unclosed\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    (line,) = exc.value.problems
    assert line.startswith(f"{p}:4:1: malformed YAML") or line.startswith(f"{p}:3:"), line


def test_wrong_type_names_field_path_and_value():
    raw = {**BASE, "objective": {"name": "toy", "beta": "lots"}}
    (line,) = problems(raw)
    assert line.startswith("cfg.yaml: objective.beta: ") and "valid number" in line and "'lots'" in line


def test_unknown_component_lists_known_names():
    raw = {**BASE, "objective": {"name": "tyo"}}
    (line,) = problems(raw)
    assert "objective.name: unknown objective 'tyo'" in line and "did you mean 'toy'" in line and "known: " in line


def test_unknown_field_lists_allowed_fields():
    raw = {**BASE, "objective": {"name": "toy", "betta": 1}}
    (line,) = problems(raw)
    assert "objective.betta: unknown field; allowed fields: beta, clip" in line


def test_unknown_section_and_missing_sections():
    raw = {k: v for k, v in BASE.items() if k != "task"}
    raw["trian"] = {}
    lines = problems(raw)
    assert any("trian: unknown section (did you mean 'train'?)" in l for l in lines)
    assert any("task: required section is missing" in l for l in lines)


def test_every_problem_reported_once_each():
    raw = {**BASE, "objective": {"name": "toy", "beta": -1}, "train": {"max_steps": "x", "lr": 1}}
    lines = problems(raw)
    assert len(lines) == 3, lines
    assert all(l.startswith("cfg.yaml: ") for l in lines)


def test_batch_arithmetic_lists_valid_values():
    train = TrainConfig(prompts_per_step=4, group_size=6, micro_batch_size=5)
    (line,) = check_batch_arithmetic(train)
    assert "valid values: [1, 2, 3, 4, 6, 8, 12, 24]" in line
    (line,) = check_batch_arithmetic(TrainConfig(prompts_per_step=4, group_size=6, micro_batch_size=4), whole_groups=True)
    assert "valid values: [6, 12, 24]" in line
    # 4 divides the 48 rows; what is wrong is that it cuts groups of 8 (issue 17)
    (line,) = check_batch_arithmetic(TrainConfig(prompts_per_step=6, group_size=8, micro_batch_size=4), whole_groups=True)
    assert "4 divides the 48 rows per process but is not a multiple of group_size 8" in line
    assert "does not divide" not in line
    (line,) = check_batch_arithmetic(TrainConfig(prompts_per_step=3, group_size=2), num_processes=2)
    assert "multiple of 2" in line
    assert check_batch_arithmetic(TrainConfig(prompts_per_step=4, group_size=6, micro_batch_size=12)) == []


def test_reward_repeats_need_alias():
    raw = {**BASE, "rewards": [{"name": "fake-contains"}, {"name": "fake-contains", "weight": 0.5}]}
    (line,) = problems(raw)
    assert "alias" in line
    raw["rewards"][1]["alias"] = "contains-again"
    assert len(parse_config(raw).rewards) == 2


def test_reward_names_in_component_configs_are_checked_against_the_rewards_at_load_time():
    """A RewardName field (optional or in a list) must name a reward label of the same pipeline: a typo
    is a load-time error with the field's path and the nearest label, not a failure at the first rollout."""
    rewards = [{"name": "fake-contains"}, {"name": "fake-contains", "alias": "strict", "weight": 0.5}]
    raw = {**BASE, "rewards": rewards, "advantage": {"name": "band", "accuracy": "strict", "extras": ["fake-contains"],
                                                     "note": "anything"}}
    assert parse_config(raw).advantage.params.accuracy == "strict"
    assert parse_config({**raw, "advantage": {"name": "band"}}).advantage.params.accuracy is None
    (line,) = problems({**raw, "advantage": {"name": "band", "accuracy": "strct"}})
    assert line.startswith("cfg.yaml: advantage.accuracy: no reward labelled 'strct'")
    assert "did you mean 'strict'" in line and "rewards: fake-contains, strict" in line
    (line,) = problems({**raw, "advantage": {"name": "band", "extras": ["strict", "contains"]}})
    assert "advantage.extras: no reward labelled 'contains'" in line


def test_apply_overrides_creates_sections():
    raw = {"model": {"name": "fake"}}
    apply_overrides(raw, {"eval.limit": 5, "train.lora.r": 8})
    assert raw["eval"] == {"limit": 5} and raw["train"] == {"lora": {"r": 8}}


def test_overrides_are_read_by_the_type_of_their_field(tmp_path):
    # YAML 1.1 reads `no` as False and `1e-3` as text; a field's own type decides instead
    over = parse_override_args(["--train.mixed_precision", "no", "--train.output_dir", "123",
                                "--train.learning_rate", "1e-3", "--train.offline_rollouts", "null",
                                "--train.lora.target_modules", "all-linear", "--train.save_total_limit", "null",
                                "--objective.beta", "0.5"])
    cfg = load_config(write(tmp_path, BASE), over)
    assert cfg.train.mixed_precision == "no" and cfg.train.output_dir == "123"
    assert cfg.train.learning_rate == 1e-3 and cfg.train.offline_rollouts is None
    assert cfg.train.lora.target_modules == "all-linear" and cfg.train.save_total_limit is None
    assert cfg.objective.params.beta == 0.5


def test_binary_and_non_utf8_configs_are_one_line(tmp_path):
    for name, data in (("bin.yaml", bytes(range(256))), ("latin1.yaml", "model: caf\xe9\n".encode("latin-1"))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        (line,) = info.value.problems
        assert line.startswith(f"{path}: not a UTF-8 text file (byte 0x")
