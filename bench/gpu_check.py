"""GPU check for a bare GPU machine: bf16 generation, our trainer, and the colocate release path.

Runs in: a plain process on the machine under test. Needs torch, transformers and peft, plus
TRL and datasets for our trainer; no vLLM, Ray, Prefect or PostgreSQL. On a machine without
CUDA (or with ``--device cpu``) it runs the same steps at small sizes as a smoke check.

1. Generation: ``TransformersBackend`` (dataflywheel/generation/hf.py) on a tiny Llama built
   by ``dataflywheel/training/tiny.py`` (larger than the default on a GPU), greedy, one batch
   shape: tokens/s in float32 and in bfloat16 (the median of three calls after a warm-up).
2. Training: ``train_sft`` (dataflywheel/training/sft.py, TRL's SFTTrainer) with
   ``dtype="bfloat16"``, run after a 1-step warm-up with ``--steps`` and 4x as many, so
   steps/s is the marginal rate without model load and save; peak GPU memory; the saved
   checkpoint's dtype (read from its safetensors header) and that it loads and generates.
   Without TRL the script says how to carry it and times a plain torch loop (same model,
   bf16 autocast, AdamW) instead.
3. Release: the bf16 backend ``sleep()``s (weights to host, CUDA cache emptied): GPU memory
   (torch's allocated / reserved, ``cudaMemGetInfo``, nvidia-smi) must return to the level
   before any model was loaded; training then runs while it sleeps; after ``wake()`` the
   greedy output must equal the one before sleep.

Prints a table, then one JSON line with every figure; exits 1 when a check fails (a skipped
check does not fail unless ``--strict``).

    python3 bench/gpu_check.py                 # the GPU if there is one
    python3 bench/gpu_check.py --device cpu    # the CPU smoke check
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import json
import os
import platform
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a bare machine: no install

MIB = 2**20
# Memory that may stay held after sleep(): cuBLAS keeps its workspaces (tens of MiB on Hopper)
# in torch's allocator for the life of the process.
RELEASE_SLACK_MIB = 64
REPEATS = 3  # timed generate calls per dtype; the median counts
# What the CPU install runs (trl 1.16 needs datasets; datasets needs dill and multiprocess).
CARRY = "trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"  # the wheels' Python: this one
CARRY_HELP = f"""TRL or datasets is not installed (or --without-trl), so our trainer (train_sft)
cannot run here; the training figures come from a plain torch loop instead. To run it, bring
the wheels (< 2 MiB):
  where PyPI is reachable, in the repository root:
    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version {PYTHON} \\
      --implementation cp --platform manylinux2014_x86_64 -d .whl {CARRY}
  here, with .whl copied into the repository root, before this script:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PYTHONPATH"""


@dataclass(frozen=True)
class Size:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_seq_len: int
    requests: int  # generation: prompts in one batch
    new_tokens: int
    train_batch: int
    prompt_chars: int
    completion_chars: int


SIZES = {
    "gpu": Size(1024, 8, 16, 4096, 512, 64, 128, 16, 64, 192),  # ~0.13B parameters
    "small": Size(128, 2, 4, 256, 64, 8, 16, 4, 8, 16),
}


class Report:
    """Check rows (name, status, figure) and the figures of the JSON line."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []
        self.figures: dict[str, Any] = {}

    def check(self, name: str, ok: bool | None, figure: str) -> None:
        self.rows.append((name, "skip" if ok is None else "ok" if ok else "FAIL", figure))

    def print(self) -> None:
        width = max(len(name) for name, _, _ in self.rows)
        print(f"\n{'check':<{width}}  status  figure\n{'-' * width}  ------  ------")
        for name, status, figure in self.rows:
            print(f"{name:<{width}}  {status:<6}  {figure}")
        print(json.dumps(self.figures, sort_keys=True))

    def failed(self, strict: bool) -> bool:
        return any(s == "FAIL" or (strict and s == "skip") for _, s, _ in self.rows)


