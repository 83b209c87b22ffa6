"""The run spec: valid specs load, invalid ones are refused naming the field, hashes and seeds
are stable.

Runs in: the test process (pure; files only under tmp_path).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from dataflywheel import recipes, verifiers
from dataflywheel.prompts.arithmetic import FAMILIES
from dataflywheel.spec import (
    BuiltinPromptsSpec,
    CurriculumSpec,
    RunSpec,
    SpecError,
    VerificationSpec,
    derive_seed,
    format_errors,
    load_spec,
    spec_hash,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
MINIMAL: dict[str, Any] = {
    "model": {"source": "smollm2"},
    "prompts": {"kind": "builtin", "family": "word_problems"},
}


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``patch`` into a copy of ``base``; a None value deletes the key."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _write(tmp_path: Path, data: Any, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if name.endswith(".yaml") else json.dumps(data))
    return path


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "prompts.jsonl"
    path.parent.mkdir()
    path.write_text('{"prompt": "2+2=", "answer": 4}\n')
    return path


VALID = {
    "minimal": {},
    "tiny_llama_defaults": {
        "model": {"source": "builtin:tiny-llama"},
        "generation": {"max_tokens": 16},
    },
    "jsonl_relative_path": {
        "prompts": {"kind": "jsonl", "path": "data/prompts.jsonl", "family": None},
    },
    "openai_judge": {
        "verification": {
            "verifiers": [
                {"name": "exact_answer"},
                {
                    "name": "llm_judge",
                    "backend": "openai",
                    "base_url": "http://localhost:8000/v1",
                    "model_name": "judge",
                },
            ]
        },
    },
    "dpo_pairs": {
        "selection": {"recipe": "preference_pairs", "margin": 1.0},
        "training": {"method": "dpo", "beta": 0.2},
    },
    "majority_vote": {
        "selection": {"recipe": "majority_vote", "min_agreement": 0.6},
        "generation": {"samples_per_prompt": 5},
    },
    "store_uri": {"model": {"source": "store:sha256/" + "0" * 64}},
    "s3_uri": {"model": {"source": "s3://bucket/models/base"}},
    "local_model_dir": {"model": {"source": "data"}},
    "pass_at_k": {
        "evaluation": {"metrics": ["accuracy", "pass@k"], "k": 4, "primary": "pass@k"},
    },
    "full_finetune_max_steps": {"training": {"mode": "full", "max_steps": 100}},
    "curriculum": {
        "prompts": {"kind": "builtin", "family": "addition", "max_difficulty": 3},
        "curriculum": {"threshold": 0.8, "max_level": 6},
    },
    "best_of_n": {
        "selection": {"recipe": "best_of_n", "k": 2, "min_score": 0.5},
        "generation": {"samples_per_prompt": 8},
    },
    # Exactly enough context for the curriculum's top level (1 + 14 + 8 tokens).
    "tiny_curriculum_fits": {
        "model": {"source": "builtin:tiny-llama", "tiny": {"max_seq_len": 23}},
        "prompts": {"kind": "builtin", "family": "addition", "max_difficulty": 1},
        "curriculum": {"max_level": 6},
        "generation": {"max_tokens": 8},
    },
}


@pytest.mark.parametrize("patch", VALID.values(), ids=VALID.keys())
def test_valid_specs_load(patch: dict[str, Any], tmp_path: Path, prompts_file: Path) -> None:
    spec = load_spec(_write(tmp_path, _merge(MINIMAL, patch)))
    assert isinstance(spec, RunSpec)
    # The spec is the Prefect parameter and the API body: it must survive a JSON round trip.
    assert RunSpec.model_validate_json(spec.model_dump_json()) == spec


def test_relative_paths_are_resolved_against_the_spec_folder(
    tmp_path: Path, prompts_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")  # the current directory must not matter
    spec = load_spec(_write(tmp_path, _merge(MINIMAL, VALID["jsonl_relative_path"])))
    assert spec.prompts.path == str(prompts_file.resolve())


def test_lower_share_needs_a_number_of_prompts_to_split(tmp_path: Path, prompts_file: Path) -> None:
    patch = {
        "prompts": {"kind": "jsonl", "path": "data/prompts.jsonl", "family": None},
        "curriculum": {"max_level": 3, "lower_share": 0.2},
    }
    patch["prompts"].update(min_difficulty=1, max_difficulty=1)
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, _merge(MINIMAL, patch)))
    (line,) = caught.value.errors
    assert line.startswith("curriculum.lower_share: splits a round's prompts.num_prompts"), line
    patch["prompts"]["num_prompts"] = 10
    assert load_spec(_write(tmp_path, _merge(MINIMAL, patch))).curriculum.lower_share == 0.2


def test_tiny_llama_gets_default_knobs_and_other_models_none() -> None:
    tiny = RunSpec.model_validate(
        _merge(
            MINIMAL, {"model": {"source": "builtin:tiny-llama"}, "generation": {"max_tokens": 8}}
        )
    )
    assert tiny.model.tiny is not None and tiny.model.tiny.tokenizer == "char"
    assert tiny.model.kind == "builtin"
    assert RunSpec.model_validate(MINIMAL).model.tiny is None


INVALID = {
    "unknown_field": ({"generation": {"temprature": 0.5}}, "generation.temprature: unknown field"),
    "negative_temperature": (
        {"generation": {"temperature": -1}},
        "generation.temperature: must be ≥ 0 (got -1)",
    ),
    "top_p_zero": ({"generation": {"top_p": 0}}, "generation.top_p: must be > 0"),
    "zero_rounds": ({"rounds": 0}, "rounds: must be ≥ 1 (got 0)"),
    "unknown_verifier": (
        {"verification": {"verifiers": [{"name": "bleu"}]}},
        "verification.verifiers[0].name: unknown verifier 'bleu'; allowed: exact_answer",
    ),
    "primary_not_in_metrics": (
        {"evaluation": {"metrics": ["accuracy"], "primary": "pass@1"}},
        "evaluation.primary: 'pass@1' is not listed in metrics",
    ),
    "k_greater_than_n": (
        {"evaluation": {"metrics": ["pass@k"], "primary": "pass@k", "k": 8}},
        "evaluation.k: pass@8 needs at least 8 samples",
    ),
    "dpo_without_pairs": ({"training": {"method": "dpo"}}, "training.method: dpo trains on pairs"),
    "pairs_without_dpo": (
        {"selection": {"recipe": "preference_pairs"}},
        "selection.recipe: preference_pairs feeds DPO",
    ),
    "missing_jsonl": (
        {"prompts": {"kind": "jsonl", "path": "nowhere.jsonl", "family": None}},
        "prompts.path: JSONL prompt file",
    ),
    "missing_model_path": (
        {"model": {"source": "models/not-here"}},
        "model.source: local model path",
    ),
    "unknown_builtin_model": (
        {"model": {"source": "builtin:gpt5"}},
        "model.source: unknown built-in",
    ),
    # An endpoint cannot serve the run's checkpoints (see test_openai_generation_is_refused).
    "openai_backend": (
        {
            "generation": {
                "backend": "openai",
                "base_url": "http://localhost:8000/v1",
                "model_name": "m",
            }
        },
        "generation.backend: 'openai' cannot generate for a run",
    ),
    "openai_without_base_url": (
        {"generation": {"backend": "openai"}},
        "generation.backend: 'openai' cannot generate for a run",
    ),
    "base_url_without_backend": (
        {"generation": {"base_url": "http://localhost:8000/v1"}},
        "generation.base_url: generation samples from the run's own checkpoints",
    ),
    "model_name_without_backend": (
        {"generation": {"backend": "transformers", "model_name": "m"}},
        "generation.model_name: generation samples from the run's own checkpoints",
    ),
    "majority_with_one_sample": (
        {"selection": {"recipe": "majority_vote"}, "generation": {"samples_per_prompt": 1}},
        "selection.recipe: majority votes, preference pairs and best-of-N compare samples",
    ),
    "best_of_n_keeping_every_sample": (
        {"selection": {"recipe": "best_of_n", "k": 4}, "generation": {"samples_per_prompt": 4}},
        "selection.k: best_of_n keeps the best k of generation.samples_per_prompt (4)",
    ),
    "best_of_n_by_unlisted_verifier": (
        {"selection": {"recipe": "best_of_n", "score_by": "numeric"}},
        "selection.score_by: 'numeric' is not in verification.verifiers",
    ),
    "unknown_backend": ({"generation": {"backend": "tgi"}}, "generation.backend: must be one of"),
    "unknown_prompt_kind": ({"prompts": {"kind": "csv"}}, "prompts.kind: must be one of"),
    "require_unlisted_verifier": (
        {"selection": {"recipe": "rejection_sampling", "require": ["numeric"]}},
        "selection.require: 'numeric' is not in verification.verifiers",
    ),
    "eval_verifier_majority_only": (
        {
            "verification": {"verifiers": [{"name": "majority_vote"}]},
            "generation": {"samples_per_prompt": 3},
        },
        "evaluation.verifier: evaluation needs a per-sample verifier",
    ),
    "duplicate_verifier": (
        {"verification": {"verifiers": [{"name": "regex"}, {"name": "regex"}]}},
        "verification.verifiers: each verifier may appear once",
    ),
    "bad_regex": (
        {"verification": {"verifiers": [{"name": "regex", "pattern": "("}]}},
        "verification.verifiers[0].pattern: not a valid regular expression",
    ),
    "epochs_and_max_steps": (
        {"training": {"epochs": 2, "max_steps": 10}},
        "training.epochs: set exactly one",
    ),
    "lora_with_full": ({"training": {"mode": "full", "lora": {"r": 4}}}, "training.lora: set only"),
    "replay_share_one": ({"training": {"replay_share": 1.0}}, "training.replay_share: must be < 1"),
    "shares_sum_to_one": (
        {"training": {"replay_share": 0.5, "labelled_share": 0.5}},
        "training.replay_share: replay_share + labelled_share must be < 1",
    ),
    "negative_max_drop": ({"promotion": {"max_drop": -0.1}}, "promotion.max_drop: must be ≥ 0"),
    "fixed_width_on_word_problems": (
        {"prompts": {"fixed_width": 4}},
        "prompts.fixed_width: applies to the addition family only",
    ),
    "fixed_width_too_narrow": (
        {"prompts": {"family": "addition", "max_difficulty": 5, "fixed_width": 4}},
        "prompts.fixed_width: must be at least max_difficulty (5)",
    ),
    "eval_wider_than_fixed_width": (
        {
            "prompts": {"family": "addition", "max_difficulty": 4, "fixed_width": 4},
            "evaluation": {"max_difficulty": 5},
        },
        "evaluation.max_difficulty: must be ≤ prompts.fixed_width (4)",
    ),
    "views_without_views": (
        {
            "prompts": {"family": "addition"},
            "generation": {"samples_per_prompt": 4},
            "selection": {"recipe": "majority_vote", "agree_across_views": True},
        },
        "selection.agree_across_views: the prompts have one view each",
    ),
    "commuted_word_problems": (
        {"prompts": {"commuted_views": True}},
        "prompts.commuted_views: applies to the addition family only",
    ),
    "peers_vote_without_peers": (
        {
            "generation": {"samples_per_prompt": 4},
            "selection": {"recipe": "majority_vote", "agree_across_peers": True},
        },
        "selection.agree_across_peers: needs training.peers ≥ 2",
    ),
    "too_many_peers": ({"training": {"peers": 5}}, "training.peers: must be ≤ 4"),
    "train_batch_not_split_evenly": (
        {"training": {"batch_size": 8}, "resources": {"train_workers": 3}},
        "resources.train_workers: training.batch_size 8 is split evenly",
    ),
    "negative_generator_gpus": (
        {"resources": {"generator_gpus": -1}},
        "resources.generator_gpus: must be ≥ 0",
    ),
    "unknown_resource": ({"resources": {"gpus": 1}}, "resources.gpus"),
    "batch_size_on_vllm": (
        {"generation": {"backend": "vllm", "batch_size": 64}},
        "generation.batch_size: used only by backend 'transformers'",
    ),
    "weight_decay_one": ({"training": {"weight_decay": 1.0}}, "training.weight_decay: must be < 1"),
    "primary_table": (
        {
            "evaluation": {
                "metrics": ["per_difficulty_accuracy"],
                "primary": "per_difficulty_accuracy",
            }
        },
        "evaluation.primary: per_difficulty_accuracy is a table",
    ),
    "difficulty_beyond_family": (
        {"prompts": {"max_difficulty": 4}},
        "prompts.max_difficulty: word_problems goes up to 3",
    ),
    "eval_level_beyond_family": (
        {"evaluation": {"max_difficulty": 5}},
        "evaluation.max_difficulty: word_problems has levels 1-3 (got 5)",
    ),
    "warmup_level_zero": (
        {"warmup": {"min_difficulty": 0}},
        "warmup.min_difficulty: word_problems has levels 1-3 (got 0)",
    ),
    "curriculum_below_band": (
        {
            "prompts": {"kind": "builtin", "family": "addition", "max_difficulty": 3},
            "curriculum": {"max_level": 2},
        },
        "curriculum.max_level: must be ≥ prompts.max_difficulty",
    ),
    "curriculum_drop_with_primary_gate": (
        {
            "prompts": {"kind": "builtin", "family": "addition", "max_difficulty": 3},
            "curriculum": {"max_level": 4, "gate": "primary", "max_lower_drop": 0.1},
        },
        "curriculum.max_lower_drop: reads per-level accuracies, which only gate: top_level",
    ),
    "curriculum_drop_above_one": (
        {
            "prompts": {"kind": "builtin", "family": "addition", "max_difficulty": 3},
            "curriculum": {"max_level": 4, "max_lower_drop": 1.5},
        },
        "curriculum.max_lower_drop: must be ≤ 1",
    ),
    "curriculum_unknown_gate": (
        {
            "prompts": {"kind": "builtin", "family": "addition", "max_difficulty": 3},
            "curriculum": {"max_level": 4, "gate": "mean"},
        },
        "curriculum.gate:",
    ),
    "curriculum_top_level_beyond_eval": (
        {
            "prompts": {"kind": "builtin", "family": "addition", "max_difficulty": 3},
            "curriculum": {"max_level": 5},
            "evaluation": {"max_difficulty": 4},
        },
        "evaluation.max_difficulty: curriculum.gate top_level reads every level up to "
        "curriculum.max_level (5)",
    ),
    "curriculum_lower_share_one": (
        {
            "prompts": {"kind": "builtin", "family": "addition", "max_difficulty": 3},
            "curriculum": {"max_level": 4, "lower_share": 1.0},
        },
        "curriculum.lower_share: must be < 1",
    ),
    "fixed_width_word": (
        {"prompts": {"kind": "builtin", "family": "addition", "fixed_width": "wide"}},
        "prompts.fixed_width: must be a number of digits from 1 to 30, band or null (got 'wide')",
    ),
    "fixed_width_band_on_words": (
        {"prompts": {"fixed_width": "band"}},
        "prompts.fixed_width: applies to the addition family only",
    ),
    "tiny_head_dim_for_vllm": (
        {
            "model": {"source": "builtin:tiny-llama", "tiny": {"num_heads": 8}},
            "generation": {"max_tokens": 16},
        },
        "model.tiny.num_heads: vllm needs head_dim",
    ),
    "tiny_knobs_on_other_model": ({"model": {"tiny": {}}}, "model.tiny: only used with"),
    # Level 4: "1234+5678=" and up to 5 answer digits; BOS + 10 + max_tokens 6 = 17 tokens.
    "tiny_context_short_of_the_top_level": (
        {
            "model": {"source": "builtin:tiny-llama", "tiny": {"max_seq_len": 16}},
            "prompts": {"kind": "builtin", "family": "addition", "max_difficulty": 4},
            "generation": {"max_tokens": 6},
        },
        "model.tiny.max_seq_len: level 4 needs 17 tokens",
    ),
    # A curriculum's top level counts, not the first band's: level 6 needs 1 + 14 + 8.
    "tiny_context_short_of_the_curriculum_top": (
        {
            "model": {"source": "builtin:tiny-llama", "tiny": {"max_seq_len": 22}},
            "prompts": {"kind": "builtin", "family": "addition", "max_difficulty": 1},
            "curriculum": {"max_level": 6},
            "generation": {"max_tokens": 8},
        },
        "model.tiny.max_seq_len: level 6 needs 23 tokens",
    ),
    "tiny_auto_context_for_words": (
        {"model": {"source": "builtin:tiny-llama", "tiny": {"max_seq_len": "auto"}}},
        "model.tiny.max_seq_len: auto sizes the context from the built-in addition family",
    ),
    "tiny_context_below_8": (
        {"model": {"source": "builtin:tiny-llama", "tiny": {"max_seq_len": 4}}},
        "model.tiny.max_seq_len: must be a number of tokens ≥ 8 or auto (got 4)",
    ),
    # Padded to 5 digits: every answer has 6 characters, whatever the level.
    "max_tokens_short_of_the_answers": (
        {
            "model": {"source": "builtin:tiny-llama", "tiny": {"max_seq_len": 64}},
            "prompts": {
                "kind": "builtin",
                "family": "addition",
                "max_difficulty": 2,
                "fixed_width": 5,
            },
            "generation": {"max_tokens": 5},
        },
        "generation.max_tokens: the answers of level 2 have up to 6 characters",
    ),
    "beta_with_sft": ({"training": {"beta": 0.5}}, "training.beta: used only by method 'dpo'"),
    "string_for_number": (
        {"generation": {"temperature": "hot"}},
        "generation.temperature: must be a number (got 'hot')",
    ),
    "missing_model": ({"model": None}, "model: required field is missing"),
}


@pytest.mark.parametrize(("patch", "expected"), INVALID.values(), ids=INVALID.keys())
def test_invalid_specs_are_refused_naming_the_field(
    patch: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, _merge(MINIMAL, patch))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(path) in str(caught.value)
    # Exactly one problem per case: each invalid spec differs from a valid one in one place.
    (line,) = caught.value.errors
    assert line.startswith(expected), line


@pytest.mark.parametrize(
    "generation",
    [
        {"backend": "openai", "base_url": "http://localhost:8000/v1", "model_name": "m"},
        {"backend": "openai", "base_url": "https://api.example.com/v1", "num_threads": 2},
    ],
)
@pytest.mark.parametrize("rounds", [1, 3])
@pytest.mark.parametrize("warmup", [None, {"num_prompts": 10}])
def test_openai_generation_is_refused(
    generation: dict[str, Any], rounds: int, warmup: dict[str, Any] | None, tmp_path: Path
) -> None:
    # Every run generates with checkpoints only this run has: the base model's baseline, each
    # round's promoted model and each candidate's eval (a warm-up round included). An endpoint
    # serves none of them, so the spec is refused whatever else it says.
    patch = {"rounds": rounds, "generation": generation, "warmup": warmup}
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, _merge(MINIMAL, patch)))
    (line,) = caught.value.errors
    assert line.startswith("generation.backend: ")
    for fix in ("'transformers' or 'vllm'", "llm_judge", "verification.verifiers"):
        assert fix in line, line


def test_generation_backends_offered_are_those_that_load_checkpoints() -> None:
    # The API body's schema (and the Prefect form) offers no backend the spec refuses.
    schema = RunSpec.model_json_schema()["$defs"]["GenerationSpec"]["properties"]
    assert schema["backend"]["enum"] == ["vllm", "transformers"]
    assert "base_url" not in schema and "model_name" not in schema


def test_unknown_field_lists_the_allowed_names(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, _merge(MINIMAL, {"training": {"lr": 0.1}})))
    (line,) = caught.value.errors
    for field in ("method", "learning_rate", "init_from", "replay_share"):
        assert field in line


def test_missing_paths_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, _merge(MINIMAL, {"model": {"source": "weights/x"}})))
    assert str(tmp_path / "weights" / "x") in caught.value.errors[0]


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: [1,\n")
    with pytest.raises(SpecError, match="not valid yaml"):
        load_spec(bad)
    with pytest.raises(SpecError, match="top level must be a mapping"):
        load_spec(_write(tmp_path, [1, 2]))


def test_direct_validation_errors_format_the_same_way() -> None:
    with pytest.raises(ValidationError) as caught:
        RunSpec.model_validate(_merge(MINIMAL, {"generation": {"temperature": -1}}))
    assert format_errors(caught.value) == ["generation.temperature: must be ≥ 0 (got -1)"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_load(path: Path) -> None:
    spec = load_spec(path)
    assert RunSpec.model_validate_json(spec.model_dump_json()) == spec


def test_example_contents() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"arithmetic-selfimprove.yaml", "smollm2-star.yaml"} <= names
    arithmetic = load_spec(REPO / "examples" / "arithmetic-selfimprove.yaml")
    assert arithmetic.model.source == "builtin:tiny-llama" and arithmetic.model.tiny is not None
    assert arithmetic.model.tiny.tokenizer == "char"
    assert isinstance(arithmetic.prompts, BuiltinPromptsSpec)
    assert arithmetic.prompts.family == "addition" and arithmetic.prompts.reversed_digits
    assert arithmetic.warmup is not None and arithmetic.selection.recipe == "majority_vote"
    # No ground truth after the warm-up: the peers' vote decides.
    assert arithmetic.selection.agree_across_peers and arithmetic.training.peers == 2
    assert arithmetic.verification.names == ["exact_answer", "majority_vote"]
    star = load_spec(REPO / "examples" / "smollm2-star.yaml")
    assert star.model.source == "smollm2" and star.generation.backend == "vllm"
    assert star.verification.names == ["exact_answer"]
    assert star.selection.recipe == "rejection_sampling"
    assert star.training.method == "sft" and star.training.mode == "lora" and star.rounds == 2


def test_spec_hash_is_stable_and_sensitive(tmp_path: Path) -> None:
    data = _merge(MINIMAL, {"seed": 3})
    spec = RunSpec.model_validate(data)
    assert spec_hash(spec) == spec_hash(RunSpec.model_validate(copy.deepcopy(data)))
    assert spec_hash(load_spec(_write(tmp_path, data, "s.json"))) == spec_hash(spec)
    assert len(spec_hash(spec)) == 64 and int(spec_hash(spec), 16) >= 0
    changed = RunSpec.model_validate(_merge(data, {"generation": {"temperature": 0.5}}))
    assert spec_hash(changed) != spec_hash(spec)


def test_curriculum_fields_at_their_default_leave_old_digests_unchanged() -> None:
    # Digests of these specs before curriculum.gate and curriculum.max_lower_drop existed:
    # a stored run's spec_hash must not change when the code learns new fields.
    old = _merge(
        MINIMAL,
        {
            "prompts": {"kind": "builtin", "family": "addition", "max_difficulty": 3},
            "curriculum": {"threshold": 0.8, "max_level": 6},
        },
    )
    before = "025b21f350dc9380a580c6a536c070ffa3d10190a45f7198925ea737693d0bee"
    assert spec_hash(RunSpec.model_validate(old)) == before
    explicit = _merge(old, {"curriculum": {"gate": "top_level"}})
    assert spec_hash(RunSpec.model_validate(explicit)) == before
    no_curriculum = "6bcc660a347639dcb1ee29669abb0a6e2c52a6ce5a5bf1b408aa317297417b55"
    assert spec_hash(RunSpec.model_validate(MINIMAL)) == no_curriculum
    # A field away from its neutral value is part of the digest.
    for patch in ({"gate": "primary"}, {"max_lower_drop": 0.1}, {"lower_share": 0.0}):
        changed = RunSpec.model_validate(_merge(old, {"curriculum": patch}))
        assert spec_hash(changed) != before


def _in_fresh_process(code: str, hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=REPO
    )
    return done.stdout.strip()


def test_spec_hash_and_seeds_agree_across_processes() -> None:
    example = REPO / "examples" / "smollm2-star.yaml"
    code = (
        "from dataflywheel.spec import load_spec, spec_hash, derive_seed;"
        f"print(spec_hash(load_spec({str(example)!r})), derive_seed(7, 'generate', 2, 'x'))"
    )
    first, second = _in_fresh_process(code, "1"), _in_fresh_process(code, "2")
    assert first == second
    assert first == f"{spec_hash(load_spec(example))} {derive_seed(7, 'generate', 2, 'x')}"


def test_derive_seed_is_sha256_of_the_labels() -> None:
    payload = json.dumps(["dataflywheel.seed.v1", 42, "generate", 3], separators=(",", ":"))
    expected = int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "big") >> 1
    assert derive_seed(42, "generate", 3) == expected


def test_derive_seed_distinct_and_in_range() -> None:
    seeds = {
        derive_seed(run, *labels)
        for run in (0, 1, 2**40)
        for labels in [
            (),
            ("generate",),
            ("train",),
            ("generate", 0),
            ("generate", 1),
            ("1",),
            (1,),
        ]
    }
    assert len(seeds) == 3 * 7
    assert all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(1, "a", "b") != derive_seed(1, "b", "a")
    with pytest.raises(TypeError):
        derive_seed(1, True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        derive_seed(1, 1.5)  # type: ignore[arg-type]


def test_spec_is_frozen_and_schema_is_json() -> None:
    spec = RunSpec.model_validate(MINIMAL)
    with pytest.raises(ValidationError):
        spec.rounds = 3  # type: ignore[misc]
    schema = RunSpec.model_json_schema()
    json.dumps(schema)
    assert schema["properties"]["generation"]


def _tags(annotation: Any, field: str) -> set[str]:
    union = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else annotation
    members = typing.get_args(typing.get_args(union)[0]) or typing.get_args(union)
    return {m.model_fields[field].default for m in members}


def test_spec_unions_match_the_registries() -> None:
    verifier_tags = _tags(VerificationSpec.model_fields["verifiers"].annotation, "name")
    assert verifier_tags == set(verifiers.REGISTRY) == set(verifiers.CONFIG_TYPES)
    recipe_tags = _tags(RunSpec.model_fields["selection"].annotation, "recipe")
    assert recipe_tags == set(recipes.REGISTRY) == set(recipes.CONFIG_TYPES)
    family = BuiltinPromptsSpec.model_fields["family"].annotation
    assert set(typing.get_args(family)) == set(FAMILIES)


@pytest.mark.parametrize(
    ("mode", "band", "value", "expected"),
    [
        ("widen", (1, 3), 0.95, (1, 4)),
        ("widen", (1, 3), 0.5, (1, 3)),
        ("shift", (3, 3), 0.95, (4, 4)),
        ("widen", (1, 5), 1.0, (1, 5)),  # at max_level already
        ("shift", (2, 4), 0.9, (3, 5)),  # step 2 clipped at max_level 5
    ],
)
def test_curriculum_next_band(
    mode: str, band: tuple[int, int], value: float, expected: tuple[int, int]
) -> None:
    step = 2 if band == (2, 4) else 1
    curriculum = CurriculumSpec(threshold=0.9, step=step, max_level=5, mode=mode)  # type: ignore[arg-type]
    assert curriculum.next_band(band, value) == expected


def test_core_imports_no_model_code() -> None:
    code = (
        "import sys, dataflywheel.spec, dataflywheel.recipes, dataflywheel.metrics,"
        " dataflywheel.prompts.jsonl;"
        "print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))"
    )
    assert _in_fresh_process(code, "0") == "[]"


def test_auto_context_resolves_to_the_number_the_top_level_needs(tmp_path: Path) -> None:
    patch = {
        "model": {"source": "builtin:tiny-llama", "tiny": {"max_seq_len": "auto"}},
        "prompts": {"kind": "builtin", "family": "addition", "max_difficulty": 1},
        "curriculum": {"max_level": 6},
        "generation": {"max_tokens": 8},
    }
    auto = load_spec(_write(tmp_path, _merge(MINIMAL, patch)))
    # Level 6: BOS + "123456+123456=" + max_tokens 8 (longer than the 7-digit answer + EOS).
    assert auto.model.tiny.max_seq_len == 23
    by_hand = _merge(patch, {"model": {"tiny": {"max_seq_len": 23}}})
    fixed = load_spec(_write(tmp_path, _merge(MINIMAL, by_hand)))
    # The spec stores the number: the same digest as writing it by hand.
    assert spec_hash(auto) == spec_hash(fixed)
    assert RunSpec.model_validate_json(auto.model_dump_json()) == auto
    # Padded operands: the width counts, not the level (1 + 12 + max(6, 6 + 1) = 20).
    padded = _merge(patch, {"prompts": {"fixed_width": 5}, "generation": {"max_tokens": 6}})
    padded.pop("curriculum")
    assert load_spec(_write(tmp_path, _merge(MINIMAL, padded))).model.tiny.max_seq_len == 20
