"""Rounds: the pure decisions a round makes (``plan``) and the pure steps around model work
(scoring ``shards``, the training ``mix``, the reproducibility ``manifest``).

Runs in: anywhere (pure). The Prefect tasks in ``tasks/`` call into these modules and do the
I/O; nothing here touches the database, the store or Ray.
"""
