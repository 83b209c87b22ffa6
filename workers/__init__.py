"""Ray actors and remote functions: the only code that holds a model or a GPU.

Runs in: Ray worker processes, on the local Ray or on a cluster (``FLYWHEEL_RAY_ADDRESS``);
``workers/driver/`` is the exception: the flow process's side of Ray, which places work on
the workers and never holds a model.
"""
