"""The quickstart task `arithmetic` and its reward `arithmetic-correct`."""

from __future__ import annotations

import pytest

import remask
from remask.registry import get_registry
from remask.testing import check_component
from remask_math.arithmetic import ArithmeticCorrect, ArithmeticTask, arithmetic_verdict


def _task(**kw):
    return ArithmeticTask(ArithmeticTask.Config(**kw))


def test_contract():
    assert check_component(ArithmeticTask) == []
    assert check_component(ArithmeticCorrect) == []
    reg = get_registry()
    assert reg.get("task", "arithmetic") is ArithmeticTask
    assert reg.get("reward", "arithmetic-correct") is ArithmeticCorrect


def test_plain_rows_have_exact_shape():
    task = _task(digits=2, train_size=50, test_size=20, seed=1)
    for split in ("train", "test"):
        for ex in task.examples(split):
            a, b = ex.prompt[:-1].split("+")
            assert ex.prompt == f"{a}+{b}="
            assert len(a) == 2 and len(b) == 2
            assert ex.reference == {"answer": str(int(a) + int(b)), "completion": str(int(a) + int(b))}
            assert ex.prefill == ""


@pytest.mark.parametrize("op", ["+", "-", "*"])
def test_splits_disjoint_sized_and_deterministic(op):
    task = _task(digits=1, operation=op, train_size=70, test_size=30, seed=3)
    train = [e.prompt for e in task.examples("train")]
    test = [e.prompt for e in task.examples("test")]
    assert len(train) == 70 and len(test) == 30
    assert len(set(train)) == 70 and not set(train) & set(test)
    assert train == [e.prompt for e in _task(digits=1, operation=op, train_size=70, test_size=30, seed=3).examples("train")]
    assert test != [e.prompt for e in _task(digits=1, operation=op, train_size=70, test_size=30, seed=4).examples("test")]
    # the test split does not move when the train split grows
    assert test == [e.prompt for e in _task(digits=1, operation=op, train_size=10, test_size=30, seed=3).examples("test")]
    for e in task.examples("test"):
        assert task.is_correct(e.reference["completion"], e.reference) == 1.0


def test_large_digits_use_sparse_draw():
    task = _task(digits=12, train_size=30, test_size=10)
    rows = task.examples("train") + task.examples("test")
    assert len({r.prompt for r in rows}) == 40
    assert all(len(r.prompt.split("+")[0]) == 12 for r in rows)


def test_too_many_problems_is_a_user_error():
    with pytest.raises(remask.RemaskError, match="distinct problems"):
        _task(digits=1, train_size=95, test_size=10).examples("train")


@pytest.mark.parametrize("text,answer,value,reason", [
    ("46", "46", 1.0, "correct"),
    ("  46  ", "46", 1.0, "correct"),
    ("46 because", "46", 1.0, "correct"),
    ("460", "46", 0.0, "wrong-answer"),
    ("45", "46", 0.0, "wrong-answer"),
    ("x=46", "46", 0.0, "no-integer"),
    ("", "46", 0.0, "no-integer"),
    ("-12", "-12", 1.0, "correct"),
    ("12", "-12", 0.0, "wrong-answer"),
    ("046", "46", 1.0, "correct"),
    ("<reasoning>\n1+2=3\n</reasoning>\n<answer>\n3\n</answer>", "3", 1.0, "correct"),
    ("46", "", 0.0, "no-reference"),
])
def test_verdict(text, answer, value, reason):
    assert arithmetic_verdict(text, answer) == (value, reason)


def test_reward_rows_and_reasons():
    r = ArithmeticCorrect().score(prompts=["1+2=", "1+2="], completions=["3", "4"],
                                  references=[{"answer": "3"}, {"answer": "3"}])
    assert r.total.tolist() == [1.0, 0.0]
    assert r.reasons["arithmetic-correct"] == ("correct", "wrong-answer")


def test_d1_template_targets_score_correct():
    task = _task(template="d1", train_size=5, test_size=5)
    ex = task.examples("train")[0]
    assert ex.prefill == "<reasoning>"
    assert ex.prompt[0]["role"] == "user" and "<answer>" in ex.prompt[0]["content"]
    assert ex.reference["completion"].endswith(f"<answer>\n{ex.reference['answer']}\n</answer>")
    assert task.is_correct(ex.reference["completion"], ex.reference) == 1.0
    r = ArithmeticCorrect().score(prompts=["p"], completions=[ex.reference["completion"]], references=[ex.reference])
    assert r.total.item() == 1.0


# Fingerprints of the splits as the task drew them BEFORE the validation split existed (sha256 of the
# newline-joined prompts, computed with the previous version of arithmetic.py, git c5b53e9): the
# quickstart's 1000 test problems and its 4000 train problems must stay exactly these.
_OLD_SPLITS = [
    ({"digits": 2, "train_size": 4000, "test_size": 1000}, "6ff6693ab139f9d6", "8ed99679d0e1123c",
     ["71+24=", "68+35=", "45+91="]),
    ({"digits": 2, "train_size": 2000, "test_size": 200, "operation": "*", "seed": 5}, "44ac61570ce5e7bf",
     "052898d67c35c3aa", ["93*79=", "68*22=", "95*17="]),
    ({"digits": 12, "train_size": 30, "test_size": 10}, "5d889b73623dd557", "c6c48185daa76001",
     ["727863456467+886289404362=", "329126857967+523688101532=", "106846826108+604220953322="]),
]


@pytest.mark.parametrize("kw,test_sha,train_sha,first", _OLD_SPLITS)
@pytest.mark.parametrize("validation_size", [1, 200, 500])
def test_validation_split_leaves_test_and_train_as_before(kw, test_sha, train_sha, first, validation_size):
    import hashlib

    task = _task(validation_size=validation_size, **kw)
    test = [e.prompt for e in task.examples("test")]
    train = [e.prompt for e in task.examples("train")]
    validation = [e.prompt for e in task.examples("validation")]
    assert test[:3] == first
    assert hashlib.sha256("\n".join(test).encode()).hexdigest()[:16] == test_sha
    assert hashlib.sha256("\n".join(train).encode()).hexdigest()[:16] == train_sha
    assert len(validation) == len(set(validation)) == validation_size
    assert not set(validation) & set(test) and not set(validation) & set(train)
    assert all(e.id.startswith("arithmetic-validation-") for e in task.examples("validation"))
    for e in task.examples("validation"):
        assert task.is_correct(e.reference["completion"], e.reference) == 1.0


def test_validation_split_is_deterministic_and_seeded():
    a = [e.prompt for e in _task(seed=2, validation_size=50).examples("validation")]
    assert a == [e.prompt for e in _task(seed=2, validation_size=50).examples("validation")]
    assert a != [e.prompt for e in _task(seed=3, validation_size=50).examples("validation")]
    # a larger validation split starts with the smaller one
    assert [e.prompt for e in _task(seed=2, validation_size=80).examples("validation")][:50] == a


def test_validation_split_is_only_drawn_when_asked_for():
    # 1-digit sums have 100 problems: 20 + 8 fit, + the default 200 validation rows do not
    task = _task(digits=1, train_size=20, test_size=8)
    assert len(task.examples("train")) == 20 and len(task.examples("test")) == 8
    with pytest.raises(remask.RemaskError, match="distinct problems.*validation_size"):
        task.examples("validation")
    assert len(_task(digits=1, train_size=20, test_size=8, validation_size=72).examples("validation")) == 72


def test_unknown_split_is_a_user_error():
    with pytest.raises(remask.RemaskError, match="unknown split 'dev'"):
        _task().examples("dev")
