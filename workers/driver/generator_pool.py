"""The generator pool of one generation stage: a peer model's ``resources.generators`` actors,
fed shards with backpressure and watched for hangs.

Runs in: the flow process, as the Ray driver (called by the ``generate_samples`` Prefect task).
It owns which shard goes to which actor, and what happens to an actor that stops: every
slot's actor is created and its model load submitted when the stage starts, so the models load
side by side; an actor is made ready (load finished, 1-token probe passed: ``health``) the
first time it gets a shard. Shards go to whichever ready actor has room, at most
``MAX_IN_FLIGHT`` each; one ``ray.wait`` (with a poll-interval timeout) watches every call in
flight, and an actor that has work out and returned nothing for a poll interval gets a health
check. A hung or dead actor is recovered (:meth:`Generator.recover`) and only its in-flight
shards go back to the front of the queue; the other actors keep going (the loop waits while a
replacement loads, so they run on what they hold meanwhile). What a finished shard
writes is the caller's (``finish``): a shard's samples are the same whichever actor drew it
(its requests and their seeds are fixed), so the pool size never shows in them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from prefect import get_run_logger

from dataflywheel.generation import Completion, GenerationRequest, SamplingConfig
from dataflywheel.spec import RunSpec
from workers.driver import health, placement, ray_session

MAX_IN_FLIGHT = 2  # shards queued per actor: one running, one ready
MAX_RESTARTS = 2  # hung or crashed recoveries of one actor within one run of the task

Finish = Callable[[int, list[Completion], float, str], None]


class Generator:
    """One pool slot's actor for one task run, watched by ``health``: a hung one is replaced
    by a fresh actor, a crashed one restarted, at most ``MAX_RESTARTS`` times; then the task
    fails and Prefect's retry starts over from the ledger."""

    def __init__(
        self,
        run_id: int,
        spec: RunSpec,
        peer: int,
        slot: int,
        model_key: str,
        dtype: str,
        backend_options: dict[str, Any],
        settings: Any,
    ) -> None:
        self.run_id, self.spec, self.peer, self.slot = run_id, spec, peer, slot
        self.index = placement.generator_index(spec, peer, slot)
        self.model_key, self.dtype = model_key, dtype
        self.backend_options, self.settings = backend_options, settings
        self.stall_s = settings.generation_stall_timeout_s
        self.probe_s = settings.generation_probe_timeout_s
        self.actor: Any = None
        self.node: str | None = None  # set once the actor is ready
        self.restarts = 0
        self.unavailable_since: float | None = None
        self.heard_at = time.monotonic()  # last return, health check or start of work
        self._loading: Any = None  # the load submitted by start(), kept until ready

    def start(self) -> None:
        """Create the actor and submit its model load without waiting for it, so a pool's
        actors load side by side; :meth:`ready` then waits for it."""
        if self.actor is None:
            self._create()
        if self.node is None and self._loading is None:
            self._loading = self.actor.load.remote(self.model_key, self.dtype)

    def ready(self) -> Any:
        """The actor, with the model loaded and a 1-token probe passed."""
        import ray

        while self.node is None:
            if self.actor is None:
                self._create()
            try:
                self.node = health.ready(
                    self.actor, self.model_key, self.dtype, self.stall_s, self.probe_s
                )
            except (health.GeneratorHung, ray.exceptions.RayActorError) as exc:
                self.recover(exc)
        self._loading = None
        return self.actor

    def call(self, ref: Any) -> Any:
        """The result of one call on the actor, watched like a shard."""
        return health.call(self.actor, ref, self.stall_s, self.probe_s)

    def recover(self, exc: Exception) -> None:
        """After a hang (``GeneratorHung``) a fresh actor replaces this one; after its
        process died (``RayActorError``) Ray restarts it in place (``max_restarts``), and a
        fresh one replaces it only when Ray gives up or takes longer than the stall
        deadline."""
        import ray

        self.node, self._loading = None, None
        what = f"generator {self.slot} of run {self.run_id} peer {self.peer}"
        hung = isinstance(exc, health.GeneratorHung)
        # "Restarting" answers a call made while Ray restarts the actor: the same incident,
        # not a new one, for up to the stall deadline.
        now = time.monotonic()
        if isinstance(exc, ray.exceptions.ActorUnavailableError):
            self.unavailable_since = self.unavailable_since or now
            if now - self.unavailable_since < self.stall_s:
                time.sleep(1.0)
                health.wait_alive(self.actor, self.stall_s)
                return
        self.unavailable_since = None
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            raise health.GeneratorHung(f"{what}: {exc} ({MAX_RESTARTS} recoveries)") from exc
        get_run_logger().warning(
            "%s %s (%s): %s it (%d/%d), its shards are retried",
            what,
            "is hung" if hung else "died",
            str(exc).splitlines()[0],
            "replacing" if hung else "restarting",
            self.restarts,
            MAX_RESTARTS,
        )
        if not hung and health.wait_alive(self.actor, self.stall_s) == "ALIVE":
            return
        self.actor = placement.replace_generator(self.run_id, **self._actor_options())

    def _create(self) -> None:
        # Each slot has an actor of its own: it keeps its model loaded between rounds.
        ray_session.connect(self.settings)
        self.actor = placement.generator(self.run_id, **self._actor_options())

    def _actor_options(self) -> dict[str, Any]:
        return actor_options(self.spec, self.index, self.backend_options)


