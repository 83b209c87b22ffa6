"""Code that runs in the Ray driver: the flow process (a ``flywheel`` command, or a flow run
started by a Prefect worker) placing work on Ray.

Runs in: the flow process, never inside a Ray worker. ``workers/``' other modules are the
code that runs inside Ray actors and tasks; this package is the side that connects to Ray
and submits to them: ``ray_session`` (the process's one connection and the local Ray it
owns), ``placement`` (what every kind of worker reserves, the run's named generator
actors), ``generator_pool`` and ``health`` (feeding a stage's shards to the generator
actors, replacing a hung one), ``sharded`` (Ray tasks over shards, a bounded number in
flight) and ``scoring`` (what the verification tasks need from the driver).
"""
