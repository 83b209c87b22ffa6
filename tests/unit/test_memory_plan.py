"""The GPU memory plan against known figures: Llama-2-7B's and SmolLM2-135M's parameter
counts, the 512 KiB/token KV cache of a 7B model, full fine-tuning refused on one 80 GiB GPU
where LoRA fits, FSDP and tensor parallelism dividing what they shard.

Runs in: the test process (pure; one test builds models on torch's meta device).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dataflywheel.gpu.memory_plan import plan_for_spec, plan_memory
from dataflywheel.gpu.model_config import SMOLLM2_CONFIG, model_config, read_model_config
from dataflywheel.gpu.shape import shape_from_config
from dataflywheel.gpu.worker_plan import GIB
from dataflywheel.spec import RunSpec, load_spec

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
# meta-llama/Llama-2-7b-hf's config.json (the fields the plan reads).
LLAMA2_7B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "max_position_embeddings": 4096,
    "torch_dtype": "float16",
}
ON_GPUS = {"generator_gpus": 1, "train_gpus_per_worker": 1}


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _spec(source: str = "smollm2", **patch: Any) -> RunSpec:
    base = {
        "model": {"source": source},
        "prompts": {"kind": "builtin", "family": "addition"},
        "resources": ON_GPUS,
    }
    return RunSpec.model_validate(_merge(base, patch))


@pytest.fixture
def llama7b(tmp_path: Path) -> str:
    """A local model folder holding only Llama-2-7B's config.json."""
    folder = tmp_path / "llama-2-7b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA2_7B))
    return str(folder)


def test_llama2_7b_shape() -> None:
    shape = shape_from_config(LLAMA2_7B)
    assert shape.parameters == 6_738_415_616  # the published 6.74B
    assert shape.kv_bytes_per_token(2) == 512 * 1024  # fp16/bf16: 2·32·32·128·2
    assert shape.kv_bytes_per_token(4) == 1024 * 1024
    assert shape.kv_bytes_per_token(2, tensor_parallel=2) == 256 * 1024
    # LoRA on q/k/v/o at r=16: 32 layers × 4 × 16 × (4096 + 4096)
    assert shape.lora_parameters(16, ["q_proj", "k_proj", "v_proj", "o_proj"]) == 16_777_216
    every = shape.lora_parameters(16, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                       "up_proj", "down_proj"])  # fmt: skip
    assert every == 16_777_216 + 32 * 3 * 16 * (4096 + 11008)
    assert shape.lora_parameters(16, ["lm_head"]) == 0


def test_smollm2_shape_tied_and_grouped_kv() -> None:
    shape = shape_from_config(SMOLLM2_CONFIG)
    assert shape.tie_word_embeddings and shape.lm_head_parameters == 0
    assert shape.parameters == 134_515_008  # the published 134.5M
    assert shape.kv_bytes_per_token(2) == 2 * 30 * 3 * 64 * 2
    # Three KV heads over two GPUs: vLLM keeps two heads' worth on each.
    assert shape.kv_bytes_per_token(2, tensor_parallel=2) == 2 * 30 * 2 * 64 * 2


def test_config_variants() -> None:
    nested = {"model_type": "llava", "tie_word_embeddings": False, "text_config": LLAMA2_7B}
    assert shape_from_config(nested).parameters == 6_738_415_616
    no_kv = {k: v for k, v in LLAMA2_7B.items() if k != "num_key_value_heads"}
    assert shape_from_config(no_kv).num_kv_heads == 32
    assert shape_from_config({**LLAMA2_7B, "head_dim": None}).head_dim == 128
    with pytest.raises(ValueError, match="lacks hidden_size, intermediate_size"):
        shape_from_config({"n_embd": 768, "num_hidden_layers": 2, "num_attention_heads": 2,
                           "vocab_size": 10})  # fmt: skip


def test_full_fine_tuning_of_7b_is_refused_on_one_80gib_gpu(llama7b: str) -> None:
    plan = plan_for_spec(_spec(llama7b, training={"mode": "full"}))
    training = plan.worker("training")
    # fp32 weights 4 + gradients 4 + AdamW m and v 8 = 16 bytes per parameter: ~108 GB.
    states = training.part("weights", "gradients", "optimizer")
    assert states == 16 * 6_738_415_616
    assert states / 1e9 == pytest.approx(107.8, abs=0.1)
    assert plan.refused and plan.verdict == "refused" and not training.fits
    [message] = plan.refusals
    assert message.startswith("training: ") and "per GPU > resources.gpu_memory_gib 80" in message
    for fix in ("training.mode lora", "training.strategy fsdp", "resources.train_workers"):
        assert fix in message
    assert plan.worker("generation").fits  # bf16 weights and KV fit one engine


