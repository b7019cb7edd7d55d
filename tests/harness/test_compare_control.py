"""`remask compare` as a researcher runs it: a signal stops the whole comparison and nothing
unfinished is reported; `--resume` reuses finished runs and continues interrupted ones bit for bit,
and refuses runs made under another protocol or code; `--jobs 2` gives the same numbers as one at a
time; `--report-only` rebuilds the report from results.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from remask.errors import RemaskError
from remask.harness import compare
from remask.harness.compare import ComparisonStopped, run_compare

# the shipped model, so that rewards, losses and gradients are not all zero
BASE = {
    "model": {"name": "tiny", "path": "builtin:tiny-arith"},
    "task": {"name": "arithmetic", "digits": 2, "train_size": 64, "test_size": 16},
    "sampler": {"name": "llada", "gen_length": 4, "block_length": 4, "steps": 4, "temperature": 1.0},
    "rewards": [{"name": "arithmetic-correct"}, {"name": "arithmetic-digits"}],
    "advantage": {"name": "group-mean"},
    "objective": {"name": "d1", "beta": 0.0},
    "train": {"prompts_per_step": 4, "group_size": 4, "learning_rate": 1.0e-3, "log_completions": 0},
}
GRPO = {"name": "grpo", "set": {"objective": {"name": "grpo", "beta": 0.0}, "advantage": {"name": "group-mean-std"}}}
#: wall-clock quantities, the only things allowed to differ between two executions of one run
_CLOCKS = ("seconds",)


def write_spec(tmp_path: Path, *, steps: int, pipelines, out: str = "out", **extra) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    spec = {"base": "base.yaml", "output_dir": str(tmp_path / out), "seeds": [0], "evaluate_base": False,
            "budget": {"optimizer_steps": steps}, "eval": {"limit": 8, "samples_per_prompt": 2, "batch_size": 8},
            "pipelines": pipelines, **extra}
    path = tmp_path / f"spec-{out}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def numbers(runs):
    """Everything a run measured, wall-clock times aside."""
    def clean(row):
        return {k: v for k, v in row.items() if k not in _CLOCKS and not k.startswith(("perf/", "timing/"))}

    return [(r["pipeline"], r["seed"], {k: v for k, v in r["eval"].items() if k != "seconds"},
             [clean(h) for h in r["train"]["history"]]) for r in runs]


@pytest.mark.slow
def test_sigterm_stops_the_comparison_and_resume_continues_bit_exactly(tmp_path):
    steps = 12
    spec = write_spec(tmp_path, steps=steps, pipelines=[{"name": "d1"}, GRPO])
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "remask", "compare", str(spec)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    progress = out / "runs" / "d1" / "seed-0" / "progress.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # stop in the middle of the first run's training
        info = json.loads(progress.read_text()) if progress.is_file() else {}
        if info.get("phase") == "train" and info.get("step", 0) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 130, output
    assert "comparison stopped" in output and "--resume" in output
    run_dir = out / "runs" / "d1" / "seed-0"
    stopped = json.loads((run_dir / "result.json").read_text())
    assert stopped["status"] == "interrupted" and 2 <= stopped["train"]["steps"] < steps, stopped
    assert (run_dir / f"checkpoint-{stopped['train']['steps']}").is_dir()
    assert not (out / "report.md").exists() and not (out / "results.json").exists()  # nothing reported
    assert not (out / "runs" / "grpo").exists()  # the comparison did not go on

    # --resume under the same code (pinned: this shared work tree may change under the test)
    job = json.loads((run_dir / "job.json").read_text())
    pinned = pytest.MonkeyPatch()
    pinned.setattr(compare, "code_revision", lambda: job["code"])
    try:
        run_compare(spec, resume=True)
    finally:
        pinned.undo()
    resumed = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in resumed] == ["finished", "finished"]
    assert [r["train"]["steps"] for r in resumed] == [steps, steps]
    assert [h["step"] for h in resumed[0]["train"]["history"]] == [float(s) for s in range(1, steps + 1)]

    # the interrupted run without interruption: identical metrics at every step and evaluation
    fresh = write_spec(tmp_path, steps=steps, pipelines=[{"name": "d1"}], out="fresh")
    run_compare(fresh)
    assert numbers(resumed[:1]) == numbers(json.loads((tmp_path / "fresh" / "results.json").read_text()))


@pytest.mark.slow
def test_resume_reuses_finished_runs_and_refuses_another_protocol_or_code(tmp_path, monkeypatch):
    code = {"commit": "a" * 40, "tree_sha256": "1111", "uncommitted_sha256": None, "remask": "0.1.0", "torch": "2"}
    monkeypatch.setattr(compare, "code_revision", lambda: dict(code))
    spec = write_spec(tmp_path, steps=2, pipelines=[{"name": "d1"}])
    run_compare(spec)
    result = tmp_path / "out" / "runs" / "d1" / "seed-0" / "result.json"
    before = result.stat().st_mtime_ns
    run_compare(spec, resume=True)  # nothing to do: the finished run is reused, not retrained
    assert result.stat().st_mtime_ns == before

    monkeypatch.setattr(compare, "code_revision", lambda: {**code, "commit": "c" * 40})
    run_compare(spec, resume=True)  # a commit that changed no code (docs only) does not block a resume
    assert result.stat().st_mtime_ns == before

    monkeypatch.setattr(compare, "code_revision", lambda: {**code, "commit": "b" * 40, "tree_sha256": "2222"})
    with pytest.raises(RemaskError, match=r"made with commit aaaaaaaaaa \(code tree 1111\).*this is commit "
                                          r"bbbbbbbbbb \(code tree 2222\)"):
        run_compare(spec, resume=True)
    monkeypatch.setattr(compare, "code_revision", lambda: {**code, "uncommitted_sha256": "3333"})
    with pytest.raises(RemaskError, match=r"this is commit aaaaaaaaaa \(code tree 1111\) \+ uncommitted changes 3333"):
        run_compare(spec, resume=True)

    monkeypatch.setattr(compare, "code_revision", lambda: dict(code))
    changed = yaml.safe_load(spec.read_text())
    changed["pipelines"][0]["override"] = {"train.learning_rate": 3.0e-3}
    spec.write_text(yaml.safe_dump(changed))
    with pytest.raises(RemaskError, match=r"different protocol \(train.learning_rate: 0.001 then, 0.003 now\)"):
        run_compare(spec, resume=True)
    assert result.stat().st_mtime_ns == before  # refused before touching anything


@pytest.mark.slow
def test_jobs_2_gives_the_same_numbers_as_one_at_a_time_and_the_report_rebuilds(tmp_path):
    # an evaluation-only run and a training run, at the same time with --jobs 2
    one = write_spec(tmp_path, steps=3, pipelines=[GRPO], out="one", evaluate_base=True)
    two = write_spec(tmp_path, steps=3, pipelines=[GRPO], out="two", evaluate_base=True)
    run_compare(one, jobs=1)
    run_compare(two, jobs=2)
    first = json.loads((tmp_path / "one" / "results.json").read_text())
    second = json.loads((tmp_path / "two" / "results.json").read_text())
    assert [r["pipeline"] for r in first] == ["base (untrained)", "grpo"]
    assert any(h["train/loss"] != 0.0 for h in first[1]["train"]["history"])  # not a vacuous check
    assert numbers(first) == numbers(second)
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["jobs"] == 2 and manifest["threads_per_run"] >= 1

    # the report and plots come back from results.json alone
    report = tmp_path / "two" / "report.md"
    text = report.read_text()
    for png in tmp_path.joinpath("two").glob("*.png"):
        png.unlink()
    report.unlink()
    run_compare(two, report_only=True)
    assert report.read_text() == text
    assert len(list(tmp_path.joinpath("two").glob("*.png"))) == 4


def test_stopped_comparison_is_an_error_with_exit_code_130():
    assert issubclass(ComparisonStopped, RemaskError) and ComparisonStopped.exit_code == 130


def test_report_only_refuses_a_directory_without_results(tmp_path):
    spec = write_spec(tmp_path, steps=2, pipelines=[{"name": "d1"}])
    with pytest.raises(RemaskError, match="no results.json"):
        run_compare(spec, report_only=True)


def test_code_revision_identifies_the_work_tree():
    code = compare.code_revision()
    assert code["remask"] and code["torch"]
    if code.get("commit"):  # a git work tree (the test suite runs from one)
        assert len(code["commit"]) == 40 and len(code["tree_sha256"]) == 16
    assert compare.same_code(code, dict(code, commit="0" * 40))  # the commit alone is not compared
    assert not compare.same_code(code, dict(code, tree_sha256="other"))


@pytest.mark.slow
def test_sigterm_reaches_every_worker_with_jobs_2(tmp_path):
    """--jobs 2: the signal goes to the comparison process, which passes it to both workers; each
    checkpoints, nothing is reported, and --resume finishes both from their checkpoints."""
    small = {**BASE, "model": {"name": "tiny", "path": "random", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                               "intermediate_size": 64, "max_length": 16},
             "task": {"name": "arithmetic", "digits": 1, "train_size": 20, "test_size": 8},
             "sampler": {"name": "llada", "gen_length": 3, "block_length": 3, "steps": 3, "temperature": 1.0}}
    steps = 400  # ~10 s of training per run on an idle machine: long enough for both to be training at once
    spec = write_spec(tmp_path, steps=steps, pipelines=[{"name": "d1"}, GRPO])
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(small))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "remask", "compare", str(spec), "--jobs", "2"], text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    runs = [out / "runs" / name / "seed-0" for name in ("d1", "grpo")]
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # both workers are training
        infos = [json.loads(p.read_text()) if (p := r / "progress.json").is_file() else {} for r in runs]
        if all(i.get("phase") == "train" and i.get("step", 0) >= 2 for i in infos):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 130, output
    results = [json.loads((r / "result.json").read_text()) for r in runs]
    assert [r["status"] for r in results] == ["interrupted", "interrupted"], output
    assert all((r / f"checkpoint-{res['train']['steps']}").is_dir() for r, res in zip(runs, results))
    assert not (out / "results.json").exists()

    job = json.loads((runs[0] / "job.json").read_text())
    pinned = pytest.MonkeyPatch()
    pinned.setattr(compare, "code_revision", lambda: job["code"])
    try:
        run_compare(spec, resume=True, jobs=2)
    finally:
        pinned.undo()
    final = json.loads((out / "results.json").read_text())
    assert [r["train"]["steps"] for r in final] == [steps, steps]
    assert [h["step"] for h in final[1]["train"]["history"]] == [float(s) for s in range(1, steps + 1)]


def test_report_header_names_each_pipelines_eval_sampler_when_they_differ():
    from remask.harness.compare import _eval_samplers

    def run(name, sampler):
        return {"pipeline": name, "eval": {"sampler": sampler}}

    same = [run("a", {"name": "llada", "steps": 4}), run("b", {"name": "llada", "steps": 4})]
    assert _eval_samplers(same) == 'sampler `{"name": "llada", "steps": 4}`.'
    mixed = same + [run("c", {"name": "fast-dllm", "threshold": 0.9})]
    text = _eval_samplers(mixed)
    assert "differs between pipelines" in text and "eval.sampler.name" in text
    assert '**a** `{"name": "llada", "steps": 4}`' in text and '**c** `{"name": "fast-dllm", "threshold": 0.9}`' in text
