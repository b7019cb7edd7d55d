"""Tasks: local jsonl/parquet/csv loading, d1 templates, eval parsers, seeded disjoint generators."""

from __future__ import annotations

import json

import pytest

import remask
from remask.registry import get_registry
from remask.testing import check_component
from remask_math.prompts import TRAIN_FORMAT_PROMPT
from remask_math.rewards import Countdown, Sudoku
from remask_math.tasks import CountdownTask, GSM8KTask, Math500Task, SudokuTask

GSM_ROWS = [
    {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
    {"question": "What is 600+400?", "answer": "600+400=1000\n#### 1,000"},
]
MATH_ROWS = [
    {"problem": "Compute 1/2+1/4.", "solution": "It is $\\boxed{\\frac{3}{4}}$.", "answer": "\\frac{3}{4}"},
    {"problem": "Solve x+1=3.", "solution": "So $x=\\boxed{2}$."},
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_registered():
    reg = get_registry()
    for name, cls in [("gsm8k", GSM8KTask), ("math500", Math500Task), ("countdown", CountdownTask), ("sudoku", SudokuTask)]:
        assert reg.get("task", name) is cls


def test_gsm8k_from_jsonl_with_d1_templates(tmp_path):
    path = _jsonl(tmp_path / "gsm.jsonl", GSM_ROWS)
    cfg = GSM8KTask.Config(train_path=path, test_path=path)
    assert check_component(GSM8KTask, cfg) == []
    task = GSM8KTask(cfg)
    train, test = task.examples("train"), task.examples("test")
    assert train[0].prompt == ({"role": "user", "content": TRAIN_FORMAT_PROMPT + "\n\n" + GSM_ROWS[0]["question"]},)
    assert train[0].prefill == "" and test[0].prefill == "<reasoning>"
    assert "\\boxed{...}" in test[0].prompt[0]["content"]
    assert train[1].reference["answer"] == "1,000"
    assert "<<" not in train[0].reference["completion"]
    # d1's eval parser: first numeric box, else the last number of the <answer> block; floats
    assert task.is_correct("<answer>\\boxed{1000}</answer>", train[1].reference) == 1.0
    assert task.is_correct("<answer>\nso 7 apples\n</answer>", train[0].reference) == 1.0
    assert task.is_correct("<answer>\n7.0\n</answer>", train[0].reference) == 1.0
    assert task.is_correct("<answer>\n8\n</answer>", train[0].reference) == 0.0
    assert task.is_correct(test[0].reference["completion"], test[0].reference) == 1.0


def test_math500_from_parquet(tmp_path):
    import datasets

    path = str(tmp_path / "math.parquet")
    datasets.Dataset.from_list([{**r, "answer": r.get("answer", "")} for r in MATH_ROWS]).to_parquet(path)
    task = Math500Task(Math500Task.Config(train_path=path, test_path=path))
    assert check_component(Math500Task, task.config) == []
    rows = task.examples("test")
    assert [r.reference["answer"] for r in rows] == ["\\frac{3}{4}", "2"]  # gold from the solution's box
    assert task.is_correct("<answer>\\boxed{\\dfrac34}</answer>", rows[0].reference) == 1.0
    assert task.is_correct("<answer>\\boxed{0.75}</answer>", rows[0].reference) == 0.0  # is_equiv is strict
    assert task.is_correct(rows[1].reference["completion"], rows[1].reference) == 1.0


def test_countdown_and_sudoku_from_files(tmp_path):
    cd = _jsonl(tmp_path / "cd.jsonl", [{"input": "44,19,35", "output": "28"}])
    task = CountdownTask(CountdownTask.Config(source="files", train_path=cd, test_path=cd))
    row = task.examples("test")[0]
    assert row.reference == {"numbers": [44, 19, 35], "target": 28}
    assert row.prompt[0]["content"].endswith("Numbers: [44, 19, 35]\nTarget: 28")
    assert task.is_correct("<answer>\\boxed{44+19-35 = 28}</answer>", row.reference) == 1.0  # d1 eval strips "= 28"
    csv = tmp_path / "sudoku.csv"
    csv.write_text("Puzzle,Solution\n0034000000000000,1234432121433412\n")
    sudoku = SudokuTask(SudokuTask.Config(source="files", train_path=str(csv), test_path=str(csv)))
    ex = sudoku.examples("train")[0]
    assert ex.reference["puzzle"] == "0034000000000000"  # leading zero survives the CSV reader
    assert sudoku.is_correct("<answer>\n1234432121433412\n</answer>", ex.reference) == 1.0


def test_missing_files_are_user_errors(tmp_path):
    task = GSM8KTask(GSM8KTask.Config(train_path=str(tmp_path / "nope.jsonl"), test_path="x.jsonl"))
    with pytest.raises(remask.RemaskError, match="does not exist"):
        task.examples("train")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "no question"}) + "\n")
    with pytest.raises(remask.RemaskError, match="none of the columns"):
        GSM8KTask(GSM8KTask.Config(train_path=str(bad), test_path=str(bad))).examples("train")


@pytest.mark.parametrize("cls,reward", [(CountdownTask, Countdown), (SudokuTask, Sudoku)])
def test_generators_are_seeded_disjoint_and_their_targets_score(cls, reward):
    cfg = cls.Config(train_size=200, test_size=50, seed=7)
    assert check_component(cls) == []
    a, b = cls(cfg), cls(cfg)
    train, test = a.examples("train"), a.examples("test")
    assert len(train) == 200 and len(test) == 50
    assert [e.reference for e in train] == [e.reference for e in b.examples("train")]
    key = (lambda r: (tuple(sorted(r["numbers"])), r["target"])) if cls is CountdownTask else (lambda r: r["puzzle"])
    assert not {key(e.reference) for e in train} & {key(e.reference) for e in test}
    assert len({key(e.reference) for e in train}) == 200
    other = cls(cls.Config(train_size=200, test_size=50, seed=8)).examples("test")
    assert [e.reference for e in other] != [e.reference for e in test]
    for split, rows in (("train", train), ("test", test)):
        texts = [("<reasoning>" if r.prefill else "") + r.reference["completion"] for r in rows]
        out = reward().score(prompts=[""] * len(rows), completions=texts, references=[r.reference for r in rows])
        assert out.total.min().item() == 1.0, split
    # d1's eval parser reads the \boxed answer the eval prompt asks for (test rows use that template)
    assert all(a.is_correct(r.reference["completion"], r.reference) == 1.0 for r in test)
