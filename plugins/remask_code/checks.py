"""Trusted-side logic of the code reward: code extraction, test plans, result comparison.

Nothing here runs model code. Three kinds of test plan (docs/sandbox.md):

* :class:`CallsPlan`: call one function on literal arguments inside the sandbox; the results come
  back as plain literals and are compared here (mode (b), also what assert tests are converted to);
* :class:`IOPlan`: run the program on each stdin; stdout is compared here line by line (mode (c));
* :class:`TestsPlan`: assert / pytest-style test code that cannot be turned into data runs inside
  the sandbox with every assert rewritten to compare plain builtin values (mode (a)).
"""

from __future__ import annotations

import ast
import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "BadReference",
    "Case",
    "CallsPlan",
    "IOPlan",
    "TestsPlan",
    "extract_code",
    "plan_for",
    "asserts_to_calls",
    "tests_to_units",
    "decode_value",
    "values_equal",
    "outputs_match",
]


class BadReference(ValueError):
    """The reference row's tests cannot be used (the row is scored None, never the model)."""


# ---------------------------------------------------------------------------------------------
# Extracting the program from a completion
# ---------------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PY_TAGS = {"python", "py", "python3", "py3"}


def extract_code(completion: str, how: str = "last_block") -> str | None:
    """The program in ``completion``.

    * ``last_block``: the last fenced block tagged python (or, when none is tagged, the last
      untagged block) — open-r1's convention;
    * ``first_python_block``: the first ```` ```python ```` block — EGSPO / wd1's ``coding_reward``;
    * ``raw``: the whole completion.
    """
    if how == "raw":
        return completion
    blocks = [(m.group(1).lower(), m.group(2), m.span()) for m in _FENCE.finditer(completion)]
    if how == "first_python_block":
        for tag, body, _ in blocks:
            if tag == "python":
                return body
        return None
    tagged = [b for t, b, _ in blocks if t in _PY_TAGS]
    if tagged:
        return tagged[-1]
    untagged = [b for t, b, _ in blocks if t == ""]
    return untagged[-1] if untagged else None


def python_block_span(completion: str) -> tuple[int, int] | None:
    """Character span of the first ```` ```python ```` block (EGSPO's tag bonus looks at it)."""
    for m in _FENCE.finditer(completion):
        if m.group(1).lower() == "python":
            return m.span()
    return None


# ---------------------------------------------------------------------------------------------
# Test plans
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One call ``fn(*args, **kwargs)`` and how its result is judged, with the semantics of the
    Python test it came from (:func:`case_passes`).

    ``check``: ``eq`` (``result == expected``), ``truthy``, ``falsy``, ``is``, ``close``
    (``math.isclose(result, expected, rel_tol=, abs_tol=)``), ``abs_lt`` / ``abs_le``
    (``abs(result - expected) < bound`` / ``<=``; ``abs(expected - result)`` when ``swapped``).
    """

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    expected: Any = None
    check: str = "eq"  # eq | truthy | falsy | is | close | abs_lt | abs_le
    rel_tol: Any = 0.0
    abs_tol: Any = 0.0
    bound: Any = None  # abs_lt / abs_le: the right-hand side, as written
    swapped: bool = False  # abs_*: the call is the subtrahend

    def sources(self) -> list[str]:
        """``[repr(args), repr(kwargs)]`` as the sandbox receives them (literal_eval-able)."""
        return [repr(tuple(self.args)), repr(dict(self.kwargs))]


@dataclass(frozen=True)
class CallsPlan:
    fn: str
    cases: tuple[Case, ...]
    tuple_equals_list: bool = False  # JSON references cannot spell tuples


@dataclass(frozen=True)
class IOPlan:
    cases: tuple[tuple[str, str], ...]  # (stdin, expected stdout)


@dataclass(frozen=True)
class TestsPlan:
    setup: str
    units: tuple[str, ...]
    names: tuple[str, ...] = field(default=())


def _literal(node: ast.AST) -> Any:
    value = ast.literal_eval(node)
    if not _round_trips(value):
        raise ValueError("not representable as a literal")
    return value


def _round_trips(value: Any) -> bool:
    try:
        return ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


def _call_of(node: ast.AST, names: set[str]) -> tuple[str, tuple, dict] | None:
    """``f(<literals>)`` with ``f`` in ``names`` -> (f, args, kwargs), else None."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return None
    if names and node.func.id not in names:
        return None
    if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
        return None
    try:
        args = tuple(_literal(a) for a in node.args)
        kwargs = {k.arg: _literal(k.value) for k in node.keywords}
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return node.func.id, args, kwargs


