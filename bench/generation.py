"""Generation throughput: vLLM (``VLLMBackend``) vs transformers ``generate``, one run.

Runs in: a plain process on the benchmark machine (vLLM spawns its engine process; this
script keeps it under ``if __name__ == "__main__"``).

Same model folder, dtype, prompts, batch and greedy decoding for both; each stops at EOS or
``--max-tokens``. Tokens/s is generated tokens (EOS included) over the generate call's wall
time, after one warm-up call each. Also timed: the vLLM engine start, an in-place weight
reload (what ``VLLMBackend.load`` does each round) and, with ``--recreate``, a fresh engine.
The other half of the generation benchmark, our generate stage against the raw backend
call, is bench/generate_stage.py (it needs the database, Ray and Prefect; this does not).

    python bench/generation.py                     # SmolLM2-135M-Instruct (converted once)
    python bench/generation.py --model tiny --batch 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from dataflywheel.generation import GenerationRequest, SamplingConfig

QUESTIONS = [f"What is {a} + {b}? Answer with a number." for a in range(3, 40, 3) for b in (7, 19)]


def model_folder(name: str, work: Path) -> Path:
    if name == "smollm2":
        from dataflywheel.training.smollm2 import cached_smollm2, default_cache_dir

        return cached_smollm2(default_cache_dir())
    from dataflywheel.training.tiny import TinyModelConfig, build_tiny_model

    return build_tiny_model(TinyModelConfig(max_seq_len=256), work / "tiny", seed=0)


def prompts(model_dir: Path, n: int) -> list[str]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    # Both backends tokenize with add_special_tokens=True (vLLM's default), so a template
    # that writes bos_token itself would give the model two: drop the template's copy.
    adds_bos = tok.bos_token_id is not None and tok("x").input_ids[:1] == [tok.bos_token_id]
    out = []
    for i in range(n):
        chat = [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]
        text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        if adds_bos and text.startswith(tok.bos_token):
            text = text[len(tok.bos_token) :]
        out.append(text)
    return out


def bench_vllm(
    model_dir: Path, texts: list[str], sampling: SamplingConfig, recreate: bool
) -> dict[str, float | list[str]]:
    from dataflywheel.generation.vllm_backend import VLLMBackend

    reqs = [GenerationRequest(i, 0, i, t) for i, t in enumerate(texts)]
    started = time.perf_counter()
    backend = VLLMBackend(max_model_len=1024, kv_cache_gib=1)
    backend.load(model_dir, sampling.dtype)
    result: dict[str, float | list[str]] = {"engine_start_s": time.perf_counter() - started}
    backend.generate(reqs[:2], sampling)  # warm-up
    started = time.perf_counter()
    completions = backend.generate(reqs, sampling)
    wall = time.perf_counter() - started
    result["tokens"] = float(sum(c.completion_tokens for c in completions))
    result["tok_s"] = result["tokens"] / wall
    result["texts"] = [c.text for c in completions]
    # A round's new checkpoint is a new folder with the same shapes: copy to force a reload.
    copy = Path(tempfile.mkdtemp(prefix="bench-reload-")) / "model"
    shutil.copytree(model_dir, copy)
    started = time.perf_counter()
    backend.load(copy, sampling.dtype)
    result["reload_s"] = time.perf_counter() - started
    assert backend.last_load_mode == "reload"
    if recreate:
        started = time.perf_counter()
        backend.close()
        backend.load(model_dir, sampling.dtype)
        result["recreate_s"] = time.perf_counter() - started
    backend.close()
    shutil.rmtree(copy.parent, ignore_errors=True)
    return result


def bench_hf(
    model_dir: Path, texts: list[str], sampling: SamplingConfig, threads: int | None = None
) -> dict[str, float | list[str]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        # On a shared, oversubscribed CPU, OpenMP workers spin-waiting for each other can make
        # 2 threads many times slower than 1: let the caller pin the count.
        torch.set_num_threads(threads)

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    dtype = getattr(torch, sampling.dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()

    def run(batch: list[str]) -> tuple[int, list[str]]:
        enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=True)
        with torch.no_grad():
            out = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=sampling.max_tokens,
                pad_token_id=tok.pad_token_id,
            )
        new = out[:, enc.input_ids.shape[1] :]
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        tokens, decoded = 0, []
        for row in new.tolist():
            ends = [i for i, t in enumerate(row) if t in eos_ids]
            length = ends[0] + 1 if ends else len(row)
            tokens += length
            decoded.append(tok.decode(row[:length], skip_special_tokens=True))
        return tokens, decoded

    run(texts[:2])  # warm-up
    started = time.perf_counter()
    tokens, decoded = run(texts)
    wall = time.perf_counter() - started
    return {"tokens": float(tokens), "tok_s": tokens / wall, "texts": decoded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--recreate", action="store_true", help="also time a fresh engine")
    parser.add_argument("--hf-threads", type=int, default=None, help="torch threads for HF")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    with tempfile.TemporaryDirectory() as work:
        model_dir = model_folder(args.model, Path(work))
        texts = prompts(model_dir, args.batch)
        sampling = SamplingConfig(0.0, 1.0, args.max_tokens, dtype=args.dtype)
        load_before = os.getloadavg()[0]
        vllm = bench_vllm(model_dir, texts, sampling, args.recreate)
        hf = bench_hf(model_dir, texts, sampling, args.hf_threads)
        load_after = os.getloadavg()[0]
    same = sum(a == b for a, b in zip(vllm["texts"], hf["texts"], strict=True))
    print(
        f"\nmodel={args.model} dtype={args.dtype} batch={args.batch} max_tokens={args.max_tokens}"
    )
    print(f"load average (1 min) before/after: {load_before:.1f}/{load_after:.1f}")
    print(f"{'backend':<16}{'tokens':>8}{'tok/s':>10}")
    print(f"{'vllm':<16}{vllm['tokens']:>8.0f}{vllm['tok_s']:>10.1f}")
    hf_name = f"transformers/{args.hf_threads}t" if args.hf_threads else "transformers"
    print(f"{hf_name:<16}{hf['tokens']:>8.0f}{hf['tok_s']:>10.1f}")
    print(f"vllm / transformers: {vllm['tok_s'] / hf['tok_s']:.2f}x")  # type: ignore[operator]
    print(f"identical greedy completions: {same}/{len(texts)}")
    print(f"vllm engine start (incl. import): {vllm['engine_start_s']:.1f} s")
    print(f"vllm in-place weight reload: {vllm['reload_s']:.2f} s")
    if "recreate_s" in vllm:
        print(f"vllm close + new engine: {vllm['recreate_s']:.1f} s")


if __name__ == "__main__":
    main()
