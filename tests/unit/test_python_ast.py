"""python_ast.parse is safe from many threads while collections run finalizers.

Unlocked, ast.parse on CPython 3.11 fails here within a few hundred parses with
``SystemError: AST constructor recursion depth mismatch``: a finalizer run by a collection
in the middle of one thread's parse lets another thread parse (CPython gh-106905). The
suite met this once when a verifier scored samples from a thread pool.
"""

from __future__ import annotations

import gc
import threading
import time

from dataflywheel import python_ast

SOURCE = "def f(x):\n" + "\n".join(
    f"    assert f([[{i}, 2, 3], [4, 5, 6]]) == [1, 2, {i}]" for i in range(200)
)


class _Cycle:
    """Garbage with a finalizer that gives up the GIL: each collection may switch threads."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        time.sleep(0)


def test_parse_from_four_threads_under_collection_pressure():
    errors: list[BaseException] = []
    threshold = gc.get_threshold()
    gc.set_threshold(50)

    def work() -> None:
        try:
            for _ in range(40):
                [_Cycle() for _ in range(20)]
                module = python_ast.parse(SOURCE, filename="<tests>")
                assert len(module.body[0].body) == 200
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        gc.set_threshold(*threshold)
    assert errors == []
