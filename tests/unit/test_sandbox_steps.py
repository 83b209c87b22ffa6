"""Pure parts of the code verifier: test discovery, program assembly, config checks, HumanEval
loading and the return-stripping used by the peer suite."""

from __future__ import annotations

import ast

import pytest
from pydantic import ValidationError

from dataflywheel.prompts import Prompt
from dataflywheel.prompts.humaneval import (
    NUM_PROBLEMS,
    canonical_program,
    load_humaneval,
    without_returns,
)
from dataflywheel.spec import VerificationSpec
from dataflywheel.verifiers import CONFIG_TYPES, MissingReferenceError, build
from dataflywheel.verifiers.code import extract_code
from dataflywheel.verifiers.sandbox import SandboxConfig, TestsParseError, discover_steps
from dataflywheel.verifiers.sandbox.steps import TestStep, imported_modules


@pytest.mark.parametrize(
    ("tests", "entry", "expected"),
    [
        (
            "import unittest\nclass T(unittest.TestCase):\n    def test_a(self): pass\n"
            "    def helper(self): pass\n    def test_b(self): pass\n",
            None,
            [
                TestStep("T.test_a", "T('test_a').debug()"),
                TestStep("T.test_b", "T('test_b').debug()"),
            ],
        ),
        (
            "def test_one():\n    assert f() == 1\ndef test_two(x=1):\n    pass\n"
            "def test_fixture(tmp_path):\n    pass\n",
            None,
            [TestStep("test_one", "test_one()"), TestStep("test_two", "test_two()")],
        ),
        (
            "def check(candidate):\n    assert candidate(1)\n",
            "inc",
            [TestStep("check(inc)", "check(inc)")],
        ),
        ("assert f(1) == 2\nassert f(2) == 3\n", None, [TestStep("module", None)]),
    ],
    ids=["unittest", "pytest-style", "humaneval-check", "module-asserts"],
)
def test_discover_steps(tests, entry, expected):
    assert discover_steps(tests, entry) == expected


@pytest.mark.parametrize(
    ("tests", "entry", "match"),
    [
        ("def check(candidate:\n", "f", "do not parse \\(line 1\\)"),
        ("def check(candidate):\n    assert candidate()\n", None, "no entry point"),
        ("def check(candidate):\n    assert candidate()\n", "not valid", "not a Python identifier"),
        ("x = 1\n", None, "contain no test"),
    ],
)
def test_discover_steps_refuses_unusable_tests(tests, entry, match):
    with pytest.raises(TestsParseError, match=match):
        discover_steps(tests, entry)


def test_test_imports_finds_nested_and_from_imports():
    tests = "import math\nfrom collections import abc\ndef check(c):\n    import os.path\n"
    assert imported_modules(tests) == ["collections", "math", "os.path"]


def test_sandbox_config_checks():
    with pytest.raises(ValidationError, match="test_timeout_s: must be ≤ timeout_s"):
        SandboxConfig(timeout_s=1, test_timeout_s=2)
    with pytest.raises(ValidationError, match="under /usr"):
        SandboxConfig(python="/root/.pyenv/bin/python")


def test_extract_code_takes_the_last_fenced_block():
    text = "Here:\n```python\ndef f(): return 1\n```\nBetter:\n```py\ndef f(): return 2\n```\n"
    assert extract_code(text) == "def f(): return 2\n"
    assert extract_code("    return x\n") == "    return x\n"


def test_program_assembly():
    prompt = Prompt("p", "eval", "def f(x):\n", reference={"entry_point": "f"}, tests="assert 1")
    verifier = build({"name": "code_tests"})
    assert verifier.program("    return x\n", prompt) == "def f(x):\n    return x\n"
    full = "```python\ndef f(x):\n    return x\n```"
    assert verifier.program(full, prompt) == "def f(x):\n    return x\n"
    prefixed = build({"name": "code_tests", "program": "prompt_plus_completion"})
    assert prefixed.program("    return x\n", prompt) == "def f(x):\n    return x\n"


def test_missing_tests_raise_and_unparseable_tests_are_unscorable():
    verifier = build({"name": "code_tests"})
    with pytest.raises(MissingReferenceError, match="code_tests needs tests"):
        verifier.score("def f(): pass", Prompt("p", "eval", "write f"))
    bad = Prompt("p", "eval", "write f", tests="def test_x(:\n")
    score = verifier.score("def f(): pass", bad)  # decided before any sandbox starts
    assert score.status == "unscorable" and score.reason == "tests_unparseable"
    assert "line 1" in score.details["error"]


def test_code_tests_is_registered_and_usable_in_a_spec():
    assert "code_tests" in CONFIG_TYPES
    spec = VerificationSpec(verifiers=[{"name": "code_tests", "sandbox": {"timeout_s": 5}}])
    assert spec.names == ["code_tests"]
    a, b = build({"name": "code_tests"}), build({"name": "code_tests", "sandbox": {"cpu_s": 2}})
    assert a.version != b.version  # the configuration is part of the version


def test_humaneval_prompts():
    prompts = load_humaneval()
    assert len(prompts) == NUM_PROBLEMS == 164
    assert len({p.content_hash for p in prompts}) == 164
    first = prompts[0]
    assert first.metadata == {"task_id": "HumanEval/0"}
    assert first.reference["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in first.tests and first.split == "eval"


def test_without_returns_strips_only_the_entry_point():
    program = (
        "def helper():\n    return 1\ndef f(x):\n    if x:\n        return helper()\n    return\n"
    )
    stripped = without_returns(program, "f")
    functions = {n.name: n for n in ast.parse(stripped).body}
    assert any(isinstance(n, ast.Return) for n in ast.walk(functions["helper"]))
    assert not any(isinstance(n, ast.Return) for n in ast.walk(functions["f"]))
    assert "return" in without_returns(canonical_program(load_humaneval()[0]), "nope")
