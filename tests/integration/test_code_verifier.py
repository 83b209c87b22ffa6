"""The ``code_tests`` verifier end to end in the real sandbox: verdicts, per-test details, error
classes, and the unscorable cases (tests that cannot run are the prompt's fault)."""

from __future__ import annotations

from dataflywheel.prompts import Prompt
from dataflywheel.verifiers import build

VERIFIER = build({"name": "code_tests", "sandbox": {"test_timeout_s": 2.0, "timeout_s": 10.0}})
UNITTESTS = (
    "import unittest\n"
    "class TestAdd(unittest.TestCase):\n"
    "    def test_small(self):\n"
    "        self.assertEqual(add(1, 2), 3)\n"
    "    def test_negative(self):\n"
    "        self.assertEqual(add(-1, -2), -3)\n"
    "    def test_big(self):\n"
    "        self.assertEqual(add(10**20, 1), 10**20 + 1)\n"
)


def prompt(tests: str) -> Prompt:
    return Prompt("code", "eval", "Write add(a, b).", tests=tests)


def test_per_test_results_and_partial_credit():
    score = VERIFIER.score("def add(a, b):\n    return abs(a) + abs(b)\n", prompt(UNITTESTS))
    assert score.status == "scored" and not score.passed
    assert score.reason == "assertion" and score.value == 2 / 3
    tests = {t["name"]: t for t in score.details["tests"]}
    assert tests["TestAdd.test_small"]["status"] == "passed"
    assert tests["TestAdd.test_negative"]["error_class"] == "assertion"
    assert "-3" in tests["TestAdd.test_negative"]["message"]
    assert all(t["seconds"] is not None and t["seconds"] >= 0 for t in tests.values())
    good = VERIFIER.score("```python\ndef add(a, b):\n    return a + b\n```", prompt(UNITTESTS))
    assert good.passed and good.value == 1.0 and good.details["passed_tests"] == 3


def test_error_classes():
    cases = {
        "def add(a, b:\n    return a + b\n": "syntax",
        "def add(a, b):\n    raise KeyError(a)\n": "exception",
        "def add(a, b):\n    return add(a, b)\n": "exception",  # RecursionError
    }
    for code, error_class in cases.items():
        score = VERIFIER.score(code, prompt(UNITTESTS))
        assert not score.passed and score.details["error_class"] == error_class, code


def test_tests_importing_a_missing_module_are_unscorable():
    tests = "import numpy\ndef test_x():\n    assert add(1, 1) == 2\n"
    score = VERIFIER.score("def add(a, b):\n    return a + b\n", prompt(tests))
    assert score.status == "unscorable" and score.reason == "tests_error"
    assert "numpy" in score.details["error"]


def test_module_level_asserts():
    tests = "assert add(2, 2) == 4\nassert add(2, 3) == 5\n"
    assert VERIFIER.score("def add(a, b):\n    return a + b\n", prompt(tests)).passed
    assert not VERIFIER.score("def add(a, b):\n    return a * b\n", prompt(tests)).passed