def actor_options(spec: RunSpec, index: int, backend_options: dict[str, Any]) -> dict[str, Any]:
    """``placement.generator``'s options for the run's actor number ``index``."""
    return {
        "backend": spec.generation.backend,
        "backend_options": backend_options,
        "index": index,
        **placement.generator_resources(spec),
    }


def start_actors(run_id: int, spec: RunSpec, backend_options: dict[str, Any], settings: Any) -> int:
    """Create every generator actor of the run now, waiting for none: each imports its
    backend's libraries while the flow prepares the base model, and the stages then find it
    by name (``placement.generator``). Returns how many there are."""
    ray_session.connect(settings)
    slots = placement.generator_slots(spec)
    for index in range(slots):
        placement.generator(run_id, **actor_options(spec, index, backend_options))
    return slots


def on_peer_actor(
    run_id: int, spec: RunSpec, peer: int, settings: Any, call: Callable[[Any], Any]
) -> Any:
    """``call(actor)``'s Ray result on peer ``peer``'s first generator actor (created if the
    run has none yet: a resumed run's training or base model may come before any
    generation). An actor that died for good (killed, or out of restarts) is replaced once
    and the call made again; other errors are the caller's."""
    import ray
    from ray.exceptions import ActorDiedError

    from dataflywheel.generation.engine_options import backend_options

    ray_session.connect(settings)
    options = actor_options(spec, placement.generator_index(spec, peer, 0), backend_options(spec))
    try:
        return ray.get(call(placement.generator(run_id, **options)))
    except ActorDiedError:
        return ray.get(call(placement.replace_generator(run_id, **options)))


def run(
    gens: Sequence[Generator],
    shards: Sequence[Sequence[GenerationRequest]],
    todo: Sequence[int],
    sampling: SamplingConfig,
    begin: Callable[[int], None],
    finish: Finish,
) -> None:
    """Generate ``shards[i]`` for every ``i`` in ``todo`` on the pool ``gens``.
    ``begin(i)`` runs before shard ``i`` is sent, ``finish(i, completions, seconds, node)``
    once it came back (from the actor on ``node``)."""
    import ray

    for gen in gens:
        gen.start()
    queue = list(todo)
    in_flight: dict[Any, tuple[Generator, int]] = {}  # call -> (its actor, shard index)
    interval = health.poll_interval(gens[0].stall_s)
    while queue or in_flight:
        _fill(gens, queue, in_flight, shards, sampling, begin)
        done, _ = ray.wait(list(in_flight), num_returns=1, timeout=interval)
        for ref in done:
            gen, shard_index = in_flight[ref]
            try:
                completions, seconds = ray.get(ref)  # finished: does not block
            except ray.exceptions.RayActorError as exc:
                _recover(gen, exc, queue, in_flight)
                continue
            del in_flight[ref]
            gen.heard_at = time.monotonic()
            finish(shard_index, completions, seconds, gen.node)
        _watch(gens, queue, in_flight, interval)


def _fill(
    gens: Sequence[Generator],
    queue: list[int],
    in_flight: dict[Any, tuple[Generator, int]],
    shards: Sequence[Sequence[GenerationRequest]],
    sampling: SamplingConfig,
    begin: Callable[[int], None],
) -> None:
    """Hand queued shards to the actors with room: ready ones before one that must (re)load
    its model first (that waits), the least busy first (so a few shards still spread)."""
    while queue:
        busy = {gen: _busy(gen, in_flight) for gen in gens}
        room = [gen for gen in gens if busy[gen] < MAX_IN_FLIGHT]
        if not room:
            return
        gen = min(room, key=lambda g: (g.node is None, busy[g]))  # ties: the lowest slot
        actor = gen.ready()
        shard_index = queue.pop(0)
        begin(shard_index)
        if not busy[gen]:
            gen.heard_at = time.monotonic()  # its silence counts from its first call
        in_flight[actor.generate_timed.remote(shards[shard_index], sampling)] = (gen, shard_index)


def _watch(
    gens: Sequence[Generator],
    queue: list[int],
    in_flight: dict[Any, tuple[Generator, int]],
    interval: float,
) -> None:
    """A health check for each actor that has work out and was silent for ``interval``."""
    import ray

    for gen in gens:
        if not _busy(gen, in_flight) or time.monotonic() - gen.heard_at < interval:
            continue
        try:
            reason = health.check(gen.actor, gen.stall_s, gen.probe_s)
        except ray.exceptions.RayActorError as exc:  # died (or restarting) since its last call
            _recover(gen, exc, queue, in_flight)
            continue
        gen.heard_at = time.monotonic()
        if reason is not None:
            _recover(gen, health.GeneratorHung(reason), queue, in_flight)


def _recover(
    gen: Generator,
    exc: Exception,
    queue: list[int],
    in_flight: dict[Any, tuple[Generator, int]],
) -> None:
    """Put ``gen``'s in-flight shards back at the front of the queue, in order, and recover
    it. None of their samples is in the database (rows and ``done`` commit together)."""
    mine = [ref for ref, (owner, _) in in_flight.items() if owner is gen]
    queue[:0] = sorted(in_flight.pop(ref)[1] for ref in mine)
    gen.recover(exc)


def _busy(gen: Generator, in_flight: dict[Any, tuple[Generator, int]]) -> int:
    return sum(owner is gen for owner, _ in in_flight.values())
