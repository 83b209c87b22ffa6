"""Parse Python source into an AST safely from any thread. Runs anywhere.

CPython 3.11's AST builder keeps its recursion-depth check in state shared by all threads.
When a garbage collection in the middle of a parse runs a finalizer, another thread may
parse meanwhile, and the first one fails with ``SystemError: AST constructor recursion
depth mismatch`` (CPython gh-106905). Verifiers score samples from thread pools, so every
``ast.parse`` of ours goes through :func:`parse`, which holds one process-wide lock.
"""

from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse(source, filename)``, one thread at a time."""
    with _LOCK:
        return ast.parse(source, filename=filename)
