"""VLLMBackend on a real vLLM engine inside a Ray actor, checked against transformers.

One engine for the whole module (an engine start costs ~30-60 s on 2 cores). Two tiny fp32
Llama folders (head_dim 32) differ only in their random weights, so switching between them
takes the in-place reload path.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm")
ray = pytest.importorskip("ray")

from dataflywheel.generation import GenerationRequest, SamplingConfig  # noqa: E402
from dataflywheel.generation.vllm_backend import (  # noqa: E402
    UnsupportedModelError,
    VLLMBackend,
    VLLMNotInstalledError,
    _import_vllm,
    check_supported,
)
from dataflywheel.training.tokenizer import build_char_tokenizer, vocab_size  # noqa: E402

pytestmark = pytest.mark.slow

PROMPTS = [f"user: {a}+{b}=\nassistant: " for a, b in [(1, 2), (12, 7), (40, 2), (9, 9), (3, 0)]]
GREEDY = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=24)
SAMPLED = SamplingConfig(temperature=1.0, top_p=0.9, max_tokens=24)


def build_tiny(out: Path, seed: int, head_dim: int = 32) -> Path:
    """A random fp32 Llama with the char tokenizer. initializer_range 0.2 (not 0.02) makes
    the logits peaked, so greedy decoding has no near-ties that float noise could flip."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_char_tokenizer(256)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size(),
        hidden_size=4 * head_dim,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=head_dim,
        max_position_embeddings=256,
        initializer_range=0.2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def hf_greedy(model_dir: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy completions from transformers ``generate``, one prompt at a time (no padding)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts = []
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(
                ids, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id
            )
        texts.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return texts


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("vllm_models")
    return build_tiny(root / "a", seed=1), build_tiny(root / "b", seed=2)


@pytest.fixture(scope="module")
def engine(models: tuple[Path, Path]) -> Iterator[Any]:
    """A Ray actor holding one VLLMBackend, loaded with model A."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    actor = ray.remote(num_cpus=1)(VLLMBackend).remote(max_model_len=256, kv_cache_gib=1)
    ray.get(actor.load.remote(models[0], "float32"))
    yield actor
    ray.get(actor.close.remote())
    ray.kill(actor)
    ray.shutdown()


def requests(seeds: list[int]) -> list[GenerationRequest]:
    return [
        GenerationRequest(prompt_id=i % len(PROMPTS), sample_index=i, seed=s, prompt=PROMPTS[i % 5])
        for i, s in enumerate(seeds)
    ]


def generate(actor: Any, reqs: list[GenerationRequest], sampling: SamplingConfig) -> list[Any]:
    return ray.get(actor.generate.remote(reqs, sampling))


def test_seeded_samples_do_not_depend_on_batching(engine: Any) -> None:
    reqs = requests(list(range(100, 112)))
    first = generate(engine, reqs, SAMPLED)
    assert generate(engine, reqs, SAMPLED) == first
    assert generate(engine, reqs[::-1], SAMPLED)[::-1] == first
    assert [generate(engine, [r], SAMPLED)[0] for r in reqs[:4]] == first[:4]
    # Different seeds on the same prompt give different samples.
    assert len({c.text for c in first if c.prompt_id == 0}) > 1
    for c, r in zip(first, reqs, strict=True):
        assert (c.prompt_id, c.sample_index, c.seed) == (r.prompt_id, r.sample_index, r.seed)
        assert c.finish_reason in ("stop", "length")
        assert c.prompt_tokens == len(r.prompt) + 1  # one token a character, plus <bos>
        assert 1 <= c.completion_tokens <= SAMPLED.max_tokens
        if c.finish_reason == "length":
            assert c.completion_tokens == SAMPLED.max_tokens


def test_greedy_matches_transformers_in_fp32(engine: Any, models: tuple[Path, Path]) -> None:
    got = generate(engine, requests([0] * len(PROMPTS)), GREEDY)
    assert [c.text for c in got] == hf_greedy(models[0], PROMPTS, GREEDY.max_tokens)


def test_stop_string_ends_completion(engine: Any) -> None:
    reqs = requests([0])
    full = generate(engine, reqs, GREEDY)[0]
    assert len(full.text) >= 6, full
    stop = full.text[4:6]
    cut = full.text[: full.text.index(stop)]
    stopped = generate(engine, reqs, SamplingConfig(0.0, 1.0, 24, stop=(stop,)))[0]
    assert (stopped.text, stopped.finish_reason) == (cut, "stop")
    assert stopped.completion_tokens == len(cut) + len(stop)


def test_reload_swaps_weights_in_place(engine: Any, models: tuple[Path, Path]) -> None:
    reqs = requests([0] * len(PROMPTS))
    before = generate(engine, reqs, GREEDY)
    started = time.perf_counter()
    ray.get(engine.load.remote(models[1], "float32"))
    reload_s = time.perf_counter() - started
    assert ray.get(engine.__ray_call__.remote(lambda self: self.last_load_mode)) == "reload"
    assert reload_s < 10, f"in-place reload took {reload_s:.1f} s"
    after = generate(engine, reqs, GREEDY)
    assert [c.text for c in after] != [c.text for c in before]
    # Same prompts as before: a stale prefix cache would leak model A's KV into these.
    assert [c.text for c in after] == hf_greedy(models[1], PROMPTS, GREEDY.max_tokens)
    ray.get(engine.load.remote(models[0], "float32"))
    assert generate(engine, reqs, GREEDY) == before


def test_unsupported_head_size_is_refused(tmp_path: Path) -> None:
    model = build_tiny(tmp_path / "h16", seed=0, head_dim=16)
    with pytest.raises(UnsupportedModelError, match="head size 16"):
        check_supported(model)


def test_missing_vllm_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(VLLMNotInstalledError, match=r"pip install -e '\.\[cpu\]'"):
        _import_vllm()


def test_release_frees_the_engine_and_the_next_load_builds_one(
    engine: Any, models: tuple[Path, Path]
) -> None:
    # Colocated GPUs: before training the generator releases its memory. On vLLM-CPU (no
    # sleep mode) that shuts the engine down; the next load (the new checkpoint) builds
    # an engine for it directly, without first restoring the old one.
    reqs = requests([0] * len(PROMPTS))

    def state(self: Any) -> tuple[bool, bool, str | None]:
        return self.asleep, self._llm is None, self.last_load_mode

    ray.get(engine.sleep.remote())
    assert ray.get(engine.__ray_call__.remote(state))[:2] == (True, True)
    ray.get(engine.sleep.remote())  # released already: nothing to do
    ray.get(engine.load.remote(models[1], "float32"))
    assert ray.get(engine.__ray_call__.remote(state)) == (False, False, "engine")
    assert [c.text for c in generate(engine, reqs, GREEDY)] == hf_greedy(
        models[1], PROMPTS, GREEDY.max_tokens
    )
    ray.get(engine.load.remote(models[0], "float32"))  # back in place for later tests


def test_a_prompt_that_leaves_no_room_for_max_tokens_is_refused_by_name(engine: Any) -> None:
    long = [GenerationRequest(prompt_id=0, sample_index=0, seed=0, prompt="1+1=" * 60)]
    with pytest.raises(ValueError, match=r"generation\.engine\.max_model_len"):
        generate(engine, long, SamplingConfig(0.0, 1.0, 40))