def test_lora_r16_on_7b_fits_one_80gib_gpu(llama7b: str) -> None:
    # A realistic 7B LoRA run: r=16 on the attention projections, 16 rows a step in
    # micro-batches of 2 with gradient checkpointing. What dominates is the float32 frozen
    # model (25.1 GiB); the adapters (16.8M parameters × 16 B), the checkpointed activations
    # of 2 × 768 tokens and the logits add under 2 GiB.
    spec = _spec(
        llama7b,
        training={
            "mode": "lora",
            "lora": {"r": 16},
            "batch_size": 16,
            "gradient_accumulation_steps": 8,
            "gradient_checkpointing": True,
        },
    )
    plan = plan_for_spec(spec)
    training = plan.worker("training")
    assert plan.verdict == "fits" and not plan.refused and plan.message == ""
    assert training.part("weights") == 4 * 6_738_415_616
    assert training.part("adapters") == 16 * 16_777_216
    assert 25 * GIB < training.total < 32 * GIB < training.budget
    # Without checkpointing the same micro-batch still fits (activations ~24 GiB).
    plain = plan_for_spec(
        _spec(llama7b, training={"batch_size": 16, "gradient_accumulation_steps": 8})
    )
    assert plain.verdict == "fits"
    assert plain.worker("training").total > training.total + 20 * GIB


def test_fsdp_over_two_workers_halves_weights_gradients_and_optimizer(llama7b: str) -> None:
    training = {"mode": "full", "batch_size": 8, "gradient_checkpointing": True}
    ddp = plan_for_spec(_spec(llama7b, training=training, resources={"train_workers": 2}))
    fsdp = plan_for_spec(
        _spec(llama7b, training={**training, "strategy": "fsdp"}, resources={"train_workers": 2})
    )
    keys = ("weights", "gradients", "optimizer")
    assert fsdp.worker("training").part(*keys) * 2 == ddp.worker("training").part(*keys)
    # Activations are per worker: sharding leaves them alone.
    assert fsdp.worker("training").part("activations") == ddp.worker("training").part("activations")
    assert ddp.refused and not fsdp.refused  # 100 GiB of states vs 50 GiB


def test_tensor_parallel_halves_generation_weights(llama7b: str) -> None:
    one = plan_for_spec(_spec(llama7b)).worker("generation")
    two = plan_for_spec(_spec(llama7b, generation={"engine": {"tensor_parallel_size": 2}})).worker(
        "generation"
    )
    assert two.part("weights") * 2 == one.part("weights") == 2 * 6_738_415_616
    assert two.part("kv_cache") * 2 == one.part("kv_cache") == 4096 * 512 * 1024
    assert two.full_sequences is not None and one.full_sequences is not None
    assert two.full_sequences > 2 * one.full_sequences  # half the KV per token, more room


def test_generation_refused_when_one_sequence_does_not_fit(llama7b: str) -> None:
    plan = plan_for_spec(_spec(llama7b, resources={"gpu_memory_gib": 16}))
    generation = plan.worker("generation")
    assert generation.full_sequences == 0 and not generation.fits
    message = next(r for r in plan.refusals if r.startswith("generation: "))
    assert "resources.gpu_memory_gib 16" in message
    assert "generation.engine.max_model_len" in message
    assert "generation.engine.tensor_parallel_size" in message
    # 12.6 GiB of bf16 weights leave little of 16 GiB: a shorter context, no CUDA graphs and
    # a larger share make room for a 1024-token sequence.
    engine = {"max_model_len": 1024, "enforce_eager": True, "gpu_memory_utilization": 0.98}
    squeezed = plan_for_spec(
        _spec(llama7b, generation={"engine": engine}, resources={"gpu_memory_gib": 16})
    )
    assert squeezed.worker("generation").fits


def test_colocated_engines_split_the_utilization() -> None:
    colocate = {"gpu_sharing": "colocate"}
    peers = {"peers": 2}
    spec = _spec(resources=colocate, training=peers)
    generation = plan_for_spec(spec).worker("generation")
    assert generation.budget == int(0.425 * 80 * GIB) and generation.fits  # 0.85 split in two
    assert "0.85 split over 2 engine(s)" in generation.budget_source
    training = plan_for_spec(spec).worker("training")
    assert training.part("sleeping") > 0  # the sleeping engines keep their CUDA contexts
    greedy = _spec(
        resources=colocate, training=peers, generation={"engine": {"gpu_memory_utilization": 0.6}}
    )
    [message] = plan_for_spec(greedy).refusals
    assert message.startswith("generation: 2 engines may share one GPU under resources.gpu_sharing")
    assert "(1.20 > 1)" in message and "at most 0.5" in message
    # Dedicated GPUs reserved by halves: Ray may pack two engines on one GPU, so by default
    # they split vLLM's 0.9; set to 0.9 each, they would not fit together.
    halves = _spec(resources={"generator_gpus": 0.5}, training=peers)
    assert not plan_for_spec(halves).refusals
    assert "0.9 split over 2 engine(s)" in plan_for_spec(halves).worker("generation").budget_source
    both = _spec(
        resources={"generator_gpus": 0.5},
        training=peers,
        generation={"engine": {"gpu_memory_utilization": 0.9}},
    )
    [message] = plan_for_spec(both).refusals
    assert "with resources.generator_gpus 0.5" in message and "generator_gpus to 1" in message