def _assert_to_case(test: ast.AST, names: set[str]) -> tuple[str, Case] | None:
    """Recognise the assert shapes MBPP / HumanEval / KodCode use with literal data."""
    lit = _literal
    try:
        # abs(f(x) - y) < tol   (or <=)
        if (isinstance(test, ast.Compare) and len(test.ops) == 1
                and isinstance(test.ops[0], (ast.Lt, ast.LtE))
                and isinstance(test.left, ast.Call) and isinstance(test.left.func, ast.Name)
                and test.left.func.id == "abs" and len(test.left.args) == 1
                and isinstance(test.left.args[0], ast.BinOp) and isinstance(test.left.args[0].op, ast.Sub)):
            diff = test.left.args[0]
            call, other, swapped = _call_of(diff.left, names), diff.right, False
            if call is None:
                call, other, swapped = _call_of(diff.right, names), diff.left, True
            if call is None:
                return None
            check = "abs_lt" if isinstance(test.ops[0], ast.Lt) else "abs_le"
            return call[0], Case(call[1], call[2], lit(other), check, bound=lit(test.comparators[0]),
                                 swapped=swapped)
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            op, left, right = test.ops[0], test.left, test.comparators[0]
            call = _call_of(left, names)
            other = right
            if call is None:
                call, other = _call_of(right, names), left
            if call is None:
                return None
            if isinstance(op, ast.Eq):
                return call[0], Case(call[1], call[2], lit(other), "eq")
            if isinstance(op, ast.Is) and isinstance(other, ast.Constant) and other.value in (True, False, None):
                return call[0], Case(call[1], call[2], other.value, "is")
            if isinstance(op, (ast.Lt, ast.LtE)):
                return None
            return None
        call = _call_of(test, names)
        if call is not None:
            return call[0], Case(call[1], call[2], True, "truthy")
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            call = _call_of(test.operand, names)
            if call is not None:
                return call[0], Case(call[1], call[2], False, "falsy")
            return None
        # math.isclose(f(x), y[, rel_tol=, abs_tol=]) / isclose(...)
        if isinstance(test, ast.Call) and (
            (isinstance(test.func, ast.Attribute) and test.func.attr == "isclose"
             and isinstance(test.func.value, ast.Name) and test.func.value.id == "math")
            or (isinstance(test.func, ast.Name) and test.func.id == "isclose")
        ) and len(test.args) == 2:
            tol = {k.arg: lit(k.value) for k in test.keywords}
            if set(tol) - {"rel_tol", "abs_tol"}:
                return None
            call, other = _call_of(test.args[0], names), test.args[1]
            if call is None:
                call, other = _call_of(test.args[1], names), test.args[0]
            if call is None:
                return None
            return call[0], Case(call[1], call[2], lit(other), "close",
                                 tol.get("rel_tol", 1e-9), tol.get("abs_tol", 0.0))  # math.isclose's defaults
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return None


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _is_harmless_import(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.ImportFrom):
        return stmt.module in ("solution", "math", "__future__")
    if isinstance(stmt, ast.Import):
        return all(a.name == "math" for a in stmt.names)
    return False


class _Substitute(ast.NodeTransformer):
    """Replace loads of bound names by (copies of) the expressions they were bound to."""

    def __init__(self, env: Mapping[str, ast.expr]) -> None:
        self.env = env

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if isinstance(node.ctx, ast.Load) and node.id in self.env:
            return copy.deepcopy(self.env[node.id])
        return node


