"""The data-filter extension point (``remask.DataFilter``, hook ``register_data_filters``): which training
rows the engine draws prompts from, refreshed per pass over the kept rows, checkpointed, resumed."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import Field

import remask
from remask.engine import train
from remask.engine.data import DataOrder
from remask.errors import ConfigError, RemaskError
from remask.testing import check_component, plugin_of, registered_plugin


class KeepRows(remask.DataFilter):
    """Keeps the configured row indices (test-only)."""

    name = "test-keep-rows"
    calls: list[tuple[int, int]] = []  # (global_step, epoch) of every select()

    class Config(remask.ComponentConfig):
        keep: list[int] = Field([0], description="Row indices to keep.")
        refresh_every_rollouts: int = Field(0, ge=0, description="Also refresh every this many rollouts.")

    def select(self, *, examples, context):
        KeepRows.calls.append((context.global_step, context.epoch))
        out = torch.zeros(len(examples), dtype=torch.bool)
        out[[i for i in self.config.keep if i < len(examples)]] = True
        return out


class PromptRecorder:
    """Records the example ids of every rollout through the after_rollout hook."""

    def __init__(self):
        self.ids: list[tuple[str, ...]] = []

    @remask.hookimpl
    def after_rollout(self, rollout, rewards, step):
        self.ids.append(tuple(dict.fromkeys(rollout.prompts.example_ids)))


@pytest.fixture
def keep_rows(fakes):
    KeepRows.calls.clear()
    with registered_plugin(plugin_of(KeepRows), name="keep-rows-test", registry=fakes):
        yield


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


def test_data_order_restrict_walks_only_the_kept_rows_and_round_trips():
    order = DataOrder(10, seed=3)
    seen_epochs = []
    order.before_epoch = seen_epochs.append
    order.restrict([5, 1, 3, 3])
    assert order.subset == [1, 3, 5] and order.size == 3 and order.epoch == 0
    first = order.take(3)
    assert sorted(first) == [1, 3, 5] and seen_epochs == []
    nxt = order.take(2)  # crosses into epoch 1: the callback runs before the new permutation
    assert seen_epochs == [1] and set(nxt) <= {1, 3, 5}
    state = json.loads(json.dumps(order.state_dict()))
    again = DataOrder(10, seed=3)
    again.load_state_dict(state)
    assert again.subset == [1, 3, 5] and again.take(4) == order.take(4)
    assert order.position == order.epoch + order.offset / 3
    order.restrict([0, 9])  # mid-epoch: a new pass over the new rows
    assert order.offset == 0 and sorted(order.take(2)) == [0, 9]
    with pytest.raises(RemaskError, match="kept no training rows"):
        order.restrict([])
    with pytest.raises(RemaskError, match="outside the train split of 10 rows"):
        order.restrict([10])
    old = DataOrder(10, seed=3).state_dict()
    old.pop("subset")  # a checkpoint written before data filters existed
    fresh = DataOrder(10, seed=3)
    fresh.load_state_dict(old)
    assert fresh.subset is None and fresh.size == 10


def test_register_data_filters_registers_the_kind():
    from remask.registry import Registry

    reg = Registry()
    reg.register_plugin(plugin_of(KeepRows), name="kr")
    assert reg.names("data_filter") == ["test-keep-rows"]
    assert check_component(KeepRows) == []


def test_engine_trains_only_on_kept_rows_and_refreshes_per_pass(make_config, keep_rows, fakes, tmp_path):
    rec = PromptRecorder()
    fakes.register_plugin(rec, name="prompt-recorder")
    try:
        cfg = make_config(sections={"data_filter": {"name": "test-keep-rows", "keep": [2, 5, 7]}},
                          max_steps=4, inner_steps=1)
        train(cfg)
    finally:
        fakes.unregister_plugin("prompt-recorder")
    drawn = [i for ids in rec.ids for i in ids]
    assert len(rec.ids) == 4 and set(drawn) <= {"train-2", "train-5", "train-7"}
    # 3 kept rows, 2 prompts per rollout: passes start before rollout 1 and inside rollouts 2 and 4
    assert [c[1] for c in KeepRows.calls] == [0, 1, 2]
    rows = _metrics(tmp_path / "run")
    assert rows[-1]["data/kept"] == 3 and rows[-1]["data/candidates"] == 20
    assert abs(rows[-1]["train/epoch"] - (2 + 2 / 3)) < 1e-9


def test_resume_restores_the_kept_rows_without_selecting_again(make_config, keep_rows, fakes, tmp_path):
    section = {"data_filter": {"name": "test-keep-rows", "keep": [2, 5, 7]}}
    rec = PromptRecorder()
    fakes.register_plugin(rec, name="prompt-recorder")
    try:
        train(make_config("full", sections=section, max_steps=4, inner_steps=1))
        full = list(rec.ids)
        rec.ids.clear()
        train(make_config("part", sections=section, max_steps=2, inner_steps=1, save_steps=2))
        KeepRows.calls.clear()
        train(make_config("part", sections=section, max_steps=4, inner_steps=1), resume="latest")
    finally:
        fakes.unregister_plugin("prompt-recorder")
    assert rec.ids == full  # the same prompts in the same order
    assert [c[1] for c in KeepRows.calls] == [2]  # only the pass that starts in rollout 4


def test_resuming_without_the_filter_trains_on_every_row_again(make_config, keep_rows, fakes, caplog):
    section = {"data_filter": {"name": "test-keep-rows", "keep": [2, 5, 7]}}
    train(make_config("part", sections=section, max_steps=2, inner_steps=1, save_steps=2))
    rec = PromptRecorder()
    fakes.register_plugin(rec, name="prompt-recorder")
    try:
        with caplog.at_level("WARNING", logger="remask.engine"):
            train(make_config("part", max_steps=12, inner_steps=1), resume="latest")
    finally:
        fakes.unregister_plugin("prompt-recorder")
    assert "holds 3 rows kept by a data filter that this config no longer has" in caplog.text
    assert len({i for ids in rec.ids for i in ids}) > 3  # the whole split again


def test_refresh_every_rollouts(make_config, keep_rows):
    train(make_config(sections={"data_filter": {"name": "test-keep-rows", "keep": list(range(20)),
                                                "refresh_every_rollouts": 1}}, max_steps=3, inner_steps=1))
    assert [c[0] for c in KeepRows.calls] == [0, 1, 2]


def test_an_empty_selection_is_refused_with_the_filter_named(make_config, keep_rows):
    with pytest.raises(RemaskError, match="data_filter 'test-keep-rows' kept none of the 20 training examples"):
        train(make_config(sections={"data_filter": {"name": "test-keep-rows", "keep": [99]}}, max_steps=1))


def test_an_unknown_data_filter_is_a_config_error(make_config, keep_rows):
    with pytest.raises(ConfigError, match=r"data_filter.name: unknown data_filter 'nope'.*test-keep-rows"):
        make_config(sections={"data_filter": {"name": "nope"}})
