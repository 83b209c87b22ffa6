"""The ``code_tests`` verifier: run the completion's code against the prompt's tests, sandboxed.

Runs in: any worker process (spawns sandboxed subprocesses; in a round that is the Ray CPU
pool of ``workers/verify.py``). The verdict comes from the sandbox supervisor
(``verifiers/sandbox/``), never from the candidate's own process: a sample passes only when
every test step reported a pass through the harness. The candidate program is the code of the
completion (the last fenced ``python`` block when there is one), preceded by the prompt's text
when the completion only continues it (HumanEval style: the prompt is the signature and
docstring, the model writes the body).

Outcomes (never a silent zero; infrastructure errors raise):

* scored pass/fail, with per-test results, timings and an error class (``assertion``,
  ``exception``, ``exit``, ``syntax``, ``timeout``, ``memory``, ``crash``, ``tampering``) in
  ``details``;
* unscorable when the *tests* cannot run (they do not parse, name no test, or import a module
  the sandbox lacks): the prompt is at fault, not the sample;
* :class:`~dataflywheel.verifiers.MissingReferenceError` when the prompt has no tests, and
  :class:`~dataflywheel.verifiers.sandbox.SandboxUnavailable` when the sandbox cannot start
  (bubblewrap missing): infrastructure errors raise.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from dataflywheel import python_ast
from dataflywheel.prompts import Prompt
from dataflywheel.verifiers import MissingReferenceError, Score, verifier_version
from dataflywheel.verifiers.sandbox import (
    SandboxConfig,
    TestsParseError,
    discover_steps,
    run_sandboxed,
)
from dataflywheel.verifiers.sandbox import bootstrap as bootstrap_module
from dataflywheel.verifiers.sandbox import bridge as bridge_module
from dataflywheel.verifiers.sandbox import config as config_module
from dataflywheel.verifiers.sandbox import harness as harness_module
from dataflywheel.verifiers.sandbox import plain as plain_module
from dataflywheel.verifiers.sandbox import steps as steps_module
from dataflywheel.verifiers.sandbox import supervisor as supervisor_module

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)


class CodeTestsConfig(BaseModel):
    """Configuration of ``code_tests``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["code_tests"] = Field(default="code_tests", description="Verifier name.")
    program: Literal["auto", "completion", "prompt_plus_completion"] = Field(
        default="auto",
        description="The candidate program: the completion's code, or the prompt text followed "
        "by the completion (HumanEval); auto: the completion alone when it defines the entry "
        "point, otherwise prompt + completion.",
    )
    entry_point_key: str = Field(
        default="entry_point",
        description="Key of prompt.reference naming the function that check(candidate) tests.",
    )
    tests_key: str = Field(
        default="tests",
        description="Key of prompt.reference holding the tests when prompt.tests is empty.",
    )
    sandbox: SandboxConfig = Field(
        default_factory=SandboxConfig, description="Limits and timeouts of the sandbox."
    )


def extract_code(completion: str) -> str:
    """The last fenced python block of a completion, or the completion itself."""
    blocks = _FENCE.findall(completion)
    return blocks[-1] if blocks else completion


def _defines(code: str, name: str | None) -> bool:
    if not name:
        return True
    try:
        module = python_ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.name == name
        for node in module.body
    )


@dataclass(frozen=True)
class CodeTestsVerifier:
    """Pass when every test step passes in the sandbox."""

    config: CodeTestsConfig
    name: ClassVar[str] = "code_tests"
    scope: ClassVar[Literal["sample"]] = "sample"

    @cached_property
    def version(self) -> str:
        return verifier_version(
            self.config,
            sys.modules[__name__],
            config_module,
            steps_module,
            supervisor_module,
            bootstrap_module,
            harness_module,
            bridge_module,
            plain_module,
        )

    def _tests(self, prompt: Prompt) -> str:
        tests = prompt.tests
        if not tests and prompt.reference:
            tests = prompt.reference.get(self.config.tests_key)
        if not isinstance(tests, str) or not tests.strip():
            raise MissingReferenceError(
                f"code_tests needs tests for prompt {prompt.describe()}: set prompt.tests (the "
                f"'tests' field of a JSONL line) or prompt.reference[{self.config.tests_key!r}]"
            )
        return tests

    def program(self, completion: str, prompt: Prompt) -> str:
        """The candidate program this verifier runs for ``completion``."""
        code = extract_code(completion)
        mode = self.config.program
        if mode == "auto":
            entry = (prompt.reference or {}).get(self.config.entry_point_key)
            mode = "completion" if _defines(code, entry) else "prompt_plus_completion"
        return code if mode == "completion" else prompt.text + code

    def score(self, completion: str, prompt: Prompt) -> Score:
        tests = self._tests(prompt)
        entry = (prompt.reference or {}).get(self.config.entry_point_key)
        try:
            steps = discover_steps(tests, entry if isinstance(entry, str) else None)
        except TestsParseError as exc:
            return Score.unscorable("tests_unparseable", error=str(exc))
        result = run_sandboxed(
            self.program(completion, prompt),
            tests,
            steps,
            self.config.sandbox,
            entry_point=entry if isinstance(entry, str) else None,
        )
        details: dict[str, Any] = {
            "outcome": result.outcome,
            "tests": [s.as_dict() for s in result.steps],
            "passed_tests": sum(s.status == "passed" for s in result.steps),
            "total_tests": len(result.steps),
            "seconds": round(result.seconds, 4),
            "output": result.output[-2000:],
            "output_bytes": result.output_bytes,
        }
        if result.outcome == "tests_error":
            return Score.unscorable("tests_error", error=result.message, **details)
        failed = [s for s in result.steps if s.status != "passed"]
        error_class = failed[0].error_class if failed else None
        details["error_class"] = error_class
        if result.passed:
            return Score.scored(True, "tests_passed", **details)
        value = details["passed_tests"] / max(1, details["total_tests"])
        return Score.scored(False, error_class or "tests_failed", value, **details)


def build(config: CodeTestsConfig | Mapping[str, Any]) -> CodeTestsVerifier:
    return CodeTestsVerifier(CodeTestsConfig.model_validate(config))
