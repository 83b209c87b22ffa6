"""Ray workers on a real local Ray: build a base model, serve it, train a checkpoint.

One Ray (2 CPUs, no dashboard) serves the module. The generator holds one CPU; a one-worker
training task gets the other, so torch runs on one thread there (Ray sets OMP_NUM_THREADS from
the CPUs a worker reserves). The DDP test splits that CPU over two Ray Train workers (the task
that drives Ray Train reserves none).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from safetensors.torch import load_file

from dataflywheel.generation import GenerationRequest, SamplingConfig
from dataflywheel.store import LocalStore, digest_of_key
from dataflywheel.training import TrainConfig
from dataflywheel.training.tiny import TinyModelConfig
from workers.bootstrap import build_base_model
from workers.generator import GeneratorWorker
from workers.model_cache import ModelCache
from workers.trainer import TrainJob, TrainOutcome, train_checkpoint, train_distributed

TINY = TinyModelConfig(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=256)
GREEDY = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=6)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    # Two GPUs declared: Ray schedules by them while everything runs on CPU.
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    return LocalStore(tmp_path_factory.mktemp("objects"))


@pytest.fixture(scope="module")
def base_key(ray_local: None, store: LocalStore) -> str:
    key, digest = ray.get(build_base_model.remote(store.uri, {}, TINY, 0))
    assert digest_of_key(key) == digest
    return key


@pytest.fixture(scope="module")
def generator(ray_local: None, store: LocalStore, tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("model-cache")
    worker = GeneratorWorker.options(num_cpus=1).remote(
        "transformers", store.uri, {}, str(cache), {"batch_size": 8}
    )
    yield worker, cache
    ray.kill(worker)


def test_flow_side_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "import workers.generator, workers.trainer, workers.bootstrap\n"
        "import dataflywheel.generation, dataflywheel.training, dataflywheel.training.tiny\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'vllm', 'datasets')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_build_is_idempotent(ray_local: None, store: LocalStore, base_key: str) -> None:
    again, _ = ray.get(build_base_model.remote(store.uri, {}, TINY, 0))
    other, _ = ray.get(build_base_model.remote(store.uri, {}, TINY, 1))
    assert again == base_key != other


def test_generator_serves_a_stored_model(generator, base_key: str) -> None:
    worker, cache = generator
    assert ray.get(worker.probe.remote()) is False  # nothing loaded yet
    node = ray.get(worker.load.remote(base_key, "float32"))
    assert node == ray.get_runtime_context().get_node_id() == ray.get(worker.node_id.remote())
    # One entry in the node's cache, pinned by the actor's process while it serves it.
    assert [(e.digest, e.pinned) for e in ModelCache(cache).entries()] == [
        (digest_of_key(base_key), True)
    ]
    pid = ray.get(worker.health.remote())["pid"]
    assert [p.name.split("-")[1] for p in cache.glob("*.inuse-*")] == [str(pid)]
    assert ray.get(worker.probe.remote()) is True
    requests = [GenerationRequest(i, 0, 0, f"{i}+{i}=") for i in range(10)]
    out = ray.get(worker.generate.remote(requests, GREEDY))
    assert [(c.prompt_id, c.sample_index) for c in out] == [(i, 0) for i in range(10)]
    assert all(1 <= c.completion_tokens <= 6 for c in out)
    assert ray.get(worker.generate.remote(requests, GREEDY)) == out
    # Same key again: no refetch, no reload; a new dtype reloads from the cache.
    ray.get(worker.load.remote(base_key, "float32"))
    bf16 = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=6, dtype="bfloat16")
    assert len(ray.get(worker.generate.remote(requests[:2], bf16))) == 2
    assert ray.get(worker.loaded.remote()) == (base_key, "bfloat16")
    assert len(ModelCache(cache).entries()) == 1
    assert len(list(cache.glob("*.inuse-*"))) == 1  # the float32 load's pin was released


def test_train_checkpoint_stores_a_new_model(
    ray_local: None, store: LocalStore, base_key: str, generator, tmp_path: Path
) -> None:
    rows = [{"prompt": f"{a}+{a}=", "completion": str(2 * a), "sample_id": a} for a in range(10)]
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset_key = store.put_file(data).key
    config = TrainConfig(
        method="sft", mode="lora", learning_rate=1e-3, batch_size=4, seed=0, max_steps=5
    )
    outcome: TrainOutcome = ray.get(
        train_checkpoint.remote(store.uri, {}, base_key, dataset_key, config, "sft")
    )
    assert outcome.model_key != base_key and digest_of_key(outcome.model_key) == outcome.digest
    assert outcome.result.steps == 5 and outcome.result.examples == 10
    assert outcome.result.threads == 1  # what Ray granted (num_cpus=1)
    assert outcome.node_id == ray.get_runtime_context().get_node_id()
    assert outcome.worker_nodes == (outcome.node_id,)
    trained = store.get_tree(outcome.model_key, tmp_path / "trained")
    base = store.get_tree(base_key, tmp_path / "base")
    tuned, original = (
        load_file(trained / "model.safetensors"),
        load_file(base / "model.safetensors"),
    )
    assert tuned.keys() == original.keys()
    assert any(not (tuned[k] == original[k]).all() for k in tuned)
    # The generator switches to the new checkpoint.
    worker, cache = generator
    ray.get(worker.load.remote(outcome.model_key, "float32"))
    assert ray.get(worker.probe.remote()) is True
    pins = {e.digest: e.pinned for e in ModelCache(cache).entries()}
    assert pins == {digest_of_key(base_key): False, outcome.digest: True}
    # Replaying the same inputs gives the same checkpoint key (CPU, float32, same threads).
    replay: TrainOutcome = ray.get(
        train_checkpoint.remote(store.uri, {}, base_key, dataset_key, config, "sft")
    )
    assert replay.model_key == outcome.model_key


def test_a_generator_actor_builds_and_trains_as_the_tasks_do(
    ray_local: None, store: LocalStore, base_key: str, tmp_path: Path
) -> None:
    # The hybrid engine (placement.trains_in_generator): a zero-CPU actor, as a run's are,
    # serving a model, builds the base model and trains a checkpoint in its own process.
    # Same inputs and thread count as the tasks: the same bytes; what it serves is untouched.
    actor = GeneratorWorker.options(num_cpus=0).remote(
        "transformers", store.uri, {}, str(tmp_path / "cache"), {"batch_size": 8}
    )
    try:
        built = ray.get(actor.build_base.remote(store.uri, {}, TINY, 0, 1))
        assert built == (base_key, digest_of_key(base_key))
        ray.get(actor.load.remote(base_key, "float32"))
        requests = [GenerationRequest(i, 0, 0, f"{i}+{i}=") for i in range(6)]
        served = ray.get(actor.generate.remote(requests, GREEDY))
        rows = [{"prompt": f"{a}+{a}=", "completion": str(2 * a)} for a in range(10)]
        data = tmp_path / "sft.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        config = TrainConfig(
            method="sft", mode="full", learning_rate=1e-3, batch_size=4, seed=0, max_steps=3
        )
        job = TrainJob(store.uri, {}, base_key, store.put_file(data).key, config, "sft")
        in_actor: TrainOutcome = ray.get(actor.train.remote(job, 1))
        in_task: TrainOutcome = ray.get(
            train_checkpoint.remote(store.uri, {}, base_key, job.dataset_key, config, "sft")
        )
        assert in_actor.model_key == in_task.model_key != base_key
        assert in_actor.result.threads == in_task.result.threads == 1
        assert in_actor.result.losses == in_task.result.losses
        assert ray.get(actor.loaded.remote()) == (base_key, "float32")
        assert ray.get(actor.generate.remote(requests, GREEDY)) == served
        assert ray.get(actor.health.remote())["state"] == "idle"
        # The threads asked for, for this call only.
        two: TrainOutcome = ray.get(actor.train.remote(job, 2))
        assert two.result.threads == 2
        assert ray.get(actor.train.remote(job, 1)).model_key == in_actor.model_key
    finally:
        ray.kill(actor)


def test_train_checkpoint_uses_the_configured_threads(
    ray_local: None, store: LocalStore, base_key: str, tmp_path: Path
) -> None:
    data = tmp_path / "sft.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": "1+1=", "completion": "2"}) + "\n" for _ in range(4))
    )
    config = TrainConfig(
        method="sft",
        mode="full",
        learning_rate=1e-3,
        batch_size=2,
        seed=0,
        max_steps=2,
        num_threads=2,
    )
    outcome: TrainOutcome = ray.get(
        train_checkpoint.remote(store.uri, {}, base_key, store.put_file(data).key, config, "sft")
    )
    assert outcome.result.threads == 2  # more than the one CPU Ray granted, as configured


def test_train_checkpoint_rejects_mismatched_kind(
    ray_local: None, store: LocalStore, base_key: str
) -> None:
    config = TrainConfig(
        method="sft", mode="full", learning_rate=1e-3, batch_size=4, seed=0, max_steps=1
    )
    with pytest.raises(ValueError, match="does not match"):
        ray.get(train_checkpoint.remote(store.uri, {}, base_key, base_key, config, "dpo"))


def test_ddp_over_two_ray_train_workers(
    ray_local: None, store: LocalStore, base_key: str, generator, tmp_path: Path
) -> None:
    # The generator fixture holds one of the two CPUs: the workers split the other.
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(4) for b in range(4)]
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset_key = store.put_file(data).key
    config = TrainConfig(
        method="sft", mode="full", learning_rate=1e-3, batch_size=8, seed=0, max_steps=4
    )
    two = {"num_workers": 2, "use_gpu": False, "resources_per_worker": {"CPU": 0.5}}
    args = (store.uri, {}, base_key, dataset_key, config, "sft", None)
    ddp: TrainOutcome = ray.get(train_distributed.remote(*args, two))
    plain: TrainOutcome = ray.get(train_checkpoint.options(num_cpus=0.5).remote(*args))
    assert len(ddp.worker_nodes) == 2 and ddp.result.steps == plain.result.steps == 4
    # Two workers with 4 rows each see the same global batches of 8 as one worker with 8:
    # gradients are averaged across workers, so the losses agree to float rounding.
    assert ddp.result.losses == pytest.approx(plain.result.losses, rel=1e-4)
    assert ddp.model_key != base_key
    # FSDP shards weights, gradients and optimiser states over the workers instead of
    # replicating them: the same mathematics, so the same losses; the saved weights are
    # the full model, gathered once.
    sharded = dataclasses.replace(config, strategy="fsdp", deterministic=False)
    fsdp: TrainOutcome = ray.get(
        train_distributed.remote(store.uri, {}, base_key, dataset_key, sharded, "sft", None, two)
    )
    assert fsdp.result.losses == pytest.approx(ddp.result.losses, rel=1e-4)
    tensors = {
        name: load_file(store.get_tree(o.model_key, tmp_path / name) / "model.safetensors")
        for name, o in (("ddp", ddp), ("fsdp", fsdp))
    }
    assert tensors["fsdp"].keys() == tensors["ddp"].keys()
    for key, value in tensors["fsdp"].items():
        assert value.shape == tensors["ddp"][key].shape
        assert value.float().sub(tensors["ddp"][key].float()).abs().max() < 1e-3
    # Same inputs, same worker count: the same bytes (gloo sums in a fixed order).
    again: TrainOutcome = ray.get(train_distributed.remote(*args, two))
    assert again.model_key == ddp.model_key


def test_a_tensor_parallel_generator_is_granted_that_many_gpus(
    ray_local: None, store: LocalStore, tmp_path: Path
) -> None:
    from dataflywheel.spec import RunSpec
    from workers.driver.placement import generator_resources

    spec = RunSpec.model_validate(
        {
            "model": {"source": "smollm2"},
            "prompts": {"kind": "builtin", "family": "word_problems"},
            "resources": {"generator_gpus": 1},
            "generation": {"engine": {"tensor_parallel_size": 2}},
        }
    )
    options = {**generator_resources(spec), "num_cpus": 0}
    actor = GeneratorWorker.options(**options).remote("transformers", store.uri, {}, str(tmp_path))
    try:
        assert sorted(ray.get(actor.health.remote())["gpus"]) == ["0", "1"]
    finally:
        ray.kill(actor)


def test_batch_that_does_not_split_over_the_workers_is_refused(
    ray_local: None, store: LocalStore, base_key: str
) -> None:
    config = TrainConfig(
        method="sft", mode="full", learning_rate=1e-3, batch_size=3, seed=0, max_steps=1
    )
    two = {"num_workers": 2, "use_gpu": False, "resources_per_worker": {"CPU": 0.5}}
    ref = train_distributed.remote(store.uri, {}, base_key, base_key, config, "sft", None, two)
    with pytest.raises(ValueError, match="batch_size: 3 rows per step do not split evenly"):
        ray.get(ref)