def test_precision_and_dpo_lines() -> None:
    small = {"batch_size": 2, "gradient_checkpointing": True}
    bf16 = plan_for_spec(_spec(training=small)).worker("training")
    fp32 = plan_for_spec(_spec(training={**small, "precision": "float32"})).worker("training")
    assert fp32.part("activations") == 2 * bf16.part("activations")
    assert bf16.part("casts") > 0 and fp32.part("casts") == 0
    dpo = {
        "method": "dpo",
        "mode": "full",
        "batch_size": 2,
        "gradient_checkpointing": True,
    }
    plan = plan_for_spec(
        _spec(
            training=dpo,
            selection={"recipe": "preference_pairs"},
            generation={"samples_per_prompt": 4},
        )
    )
    training = plan.worker("training")
    assert training.part("reference") == 4 * 134_515_008
    # Two pairs a micro-batch: chosen and rejected run together, four sequences.
    assert "4 × 768 tokens" in next(x.component for x in training.lines if x.key == "activations")


def test_what_is_not_checked(tmp_path: Path) -> None:
    on_cpu = plan_for_spec(_spec(resources={"generator_gpus": 0, "train_gpus_per_worker": 0}))
    assert on_cpu.verdict == "unchecked" and not on_cpu.workers and not on_cpu.refused
    assert "no GPU is reserved" in on_cpu.notes[0]
    uri = plan_for_spec(_spec("s3://bucket/llama-70b", training={"mode": "full"}))
    assert uri.verdict == "unchecked" and uri.parameters is None
    assert "store:/s3:// URI" in uri.notes[0]
    empty = tmp_path / "no-config"
    empty.mkdir()
    folder = plan_for_spec(_spec(str(empty), training={"mode": "full"}))
    assert folder.verdict == "unchecked" and "has no readable config.json" in folder.notes[0]
    (empty / "config.json").write_text('{"model_type": "gpt2", "n_embd": 768}')
    odd = plan_for_spec(_spec(str(empty), training={"mode": "full"}))
    assert odd.verdict == "unchecked" and "lacks hidden_size" in odd.notes[0]
    # Only generators on GPUs: the trainer (on CPU) is not planned.
    generators = plan_for_spec(_spec(resources={"train_gpus_per_worker": 0}))
    assert [w.kind for w in generators.workers] == ["generation"]


def test_prompt_tokens_and_context_cap() -> None:
    spec = _spec("builtin:tiny-llama", generation={"max_tokens": 16})
    plan = plan_memory(spec, read_model_config(spec.model))
    assert "512 prompt tokens (assumed" in plan.notes[0]
    assert "= 528 tokens, capped at the 64-token context" in plan.notes[0]
    assert "8 × 64 tokens" in plan.worker("training").lines[-3].component
    longer = plan_memory(_spec(), SMOLLM2_CONFIG, prompt_tokens=2048)
    assert "2048 prompt tokens" in longer.notes[0]
    assert longer.worker("training").total > plan_for_spec(_spec()).worker("training").total
    with pytest.raises(ValueError, match="prompt_tokens"):
        plan_memory(spec, None, prompt_tokens=0)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_fit_as_written_and_on_gpus(path: Path) -> None:
    spec = load_spec(path)
    assert not plan_for_spec(spec).refused
    on_gpus = spec.model_copy(update={"resources": spec.resources.model_copy(update=ON_GPUS)})
    on_gpus = RunSpec.model_validate(on_gpus.model_dump(mode="json"))
    plan = plan_for_spec(on_gpus)
    assert plan.verdict == "fits", plan.message


def test_counts_match_transformers_and_peft() -> None:
    """The formulas against the real modules: transformers' Llama on the meta device (no
    memory), peft's adapters on the tiny model."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from dataflywheel.training.tiny import TinyModelConfig, llama_config

    spec = _spec("builtin:tiny-llama", generation={"max_tokens": 16})
    tiny = spec.model.tiny
    assert tiny is not None
    built = llama_config(
        TinyModelConfig(
            hidden_size=tiny.hidden_size,
            num_layers=tiny.num_layers,
            num_heads=tiny.num_heads,
            intermediate_size=tiny.intermediate_size,
            max_seq_len=tiny.max_seq_len,
        )
    )
    ours = model_config(spec.model)
    assert ours is not None
    for key, value in ours.items():
        if key != "dtype":
            assert getattr(built, key) == value, key
    grouped = transformers.LlamaConfig(**{**SMOLLM2_CONFIG, "num_hidden_layers": 2})
    for config, mine in ((built, ours), (grouped, {**SMOLLM2_CONFIG, "num_hidden_layers": 2})):
        with torch.device("meta"):
            model = transformers.LlamaForCausalLM(config)
        assert sum(p.numel() for p in model.parameters()) == shape_from_config(mine).parameters
    model = transformers.LlamaForCausalLM(built)
    targets = ["q_proj", "v_proj", "down_proj"]
    adapted = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=targets))
    trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    assert trainable == shape_from_config(ours).lora_parameters(4, targets)
