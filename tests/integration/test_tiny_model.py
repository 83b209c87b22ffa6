"""The tiny Llama end to end on CPU: build, load, generate, SFT/DPO train, reproducibility.

Every test runs torch on one thread (the machine is shared, and byte-identical checkpoints
are promised for a fixed thread count).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from dataflywheel.generation import (
    GenerationRequest,
    SamplingConfig,
    make_backend,
)
from dataflywheel.generation.hf import TransformersBackend
from dataflywheel.training import PreferenceExample, SFTExample, TrainConfig, TrainResult
from dataflywheel.training.dpo import train_dpo
from dataflywheel.training.sft import train_sft
from dataflywheel.training.tiny import TinyModelConfig, build_tiny_model

TINY = TinyModelConfig(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=256)
GREEDY = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=4)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module")
def base(root: Path) -> Path:
    return build_tiny_model(TINY, root / "base", seed=0)


@pytest.fixture(scope="module")
def addition() -> list[SFTExample]:
    """200 one-digit sums: a toy mapping the tiny model learns in ~150 steps."""
    rng = random.Random(0)
    pairs = [(rng.randrange(10), rng.randrange(10)) for _ in range(200)]
    return [SFTExample(f"{a}+{b}=", str(a + b)) for a, b in pairs]


def sft_config(**overrides) -> TrainConfig:
    fields = dict(
        method="sft", mode="full", learning_rate=3e-3, batch_size=32, seed=1, max_steps=150
    )
    return TrainConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def trained(root: Path, base: Path, addition: list[SFTExample]):
    out = root / "sft"
    return out, train_sft(base, addition, sft_config(), out)


@pytest.fixture(scope="module")
def short_sft(root: Path, base: Path, addition: list[SFTExample]):
    """``run(mode, seed, copy)``: a 20-step SFT checkpoint, trained once per argument set."""
    done: dict[tuple[str, int, str], tuple[Path, TrainResult]] = {}

    def run(mode: str, seed: int, copy: str = "a") -> tuple[Path, TrainResult]:
        if (mode, seed, copy) not in done:
            out = root / f"short-{mode}-{seed}-{copy}"
            config = sft_config(mode=mode, max_steps=20, seed=seed)
            done[mode, seed, copy] = out, train_sft(base, addition, config, out)
        return done[mode, seed, copy]

    return run


def weights(folder: Path) -> bytes:
    return (folder / "model.safetensors").read_bytes()


def sha(folder: Path) -> str:
    return hashlib.sha256(weights(folder)).hexdigest()


def requests_for(prompts: list[str], seed: int = 0, samples: int = 1) -> list[GenerationRequest]:
    return [
        GenerationRequest(prompt_id=i, sample_index=k, seed=seed, prompt=p)
        for i, p in enumerate(prompts)
        for k in range(samples)
    ]


def loaded(folder: Path, dtype: str = "float32", batch_size: int = 32) -> TransformersBackend:
    backend = make_backend("transformers", batch_size=batch_size)
    backend.load(folder, dtype)
    return backend


def exact_match(folder: Path, examples: list[SFTExample]) -> float:
    out = loaded(folder).generate(requests_for([e.prompt for e in examples]), GREEDY)
    return sum(c.text == e.completion for c, e in zip(out, examples, strict=True)) / len(out)


# --- the model folder ---------------------------------------------------------------------


def test_build_is_a_plain_hf_folder_and_reproducible(root: Path, base: Path) -> None:
    files = {p.name for p in base.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    model = AutoModelForCausalLM.from_pretrained(base)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.head_dim == 32 and model.config.vocab_size == 100
    assert model.dtype == torch.float32
    assert AutoTokenizer.from_pretrained(base).eos_token_id == model.config.eos_token_id
    assert sha(build_tiny_model(TINY, root / "base-again", seed=0)) == sha(base)
    assert sha(build_tiny_model(TINY, root / "base-seed-1", seed=1)) != sha(base)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (dict(hidden_size=64, num_heads=4), "head_dim = hidden_size / num_heads = 64/4 = 16"),
        (dict(hidden_size=128, num_heads=3), "not divisible"),
        (dict(hidden_size=200, num_heads=4), "head_dim"),
    ],
)
def test_shapes_vllm_cannot_serve_are_refused(tmp_path: Path, shape: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_tiny_model(TinyModelConfig(**shape), tmp_path / "m", seed=0)
    assert not (tmp_path / "m").exists()


def test_nope_variant_has_no_position_signal(root: Path) -> None:
    folder = build_tiny_model(TinyModelConfig(position_encoding="none"), root / "nope", seed=0)
    model = AutoModelForCausalLM.from_pretrained(folder)
    x = torch.zeros(1, 1024, 32)
    cos, sin = model.model.rotary_emb(x, torch.arange(1024)[None])
    assert torch.equal(cos, torch.ones_like(cos))
    assert sin.abs().max() < 1e-8


# --- generation ----------------------------------------------------------------------------


def test_greedy_is_deterministic_and_independent_of_seed(base: Path) -> None:
    backend = loaded(base)
    sampling = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=12)
    prompts = ["1+2=", "33+44=", "7+8="]
    first = backend.generate(requests_for(prompts, seed=0), sampling)
    again = backend.generate(requests_for(prompts, seed=99), sampling)
    assert [c.text for c in first] == [c.text for c in again]
    assert [c.prompt_tokens for c in first] == [5, 7, 5]  # <bos> + characters


def test_progress_hears_every_decoding_step(base: Path) -> None:
    backend = loaded(base, batch_size=4)
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_tokens=10)
    reqs = requests_for([f"{i}+{i}=" for i in range(8)], seed=3)
    steps: list[int] = []
    heard = backend.generate(reqs, sampling, progress=steps.append)
    assert heard == backend.generate(reqs, sampling)  # the heartbeat changes nothing
    # Two batches of four; each decodes until its longest completion ends.
    longest = [max(c.completion_tokens for c in heard[i : i + 4]) for i in (0, 4)]
    assert steps == [1] * sum(longest)


def test_sampling_is_seeded(base: Path) -> None:
    backend = loaded(base, batch_size=8)
    sampling = SamplingConfig(temperature=1.0, top_p=0.95, max_tokens=16)
    prompts = [f"{i}+{i}=" for i in range(12)]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = backend.generate(requests_for(prompts, seed=5), sampling)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    again = loaded(base, batch_size=8).generate(requests_for(prompts, seed=5), sampling)
    other = backend.generate(requests_for(prompts, seed=6), sampling)
    assert first == again
    assert [c.text for c in first] != [c.text for c in other]
    for c in first:
        assert c.finish_reason in ("stop", "length")
        assert 1 <= c.completion_tokens <= 16
        if c.finish_reason == "length":
            assert c.completion_tokens == 16


def test_stop_strings_are_trimmed(base: Path) -> None:
    backend = loaded(base)
    stop = ("a", "e", "1")
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_tokens=24, stop=stop)
    out = backend.generate(requests_for([f"{i}+1=" for i in range(32)]), sampling)
    free = SamplingConfig(temperature=1.0, top_p=1.0, max_tokens=24)
    unstopped = backend.generate(requests_for([f"{i}+1=" for i in range(32)]), free)
    stopped = 0
    for c, u in zip(out, unstopped, strict=True):
        assert not any(s in c.text for s in stop)
        assert u.text.startswith(c.text)  # same batch seed: the same draw, cut earlier
        if c.finish_reason == "stop" and c.completion_tokens < u.completion_tokens:
            stopped += 1
            assert u.text[len(c.text)] in stop
    assert stopped > 0


def test_finish_reason_and_token_counts(trained) -> None:
    folder, _ = trained
    backend = loaded(folder)
    answers = backend.generate(requests_for(["6+7=", "9+5=", "8+8=", "7+6="]), GREEDY)
    [done] = [
        c for c in answers if len(set(c.text)) == len(c.text) == 2 and c.finish_reason == "stop"
    ][:1]
    prompt = f"{[6, 9, 8, 7][done.prompt_id]}+{[7, 5, 8, 6][done.prompt_id]}="
    # Two digits then <eos>: eos is counted, not shown.
    assert (done.prompt_tokens, done.completion_tokens) == (5, 3)
    [cut] = backend.generate(requests_for([prompt]), SamplingConfig(0.0, 1.0, max_tokens=1))
    assert (cut.text, cut.completion_tokens, cut.finish_reason) == (done.text[0], 1, "length")
    stop = SamplingConfig(0.0, 1.0, 4, stop=(done.text[1],))
    [trimmed] = backend.generate(requests_for([prompt]), stop)
    assert (trimmed.text, trimmed.completion_tokens, trimmed.finish_reason) == (
        done.text[0],
        2,
        "stop",
    )


def test_bfloat16(trained) -> None:
    folder, _ = trained
    backend = loaded(folder, dtype="bfloat16")
    assert backend.model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="loaded in 'bfloat16'"):
        backend.generate(requests_for(["1+1="]), GREEDY)
    sampling = SamplingConfig(0.0, 1.0, max_tokens=4, dtype="bfloat16")
    out = backend.generate(requests_for(["1+1=", "2+2="]), sampling)
    assert out == backend.generate(requests_for(["1+1=", "2+2="]), sampling)


# --- training ------------------------------------------------------------------------------


def test_sft_learns_the_mapping(base: Path, trained, addition: list[SFTExample]) -> None:
    folder, result = trained
    assert result.steps == 150 and len(result.losses) == 150 and result.examples == 200
    assert result.final_loss == result.losses[-1]
    assert sum(result.losses[-10:]) / 10 < sum(result.losses[:10]) / 10 / 3
    # full_determinism's process-wide switches were put back after training.
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory
    before, after = exact_match(base, addition), exact_match(folder, addition)
    assert before < 0.05
    assert after > 0.6


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_sft_replay_is_byte_identical(base: Path, short_sft, mode: str) -> None:
    first, first_result = short_sft(mode, seed=1)
    second, second_result = short_sft(mode, seed=1, copy="b")
    assert weights(first) == weights(second)
    assert first_result.losses == second_result.losses
    other, _ = short_sft(mode, seed=2)
    assert len({sha(first), sha(other), sha(base)}) == 3


def test_lora_merges_into_a_plain_folder(base: Path, short_sft) -> None:
    folder, _ = short_sft("lora", seed=1)
    assert not (folder / "adapter_config.json").exists()
    tuned, original = load_file(folder / "model.safetensors"), load_file(base / "model.safetensors")
    assert tuned.keys() == original.keys()  # no lora_A/lora_B, no base_model.model. prefix
    targets = ("q_proj", "k_proj", "v_proj", "o_proj")
    for name, tensor in tuned.items():
        if any(t in name for t in targets):
            assert not torch.equal(tensor, original[name]), name
        else:
            assert torch.equal(tensor, original[name]), name
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(model).__name__ == "LlamaForCausalLM"


def test_dpo_moves_towards_chosen_and_replays(root: Path, base: Path) -> None:
    rng = random.Random(1)
    pairs = [(rng.randrange(10), rng.randrange(10)) for _ in range(64)]
    examples = [PreferenceExample(f"{a}+{b}=", str(a + b), str(a + b + 1)) for a, b in pairs]
    config = TrainConfig(
        method="dpo", mode="full", learning_rate=1e-3, batch_size=16, seed=1, max_steps=30
    )
    result = train_dpo(base, examples, config, root / "dpo-a")
    assert result.steps == 30
    assert result.losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference: ln 2
    assert sum(result.losses[-5:]) / 5 < 0.6
    again = train_dpo(base, examples, config, root / "dpo-b")
    assert weights(root / "dpo-a") == weights(root / "dpo-b")
    assert again.losses == result.losses


def test_training_refuses_bad_inputs(root: Path, base: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of epochs and max_steps"):
        TrainConfig(method="sft", mode="full", learning_rate=1e-3, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="at least one example"):
        train_sft(base, [], sft_config(), root / "empty")
    with pytest.raises(FileExistsError):
        train_sft(base, [SFTExample("1+1=", "2")], sft_config(), base)
