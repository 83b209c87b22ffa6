"""What counts as plain data, how the candidate's values become plain data, and the wire
between a step's two processes (dataflywheel/verifiers/sandbox/plain.py; pure, no sandbox)."""

from __future__ import annotations

import collections
import enum
import math
import os

import pytest

from dataflywheel.verifiers.sandbox.plain import (
    MAX_MESSAGE_BYTES,
    NotPlain,
    not_plain,
    receive,
    send,
    to_plain,
)


class Lying(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


class Colour(enum.IntEnum):
    RED = 1


def test_plain_values_by_exact_type():
    cyclic: list[object] = [1]
    cyclic.append(cyclic)
    for value in (None, True, 1, 2.5, 1j, "s", b"b", (1, [2, {3: {4}}]), frozenset({5}), cyclic):
        assert not_plain(value, allow_nan=False) is None
    assert not_plain([1, Lying(2)], False) == "a value of type Lying"
    assert not_plain({"k": ...}, False) == "a value of type ellipsis"
    assert not_plain(compile("1", "<x>", "eval"), False) == "a value of type code"
    assert not_plain([math.nan], False) == "NaN"
    assert not_plain([math.nan], True) is None
    assert not_plain(complex(0, math.nan), False) == "a complex NaN"


def test_honest_subclasses_become_their_builtin_base():
    pair = collections.namedtuple("Pair", "a b")(1, 2)
    counts = collections.Counter("aab")
    cases = [
        (pair, (1, 2), tuple),
        (counts, {"a": 2, "b": 1}, dict),
        (collections.defaultdict(list, a=[1]), {"a": [1]}, dict),
        (collections.OrderedDict(b=2), {"b": 2}, dict),
        (Colour.RED, 1, int),
        (type("Metres", (float,), {})(3.5), 3.5, float),
        (bytearray(b"x"), b"x", bytes),
    ]
    for value, expected, kind in cases:
        plain = to_plain(value, allow_nan=False)
        assert plain == expected and type(plain) is kind
    nested = to_plain([pair, {"c": counts}], False)
    assert type(nested[0]) is tuple and type(nested[1]["c"]) is dict
    exact = [1, 2]
    assert to_plain(exact, False) is exact  # already plain: not copied


def test_values_that_would_lie_do_not_become_plain():
    with pytest.raises(NotPlain, match="class Lying, a subclass of int that redefines __eq__"):
        to_plain([Lying(0)], False)
    with pytest.raises(NotPlain, match="an object of class object"):
        to_plain(object(), False)
    with pytest.raises(NotPlain, match="the class Colour"):
        to_plain(Colour, False)
    with pytest.raises(NotPlain, match="NaN"):
        to_plain(type("F", (float,), {})(math.nan), False)
    loop: list[object] = []
    loop.append((loop,))
    assert not_plain(loop, False) is None  # plain already: marshal keeps the cycle
    counts = collections.Counter()
    entry = counts["self"] = (counts,)
    rebuilt = to_plain(counts, False)
    assert type(rebuilt) is dict and rebuilt["self"][0] is rebuilt  # from the dict: kept
    with pytest.raises(NotPlain, match="contains itself"):  # from the tuple: cannot be
        to_plain([entry], False)


def test_messages_cross_a_pipe_and_refuse_oversized_ones():
    reader, writer = os.pipe()
    try:
        send(writer, ("value", [1, (2, 3)], ()))
        assert receive(reader) == ("value", [1, (2, 3)], ())
        os.write(writer, (MAX_MESSAGE_BYTES + 1).to_bytes(8, "big"))
        with pytest.raises(ValueError, match="over"):
            receive(reader)
    finally:
        os.close(writer)
    assert receive(reader) is None  # end of file
    os.close(reader)
