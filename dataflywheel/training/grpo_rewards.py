"""The run's verifiers as the reward functions of TRL's ``GRPOTrainer``, and the rollouts they
score.

Runs in: the training worker (a Ray actor), inside ``GRPOTrainer``, which calls each reward
function once per generation batch. Pure Python: no torch, no I/O; where the rollouts go is the
``sink`` the caller gives (the worker batches them into our ingestion).

TRL calls ``reward_func(prompts=..., completions=..., completion_ids=..., trainer_state=...,
**columns)``, every other column of the training dataset repeated once per completion. The
dataset we build for GRPO has a ``prompt_key`` column, the prompt's content hash, which is how a
completion is traced back to its :class:`~dataflywheel.prompts.Prompt` (its reference, its
tests) and, later, to its row in ``prompts``.

One :class:`RewardBank` holds the spec's verifiers and gives TRL one reward function per
verifier (each reward component stays apart in TRL's logs and in our scores). The bank scores a
batch once, with every verifier, on the first component's call, and hands the batch's
:class:`Rollout` records to the sink then; the other components read the same verdicts.

**Unscorable verdicts.** A verifier that cannot score a completion (``Score.status ==
"unscorable"``: a judge that gave no verdict, a sandbox that could not start) returns ``None``
for it. TRL turns ``None`` into NaN: the component is left out of that completion's weighted
sum, and a completion that no component could score is left out of its group's baseline and
gets advantage 0 (``GRPOTrainer._generate_and_score_completions``, TRL 1.16). A completion
whose answer cannot be parsed is *scored* 0 (``reason="no_answer"``), as everywhere else, so
GRPO does push the model away from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from dataflywheel.prompts import Prompt
from dataflywheel.verifiers import AnyVerifier, GroupVerifier, Score, Verifier

PROMPT_KEY = "prompt_key"


@dataclass(frozen=True)
class Rollout:
    """One completion GRPO sampled, with every component's verdict.

    ``step`` is the trainer's global step when it was scored (the policy that wrote it had
    taken that many optimiser steps); ``position`` is its place in the generation batch, so a
    batch's rollouts are ordered and a rerun of the same step writes the same keys.
    """

    step: int
    position: int
    prompt_key: str
    completion: str
    scores: Mapping[str, Score]


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """The text of a completion as TRL passes it: a string, or (conversational datasets) the
    list of messages whose last one is the assistant's."""
    if isinstance(completion, str):
        return completion
    if not completion or "content" not in completion[-1]:
        raise ValueError(
            f"completions: expected a string or a list of messages ending with the assistant's "
            f"content, got {completion!r}"
        )
    content = completion[-1]["content"]
    return content if isinstance(content, str) else str(content)


class RewardFunction:
    """One verifier as a TRL reward function; TRL names the component by ``__name__``."""

    def __init__(self, bank: RewardBank, name: str) -> None:
        self._bank, self.__name__ = bank, name

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        *,
        trainer_state: Any = None,
        **columns: Any,
    ) -> list[float | None]:
        scores = self._bank.scores(completions, columns, trainer_state)
        return [_reward(batch[self.__name__]) for batch in scores]


def _reward(score: Score) -> float | None:
    return score.value if score.status == "scored" else None


class RewardBank:
    """The verifiers of a GRPO round, scoring each generation batch once."""

    def __init__(
        self,
        verifiers: Sequence[AnyVerifier],
        prompts: Sequence[Prompt],
        sink: Callable[[list[Rollout]], None] | None = None,
    ) -> None:
        if not verifiers:
            raise ValueError("verification.verifiers: GRPO needs at least one verifier as reward")
        names = [v.name for v in verifiers]
        batch = [v.name for v in verifiers if v.scope not in ("sample", "group")]
        if batch:
            raise ValueError(
                f"verification.verifiers: {batch} score with a model of their own "
                "(reward_model, llm_judge), which a GRPO round cannot call as a reward yet; "
                "use exact_answer, numeric, regex, majority_vote or code_tests"
            )
        if len(set(names)) != len(names):
            raise ValueError(
                f"verification.verifiers: each reward component needs its own name, got {names}"
            )
        self.verifiers = list(verifiers)
        self.prompts = {p.content_hash: p for p in prompts}
        self.sink = sink
        self._batch: tuple[int, list[str], list[str]] | None = None
        self._scores: list[dict[str, Score]] = []

    def functions(self) -> list[RewardFunction]:
        """The reward functions to give ``GRPOTrainer(reward_funcs=...)``, in verifier order
        (``GRPOConfig.reward_weights`` follows the same order)."""
        return [RewardFunction(self, v.name) for v in self.verifiers]

    def scores(
        self, completions: Sequence[Any], columns: Mapping[str, Any], trainer_state: Any
    ) -> list[dict[str, Score]]:
        """Every verifier's verdict on each completion of the batch: scored on the first call
        for a batch, the same list on the calls that follow for the same batch."""
        if PROMPT_KEY not in columns:
            raise ValueError(
                f"the GRPO training dataset needs a {PROMPT_KEY!r} column (the prompt's "
                f"content hash); it has {sorted(columns)}"
            )
        keys = [str(k) for k in columns[PROMPT_KEY]]
        texts = [completion_text(c) for c in completions]
        if len(keys) != len(texts):
            raise ValueError(f"{len(texts)} completions but {len(keys)} prompt keys")
        step = int(getattr(trainer_state, "global_step", 0) or 0)
        batch = (step, keys, texts)
        if batch != self._batch:
            self._scores = self._score(keys, texts)
            self._batch = batch
            if self.sink is not None:
                self.sink(
                    [
                        Rollout(step, i, key, text, scores)
                        for i, (key, text, scores) in enumerate(
                            zip(keys, texts, self._scores, strict=True)
                        )
                    ]
                )
        return self._scores

    def _score(self, keys: list[str], texts: list[str]) -> list[dict[str, Score]]:
        missing = sorted(set(keys) - set(self.prompts))
        if missing:
            raise KeyError(f"completions of prompts this round does not know: {missing[:3]}")
        out: list[dict[str, Score]] = [{} for _ in texts]
        for verifier in self.verifiers:
            if verifier.scope == "group":
                # A group is every completion of one prompt in the batch, wherever TRL put them.
                groups: dict[str, list[int]] = {}
                for i, key in enumerate(keys):
                    groups.setdefault(key, []).append(i)
                for key, positions in groups.items():
                    verdicts = cast(GroupVerifier, verifier).score_group(
                        [texts[i] for i in positions], self.prompts[key]
                    )
                    for i, verdict in zip(positions, verdicts, strict=True):
                        out[i][verifier.name] = verdict
            else:
                for i, (key, text) in enumerate(zip(keys, texts, strict=True)):
                    out[i][verifier.name] = cast(Verifier, verifier).score(text, self.prompts[key])
        return out
