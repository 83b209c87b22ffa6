"""GPU settings of the run spec and where they go: the spec's cross-field checks, the vLLM
engine options, Ray reservations (placement), whether a cluster can place the run
(placement_fit), and TRL / transformers trainer arguments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dataflywheel.generation.engine_options import backend_options, engine_kwargs
from dataflywheel.gpu.placement_fit import placement_errors
from dataflywheel.rounds import plan
from dataflywheel.spec import RunSpec, spec_hash
from workers.driver import placement


def _spec(**sections: Any) -> RunSpec:
    data: dict[str, Any] = {
        "model": {"source": "smollm2"},
        "prompts": {"kind": "builtin", "family": "word_problems"},
        "training": {"batch_size": 8},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return RunSpec.model_validate(data)


GPU = {"generator_gpus": 1, "train_gpus_per_worker": 1}


# --- the spec refuses what cannot work, naming the field ------------------------------------


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"generation": {"engine": {"tensor_parallel_size": 2}}}, "resources.generator_gpus"),
        (
            {"generation": {"backend": "transformers", "engine": {"enforce_eager": False}}},
            "engine.enforce_eager",
        ),
        ({"generation": {"max_tokens": 256, "engine": {"max_model_len": 256}}}, "max_tokens"),
        ({"resources": {"gpu_sharing": "colocate"}}, "resources.gpu_sharing"),
        (
            {
                "resources": {**GPU, "gpu_sharing": "colocate", "train_workers": 2},
                "training": {"mode": "full"},
            },
            "resources.gpu_sharing",
        ),
        ({"training": {"strategy": "fsdp", "mode": "full"}}, "training.strategy"),
        (
            {"training": {"strategy": "fsdp"}, "resources": {"train_workers": 2}},
            "training.strategy",
        ),
        ({"training": {"gradient_accumulation_steps": 3}}, "gradient_accumulation_steps"),
        ({"generation": {"engine": {"sleep_mode": True}}}, "sleep_mode"),
    ],
)
def test_gpu_settings_that_cannot_work_are_refused_by_name(sections: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        _spec(**sections)


def test_earlier_specs_keep_their_digest_and_new_settings_count() -> None:
    from dataflywheel.prompts import canonical_json, sha256_hex

    spec = _spec()
    # The same spec as written before the GPU fields existed hashes the same...
    earlier = spec.model_dump(mode="json")
    later = {
        "generation": ["engine"],
        "training": ["precision", "gradient_accumulation_steps", "gradient_checkpointing",
                     "strategy", "checkpoint_dtype"],
        "resources": ["gpu_sharing", "gpu_memory_gib", "train_in_generator"],
    }  # fmt: skip
    for section, keys in later.items():
        for key in keys:
            del earlier[section][key]
    del earlier["reproducibility"]
    assert spec_hash(spec) == sha256_hex(canonical_json(earlier))
    # ...and one that sets them differently does not.
    assert spec_hash(_spec(resources={**GPU, "gpu_sharing": "colocate"})) != spec_hash(
        _spec(resources=GPU)
    )
    assert spec_hash(_spec(generation={"engine": {"enforce_eager": True}})) != spec_hash(spec)


# --- engine options: what reaches vllm.LLM ------------------------------------------------


def test_engine_settings_reach_vllm_and_defaults_are_left_to_the_device() -> None:
    assert engine_kwargs(_spec()) == {}  # eager on CPU only, vLLM's memory share, ...
    assert "engine_kwargs" not in backend_options(_spec())
    spec = _spec(
        resources={"generator_gpus": 1},
        generation={
            "engine": {
                "tensor_parallel_size": 2,
                "gpu_memory_utilization": 0.8,
                "enforce_eager": False,
                "enable_prefix_caching": False,
                "max_model_len": 4096,
            }
        },
    )
    options = backend_options(spec)
    assert options["engine_kwargs"] == {
        "tensor_parallel_size": 2,
        "distributed_executor_backend": "mp",
        "gpu_memory_utilization": 0.8,
        "enforce_eager": False,
        "enable_prefix_caching": False,
    }
    assert options["max_model_len"] == 4096 and "sleep_mode" not in options


def test_colocated_engines_split_the_gpu_and_sleep_between_stages() -> None:
    spec = _spec(
        resources={**GPU, "gpu_sharing": "colocate", "generators": 1},
        training={"peers": 2},
    )
    options = backend_options(spec)
    assert options["sleep_mode"] is True
    assert options["engine_kwargs"]["gpu_memory_utilization"] == pytest.approx(0.425)


def test_transformers_backend_gets_no_engine_options() -> None:
    spec = _spec(generation={"backend": "transformers", "batch_size": 16})
    assert backend_options(spec) == {"batch_size": 16}


# --- Ray reservations ------------------------------------------------------------------


def test_a_tensor_parallel_generator_reserves_that_many_gpus() -> None:
    spec = _spec(
        resources={"generator_gpus": 1}, generation={"engine": {"tensor_parallel_size": 2}}
    )
    assert placement.generator_resources(spec)["num_gpus"] == 2


def test_colocated_reservations_fit_one_gpu_together() -> None:
    spec = _spec(
        resources={**GPU, "gpu_sharing": "colocate", "generators": 2}, training={"peers": 2}
    )
    generators = placement.generator_slots(spec) * placement.generator_gpus(spec)
    trainer = placement.trainer_options(spec.resources)["num_gpus"]
    assert generators > 0 and trainer > 0 and generators + trainer <= 1
    assert placement.train_scaling(spec.resources)["resources_per_worker"]["GPU"] == trainer


def test_scorers_with_models_reserve_their_gpus() -> None:
    spec = _spec(
        verification={
            "verifiers": [
                {"name": "exact_answer"},
                {"name": "llm_judge", "num_gpus": 0.5, "memory_gib": 2},
            ]
        }
    )
    assert placement.verify_options(spec) == {"num_cpus": 1, "num_gpus": 0.5, "memory": 2 << 30}
    assert spec.uses_gpus


# --- can the cluster place it? ------------------------------------------------------------


def test_dedicated_gpus_that_the_cluster_cannot_hold_are_refused_with_the_numbers() -> None:
    spec = _spec(resources=GPU, training={"peers": 2})  # 2 generators + 2 trainers at once
    (error,) = placement_errors(spec, [1])
    assert "gpu_sharing" in error and "2 generator(s) × 1 GPU" in error
    assert "2 training worker(s) × 1 GPU" in error
    assert placement_errors(spec, [4]) == []
    assert placement_errors(spec, [2, 2]) == []
    assert placement_errors(spec, [1, 1, 1]) != []


def test_a_tensor_parallel_engine_needs_its_gpus_on_one_node() -> None:
    spec = _spec(
        resources={"generator_gpus": 1}, generation={"engine": {"tensor_parallel_size": 2}}
    )
    assert placement_errors(spec, [1, 1]) != []
    assert placement_errors(spec, [2]) == []


def test_colocate_needs_one_gpu_and_cpu_runs_need_none() -> None:
    colocated = _spec(resources={**GPU, "gpu_sharing": "colocate"}, training={"peers": 2})
    assert placement_errors(colocated, [1]) == []
    assert "colocate" in placement_errors(colocated, [0])[0]
    assert placement_errors(_spec(), []) == []


# --- the trainer's settings ---------------------------------------------------------------


def test_precision_and_determinism_follow_the_device_unless_set() -> None:
    cpu = plan.train_config(_spec(), 1)
    assert cpu.dtype == "float32" and cpu.deterministic
    gpu = plan.train_config(_spec(resources={"train_gpus_per_worker": 1}), 1)
    assert gpu.dtype == "bfloat16" and not gpu.deterministic
    pinned = _spec(
        resources={"train_gpus_per_worker": 1},
        reproducibility="bitwise",
        training={
            "precision": "float32",
            "gradient_accumulation_steps": 4,
            "gradient_checkpointing": True,
        },  # fmt: skip
    )
    config = plan.train_config(pinned, 1)
    assert (config.dtype, config.deterministic) == ("float32", True)
    assert (config.gradient_accumulation_steps, config.gradient_checkpointing) == (4, True)


def test_trainer_arguments_carry_accumulation_checkpointing_and_fsdp(tmp_path: Path) -> None:
    from dataflywheel.training.sft import trainer_args

    spec = _spec(
        resources={"train_workers": 2, "train_gpus_per_worker": 1},
        training={
            "mode": "full",
            "strategy": "fsdp",
            "gradient_accumulation_steps": 2,
            "gradient_checkpointing": True,
        },  # fmt: skip
    )
    config = plan.train_config(spec, 1)
    args = trainer_args(config, tmp_path)
    assert args["per_device_train_batch_size"] == 4 and args["gradient_accumulation_steps"] == 2
    assert args["bf16"] and not args["full_determinism"]
    assert args["fsdp"] is True and args["fsdp_config"]["version"] == 2
    # Under FSDP activations are checkpointed by FSDP, not by the model as well.
    assert args["fsdp_config"]["activation_checkpointing"] and not args["gradient_checkpointing"]
    ddp = trainer_args(
        plan.train_config(_spec(training={"gradient_checkpointing": True}), 1), tmp_path
    )
    assert ddp["gradient_checkpointing"] and "fsdp" not in ddp and ddp["full_determinism"]


def test_checkpoints_are_saved_in_the_models_dtype_under_bf16(tmp_path: Path) -> None:
    from dataflywheel.training.sft import checkpoint_dtype

    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    fp32 = plan.train_config(_spec(), 1)
    bf16 = plan.train_config(_spec(resources={"train_gpus_per_worker": 1}), 1)
    assert checkpoint_dtype(fp32, tmp_path) == "float32"  # a float32 run keeps its precision
    assert checkpoint_dtype(bf16, tmp_path) == "bfloat16"
    pinned = plan.train_config(
        _spec(resources={"train_gpus_per_worker": 1}, training={"checkpoint_dtype": "float32"}), 1
    )
    assert checkpoint_dtype(pinned, tmp_path) == "float32"
