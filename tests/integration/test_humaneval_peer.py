"""HumanEval as a peer suite for the sandboxed ``code_tests`` verifier: on all 164 problems the
canonical solution passes, and the same solution with its ``return`` statements removed fails.

Runs two sandboxes at a time (the CI machine has 2 cores); 328 sandboxed runs take about
20-40 s there (docs/benchmarks.md).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from dataflywheel.prompts import Prompt
from dataflywheel.prompts.humaneval import (
    NUM_PROBLEMS,
    canonical_program,
    load_humaneval,
    without_returns,
)
from dataflywheel.verifiers import Score, build

# A solution without returns may loop forever (waiting to return): 3 s per test is plenty for
# the canonical ones, which finish in milliseconds.
VERIFIER = build(
    {"name": "code_tests", "program": "completion", "sandbox": {"test_timeout_s": 3.0}}
)


def _both(prompt: Prompt) -> tuple[str, Score, Score]:
    program = canonical_program(prompt)
    stripped = without_returns(program, prompt.reference["entry_point"])
    return (
        prompt.metadata["task_id"],
        VERIFIER.score(program, prompt),
        VERIFIER.score(stripped, prompt),
    )


def test_canonical_solutions_pass_and_return_less_ones_fail():
    prompts = load_humaneval()
    assert len(prompts) == NUM_PROBLEMS
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_both, prompts))
    not_passing = [(tid, a.reason, a.details["tests"]) for tid, a, _ in results if not a.passed]
    assert not_passing == []
    not_failing = [(tid, b.status, b.reason) for tid, _, b in results if b.passed is not False]
    assert not_failing == []
    # They fail for a reason the tests give, never because the sandbox misbehaved.
    assert {b.reason for _, _, b in results} <= {"assertion", "exception", "timeout"}


def test_humaneval_completion_continues_the_prompt():
    prompt = load_humaneval()[0]
    body = prompt.reference["canonical_solution"]
    assert build({"name": "code_tests"}).score(body, prompt).passed  # program: auto
