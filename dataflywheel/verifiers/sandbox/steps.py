"""Cut a test file into test steps: each step runs in its own fresh process in the sandbox.

Runs in: anywhere (pure). The test source is trusted input (it comes with the prompt) and is
parsed here, outside the sandbox, so that a file that does not parse is reported as such
before anything runs. Steps, in order of preference:

* ``unittest.TestCase`` subclasses: one step per ``test_*`` method (``Cls('m').debug()``, so
  setUp/tearDown run and failures propagate as exceptions);
* top-level ``test_*`` functions without required arguments (pytest style): one step each;
* a HumanEval-style ``check(candidate)`` function plus an entry point: one step;
* otherwise the module's top-level statements (plain ``assert`` lines) are one step.

Every step first runs the candidate program, then the whole test module (its top level),
then the step's call.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache

from dataflywheel import python_ast


class TestsParseError(ValueError):
    """The test source does not parse, or names nothing that can be run."""

    __test__ = False  # not a pytest test class, despite the name


@dataclass(frozen=True)
class TestStep:
    """One test: a display name and the statement that runs it (None: the module itself)."""

    __test__ = False

    name: str
    call: str | None


def _is_testcase(node: ast.ClassDef) -> bool:
    for base in node.bases:
        name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
        if name in ("TestCase", "IsolatedAsyncioTestCase"):
            return True
    return False


def _no_required_args(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    args = node.args
    positional = args.posonlyargs + args.args
    return len(positional) == len(args.defaults) and all(
        default is not None for default in args.kw_defaults
    )


def discover_steps(tests: str, entry_point: str | None = None) -> list[TestStep]:
    """The steps of a test file; raises :class:`TestsParseError` when it cannot be used.

    Cached per (tests, entry point): every sample of a prompt brings the same tests, and
    parsing them costs about as much as the supervisor's own work for a sample.
    """
    return list(_steps(tests, entry_point))


@lru_cache(maxsize=512)
def _steps(tests: str, entry_point: str | None) -> tuple[TestStep, ...]:
    return tuple(_find_steps(tests, entry_point))


def _find_steps(tests: str, entry_point: str | None) -> list[TestStep]:
    try:
        module = python_ast.parse(tests, filename="<tests>")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise TestsParseError(f"the tests do not parse{where}: {exc}") from None
    steps: list[TestStep] = []
    for node in module.body:
        if isinstance(node, ast.ClassDef) and _is_testcase(node):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and (
                    item.name.startswith("test")
                ):
                    steps.append(
                        TestStep(f"{node.name}.{item.name}", f"{node.name}({item.name!r}).debug()")
                    )
    if steps:
        return steps
    for node in module.body:
        if (
            isinstance(node, ast.FunctionDef)
            and node.name.startswith("test")
            and _no_required_args(node)
        ):
            steps.append(TestStep(node.name, f"{node.name}()"))
    if steps:
        return steps
    has_check = any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in module.body)
    if has_check:
        if not entry_point:
            raise TestsParseError(
                "the tests define check(candidate) but the prompt names no entry point; put "
                "the function name in prompt.reference['entry_point']"
            )
        if not entry_point.isidentifier():
            raise TestsParseError(f"entry point {entry_point!r} is not a Python identifier")
        return [TestStep(f"check({entry_point})", f"check({entry_point})")]
    if not any(isinstance(n, ast.Assert | ast.Expr | ast.For | ast.If) for n in module.body):
        raise TestsParseError(
            "the tests contain no test: give test_* functions, unittest.TestCase classes, a "
            "check(candidate) function or top-level assert statements"
        )
    return [TestStep("module", None)]


def imported_modules(tests: str) -> list[str]:
    """Absolute module names the tests import anywhere (the harness imports them up front)."""
    return list(_imports(tests))


@lru_cache(maxsize=512)
def _imports(tests: str) -> tuple[str, ...]:
    names: set[str] = set()
    for node in ast.walk(python_ast.parse(tests, filename="<tests>")):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return tuple(sorted(names))