def _bind(stmt: ast.stmt, env: dict[str, ast.expr], names: set[str]) -> bool:
    """``x = <literal>`` or ``x = f(<literals>)``: remember it (for later asserts); else False."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
        return False
    value = _Substitute(env).visit(copy.deepcopy(stmt.value))
    try:
        _literal(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if _call_of(value, names) is None:
            return False
    env[stmt.targets[0].id] = value
    return True


def asserts_to_calls(tests: str, entry_point: str = "") -> tuple[str, tuple[Case, ...]] | None:
    """Turn assert tests into data when every assert is ``f(<literals>) <op> <literal>``.

    Accepts top-level asserts (MBPP), ``def check(candidate)`` + ``check(entry_point)`` (HumanEval)
    and argument-less ``def test_*()`` functions (KodCode / pytest), each made only of such asserts
    and of assignments ``x = <literal>`` / ``x = f(<literals>)`` whose names the asserts then use
    (``result = f([1]); assert result == [2]``). Returns ``(function name, cases)`` or None when
    anything else appears (the caller then runs the tests in-process instead).
    """
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    asserts: list[tuple[ast.expr, set[str]]] = []
    top_env: dict[str, ast.expr] = {}
    for stmt in tree.body:
        if _is_docstring(stmt) or _is_harmless_import(stmt) or isinstance(stmt, ast.Pass):
            continue
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) and t.id == "METADATA" for t in stmt.targets):
            continue
        if isinstance(stmt, ast.Assert):
            asserts.append((_Substitute(top_env).visit(stmt.test), set()))
            continue
        if _bind(stmt, top_env, set()):
            continue
        if isinstance(stmt, ast.FunctionDef) and not stmt.decorator_list:
            params = [a.arg for a in stmt.args.args]
            if stmt.name == "check" and len(params) == 1 and entry_point:
                names = {params[0]}
            elif stmt.name.startswith("test") and not params:
                names = set()
            else:
                return None
            env = dict(top_env)
            for inner in stmt.body:
                if _is_docstring(inner) or isinstance(inner, ast.Pass):
                    continue
                if isinstance(inner, ast.Assert):
                    if isinstance(inner.test, ast.Constant) and inner.test.value is True:
                        continue  # HumanEval's `assert True, "..."` lines
                    asserts.append((_Substitute(env).visit(inner.test), names))
                    continue
                if _bind(inner, env, names):
                    continue
                return None
            continue
        if (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                and isinstance(stmt.value.func, ast.Name) and stmt.value.func.id == "check"):
            continue
        return None
    fn = ""
    cases = []
    for test, names in asserts:
        found = _assert_to_case(test, names)
        if found is None:
            return None
        name, case = found
        if names and name in names:  # `candidate` in HumanEval's check
            name = entry_point
        if fn and name != fn:
            return None
        fn = name
        cases.append(case)
    if not cases or not fn:
        return None
    return fn, tuple(cases)


class _AssertRewriter(ast.NodeTransformer):
    """``assert a == b`` -> ``assert __remask_cmp('Eq', a, b)``; ``assert x`` ->
    ``assert __remask_truth(x)``: the in-sandbox helpers refuse values that are not plain builtins,
    which defeats ``__eq__`` / ``__bool__`` overrides (spec C19)."""

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        node.test = self._wrap(node.test)
        return node

    def _wrap(self, test: ast.expr) -> ast.expr:
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            op = type(test.ops[0]).__name__
            return ast.Call(ast.Name("__remask_cmp", ast.Load()),
                            [ast.Constant(op), test.left, test.comparators[0]], [])
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return ast.UnaryOp(ast.Not(), self._wrap(test.operand))
        if isinstance(test, ast.BoolOp):
            return ast.BoolOp(test.op, [self._wrap(v) for v in test.values])
        return ast.Call(ast.Name("__remask_truth", ast.Load()), [test], [])


def tests_to_units(tests: str, entry_point: str = "", *, split_asserts: bool = True) -> TestsPlan:
    """Split test code into independently scored units (mode (a)).

    * ``def test_*`` functions (and ``Test*`` classes' ``test_*`` methods): one unit each;
    * ``def check(candidate)`` with an ``entry_point``: one unit ``check(entry_point)``;
    * otherwise every top-level assert is a unit (``split_asserts``) and the rest is setup.
    """
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise BadReference(f"test code does not parse: {type(exc).__name__}") from None
    tree = _AssertRewriter().visit(tree)
    ast.fix_missing_locations(tree)
    setup: list[ast.stmt] = []
    units: list[str] = []
    names: list[str] = []
    has_check = False
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name.startswith("test") and not stmt.args.args:
            setup.append(stmt)
            units.append(f"{stmt.name}()")
            names.append(stmt.name)
        elif isinstance(stmt, ast.ClassDef) and stmt.name.startswith("Test"):
            setup.append(stmt)
            for item in stmt.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    units.append(f"{stmt.name}().{item.name}()")
                    names.append(f"{stmt.name}.{item.name}")
        elif isinstance(stmt, ast.FunctionDef) and stmt.name == "check":
            setup.append(stmt)
            has_check = True
        elif (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
              and isinstance(stmt.value.func, ast.Name) and stmt.value.func.id == "check"):
            continue  # the harness calls check itself
        elif isinstance(stmt, ast.If) and _is_main_guard(stmt):
            continue
        elif isinstance(stmt, ast.Assert) and split_asserts:
            units.append(ast.unparse(stmt))
            names.append(f"assert_{len(units)}")
        else:
            setup.append(stmt)
    if has_check and not units:
        if not entry_point:
            raise BadReference("tests define check(candidate) but the reference has no entry_point")
        units.append(f"check({entry_point})")
        names.append("check")
    if not units:
        raise BadReference("test code contains no test (no assert, test_* function or check)")
    return TestsPlan(ast.unparse(ast.Module(setup, [])), tuple(units), tuple(names))


def _is_main_guard(stmt: ast.If) -> bool:
    t = stmt.test
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == "__name__")


def plan_for(reference: Mapping[str, Any], mode: str = "auto", *, convert_asserts: bool = True):
    """The test plan of a reference row, or None when it carries no tests.

    Keys (docs/sandbox.md): ``calls`` (+ ``fn`` / ``entry_point``), ``io`` (list of
    ``{"input", "output"}``), ``tests`` (assert code, a list of assert lines, or pytest code; with
    ``entry_point`` for HumanEval's ``check`` and optional ``setup`` / ``test_imports`` code).
    """
    has = {k: reference.get(k) not in (None, "", [], ()) for k in ("calls", "io", "tests")}
    if mode == "auto":
        mode = next((k for k in ("calls", "io", "tests") if has[k]), "")
        if not mode:
            return None
    elif not has.get(mode):
        return None
    if mode == "calls":
        fn = str(reference.get("fn") or reference.get("entry_point") or "")
        if not fn.isidentifier():
            raise BadReference("calls reference needs `fn` (the function name)")
        cases = []
        for row in reference["calls"]:
            if not isinstance(row, Mapping) or "args" not in row:
                raise BadReference("each calls entry needs `args` and `expected`")
            args = tuple(row["args"]) if isinstance(row["args"], (list, tuple)) else (row["args"],)
            check = str(row.get("check", "eq"))
            if check not in ("eq", "truthy", "falsy", "is", "close"):
                raise BadReference(f"calls entry has unknown check {check!r} (eq, truthy, falsy, is, close)")
            default_rel = 1e-9 if check == "close" else 0.0  # math.isclose's default
            case = Case(args, dict(row.get("kwargs") or {}), row.get("expected"), check,
                        float(row.get("rel_tol", default_rel)), float(row.get("abs_tol", 0.0)))
            if not all(_round_trips(v) for v in (case.args, dict(case.kwargs))):
                raise BadReference("calls arguments must be plain literals")
            cases.append(case)
        return CallsPlan(fn, tuple(cases), tuple_equals_list=bool(reference.get("tuple_equals_list", True)))
    if mode == "io":
        cases = []
        for row in reference["io"]:
            if not isinstance(row, Mapping) or "input" not in row or "output" not in row:
                raise BadReference("each io entry needs `input` and `output`")
            cases.append((str(row["input"]), str(row["output"])))
        return IOPlan(tuple(cases))
    tests = reference["tests"]
    if isinstance(tests, (list, tuple)):
        tests = "\n".join(str(t) for t in tests)
    prelude = "\n".join(str(reference.get(k) or "") for k in ("test_imports", "setup") if reference.get(k))
    if isinstance(reference.get("test_imports"), (list, tuple)):
        prelude = "\n".join(reference["test_imports"])
    entry = str(reference.get("entry_point") or "")
    if convert_asserts and not prelude.strip():
        converted = asserts_to_calls(str(tests), entry)
        if converted is not None:
            return CallsPlan(converted[0], converted[1], tuple_equals_list=False)
    return tests_to_units((prelude + "\n" + str(tests)) if prelude else str(tests), entry)


# ---------------------------------------------------------------------------------------------
# Results: decoding and comparison (in the trusted parent)
# ---------------------------------------------------------------------------------------------


def decode_value(enc: Any, depth: int = 0) -> Any:
    """Inverse of the sandbox's tagged-JSON encoder; raises ValueError on anything malformed."""
    if depth > 80:
        raise ValueError("too deep")
    if enc is None or isinstance(enc, (bool, str)):
        return enc
    if isinstance(enc, list):
        return [decode_value(v, depth + 1) for v in enc]
    if isinstance(enc, dict) and len(enc) == 1:
        (tag, body), = enc.items()
        if tag == "i" and isinstance(body, str):
            return int(body, 16)
        if tag == "f" and isinstance(body, str):
            return float.fromhex(body)
        if tag == "c" and isinstance(body, list) and len(body) == 2:
            return complex(float.fromhex(body[0]), float.fromhex(body[1]))
        if tag == "b" and isinstance(body, str):
            return bytes.fromhex(body)
        if tag in ("t", "s", "fs", "d") and isinstance(body, list):
            items = [decode_value(v, depth + 1) for v in body]
            if tag == "t":
                return tuple(items)
            if tag == "s":
                return set(items)
            if tag == "fs":
                return frozenset(items)
            if all(isinstance(kv, list) and len(kv) == 2 for kv in items):
                return {k: v for k, v in items}
    raise ValueError("malformed result value")


def values_equal(expected: Any, actual: Any, *, rel_tol: float = 0.0, abs_tol: float = 0.0,
                 tuple_equals_list: bool = False) -> bool:
    """Python ``==`` on plain values, with optional float tolerance and tuple/list leniency."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected == actual
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
            if expected == actual:
                return True
            if rel_tol or abs_tol:
                return math.isclose(expected, actual, rel_tol=rel_tol, abs_tol=abs_tol)
            return False
        return False
    seq = (list, tuple) if tuple_equals_list else ()
    if seq and isinstance(expected, seq) and isinstance(actual, seq):
        return len(expected) == len(actual) and all(
            values_equal(e, a, rel_tol=rel_tol, abs_tol=abs_tol, tuple_equals_list=True)
            for e, a in zip(expected, actual))
    if isinstance(expected, (list, tuple)) and type(expected) is type(actual):
        return len(expected) == len(actual) and all(
            values_equal(e, a, rel_tol=rel_tol, abs_tol=abs_tol, tuple_equals_list=tuple_equals_list)
            for e, a in zip(expected, actual))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(
            values_equal(expected[k], actual[k], rel_tol=rel_tol, abs_tol=abs_tol,
                         tuple_equals_list=tuple_equals_list) for k in expected)
    return expected == actual


def case_passes(case: Case, actual: Any, *, tuple_equals_list: bool = False) -> bool:
    """Judge one returned value against its case exactly as the Python test it came from would:
    ``actual`` is a plain builtin value (decoded by the trusted parent), so evaluating the test's
    own expression on it here has Python's semantics, errors included (an error fails the case:
    ``math.isclose('0.5', 0.5)`` raises TypeError, so it fails). No implicit tolerance; a strict
    ``<`` stays strict. Only ``calls`` rows from JSON (``tuple_equals_list`` or a tolerance on
    ``eq``) use the lenient :func:`values_equal`."""
    try:
        if case.check == "truthy":
            return bool(actual)
        if case.check == "falsy":
            return not actual
        if case.check == "is":
            return actual is case.expected
        if case.check == "close":
            return math.isclose(actual, case.expected, rel_tol=case.rel_tol, abs_tol=case.abs_tol)
        if case.check in ("abs_lt", "abs_le"):
            diff = abs(case.expected - actual) if case.swapped else abs(actual - case.expected)
            return bool(diff < case.bound) if case.check == "abs_lt" else bool(diff <= case.bound)
        if case.check != "eq":
            return False
        if tuple_equals_list or case.rel_tol or case.abs_tol:
            return values_equal(case.expected, actual, rel_tol=case.rel_tol, abs_tol=case.abs_tol,
                                tuple_equals_list=tuple_equals_list)
        return bool(actual == case.expected)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError, RecursionError, MemoryError):
        return False


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().splitlines()]


def _decimal(token: str) -> Decimal | None:
    try:
        value = Decimal(token)
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def outputs_match(expected: str, actual: str) -> bool:
    """LiveCodeBench-style stdout comparison: the same number of lines (after stripping the whole
    output), each line equal after ``strip()``, or token by token with numbers compared as exact
    ``Decimal`` values. No ``zip`` truncation: missing or extra lines fail."""
    exp, act = _lines(expected), _lines(actual)
    if len(exp) != len(act):
        return False
    for e, a in zip(exp, act):
        if e == a:
            continue
        et, at = e.split(), a.split()
        if len(et) != len(at):
            return False
        for x, y in zip(et, at):
            if x == y:
                continue
            dx, dy = _decimal(x), _decimal(y)
            if dx is None or dy is None or dx != dy:
                return False
    return True