def gpu_memory(torch: Any) -> dict[str, float]:
    """MiB: torch's allocated and reserved, the device's free and total, nvidia-smi's used."""
    if not torch.cuda.is_available():
        return {}
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    out = {
        "allocated": round(torch.cuda.memory_allocated() / MIB, 1),
        "reserved": round(torch.cuda.memory_reserved() / MIB, 1),
        "free": round(free / MIB, 1),
        "total": round(total / MIB, 1),
    }
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
        smi = subprocess.run(query, capture_output=True, text=True, check=False)
        if smi.returncode == 0 and smi.stdout.strip():
            out["nvidia_smi_used"] = float(smi.stdout.split()[0])
    return out


def safetensors_dtypes(folder: Path) -> list[str]:
    """The tensor dtypes stored in ``folder``'s safetensors files (from their headers)."""
    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
    found = set()
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        header.pop("__metadata__", None)
        found |= {names.get(v["dtype"], v["dtype"]) for v in header.values()}
    return sorted(found)


def fingerprint(model: Any) -> str:
    """A hash of every weight's bytes (copied to host): equal means bit-identical."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdefghij +=") for _ in range(n))


def generation(report: Report, model_dir: Path, size: Size, device: str) -> Any:
    """Tokens/s in float32 and bfloat16; returns the bf16 backend, loaded, and its outputs."""
    from dataflywheel.generation import GenerationRequest, SamplingConfig
    from dataflywheel.generation.hf import TransformersBackend

    rng = random.Random(0)
    requests = [GenerationRequest(i, 0, i, text(rng, 16)) for i in range(size.requests)]
    rates = {}
    for dtype in ("float32", "bfloat16"):
        backend = TransformersBackend(batch_size=size.requests)
        backend.load(model_dir, dtype)
        sampling = SamplingConfig(0.0, 1.0, size.new_tokens, dtype=dtype)
        backend.generate(requests, SamplingConfig(0.0, 1.0, 4, dtype=dtype))  # warm-up
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            out = backend.generate(requests, sampling)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        tokens = sum(c.completion_tokens for c in out)
        rates[dtype] = tokens / seconds
        weights = next(backend.model.parameters())
        report.figures[f"generate_{dtype}"] = {
            "tokens": tokens,
            "seconds": round(seconds, 4),
            "tokens_per_s": round(rates[dtype], 1),
            "weights": f"{weights.dtype} on {weights.device}",
        }
        placed = str(weights.dtype) == f"torch.{dtype}" and weights.device.type == device
        report.check(
            f"generate {dtype}",
            len(out) == len(requests) and tokens > 0 and placed,
            f"{rates[dtype]:,.0f} tok/s ({tokens} tokens, {seconds:.2f} s; "
            f"{weights.dtype} on {weights.device})",
        )
        if dtype == "float32":
            backend.close()
    ratio = rates["bfloat16"] / rates["float32"]
    report.figures["generate_bf16_over_fp32"] = round(ratio, 3)
    report.check("generate bf16 / fp32", True, f"{ratio:.2f}x")
    return backend, [c.text for c in out], requests, sampling


def train_with_trl(report: Report, model_dir: Path, work: Path, size: Size, args: Any) -> None:
    """Our trainer, bf16: marginal steps/s, peak memory, the checkpoint's dtype."""
    import torch

    from dataflywheel.generation import GenerationRequest, SamplingConfig
    from dataflywheel.generation.hf import TransformersBackend
    from dataflywheel.training import SFTExample, TrainConfig
    from dataflywheel.training.sft import train_sft

    rng = random.Random(1)
    examples = [
        SFTExample(text(rng, size.prompt_chars), text(rng, size.completion_chars))
        for _ in range(size.train_batch * 8)
    ]
    runs = {}
    for steps in (1, args.steps, 4 * args.steps):  # the first: a warm-up (imports, kernels)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        config = TrainConfig(
            method="sft",
            mode=args.mode,
            learning_rate=1e-4,
            batch_size=size.train_batch,
            seed=0,
            max_steps=steps,
            dtype="bfloat16",
        )
        out = work / f"trained-{steps}"
        result = train_sft(model_dir, examples, config, out)
        peak = torch.cuda.max_memory_allocated() / MIB if torch.cuda.is_available() else None
        runs[steps] = (result, out, peak)
    (short, _, _), (long, out, peak) = runs[args.steps], runs[4 * args.steps]
    extra = long.seconds - short.seconds
    # The marginal rate leaves out model load and save; on a noisy machine the difference can
    # come out non-positive, and then the long run's overall rate stands in.
    rate = (long.steps - short.steps) / extra if extra > 0 else long.steps / long.seconds
    dtypes = safetensors_dtypes(out)
    report.figures["train"] = {
        "trainer": "train_sft (TRL)",
        "mode": args.mode,
        "batch": size.train_batch,
        "steps": [short.steps, long.steps],
        "seconds": [round(short.seconds, 3), round(long.seconds, 3)],
        "steps_per_s": round(rate, 3),
        "peak_allocated_mib": None if peak is None else round(peak, 1),
        "final_loss": round(long.final_loss, 4),
        "checkpoint_dtypes": dtypes,
        "deterministic": getattr(config, "deterministic", True),
    }
    ok = long.steps == 4 * args.steps and long.final_loss == long.final_loss  # not NaN
    report.check(
        "train_sft bf16",
        ok,
        f"{rate:.2f} steps/s (marginal, batch {size.train_batch}, {args.mode}); "
        f"loss {long.final_loss:.3f}",
    )
    report.check(
        "train peak memory",
        None if peak is None else peak > 0,
        "n/a (no GPU)" if peak is None else f"{peak:,.0f} MiB allocated",
    )
    backend = TransformersBackend(batch_size=1)
    backend.load(out, "bfloat16")
    greedy = SamplingConfig(0.0, 1.0, 4, dtype="bfloat16")
    done = backend.generate([GenerationRequest(0, 0, 0, "1+2=")], greedy)
    backend.close()
    report.check(
        "checkpoint dtype",
        bool(dtypes) and set(dtypes) <= {"float32", "bfloat16", "float16"} and len(done) == 1,
        f"{', '.join(dtypes)} (safetensors); loads and generates",
    )


