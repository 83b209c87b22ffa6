"""OpenAIBackend against a real OpenAI-compatible server: vLLM's own, over HTTP on 127.0.0.1.

The server serves a tiny random fp32 Llama (head_dim 32, char tokenizer), so its greedy
completions must equal transformers ``generate`` on the same folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("vllm")

from dataflywheel.generation import GenerationRequest, SamplingConfig
from dataflywheel.generation.openai_backend import EndpointError, OpenAIBackend
from dataflywheel.training.tokenizer import build_char_tokenizer, vocab_size

pytestmark = pytest.mark.slow

SERVED_NAME = "tiny"
START_TIMEOUT_S = 300
PROMPTS = [f"user: {a}*{b}=\nassistant: " for a, b in [(2, 3), (11, 4), (7, 7), (0, 5)]]
GREEDY = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=20)
SAMPLED = SamplingConfig(temperature=1.0, top_p=0.95, max_tokens=20)


def build_tiny(out: Path, seed: int) -> Path:
    """A random fp32 Llama with peaked logits (initializer_range 0.2: no greedy near-ties)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_char_tokenizer(256)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size(),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        initializer_range=0.2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("openai") / "tiny", seed=3)


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[str]:
    """Base URL (``.../v1``) of a vLLM OpenAI server on 127.0.0.1."""
    port = free_port()
    log_path = model_dir.parent / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *("--model", str(model_dir), "--served-model-name", SERVED_NAME),
        *("--dtype", "float32", "--enforce-eager", "--max-model-len", "256"),
        *("--host", "127.0.0.1", "--port", str(port), "--disable-log-stats"),
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"vLLM server exited {proc.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"vLLM server not up in {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def backend(server: str) -> Iterator[OpenAIBackend]:
    be = OpenAIBackend(server, SERVED_NAME, api_key="unused", concurrency=4)
    be.load(Path("unused"), "float32")
    yield be
    be.close()


def requests(seeds: list[int]) -> list[GenerationRequest]:
    return [
        GenerationRequest(prompt_id=i % len(PROMPTS), sample_index=i, seed=s, prompt=PROMPTS[i % 4])
        for i, s in enumerate(seeds)
    ]


def test_load_checks_the_served_model(server: str) -> None:
    wrong = OpenAIBackend(server, "not-served")
    with pytest.raises(EndpointError, match="does not serve model 'not-served'"):
        wrong.load(Path("unused"), "float32")
    wrong.close()


def test_greedy_matches_transformers(backend: OpenAIBackend, model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    got = backend.generate(requests([0] * len(PROMPTS)), GREEDY)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for completion, prompt in zip(got, PROMPTS, strict=True):
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, do_sample=False, max_new_tokens=GREEDY.max_tokens)
        new = out[0, ids.shape[1] :]
        assert completion.text == tok.decode(new, skip_special_tokens=True)
        assert completion.prompt_tokens == ids.shape[1]
        assert completion.completion_tokens == len(new)
        expected = (
            "length" if len(new) == GREEDY.max_tokens and new[-1] != tok.eos_token_id else "stop"
        )
        assert completion.finish_reason == expected


def test_seeded_samples_are_reproducible(backend: OpenAIBackend) -> None:
    reqs = requests(list(range(50, 58)))
    first = backend.generate(reqs, SAMPLED)
    assert backend.generate(reqs[::-1], SAMPLED)[::-1] == first
    assert len({c.text for c in first if c.prompt_id == 0}) > 1
    assert [(c.prompt_id, c.sample_index, c.seed) for c in first] == [
        (r.prompt_id, r.sample_index, r.seed) for r in reqs
    ]


def test_stop_string(backend: OpenAIBackend) -> None:
    full = backend.generate(requests([0]), GREEDY)[0]
    assert len(full.text) >= 6, full
    stop = full.text[4:6]
    stopped = backend.generate(requests([0]), SamplingConfig(0.0, 1.0, 20, stop=(stop,)))[0]
    assert stopped.text == full.text[: full.text.index(stop)]
    assert stopped.finish_reason == "stop"


def test_server_refusal_raises(backend: OpenAIBackend) -> None:
    # max_tokens beyond the 256-token context: the server answers 400, which is not retried.
    with pytest.raises(EndpointError, match="400"):
        backend.generate(requests([0]), SamplingConfig(0.0, 1.0, 10_000))
