"""Prefect flows: composition and scheduling only; deployment entry points live here.

Runs in: the flow process, which never imports torch or vLLM (model work goes to ``workers``).
"""
