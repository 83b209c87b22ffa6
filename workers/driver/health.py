"""Watching a generator actor: is it still producing tokens?

Runs in: the flow process (as the Ray driver). Ray's own liveness check only notices a dead
process; a generator whose engine is wedged — a deadlocked kernel, an engine process that
stopped answering, a frozen worker — keeps its process and its CPU or GPU forever, and the
round waits with it. While a call is outstanding the driver asks the actor's ``health``
method (its own concurrency group, so it answers during generation) at most every few
seconds, and the actor counts as hung when

- the answer does not come within ``probe_timeout_s`` although Ray has the actor ALIVE (the
  process is frozen or holds the GIL in a loop; one still waiting for a CPU or GPU is not
  hung), or
- it is generating (or probing) and no token came for ``stall_timeout_s`` seconds.

A (re)started actor must also pass a real 1-token generation (``GeneratorWorker.probe``)
within ``probe_timeout_s`` before it gets shards. Loading a model is exempt from the token
deadline (an engine start or a big download produces no tokens) but not from answering.
"""

from __future__ import annotations

from typing import Any


class GeneratorHung(RuntimeError):
    """The generator actor stopped producing tokens or answering; the message says which."""


def poll_interval(stall_timeout_s: float) -> float:
    """How often to ask while waiting: often enough to notice a stall within ~20% of the
    deadline, rarely enough to cost nothing (a health call is ~1 ms)."""
    return max(0.2, min(5.0, stall_timeout_s / 5))


def check(actor: Any, stall_timeout_s: float, probe_timeout_s: float) -> str | None:
    """None if the actor is healthy, else why it counts as hung."""
    import ray

    try:
        health = ray.get(actor.health.remote(), timeout=probe_timeout_s)
    except ray.exceptions.GetTimeoutError:
        if actor_state(actor) not in ("ALIVE", None):
            return None  # waiting for resources, starting or restarting: Ray's business
        return f"no answer to a health probe within {probe_timeout_s:g} s"
    if health["state"] in ("generating", "probing") and health["quiet_s"] > stall_timeout_s:
        return (
            f"no token for {health['quiet_s']:.0f} s while {health['state']} "
            f"(deadline {stall_timeout_s:g} s, {health['steps']} steps so far)"
        )
    return None


def actor_state(actor: Any) -> str | None:
    """Ray's record of the actor (PENDING_CREATION, ALIVE, RESTARTING, DEAD, ...); None if
    it cannot be read. An actor waiting for a free CPU or GPU does not answer either, and is
    not hung: only an ALIVE one that stays silent is."""
    try:
        from ray._private.state import actors  # a DeveloperAPI: the GCS actor table

        return str(actors(actor_id=actor._actor_id.hex())["State"])
    except Exception:
        return None


def wait_alive(actor: Any, timeout_s: float) -> str | None:
    """Wait while Ray restarts or places the actor (after its process died); returns its
    state at the end: ALIVE, DEAD (restarts used up), anything else on timeout."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        state = actor_state(actor)
        if state in ("ALIVE", "DEAD") or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def wait(
    actor: Any,
    refs: list[Any],
    stall_timeout_s: float,
    probe_timeout_s: float,
) -> list[Any]:
    """The refs (calls on ``actor``) that finished, waiting until at least one has; raises
    :class:`GeneratorHung` when the actor stops producing tokens meanwhile."""
    import ray

    interval = poll_interval(stall_timeout_s)
    while True:
        done, _ = ray.wait(refs, num_returns=1, timeout=interval)
        if done:
            return done
        reason = check(actor, stall_timeout_s, probe_timeout_s)
        if reason is not None:
            raise GeneratorHung(reason)


def call(actor: Any, ref: Any, stall_timeout_s: float, probe_timeout_s: float) -> Any:
    """``ray.get(ref)`` of one call on ``actor``, under the same watch as :func:`wait`."""
    import ray

    wait(actor, [ref], stall_timeout_s, probe_timeout_s)
    return ray.get(ref)


def ready(
    actor: Any,
    model_key: str,
    dtype: str,
    stall_timeout_s: float,
    probe_timeout_s: float,
) -> str:
    """Load ``model_key`` on ``actor`` and prove it generates (a 1-token probe within
    ``probe_timeout_s``); returns the actor's node id."""
    import ray

    node = call(actor, actor.load.remote(model_key, dtype), stall_timeout_s, probe_timeout_s)
    probe = actor.probe.remote()
    done, _ = ray.wait([probe], timeout=probe_timeout_s)
    if not done:
        raise GeneratorHung(f"a 1-token probe did not finish within {probe_timeout_s:g} s")
    if ray.get(probe) is not True:
        raise GeneratorHung("a 1-token probe generated nothing")
    return node
