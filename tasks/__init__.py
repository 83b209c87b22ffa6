"""Prefect tasks: I/O and glue between the flow and the core, short, idempotent, retried.

Runs in: Prefect task runs inside the flow process. Tasks pass row ids, shard ids and
object keys between each other, never tensors or sample lists.
"""
