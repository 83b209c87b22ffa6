"""The ``code_tests`` verifier end to end in the real sandbox: verdicts, per-test details, error
classes, the unscorable cases (tests that cannot run are the prompt's fault), and what crosses
from the candidate's process to the tests' (honest values pass; hostile ones are in
test_sandbox_hostile.py)."""

from __future__ import annotations

import pytest

from dataflywheel.prompts import Prompt
from dataflywheel.verifiers import build

VERIFIER = build({"name": "code_tests", "sandbox": {"test_timeout_s": 2.0, "timeout_s": 10.0}})
COMPLETION = build(
    {"name": "code_tests", "program": "completion", "sandbox": {"test_timeout_s": 3.0}}
)
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


# The tests run in a process of their own and see only plain data from the candidate's
# (docs/sandbox.md): honest values, exceptions, in-place changes and objects made from the
# candidate's classes still reach them as they would in one process.
HONEST = {
    "namedtuple": (
        "import collections\nPair = collections.namedtuple('Pair', 'q r')\n"
        "def f(a, b):\n    return Pair(a // b, a % b)\n",
        "def check(candidate):\n    assert candidate(7, 2) == (3, 1)\n",
    ),
    "counter_defaultdict_ordereddict": (
        "from collections import Counter, OrderedDict, defaultdict\n"
        "def f(s):\n    groups = defaultdict(list)\n    groups['a'].append(1)\n"
        "    return [Counter(s.split()), groups, OrderedDict(b=2)]\n",
        "def check(candidate):\n"
        "    assert candidate('a b a') == [{'a': 2, 'b': 1}, {'a': [1]}, {'b': 2}]\n",
    ),
    "int_enum_and_plain_float_subclass": (
        "import enum\nclass Colour(enum.IntEnum):\n    RED = 1\n"
        "class Metres(float):\n    pass\n"
        "def f(x):\n    return (Colour.RED, Metres(3.5))\n",
        "def check(candidate):\n    assert candidate(0) == (1, 3.5)\n",
    ),
    "bytes_complex_frozenset_keywords": (
        "def f(a, *, b):\n    return {b'x': (a, complex(1, b), frozenset({a}), None, True)}\n",
        "def check(candidate):\n"
        "    assert candidate(1, b=2) == {b'x': (1, 1 + 2j, frozenset({1}), None, True)}\n",
    ),
    "lru_cache_entry_point": (
        "from functools import lru_cache\n@lru_cache(None)\n"
        "def f(n):\n    return n if n < 2 else f(n - 1) + f(n - 2)\n",
        "def check(candidate):\n    assert candidate(30) == 832040\n",
    ),
    "builtin_exception": (
        "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n",
        "def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError as exc:\n"
        "        assert 'negative' in str(exc)\n    else:\n        assert False\n",
    ),
    "candidates_own_exception_class": (
        "class Bad(ValueError):\n    pass\ndef f(x):\n    raise Bad('no')\n",
        "import unittest\nclass T(unittest.TestCase):\n    def test_own(self):\n"
        "        with self.assertRaises(Bad):\n            f(1)\n    def test_base(self):\n"
        "        with self.assertRaises(ValueError):\n            f(1)\n",
    ),
    "argument_changed_in_place": (
        "def f(xs, seen):\n    xs.sort()\n    seen['sorted'] = True\n",
        "def check(candidate):\n    xs, seen = [3, 1, 2], {}\n"
        "    assert candidate(xs, seen) is None\n"
        "    assert xs == [1, 2, 3] and seen == {'sorted': True}\n",
    ),
    "objects_of_the_candidates_classes": (
        "class Stack:\n    def __init__(self):\n        self.items = []\n"
        "    def push(self, x):\n        self.items.append(x)\n"
        "    def pop(self):\n        return self.items.pop()\n"
        "class Node:\n    def __init__(self, val, next=None):\n"
        "        self.val, self.next = val, next\n",
        "def test_stack():\n    s = Stack()\n    s.push(1)\n    s.push(2)\n"
        "    assert s.pop() == 2 and s.items == [1]\n    s.label = 'x'\n    assert s.label == 'x'\n"
        "def test_linked():\n    node, out = Node(1, Node(2)), []\n    while node is not None:\n"
        "        out.append(node.val)\n        node = node.next\n    assert out == [1, 2]\n",
    ),
    "solution_class": (
        "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
        "        for i, n in enumerate(nums):\n            if target - n in seen:\n"
        "                return [seen[target - n], i]\n            seen[n] = i\n",
        "def test_two_sum():\n    assert Solution().twoSum([2, 7, 11, 15], 9) == [0, 1]\n",
    ),
    "tests_call_from_threads": (
        "def f(x):\n    return 2 * x\n",
        "import threading\ndef check(candidate):\n    out = {}\n"
        "    def work(i):\n        out[i] = candidate(i)\n"
        "    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]\n"
        "    for t in threads:\n        t.start()\n    for t in threads:\n        t.join()\n"
        "    assert out == {i: 2 * i for i in range(8)}\n",
    ),
    "the_candidates_imports_and_constants": (
        "import math\nLIMIT = 10\ndef f(x):\n    return math.sqrt(x)\n",
        "def check(candidate):\n    assert math.isclose(candidate(16), 4.0) and LIMIT == 10\n",
    ),
    "many_calls_and_a_big_value": (
        "def f(n):\n    return list(range(n))\n",
        "def check(candidate):\n    for i in range(2000):\n"
        "        assert candidate(i % 3) == list(range(i % 3))\n"
        "    assert candidate(10**6) == list(range(10**6))\n",
    ),
}


def honest_prompt(tests: str) -> Prompt:
    entry = {"entry_point": "f"} if "check(" in tests else None
    return Prompt("code", "eval", "Write f.", reference=entry, tests=tests)


@pytest.mark.parametrize(("code", "tests"), HONEST.values(), ids=list(HONEST))
def test_honest_values_cross_to_the_tests(code, tests):
    score = COMPLETION.score(code, honest_prompt(tests))
    assert score.passed, score.details["tests"]


def test_what_does_not_cross():
    # A function's result must be plain data (an object would answer for itself); tests that
    # pass a function to the candidate cannot run here, which is the prompt's fault.
    code = "class Node:\n    pass\ndef f(x):\n    return Node()\n"
    score = COMPLETION.score(code, honest_prompt("def check(candidate):\n    candidate(1)\n"))
    assert not score.passed and score.reason == "forged_value"
    assert "object of class Node" in score.details["tests"][0]["message"]
    lambdas = "def check(candidate):\n    assert candidate(lambda x: x) == 1\n"
    score = COMPLETION.score("def f(g):\n    return g(1)\n", honest_prompt(lambdas))
    assert score.status == "unscorable" and score.reason == "tests_error"
    assert "the tests pass a value of type function" in score.details["error"]


def test_nan_crosses_only_when_allowed():
    tests = "import math\ndef check(candidate):\n    assert math.isnan(candidate(0))\n"
    code = "def f(x):\n    return float('nan')\n"
    assert COMPLETION.score(code, honest_prompt(tests)).reason == "forged_value"
    allowing = build(
        {"name": "code_tests", "program": "completion", "sandbox": {"allow_nan": True}}
    )
    assert allowing.score(code, honest_prompt(tests)).passed
