"""`remask sft` on `digit-scan`: two runs with one seed give the same weights; it stops on validation."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from remask.engine.sft import parse_sft_config, sft


def _config(out, *, seed=0, **train):
    raw = {"model": {"name": "tiny", "path": "random", "hidden_size": 16, "num_layers": 1, "num_heads": 2,
                     "intermediate_size": 32, "max_length": 24, "seed": 0, "device": "cpu"},
           "task": {"name": "digit-scan", "width": 3, "lines": 4, "train_size": 40, "validation_size": 6,
                    "test_size": 6},
           "sampler": {"name": "llada", "gen_length": 16, "block_length": 4, "steps": 16, "temperature": 0.0},
           "train": {"output_dir": str(out), "seed": seed, "max_steps": 3, "prompts_per_step": 4, "group_size": 1,
                     "learning_rate": 1e-2, "report_to": [], "progress": False, "log_completions": 0,
                     "save_final_model": str(out / "final"), **train},
           "eval": {"split": "validation", "limit": 6, "batch_size": 6, "every_steps": 1}}
    return parse_sft_config(raw)


def _weights(out):
    return load_file(str(out / "final" / "model.safetensors"))


def test_two_sft_runs_with_one_seed_give_identical_weights(tmp_path):
    sft(_config(tmp_path / "a"))
    sft(_config(tmp_path / "b"))
    sft(_config(tmp_path / "c", seed=1))
    a, b, c = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "c")
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the seed matters: the test can fail


def test_sft_stops_on_the_validation_split(tmp_path):
    # accuracy >= 0 is always reached: the run stops at the first validation evaluation
    result = sft(_config(tmp_path / "v", max_steps=50, stop_at_accuracy=0.0))
    assert result["global_step"] == 1
    evals = [k for k in result if k.startswith("eval_step-")]
    assert evals == ["eval_step-1"]
    manifest = (tmp_path / "v" / "config.yaml").read_text()
    assert "split: validation" in manifest


def test_stopping_on_the_test_split_is_refused_when_a_validation_split_exists(tmp_path, capsys):
    import pytest
    import yaml

    from remask.cli import main
    from remask.errors import ConfigError

    raw_cfg = _config(tmp_path / "t", stop_at_accuracy=0.5).dump()
    raw_cfg["eval"]["split"] = "test"
    with pytest.raises(ConfigError, match="eval.split: 'test' is the reported split"):
        parse_sft_config(raw_cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw_cfg))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "set eval.split: validation" in err and str(path) in err