def train_plain(report: Report, model_dir: Path, size: Size, args: Any, device: str) -> None:
    """Without TRL: a plain torch loop on the same model (bf16 autocast, AdamW)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    tok = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(1)
    rows = [
        tok(text(rng, size.prompt_chars) + text(rng, size.completion_chars)).input_ids
        + [tok.eos_token_id]
        for _ in range(size.train_batch)
    ]
    ids = torch.tensor(rows, device=device)  # equal lengths: no padding
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(4 * args.steps):
        loss = step()
    rate = 4 * args.steps / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / MIB if torch.cuda.is_available() else None
    report.figures["train"] = {
        "trainer": "plain torch loop (no TRL)",
        "mode": "full",
        "batch": size.train_batch,
        "steps_per_s": round(rate, 3),
        "peak_allocated_mib": None if peak is None else round(peak, 1),
        "final_loss": round(loss, 4),
    }
    report.check("train (plain torch) bf16", loss == loss, f"{rate:.2f} steps/s; loss {loss:.3f}")
    report.check(
        "train peak memory",
        None if peak is None else peak > 0,
        "n/a (no GPU)" if peak is None else f"{peak:,.0f} MiB allocated",
    )
    report.check("train_sft bf16", None, "TRL missing: see how to carry it above")
    report.check("checkpoint dtype", None, "needs train_sft (TRL)")


def run(report: Report, args: Any, size: Size, device: str, has_trl: bool, work: Path) -> None:
    """The three parts in order: generation, release while training, wake."""
    import torch

    from dataflywheel.training.tiny import TinyModelConfig, build_tiny_model

    cfg = TinyModelConfig(
        hidden_size=size.hidden,
        num_layers=size.layers,
        num_heads=size.heads,
        intermediate_size=size.intermediate,
        max_seq_len=size.max_seq_len,
    )
    model_dir = build_tiny_model(cfg, work / "base", seed=0)
    if device == "cuda":
        torch.zeros(1, device="cuda")  # the CUDA context, in the baseline
    baseline = gpu_memory(torch)
    backend, before, requests, sampling = generation(report, model_dir, size, device)
    awake = gpu_memory(torch)
    weights = fingerprint(backend.model)
    backend.sleep()
    asleep = gpu_memory(torch)
    report.figures["memory_mib"] = {"baseline": baseline, "awake": awake, "asleep": asleep}
    if device == "cuda":
        # torch's pool is back to where it was before any model, and what it let go of
        # reached the device (cudaMemGetInfo) rather than staying cached.
        held = asleep["reserved"] - baseline["reserved"]
        released = awake["reserved"] - asleep["reserved"]
        returned = asleep["free"] - awake["free"]
        report.check(
            "sleep releases GPU memory",
            held <= RELEASE_SLACK_MIB and returned >= 0.9 * released,
            f"reserved {awake['reserved']:,.0f} -> {asleep['reserved']:,.0f} MiB "
            f"(allocated {asleep['allocated']:,.0f}); device free {awake['free']:,.0f} -> "
            f"{asleep['free']:,.0f} MiB (before load {baseline['free']:,.0f}); "
            f"nvidia-smi used {awake.get('nvidia_smi_used', '?')} -> "
            f"{asleep.get('nvidia_smi_used', '?')} MiB",
        )
    else:
        report.check("sleep releases GPU memory", None, "n/a on CPU (sleep is a no-op)")
    try:  # training while the generator sleeps: it must get the memory sleep gave back
        if has_trl:
            train_with_trl(report, model_dir, work, size, args)
        else:
            train_plain(report, model_dir, size, args, device)
    except Exception as exc:
        traceback.print_exc()
        report.check("train while asleep", False, f"{type(exc).__name__}: {exc}")
    gc.collect()  # the trainer's model and optimiser, before the woken figures
    if device == "cuda":
        torch.cuda.empty_cache()
    backend.wake()
    after = [c.text for c in backend.generate(requests, sampling)]
    report.figures["memory_mib"]["woken"] = gpu_memory(torch)
    place = next(backend.model.parameters()).device.type
    same = sum(a == b for a, b in zip(after, before, strict=True))
    report.figures["wake_same_greedy_outputs"] = f"{same}/{len(before)}"
    # Greedy outputs are a figure, not the check: the trainer in between may change cuBLAS's
    # kernel choice, and a random model's near-tied logits can then flip in bf16.
    report.check(
        "wake: weights intact, serving",
        fingerprint(backend.model) == weights and place == device and len(after) == len(before),
        f"weights on {place}, bit-identical to before sleep; greedy outputs {same}/"
        f"{len(before)} identical",
    )
    backend.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--size", choices=("auto", *SIZES), default="auto")
    parser.add_argument("--steps", type=int, default=None, help="short training run's steps")
    parser.add_argument("--mode", choices=("lora", "full"), default="lora")
    parser.add_argument("--without-trl", action="store_true", help="take the no-TRL path")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads on CPU (1: steadier on shared cores)"
    )
    parser.add_argument("--strict", action="store_true", help="a skipped check fails too")
    args = parser.parse_args()
    if args.device == "cpu":  # before torch initialises CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device", file=sys.stderr)
        return 1
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(args.threads)
    size = SIZES[args.size if args.size != "auto" else "gpu" if device == "cuda" else "small"]
    args.steps = args.steps or (10 if device == "cuda" else 2)
    has_trl = not args.without_trl and all(
        importlib.util.find_spec(m) for m in ("trl", "datasets", "peft")
    )
    report = Report()
    report.figures["machine"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": _version("trl") if has_trl else None,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if device == "cuda" else _cpu_name(),
        "size": size.__dict__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(json.dumps(report.figures["machine"]))
    if not has_trl:
        print(CARRY_HELP)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        try:
            run(report, args, size, device, has_trl, Path(tmp))
        except Exception as exc:  # a broken step: report it with the figures so far
            traceback.print_exc()
            report.check("run to the end", False, f"{type(exc).__name__}: {exc}")
    report.print()
    return 1 if report.failed(args.strict) else 0


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
